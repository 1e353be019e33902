"""Tiny random Qwen2-shaped models and tokenizers, built offline, for smoke runs and tests.

Nothing here touches the Hugging Face hub: the tokenizer is trained on the fly with `tokenizers`
and the model is initialised from a config. The result is saved to a directory so that it can be
passed by path wherever a hub id is accepted (TRL builds the reference model from the policy's path).

    python -m grpo_ext.tiny /tmp/tiny-qwen2
"""

from __future__ import annotations

import argparse
import os

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "The answer is \\boxed{18}. #### 18",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May? 48/2 = 24. 48 + 24 = 72.",
    "Step 1: compute 3 + 4 = 7.\n\nStep 2: multiply 7 * 2 = 14.\n\nSo the answer is 14.",
    "\\frac{14}{3} \\sqrt{117} 3\\sqrt{13} (3, \\frac{\\pi}{2}) x^2 + y^2 = 1 $1,234.50 10,080",
    "<think> Let me think. </think> The final answer is \\boxed{\\frac{1}{2}}.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z + - * / = ( ) [ ] { } ^ _ . , ; : ! ? %",
    "user assistant system",
]


def build_tiny_tokenizer(vocab_size: int = 512, corpus=None):
    """A byte-level BPE tokenizer trained on `corpus` (an iterable of strings; a small built-in corpus by default),
    with eos/pad and a chat template. The vocabulary stops short of `vocab_size` when the corpus has fewer merges."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    # Exactly Qwen2's normaliser and pre-tokeniser (digits one by one): `AutoTokenizer.from_pretrained` on a directory
    # holding a Qwen2 config rebuilds the tokenizer as `Qwen2Tokenizer` with these, so any other choice would make
    # the saved model see different token ids once reloaded (by TRL, for instance).
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4 if corpus is None else corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    vocab_size: int,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 64,
    seed: int = 0,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
):
    """A randomly initialised Qwen2ForCausalLM of the given (tiny) shape."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def save_tiny_causal_lm(path: str | os.PathLike, seed: int = 0, tokenizer=None, **model_kwargs) -> str:
    """Build a tiny Qwen2 model (and a tiny tokenizer unless one is given) and save both to `path`; return the path."""
    tokenizer = tokenizer if tokenizer is not None else build_tiny_tokenizer()
    model = build_tiny_model(
        vocab_size=len(tokenizer),
        seed=seed,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **model_kwargs,
    )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="directory to write the model and tokenizer to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(save_tiny_causal_lm(args.path, seed=args.seed))


if __name__ == "__main__":
    main()
