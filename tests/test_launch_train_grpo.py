import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from launch.common import InputError
from launch.train_grpo import build_reward_funcs, train

sys.path.insert(0, str(Path(__file__).parent))
from launch_helpers import launch_two_cpu_processes  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_two_process_accelerate_run_writes_model_tokenizer_config_and_metrics(tiny_model_path, shared_data, tmp_path):
    """`accelerate launch --config_file accelerate_configs/multi_gpu.yaml --num_processes 2` on CPU (torchrun +
    gloo), a recipe plus command-line overrides, 2 steps.

    The config's MULTI_GPU is what makes accelerate start several processes (`--cpu` starts one: several CPU
    processes need mpirun); with `use_cpu` they use gloo. The run itself shows there are two: the generation batch
    (2 per device x processes) must be divisible by num_generations=4. This launch hung at exit in about 16 of 43
    runs while the DDP reducer outlived the process group (`launch.common.end_launch`; repeated by
    `python tests/launch_helpers.py --repeat 10`).
    """
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": tiny_model_path,
                "dataset_name": "gsm8k",
                "data_files": [str(shared_data / "gsm8k" / "train.jsonl")],
                "max_train_samples": 8,
                "reward_funcs": ["accuracy", "format", "launch_helpers.distinct_characters_reward"],
                "reward_weights": [1.0, 0.5, 1.0],
                "num_generations": 4,
                "per_device_train_batch_size": 2,
                "max_completion_length": 8,
                "learning_rate": 1.0e-6,
                "beta": 0.04,
                "max_steps": 50,
                "logging_steps": 1,
                "save_strategy": "no",
                "report_to": "none",
                "use_cpu": True,
                "bf16": False,
                "math_eval_steps": 2,
                "math_eval_data_files": [str(shared_data / "gsm8k" / "test.jsonl")],
                "math_eval_limit": 2,
                "math_eval_max_new_tokens": 4,
            }
        )
    )
    out = tmp_path / "run"
    launch_two_cpu_processes(
        REPO_ROOT / "launch" / "train_grpo.py",
        "--config", str(recipe), "--max_steps", "2", "--learning_rate", "0.01", "--output_dir", str(out),
        cwd=REPO_ROOT, timeout=240, config_file=REPO_ROOT / "accelerate_configs" / "multi_gpu.yaml",
    )  # fmt: skip

    from transformers import AutoModelForCausalLM, AutoTokenizer

    trained = AutoModelForCausalLM.from_pretrained(out)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert (
        AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(tiny_model_path).chat_template
    )
    changed = [
        name
        for (name, p), (_, q) in zip(trained.named_parameters(), initial.named_parameters())
        if not torch.equal(p, q)
    ]
    assert changed, "two GRPO steps at lr 0.01 with a varying reward must move the weights"

    resolved = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert resolved["training_arguments"]["max_steps"] == 2  # command line beats the recipe
    assert resolved["training_arguments"]["learning_rate"] == 0.01
    assert resolved["training_arguments"]["beta"] == 0.04  # from the recipe
    assert resolved["training_arguments"]["kl_estimator"] == "k3"  # grpo_ext field, default
    assert resolved["script_arguments"]["max_train_samples"] == 8
    assert resolved["model_arguments"]["model_name_or_path"] == tiny_model_path
    import trl

    assert resolved["versions"]["trl"] == trl.__version__ and resolved["versions"]["torch"] == torch.__version__

    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [entry for entry in logs if "loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2]
    assert all("rewards/accuracy_reward/mean" in e and "rewards/distinct_characters_reward/mean" in e for e in steps)
    evals = [entry for entry in logs if "math_eval/accuracy" in entry]
    assert [(e["step"], e["math_eval/count"]) for e in evals] == [(2, 2.0)]  # 1 problem per process, gathered
    assert "rewards/accuracy_reward/mean" in evals[0]  # in the same row as the step's training metrics


def test_unknown_options_are_errors(tmp_path):
    with pytest.raises(InputError, match=r"^unknown option --kl_estimater; did you mean --kl_estimator\?$"):
        train(["--model_name_or_path", "x", "--kl_estimater", "k1", "--use_cpu"])
    with pytest.raises(InputError, match=r"^unknown option --learning_rat; did you mean --learning_rate\?$"):
        train(["--model_name_or_path", "x", "--learning_rat", "1e-6", "--use_cpu"])  # no silent prefix matching
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: x\nuse_cpu: true\nrewards_funcs: [accuracy]\n")
    with pytest.raises(InputError, match=r"r.yaml: unknown option rewards_funcs; did you mean reward_funcs\?$"):
        train(["--config", str(recipe)])
    with pytest.raises(InputError, match=r"^argument --kl_estimator/--kl-estimator: invalid choice: 'k9'"):
        train(["--model_name_or_path", "x", "--kl_estimator", "k9", "--use_cpu"])
    with pytest.raises(ValueError, match="reward_func_kwargs names rewards not in --reward_funcs"):
        train(["--model_name_or_path", "x", "--use_cpu", "--reward_func_kwargs", '{"overlong": {}}'])
    for option in ("--max_train_samples", "--math_eval_limit"):
        with pytest.raises(ValueError, match=f"{option} must be >= 1, got -1"):
            train(["--model_name_or_path", "x", "--use_cpu", option, "-1"])


def test_build_reward_funcs():
    import rewards

    accuracy, overlong, steps = build_reward_funcs(
        ["accuracy", "overlong", "steps"],
        {"overlong": {"max_completion_len": 10, "soft_punish_cache": 4}, "steps": {"target_steps": 2}},
    )
    assert accuracy is rewards.accuracy_reward
    # DAPO: 0 up to L_max - L_cache = 6 tokens, then linear down to -1 at 10 tokens, -1 beyond
    assert overlong(["a"] * 4, completion_ids=[[0] * 6, [0] * 8, [0] * 10, [0] * 11]) == [0.0, -0.5, -1.0, -1.0]
    assert steps(["Step 1: a\nStep 2: b", "just an answer"]) == [1.0, 0.0]
    (custom,) = build_reward_funcs(["launch_helpers.distinct_characters_reward"])
    assert custom(["aab"]) == [0.2]
    with pytest.raises(ValueError, match="Unknown reward 'acuracy'"):
        build_reward_funcs(["acuracy"])
    with pytest.raises(ValueError, match="cannot import"):
        build_reward_funcs(["no_such_module.reward"])
    with pytest.raises(ValueError, match="bad reward_func_kwargs"):
        build_reward_funcs(["overlong"], {"overlong": {"max_len": 3}})


def test_outcome_and_process_reward_models_in_process(tiny_model_path, shared_data, tmp_path):
    from launch_helpers import save_tiny_reward_model

    orm = save_tiny_reward_model(tmp_path / "orm", "orm")
    prm = save_tiny_reward_model(tmp_path / "prm", "prm")
    out = tmp_path / "prm-run"
    common = [
        "--model_name_or_path", tiny_model_path, "--data_files", str(shared_data / "gsm8k" / "train.jsonl"),
        "--max_train_samples", "4", "--per_device_train_batch_size", "4", "--num_generations", "4",
        "--max_completion_length", "8", "--max_steps", "1", "--use_cpu", "--bf16", "false", "--report_to", "none",
        "--save_strategy", "no", "--logging_steps", "1", "--output_dir", str(out),
        "--reward_funcs", "accuracy", "--reward_model_name_or_path", orm, "--reward_weights", "1.0", "0.5",
        "--supervision", "process", "--process_reward_model_name_or_path", prm,
    ]  # fmt: skip
    trainer = train(common)
    assert trainer.process_reward_model is not None
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    reward_keys = {key for entry in logs for key in entry if key.startswith("rewards/") and key.endswith("/mean")}
    assert reward_keys >= {"rewards/accuracy_reward/mean"} and len(reward_keys) == 2  # accuracy + the ORM
    with pytest.raises(ValueError, match=r"trained with step_separator='\\n\\n', but step_delimiter='\\n'"):
        train(common + ["--step_delimiter", "\n"])
    with pytest.raises(ValueError, match="supervision: process needs --process_reward_model_name_or_path"):
        train(common[: common.index("--process_reward_model_name_or_path")])


def test_lora_run_saves_an_adapter_that_evaluate_loads(tiny_model_path, shared_data, tmp_path):
    from launch.evaluate import evaluate

    out = tmp_path / "lora"
    train([
        "--model_name_or_path", tiny_model_path, "--data_files", str(shared_data / "gsm8k" / "train.jsonl"),
        "--max_train_samples", "4", "--per_device_train_batch_size", "4", "--num_generations", "4",
        "--max_completion_length", "8", "--max_steps", "1", "--use_cpu", "--bf16", "false", "--report_to", "none",
        "--save_strategy", "no", "--output_dir", str(out),
        "--use_peft", "--lora_r", "4", "--lora_target_modules", "q_proj", "v_proj",
    ])  # fmt: skip
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    assert not (out / "model.safetensors").exists()  # only the adapter is saved
    summary = evaluate([
        "--model_name_or_path", str(out), "--data_files", str(shared_data / "gsm8k" / "test.jsonl"), "--limit", "2",
        "--max_new_tokens", "4", "--output_dir", str(tmp_path / "lora-eval"),
    ])  # fmt: skip
    assert summary["overall"]["count"] == 2


def test_iterative_rl_refreshes_the_outcome_reward_model(tiny_model_path, shared_data, tmp_path):
    """Iterative RL through the entry point: the ORM is retrained (and the reference reset) at every step."""
    from launch_helpers import save_tiny_reward_model

    orm = save_tiny_reward_model(tmp_path / "orm", "orm")
    out = tmp_path / "iterative"
    trainer = train([
        "--model_name_or_path", tiny_model_path, "--data_files", str(shared_data / "gsm8k" / "train.jsonl"),
        "--max_train_samples", "4", "--per_device_train_batch_size", "4", "--num_generations", "4",
        "--max_completion_length", "8", "--max_steps", "2", "--use_cpu", "--bf16", "false", "--report_to", "none",
        "--save_strategy", "no", "--logging_steps", "1", "--output_dir", str(out), "--beta", "0.04",
        "--reward_funcs", "accuracy", "--reward_model_name_or_path", orm, "--reward_weights", "1.0", "0.5",
        "--reward_model_refresh_steps", "1", "--reward_model_batch_size", "4",
    ])  # fmt: skip
    assert trainer.refresher is not None
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    refreshes = [entry for entry in logs if "rm/iteration" in entry]
    # 4 completions per step become ORM rows; the buffer keeps every iteration's rows
    assert [(e["rm/iteration"], e["rm/num_new_rows"], e["rm/buffer_size"]) for e in refreshes] == [(1, 4, 4), (2, 4, 8)]
    assert all(e["rm/reference_reset"] == 1.0 for e in refreshes)
