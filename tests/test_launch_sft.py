import json

import pytest
import torch
import yaml

from grpo_ext.data import load_math_dataset
from launch.sft import sft_completion, train


def test_sft_completion_targets(shared_data):
    gsm8k = load_math_dataset("gsm8k", data_files=str(shared_data / "gsm8k" / "train.jsonl"), limit=1)[0]
    (turn,) = sft_completion(gsm8k, "gsm8k")
    assert turn["role"] == "assistant"
    assert turn["content"].endswith("The final answer is \\boxed{72}.") and "<<" not in turn["content"]
    math = load_math_dataset("math500", data_files=str(shared_data / "math500" / "test.jsonl"), limit=1)[0]
    assert sft_completion(math, "math500") == [{"role": "assistant", "content": math["solution"]}]
    custom = {"solution": "7", "answer": "7"}
    assert sft_completion(custom, "custom")[0]["content"] == "The final answer is \\boxed{7}."


def test_sft_two_steps_in_process(tiny_model_path, shared_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sft"
    recipe = tmp_path / "sft.yaml"
    recipe.write_text(yaml.safe_dump({"dataset_mixture": [
        {"name": "gsm8k", "data_files": str(shared_data / "gsm8k" / "train.jsonl"), "limit": 2},
        {"name": "math500", "data_files": str(shared_data / "math500" / "test.jsonl"), "limit": 2},
    ]}))  # fmt: skip
    trainer = train([
        "--config", str(recipe), "--model_name_or_path", tiny_model_path,
        "--per_device_train_batch_size", "2", "--max_steps", "2", "--max_length", "1024",
        "--learning_rate", "0.01", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
        "--use_cpu", "--bf16", "false", "--output_dir", str(out),
    ])  # fmt: skip
    trained = AutoModelForCausalLM.from_pretrained(out)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert any(not torch.equal(p, q) for p, q in zip(trained.parameters(), initial.parameters()))
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|im_end|>"
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in logs if "loss" in entry]
    assert len(losses) == 2 and all(0 < loss < 20 for loss in losses)
    resolved = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert resolved["training_arguments"]["max_steps"] == 2
    assert [entry["name"] for entry in resolved["script_arguments"]["dataset_mixture"]] == ["gsm8k", "math500"]
    # the mixture's completions: GSM8K rationales rewritten to \boxed{}, MATH solutions as they are
    completions = [row["completion"][0]["content"] for row in trainer.train_dataset]
    assert len(completions) == 4 and completions[0].endswith("\\boxed{72}.") and "\\boxed" in completions[2]


def test_sft_rejects_unknown_option():
    with pytest.raises(ValueError, match=r"^unknown option --packin; did you mean --packing\?$"):
        train(["--model_name_or_path", "x", "--use_cpu", "--packin", "true"])
    with pytest.raises(ValueError, match="--max_train_samples must be >= 1, got -1"):
        train(["--model_name_or_path", "x", "--use_cpu", "--max_train_samples", "-1"])
