"""The launch entry points name a missing model or data file, refuse a distributed config that did not take effect,
and always exit (launch/common.py)."""

import json
import warnings
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from accelerate.utils import DistributedType
from launch_helpers import launch

from launch import dpo, rft, sft, train_grpo, train_reward_model
from launch.common import InputError, check_data_files, check_model_path, complete_model_card, launch_mismatch

REPO = Path(__file__).resolve().parents[1]

CPU = ["--use_cpu", "true", "--report_to", "none"]


# ---------------------------------------------------------------------------------------------------------- paths


def _online(monkeypatch, hub_has):
    """Online mode, with the hub's answer to `repo_exists` (an exception: the hub cannot be reached)."""

    def repo_exists(repo_id, *args, **kwargs):
        if isinstance(hub_has, Exception):
            raise hub_has
        return hub_has

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "repo_exists", repo_exists)


def test_model_path_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    check_model_path("runs/mine")  # a local directory, relative
    check_model_path(str(tmp_path / "runs" / "mine"))  # absolute
    check_model_path(None)
    # cannot be a hub id: absolute, three parts, ./
    for path in [str(tmp_path / "gone"), "runs/a/b", "./gone"]:
        with pytest.raises(InputError, match=rf"^--model_name_or_path {path}: no such file or directory \("):
            check_model_path(path)
    # hub-shaped, no local directory: offline and not cached is an error naming the local path looked for
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    with pytest.raises(InputError, match=rf"runs/gone: no such file or directory \({tmp_path}/runs/gone\), and no hub "
                       r"model 'runs/gone' in the Hugging Face cache \(offline mode"):
        check_model_path("runs/gone")
    # ... but a model in the cache goes to transformers as before (which loads it from the cache offline)
    snapshot = tmp_path / "hub-cache" / "models--org--cached" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub-cache" / "models--org--cached" / "refs").mkdir()
    (tmp_path / "hub-cache" / "models--org--cached" / "refs" / "main").write_text("abc123")
    check_model_path("org/cached")
    # online: the hub decides; unreachable: transformers decides, as without the check
    _online(monkeypatch, hub_has=True)
    check_model_path("Qwen/Qwen2.5-0.5B-Instruct")
    _online(monkeypatch, hub_has=ConnectionError("no route to host"))
    check_model_path("Qwen/Qwen2.5-0.5B-Instruct")
    _online(monkeypatch, hub_has=False)
    with pytest.raises(InputError, match=r"^--reward_model_name_or_path runs/orm: no such file or directory .*, and no "
                       r"model 'runs/orm' on the Hugging Face hub"):
        check_model_path("runs/orm", "--reward_model_name_or_path")


def test_data_file_rules(tmp_path):
    present = tmp_path / "a.jsonl"
    present.write_text("{}\n")
    check_data_files([str(present)], "--data_files")
    check_data_files(present, "--data_files")
    check_data_files(None, "--data_files")
    with pytest.raises(InputError, match=rf"^--data_files {tmp_path}/b.jsonl: no such file \("):
        check_data_files([str(present), str(tmp_path / "b.jsonl")], "--data_files")
    with pytest.raises(InputError, match=rf"^--x {tmp_path}: is a directory, not a file"):
        check_data_files(str(tmp_path), "--x")


def test_grpo_names_every_missing_path_before_loading(tiny_model_path, shared_data, tmp_path):
    data = str(shared_data / "gsm8k" / "train.jsonl")
    base = ["--model_name_or_path", tiny_model_path, "--data_files", data, "--output_dir", str(tmp_path / "o"), *CPU]
    missing = str(tmp_path / "missing")
    cases = {
        "--model_name_or_path": ["--model_name_or_path", missing],  # the last occurrence wins
        "--reward_model_name_or_path": ["--reward_model_name_or_path", missing],
        "--process_reward_model_name_or_path": ["--process_reward_model_name_or_path", missing],
        "--data_files": ["--data_files", missing],
        "--math_eval_data_files": ["--math_eval_data_files", missing],
    }
    for option, extra in cases.items():
        with pytest.raises(InputError, match=f"^{option} {missing}: no such file"):
            train_grpo.train(base + extra)
    recipe = tmp_path / "mixture.yaml"
    recipe.write_text(yaml.safe_dump({"dataset_mixture": [{"name": "gsm8k", "data_files": data},
                                                          {"name": "math500", "data_files": [missing]}]}))
    with pytest.raises(InputError, match=rf"^dataset_mixture\[1\].data_files {missing}: no such file"):
        train_grpo.train(["--config", str(recipe), *base])


