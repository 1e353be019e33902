"""Helpers for the launch tests (imported by them, and by the launched scripts through PYTHONPATH)."""

import socket


def free_port() -> int:
    """A TCP port that is free right now (for accelerate's --main_process_port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distinct_characters_reward(completions, **kwargs):
    """A reward that differs between the completions of a random model, so GRPO advantages (and updates) are
    non-zero even when no completion is correct."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [len(set(text)) / 10.0 for text in texts]


def save_tiny_reward_model(path, kind: str, step_separator: str = "\n\n", seed: int = 0) -> str:
    """A tiny random Qwen2 reward model with the tiny tokenizer: `orm` (1-label sequence classifier) or `prm`
    (2-label token classifier that records its step separator, as launch/train_reward_model.py saves it)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification, Qwen2ForTokenClassification

    from grpo_ext.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        num_labels=1 if kind == "orm" else 2,
    )  # fmt: skip
    torch.manual_seed(seed)
    if kind == "orm":
        model = Qwen2ForSequenceClassification(config)
    else:
        model = Qwen2ForTokenClassification(config)
        model.config.step_separator = step_separator
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
