"""Every shipped recipe parses into the entry point's dataclasses with exactly the values it states."""

import json
from pathlib import Path

import pytest
import yaml

from launch import dpo, rft, sft, train_grpo
from launch.common import InputError

RECIPES = sorted((Path(__file__).resolve().parent.parent / "launch" / "recipes").glob("*.yaml"))
NON_GRPO_PARSERS = {"sft_": sft.make_parser, "rft_": rft.make_parser, "dpo_": dpo.make_parser}  # by name prefix


def parser_for(recipe: Path):
    prefix = recipe.name[:4]
    return NON_GRPO_PARSERS[prefix]() if prefix in NON_GRPO_PARSERS else train_grpo.make_parser()


def test_recipes_present():
    names = {r.stem for r in RECIPES}
    assert {
        "qwen2.5-0.5b-instruct_gsm8k",
        "qwen2.5-1.5b-instruct_gsm8k",
        "qwen2.5-math-1.5b_math",
        "deepseekmath_grpo",
        "process_supervision_prm",
        "iterative_rl",
        "sft_qwen2.5-math-1.5b_math",
        "rft_qwen2.5-0.5b-instruct_gsm8k",
        "dpo_qwen2.5-0.5b-instruct_gsm8k",
    } <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.stem)
def test_recipe_parses_with_its_values(recipe):
    values = yaml.safe_load(recipe.read_text())
    header = recipe.read_text().split("\n\n")[0]
    assert "# Hardware:" in header and "# Runtime:" in header, f"{recipe.name} must state hardware and runtime"
    # --use_cpu only so that bf16: true passes TrainingArguments' device check on this CPU-only machine
    parsed = parser_for(recipe).parse_args_and_config(["--config", str(recipe), "--use_cpu"])
    merged = {}
    for dataclass_instance in parsed:
        merged.update(vars(dataclass_instance))
    for key, value in values.items():
        got = merged[key]
        got = [str(v) for v in got] if key == "report_to" else got
        got = getattr(got, "value", got)  # enums (lr_scheduler_type, save_strategy)
        assert got == value, f"{recipe.name}: {key} parsed as {got!r}, recipe says {value!r}"
    if recipe.name[:4] not in NON_GRPO_PARSERS:
        expected = len(values["reward_funcs"]) + bool(values.get("reward_model_name_or_path"))
        assert len(values["reward_weights"]) == expected, f"{recipe.name}: one weight per reward"


def test_deepseekmath_settings():
    values = yaml.safe_load((RECIPES[0].parent / "deepseekmath_grpo.yaml").read_text())
    assert values["beta"] == 0.04 and values["kl_estimator"] == "k3" and values["kl_in"] == "loss"
    assert values["learning_rate"] == 1e-6 and 8 <= values["num_generations"] <= 64
    assert values["max_completion_length"] == 1024 and values["num_iterations"] == 1
    # the paper's objective: per-sequence token mean and the plain k3 (TRL defaults to dapo and V3.2's rho * k3)
    assert values["loss_type"] == "grpo" and values["use_bias_correction_kl"] is False


def test_default_recipe_trains_by_name_with_tiny_overrides(tiny_model_path, shared_data, tmp_path):
    """The README's command with the default recipe, shrunk to the tiny model for one CPU step."""
    out = tmp_path / "default"
    train_grpo.train([
        "--config", "qwen2.5-0.5b-instruct_gsm8k",  # a shipped recipe, by name
        "--model_name_or_path", tiny_model_path, "--dtype", "float32",
        "--data_files", str(shared_data / "gsm8k" / "train.jsonl"), "--max_train_samples", "4",
        "--math_eval_data_files", str(shared_data / "gsm8k" / "test.jsonl"), "--math_eval_limit", "2",
        "--math_eval_steps", "1", "--math_eval_max_new_tokens", "4",
        "--per_device_train_batch_size", "4", "--num_generations", "4", "--gradient_accumulation_steps", "1",
        "--max_completion_length", "8", "--max_steps", "1", "--use_cpu", "--bf16", "false",
        "--save_strategy", "no", "--logging_steps", "1", "--output_dir", str(out),  # report_to: tensorboard stays
    ])  # fmt: skip
    resolved = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert resolved["training_arguments"]["beta"] == 0.04 and resolved["training_arguments"]["loss_type"] == "grpo"
    assert resolved["script_arguments"]["reward_funcs"] == ["accuracy", "format"]
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("kl" in entry and "math_eval/accuracy" in entry for entry in logs)
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert list(out.rglob("events.out.tfevents.*")), "report_to: tensorboard wrote no event file"


def test_unknown_recipe_name():
    with pytest.raises(InputError, match="^--config no-such-recipe: no such file, and no shipped recipe"):
        train_grpo.train(["--config", "no-such-recipe"])