def test_sft_reward_model_and_evaluate_name_a_missing_model(tiny_model_path, shared_data, tmp_path):
    from launch.evaluate import evaluate

    missing = str(tmp_path / "missing")
    with pytest.raises(InputError, match=f"^--model_name_or_path {missing}: no such file or directory"):
        sft.train(["--model_name_or_path", missing, "--output_dir", str(tmp_path / "o"), *CPU])
    with pytest.raises(InputError, match=f"^--data_files {missing}: no such file"):
        sft.train(["--model_name_or_path", tiny_model_path, "--data_files", missing, "--output_dir", str(tmp_path),
                   *CPU])
    with pytest.raises(InputError, match=f"^--model_name_or_path {missing}: no such file or directory"):
        train_reward_model.parse_args(["--model_name_or_path", missing, "--output_dir", str(tmp_path), *CPU])
    with pytest.raises(InputError, match=f"^--data_files {missing}: no such file"):
        train_reward_model.parse_args(["--model_name_or_path", tiny_model_path, "--data_files", missing,
                                       "--output_dir", str(tmp_path), *CPU])
    with pytest.raises(InputError, match=r"^--model_name_or_path runs/gone-model: no such file or directory .*and no "
                       "hub model 'runs/gone-model' in the Hugging Face cache"):
        evaluate(["--model_name_or_path", "runs/gone-model", "--data_files", str(shared_data / "gsm8k" / "test.jsonl"),
                  "--limit", "1", "--output_dir", str(tmp_path / "eval")])


def test_entry_points_print_bad_input_as_one_line(tiny_model_path, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "1+1?"}) + "\n")  # no answer column
    commands = [
        (train_grpo.main, "grpo-ext-train", ["--model_name_or_path", "runs/gone", "--output_dir", str(tmp_path)],
         "--model_name_or_path runs/gone: no such file or directory"),
        (sft.main, "grpo-ext-sft", ["--model_name_or_path", tiny_model_path, "--data_files", str(tmp_path / "x.jsonl"),
                                    "--output_dir", str(tmp_path)], f"--data_files {tmp_path}/x.jsonl: no such file"),
        (train_reward_model.main, "grpo-ext-train-rm", ["--model_name_or_path", "/no/such/rm", "--output_dir",
                                                        str(tmp_path)], "--model_name_or_path /no/such/rm: no such"),
        # a malformed row: grpo_ext.data's error names the file and line
        (train_grpo.main, "grpo-ext-train", ["--model_name_or_path", tiny_model_path, "--data_files", str(bad),
                                             "--output_dir", str(tmp_path)], f"{bad}, line 1: missing column"),
    ]
    for main, prog, argv, message in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, *CPU])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"{prog}: error: {message}"), err[-3:]
        assert not any(line.startswith("Traceback") for line in err)


