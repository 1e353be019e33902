"""Tiny reward models and a toy scorer shared by the reward-model / labelling / iterative-RL tests."""

from __future__ import annotations

import re
from functools import lru_cache

import torch


@lru_cache(maxsize=1)
def tiny_tokenizer():
    from grpo_ext.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


def _config(num_labels: int, seed: int):
    from transformers import Qwen2Config

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    return Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, num_labels=num_labels, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=None,
    )


def tiny_prm(seed: int = 0):
    """A random `Qwen2ForTokenClassification` with 2 labels (class 1 = good step)."""
    from transformers import Qwen2ForTokenClassification

    return Qwen2ForTokenClassification(_config(2, seed))


def tiny_orm(seed: int = 0):
    """A random `Qwen2ForSequenceClassification` with 1 label (scalar reward), pad token set."""
    from transformers import Qwen2ForSequenceClassification

    return Qwen2ForSequenceClassification(_config(1, seed))


def last_number_scorer(completions, golds):
    """Toy rule-based scorer with `rewards.accuracy_reward`'s contract: 1.0 if the last integer in the completion
    equals the gold, 0.0 otherwise (no number included), None when there is no gold to compare with (empty)."""
    out = []
    for text, gold in zip(completions, golds):
        nums = re.findall(r"-?\d+", text)
        out.append(None if not str(gold).strip() else float(bool(nums) and nums[-1] == str(gold)))
    return out
