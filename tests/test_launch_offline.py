"""launch/rft.py and launch/dpo.py on a tiny model offline: sampling, the shared samples file, a couple of steps."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from launch import dpo, rft

TINY = ["--dtype", "float32", "--use_cpu", "--bf16", "false", "--gradient_checkpointing", "false",
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1", "--max_steps", "2",
        "--max_length", "256", "--learning_rate", "0.01", "--logging_steps", "1", "--save_strategy", "no",
        "--report_to", "none"]  # fmt: skip


def recipe_args(name, tiny_model_path, shared_data, out, samples_file):
    """The shipped recipe, shrunk to the tiny model and 3 GSM8K problems."""
    return ["--config", name, "--model_name_or_path", tiny_model_path,
            "--data_files", str(shared_data / "gsm8k" / "train.jsonl"), "--max_train_samples", "3",
            "--num_samples", "4", "--sampling_max_new_tokens", "4", "--samples_file", str(samples_file),
            "--output_dir", str(out), *TINY]  # fmt: skip


def changed(out, tiny_model_path):
    from transformers import AutoModelForCausalLM

    trained = AutoModelForCausalLM.from_pretrained(out)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    return any(not torch.equal(p, q) for p, q in zip(trained.parameters(), initial.parameters()))


def test_rft_and_dpo_recipes_on_shared_samples(tiny_model_path, shared_data, tmp_path):
    samples_file = tmp_path / "samples.jsonl"
    # 1. a random tiny model: the samples are written, none is correct, and RFT says so
    with pytest.raises(ValueError, match="no sample of the 12 in .*samples.jsonl is correct"):
        rft.train(recipe_args("rft_qwen2.5-0.5b-instruct_gsm8k", tiny_model_path, shared_data, tmp_path / "r0",
                              samples_file))  # fmt: skip
    rows = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert [(row["idx"], row["answer"]) for row in rows] == [(0, "72"), (1, "10"), (2, "5")]
    assert all(len(row["samples"]) == 4 and all(isinstance(s, str) for s in row["samples"]) for row in rows)

    # 2. hand-made samples (as if from a better SFT model): the file is read back instead of sampling again
    rows[0]["samples"] = ["so \\boxed{72}", "\\boxed{70}", "It is 72.", "\\boxed{71}"]  # 2 correct, 2 incorrect
    rows[1]["samples"] = ["\\boxed{10}", "\\boxed{12}", "\\boxed{11}", "\\boxed{12}"]  # 1 correct, 2 distinct incorrect
    samples_file.write_text("".join(json.dumps(row) + "\n" for row in rows))  # problem 2: nothing correct

    out = tmp_path / "rft"
    trainer = rft.train(recipe_args("rft_qwen2.5-0.5b-instruct_gsm8k", tiny_model_path, shared_data, out,
                                    samples_file))  # fmt: skip
    completions = [row["completion"][0]["content"] for row in trainer.train_dataset]
    assert completions == ["so \\boxed{72}", "It is 72.", "\\boxed{10}"]
    assert changed(out, tiny_model_path) and trainer.state.global_step == 2
    assert len([e for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in e]) == 2

    out = tmp_path / "dpo"
    trainer = dpo.train(recipe_args("dpo_qwen2.5-0.5b-instruct_gsm8k", tiny_model_path, shared_data, out,
                                    samples_file) + ["--max_pairs_per_prompt", "3"])  # fmt: skip
    # problem 0: 3 of its 2 correct x 2 incorrect pairs, in (correct, incorrect) order; problem 1: 1 x 2
    pairs = [(row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in trainer.train_dataset]
    all_pairs = [(c, r) for c in ("so \\boxed{72}", "It is 72.") for r in ("\\boxed{70}", "\\boxed{71}")]
    assert len(pairs) == 5 and len(set(pairs[:3])) == 3 and pairs[:3] == [p for p in all_pairs if p in pairs[:3]]
    assert pairs[3:] == [("\\boxed{10}", "\\boxed{12}"), ("\\boxed{10}", "\\boxed{11}")]
    assert changed(out, tiny_model_path) and trainer.state.global_step == 2
    resolved = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert resolved["script_arguments"]["max_pairs_per_prompt"] == 3


def test_samples_file_of_other_problems_is_refused(tiny_model_path, shared_data, tmp_path):
    samples_file = tmp_path / "samples.jsonl"
    samples_file.write_text(json.dumps({"idx": 0, "answer": "71", "samples": ["a"] * 4}) + "\n")
    with pytest.raises(ValueError, match=r"samples.jsonl:1: row is for problem idx=0 answer='71'.*answer='72'"):
        dpo.train(recipe_args("dpo_qwen2.5-0.5b-instruct_gsm8k", tiny_model_path, shared_data, tmp_path / "d",
                              samples_file))  # fmt: skip
    samples_file.write_text(json.dumps({"idx": 0, "answer": "72", "samples": ["a"] * 3}) + "\n")
    with pytest.raises(ValueError, match=r"samples.jsonl:1: `samples` must be a list of 4 strings"):
        rft.train(recipe_args("rft_qwen2.5-0.5b-instruct_gsm8k", tiny_model_path, shared_data, tmp_path / "r",
                              samples_file))  # fmt: skip
    samples_file.write_text('{"idx": 0, "answer": "72", "samples": ["a", "b", "c", "d"]}\n{"idx": 1,\n')
    with pytest.raises(ValueError, match=r"samples.jsonl:2: not JSON"):
        rft.train(recipe_args("rft_qwen2.5-0.5b-instruct_gsm8k", tiny_model_path, shared_data, tmp_path / "r",
                              samples_file))  # fmt: skip
    with pytest.raises(ValueError, match="--num_samples must be >= 1, got 0"):
        rft.train(["--model_name_or_path", "x", "--use_cpu", "--num_samples", "0"])


def test_two_processes_share_the_sampling(tiny_model_path, shared_data, tmp_path):
    """`accelerate launch` on 2 CPU processes with --sample_only: process 0 samples problems 0-1 with seed 42, process
    1 problem 2 with seed 43, and the file holds them in problem order, exactly as one process samples those shares."""
    from launch_helpers import launch_two_cpu_processes
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_ext.data import load_math_dataset
    from grpo_ext.paradigm import sample_completions

    samples_file = tmp_path / "samples.jsonl"
    args = recipe_args("rft_qwen2.5-0.5b-instruct_gsm8k", tiny_model_path, shared_data, tmp_path / "r", samples_file)
    launch_two_cpu_processes(Path(rft.__file__), *args, "--sample_only", "true")
    rows = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert not (tmp_path / "r" / "model.safetensors").exists()  # sampled, not trained

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    prompts = load_math_dataset("gsm8k", data_files=str(shared_data / "gsm8k" / "train.jsonl"), limit=3)["prompt"]
    recipe = dict(max_new_tokens=4, temperature=0.7, batch_size=16)  # the recipe's sampling settings
    expected = sample_completions(model, tokenizer, prompts[:2], 4, seed=42, **recipe)
    expected += sample_completions(model, tokenizer, prompts[2:], 4, seed=43, **recipe)
    assert [row["samples"] for row in rows] == expected