def _one_error_line(main, argv, capsys) -> str:
    """Run an entry point's `main(argv)`; it must exit with status 2 and print exactly one line, which is returned."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_every_entry_point_names_the_closest_option_to_a_misspelt_one(tiny_model_path, tmp_path, capsys):
    """Before parsing, so that no dataclass check (transformers' "doesn't support bf16/gpu" without --use_cpu) fails
    first with an unrelated message; in the recipe as on the command line."""
    entry_points = [(train_grpo.main, "grpo-ext-train"), (sft.main, "grpo-ext-sft"), (rft.main, "grpo-ext-rft"),
                    (dpo.main, "grpo-ext-dpo"), (train_reward_model.main, "grpo-ext-train-rm")]
    for main, prog in entry_points:
        line = _one_error_line(main, ["--model_name_or_path", tiny_model_path, "--learning_rat", "1e-5"], capsys)
        assert line == f"{prog}: error: unknown option --learning_rat; did you mean --learning_rate?"
        line = _one_error_line(main, ["--learning-rat=1e-5"], capsys)
        assert line == f"{prog}: error: unknown option --learning-rat; did you mean --learning-rate?"
        line = _one_error_line(main, ["--zzzz", "1"], capsys)
        assert line == f"{prog}: error: unknown option --zzzz"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": tiny_model_path, "num_generaitons": 4}))
    line = _one_error_line(train_grpo.main, ["--config", str(recipe)], capsys)
    assert line == (f"grpo-ext-train: error: --config {recipe}: unknown option num_generaitons; did you mean "
                    "num_generations?")
    line = _one_error_line(train_grpo.main, [f"--config={recipe}"], capsys)  # the = form reads the same recipe
    assert line.endswith("unknown option num_generaitons; did you mean num_generations?")
    recipe.write_text("- a list\n")
    line = _one_error_line(sft.main, ["--config", str(recipe)], capsys)
    assert line == f"grpo-ext-sft: error: --config {recipe}: expected a YAML mapping of option: value, got list"


def test_bad_values_and_refused_settings_are_one_line(tiny_model_path, tmp_path, capsys):
    base = ["--model_name_or_path", tiny_model_path, "--output_dir", str(tmp_path), *CPU]
    # argparse's own error, without its usage screen (it lists every one of GRPOConfig's 500 options)
    line = _one_error_line(train_grpo.main, [*base, "--learning_rate", "abc"], capsys)
    assert line == "grpo-ext-train: error: argument --learning_rate/--learning-rate: invalid float value: 'abc'"
    # a check of grpo_ext's config (ConfigurationError) and one of transformers' (a ValueError) while parsing
    line = _one_error_line(train_grpo.main, [*base, "--kl_in", "reward", "--beta", "0"], capsys)
    assert line.startswith("grpo-ext-train: error: GRPOConfig: kl_in='reward' needs a KL coefficient, but beta=0.0")
    line = _one_error_line(sft.main, [*base, "--bf16", "true", "--fp16", "true"], capsys)
    assert line.startswith("grpo-ext-sft: error: ") and "fp16" in line and "bf16" in line


def test_training_names_the_option_for_hub_data_offline(tiny_model_path, shared_data, tmp_path, monkeypatch, capsys):
    """The default recipe reads GSM8K from the hub: offline, with nothing in the datasets cache, the run stops at once
    with one line naming --data_files (and --math_eval_data_files for the in-training evaluation)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    base = ["--model_name_or_path", tiny_model_path, "--output_dir", str(tmp_path / "o"), *CPU]
    line = _one_error_line(train_grpo.main, [*base, "--dataset_name", "gsm8k"], capsys)
    assert line.startswith("grpo-ext-train: error: --dataset_name gsm8k reads its problems from openai/gsm8k's "
                           "train split on the hub, which offline mode cannot reach") and line.endswith(
                           "pass --data_files path/to/train.jsonl")  # fmt: skip
    line = _one_error_line(sft.main, [*base, "--dataset_name", "gsm8k"], capsys)
    assert line.startswith("grpo-ext-sft: error: --dataset_name gsm8k reads its problems")
    local = ["--data_files", str(shared_data / "gsm8k" / "train.jsonl"), "--max_train_samples", "4"]
    line = _one_error_line(train_grpo.main, [*base, *local, "--math_eval_steps", "1", "--math_eval_dataset_name",
                                             "math500"], capsys)  # fmt: skip
    assert "--math_eval_steps evaluates on --math_eval_dataset_name math500" in line
    assert line.endswith("pass --math_eval_data_files path/to/test.jsonl (or --math_eval_steps 0)")


def test_a_refusal_at_construction_is_a_configuration_error():
    """What the entry points print as one line is grpo_ext's ConfigurationError, still a ValueError for callers."""
    from grpo_ext import GRPOConfig
    from grpo_ext.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="kl_in='reward' needs a KL coefficient"):
        GRPOConfig(output_dir="unused", kl_in="reward", beta=0.0, use_cpu=True, report_to="none")
    assert issubclass(ConfigurationError, ValueError)


