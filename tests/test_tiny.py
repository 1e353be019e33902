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
