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