def test_bad_input_through_accelerate_launch_is_one_line(tiny_model_path, shared_data, tmp_path):
    """As users run it. `accelerate launch -q` drops accelerate's own traceback; torchrun (several processes) then
    prints its failure summary, whose cause is our line (the error file every process writes). Everything the
    processes print is the one line, once: no traceback, no library deprecation notice."""
    data = str(shared_data / "gsm8k" / "test.jsonl")
    two = launch(["-q", "--config_file", str(REPO / "accelerate_configs" / "multi_gpu.yaml"), "--num_processes", "2"],
                 REPO / "launch" / "train_grpo.py", "--model_name_or_path", tiny_model_path, "--data_files", data,
                 "--learning_rat", "1e-5", "--output_dir", str(tmp_path / "a"), *CPU, check=False, timeout=600)
    line = "grpo-ext-train: error: unknown option --learning_rat; did you mean --learning_rate?"
    output = two.stdout + two.stderr
    assert two.returncode != 0
    assert output.splitlines().count(line) == 1, output
    assert "Traceback" not in output, output
    root_cause = output.split("Root Cause (first observed failure):")[1]
    assert f"traceback : {line}" in root_cause, output
    # one process (accelerate's simple launcher): the line is the last thing printed
    missing = tmp_path / "missing.jsonl"
    one = launch(["-q", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend",
                  "no"], REPO / "launch" / "train_grpo.py", "--model_name_or_path", tiny_model_path, "--data_files",
                 str(missing), "--output_dir", str(tmp_path / "b"), *CPU, check=False, timeout=600)
    assert one.returncode != 0
    assert one.stderr.strip().splitlines() == [f"grpo-ext-train: error: --data_files {missing}: no such file "
                                               f"({missing})"], one.stderr
    assert "FutureWarning" not in one.stdout + one.stderr


def test_library_deprecations_are_silenced_and_nothing_else():
    from launch.common import silence_library_deprecations

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_library_deprecations()
        warnings.warn("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("`torch.distributed.reduce_op` is deprecated, please use ReduceOp", FutureWarning)
        warnings.warn("`learning_rate` is deprecated", FutureWarning)
        warnings.warn("`gradient_checkpointing` is deprecated", UserWarning)
    shown = [str(w.message) for w in caught]
    assert shown == ["`learning_rate` is deprecated", "`gradient_checkpointing` is deprecated"]


def test_model_card_names_a_local_base_model(tmp_path):
    """TRL's own card for a model loaded from a directory (base_model=None, no hub id)."""
    from trl.trainer.utils import generate_model_card

    card = generate_model_card(base_model=None, model_name="out", hub_model_id=None, dataset_name=None, tags=[],
                               wandb_url=None, trackio_url=None, comet_url=None, trainer_name="GRPO",
                               trainer_citation=None)
    card.save(tmp_path / "README.md")
    assert "[None](https://huggingface.co/None)" in (tmp_path / "README.md").read_text()
    assert complete_model_card(str(tmp_path), "/models/warm-start")
    text = (tmp_path / "README.md").read_text()
    assert "fine-tuned version of the local model `/models/warm-start`" in text
    assert f'model="{tmp_path}"' in text and "None" not in text.split("## Training procedure")[0]
    assert not complete_model_card(str(tmp_path), "/models/warm-start")  # nothing left to complete


# ---------------------------------------------------------------------------------------------------------- launch


def test_launch_mismatch_rules():
    ddp_cpu = (DistributedType.MULTI_CPU, 2)
    # what accelerate builds when the config took effect
    assert launch_mismatch({"WORLD_SIZE": "2"}, *ddp_cpu) is None
    assert launch_mismatch({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "false"}, *ddp_cpu) is None
    assert launch_mismatch({"WORLD_SIZE": "8", "ACCELERATE_USE_FSDP": "true"}, DistributedType.FSDP, 8) is None
    deepspeed_env = {"WORLD_SIZE": "8", "ACCELERATE_USE_DEEPSPEED": "true"}
    assert launch_mismatch(deepspeed_env, DistributedType.DEEPSPEED, 8) is None
    assert launch_mismatch({}, DistributedType.NO, 1) is None  # python script.py
    # torchrun started 2 processes, but without a GPU and without use_cpu each builds a single-process state
    alone = launch_mismatch({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, DistributedType.NO, 1)
    assert alone.startswith("the launcher started 2 processes (WORLD_SIZE=2) but this one runs as 1 of 1 "
                            "(distributed type NO)") and "--use_cpu true" in alone
    # fsdp2.yaml / deepspeed configs with use_cpu: accelerate silently builds CPU data parallel
    fsdp = launch_mismatch({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"}, *ddp_cpu)
    assert fsdp.startswith("the accelerate config asks for FSDP (ACCELERATE_USE_FSDP=true) but the Accelerator "
                           "runs MULTI_CPU")
    deepspeed = launch_mismatch({"WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "True"}, *ddp_cpu)
    assert deepspeed.startswith("the accelerate config asks for DEEPSPEED (ACCELERATE_USE_DEEPSPEED=true)")


def test_every_entry_point_stops_when_the_launch_config_did_not_take_effect(tiny_model_path, shared_data,
                                                                             tmp_path, monkeypatch):
    """What `accelerate launch` sets for fsdp2.yaml (ACCELERATE_USE_FSDP) and for a 2-process launch (WORLD_SIZE,
    LOCAL_RANK), with a trainer that cannot honour it on this CPU: each entry point stops before training.

    (The real launch, `accelerate launch --config_file accelerate_configs/fsdp2.yaml --num_processes 2
    launch/train_grpo.py ... --use_cpu true`, prints the FSDP line below once per rank and exits non-zero: see
    docs/launch.md; it takes a minute on 2 cores, too long for every CI run.)"""
    rm_data = tmp_path / "orm.jsonl"
    rm_data.write_text("".join(json.dumps({"prompt": "1+1?", "completion": "2", "label": i % 2}) + "\n"
                               for i in range(4)))
    out = ["--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--save_strategy", "no", "--bf16", "false",
           "--report_to", "none"]
    problems = ["--data_files", str(shared_data / "gsm8k" / "train.jsonl"), "--max_train_samples", "4"]
    grpo = ["--model_name_or_path", tiny_model_path, *problems, "--per_device_train_batch_size", "4",
            "--num_generations", "4", "--max_completion_length", "8", *out]
    runs = {
        "train_grpo": lambda cpu: train_grpo.train([*grpo, *cpu]),
        "sft": lambda cpu: sft.train(["--model_name_or_path", tiny_model_path, *problems, *out, *cpu]),
        "train_reward_model": lambda cpu: train_reward_model.train(*train_reward_model.parse_args(
            ["--model_name_or_path", tiny_model_path, "--data_files", str(rm_data), *out, *cpu])),
    }
    for name, run in runs.items():
        with monkeypatch.context() as env:
            env.setenv("ACCELERATE_USE_FSDP", "true")
            with pytest.raises(InputError, match=r"^the accelerate config asks for FSDP \(ACCELERATE_USE_FSDP=true\) "
                               r"but the Accelerator runs NO: accelerate uses FSDP only on GPUs"):
                run(["--use_cpu", "true"])
        assert not (tmp_path / "out" / "model.safetensors").exists(), name
    # 2 processes asked for, but a single-process state built (as each rank of a launch without use_cpu on a machine
    # without GPUs builds; without LOCAL_RANK here, so that this process does not wait for a second rank)
    with monkeypatch.context() as env:
        env.setenv("WORLD_SIZE", "2")
        with pytest.raises(InputError, match=r"^the launcher started 2 processes \(WORLD_SIZE=2\) but this one runs as "
                           r"1 of 1 \(distributed type NO\)"):
            runs["train_grpo"]([])
        # TRL's own check fails first with these sizes (2 per device x 1 process < 4 generations): the launch is named
        with pytest.raises(InputError, match=r"^the launcher started 2 processes .* \(what failed: "
                           r"generation_batch_size \(2\) must be divisible by num_generations \(4\)"):
            runs["train_grpo"](["--per_device_train_batch_size", "2"])
