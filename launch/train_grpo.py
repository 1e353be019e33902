"""GRPO on math with `grpo_ext`, configured by a YAML recipe with command-line overrides.

    accelerate launch --config_file accelerate_configs/single_gpu.yaml launch/train_grpo.py \
        --config launch/recipes/qwen2.5-0.5b-instruct_gsm8k.yaml
    accelerate launch --config_file accelerate_configs/multi_gpu.yaml --num_processes 4 launch/train_grpo.py \
        --config launch/recipes/qwen2.5-0.5b-instruct_gsm8k.yaml --learning_rate 2e-6 --output_dir runs/lr2e-6

Arguments are the fields of three dataclasses, parsed by TRL's `TrlParser` (a recipe given with `--config` sets the
defaults, the command line overrides them; an unknown option is an error): `GRPOScriptArguments` below (data,
rewards, reward models, periodic evaluation), `grpo_ext.GRPOConfig` (every TRL GRPO option plus the DeepSeekMath
ones) and `trl.ModelConfig` (model path, dtype, LoRA).

Writes to `output_dir`: the model and tokenizer, `resolved_config.yaml` (every argument after parsing, by
dataclass) and `metrics.jsonl` (one line per logging step: what `report_to` backends receive).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import TrainerCallback

from grpo_ext.data import DEFAULT_INSTRUCTION
from launch.common import (
    InputError,
    check_data_files,
    check_distributed_launch,
    check_model_path,
    complete_model_card,
    end_launch,
    hub_error,
    parse_command_line,
    run_entry_point,
    split_config_option,
)

RESOLVED_CONFIG_FILE = "resolved_config.yaml"
METRICS_FILE = "metrics.jsonl"


@dataclass
class ProblemDataArguments:
    """Where the problems come from and how they are prompted (shared by `train_grpo.py` and `sft.py`)."""

    dataset_name: str = field(
        default="gsm8k",
        metadata={"help": "`gsm8k`, `math`, `math500`, one of their hub ids, or `custom` (see question_column)."},
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Hub split to train on."})
    dataset_hub_id: str | None = field(
        default=None, metadata={"help": "Override the hub id (another MATH mirror, or the `custom` dataset)."}
    )
    data_files: list[str] | None = field(
        default=None, metadata={"help": "Local JSONL file(s) in the hub rows' shape, instead of the hub."}
    )
    question_column: str = field(default="question", metadata={"help": "Question column of a `custom` dataset."})
    answer_column: str = field(default="answer", metadata={"help": "Gold-answer column of a `custom` dataset."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N problems only."})
    dataset_mixture: list[dict] | None = field(
        default=None,
        metadata={
            "help": "Several sources concatenated, instead of dataset_name (YAML only): a list of mappings with "
            "`name` and optionally `split`, `data_files`, `hub_id`, `limit`, `question_column`, `answer_column`."
        },
    )
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={"help": "Appended to every question."})
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system turn."})

    def __post_init__(self):
        if self.max_train_samples is not None and self.max_train_samples < 1:
            # a negative limit would slice rows off the end silently
            raise InputError(f"--max_train_samples must be >= 1, got {self.max_train_samples}")


@dataclass
class GRPOScriptArguments(ProblemDataArguments):
    """Data, rewards and evaluation options of `launch/train_grpo.py`."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy", "format"],
        metadata={
            "help": "Rule-based rewards, in the order of `reward_weights`: accuracy, format, length, overlong, steps, "
            "or a dotted import path (`my_module.my_reward`). An outcome reward model, when given, comes last."
        },
    )
    reward_func_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments of the reward factories, by reward name, e.g. "
            '`{"overlong": {"max_completion_length": 1024, "cache_length": 256}}` (a JSON string on the command line).'
        },
    )
    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Outcome reward model (sequence classification, 1 label); added after reward_funcs."},
    )
    process_reward_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Process reward model (token classification) for `supervision: process`."},
    )
    math_eval_steps: int = field(
        default=0, metadata={"help": "Greedy accuracy on a held-out subset every N steps (0: off)."}
    )
    math_eval_dataset_name: str = field(default="gsm8k", metadata={"help": "Dataset of the periodic evaluation."})
    math_eval_split: str = field(default="test", metadata={"help": "Hub split of the periodic evaluation."})
    math_eval_data_files: list[str] | None = field(
        default=None, metadata={"help": "Local JSONL file(s) for the periodic evaluation."}
    )
    math_eval_limit: int = field(default=64, metadata={"help": "Problems in the periodic evaluation."})
    math_eval_max_new_tokens: int = field(default=512, metadata={"help": "Completion length in the evaluation."})

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.reward_func_kwargs, str):
            try:
                self.reward_func_kwargs = json.loads(self.reward_func_kwargs)
            except json.JSONDecodeError as err:
                raise InputError(f"--reward_func_kwargs must be a JSON object: {err}") from None
        unknown = set(self.reward_func_kwargs or {}) - set(self.reward_funcs)
        if unknown:
            raise InputError(f"--reward_func_kwargs names rewards not in --reward_funcs: {sorted(unknown)}")
        if self.math_eval_steps < 0:
            raise InputError(f"--math_eval_steps must be >= 0, got {self.math_eval_steps}")
        if self.math_eval_limit < 1:
            raise InputError(f"--math_eval_limit must be >= 1, got {self.math_eval_limit}")


def reward_registry() -> dict[str, Any]:
    """Reward name -> factory; `reward_func_kwargs[name]` are passed to the factory (see docs/rewards.md)."""
    import rewards

    def accuracy(**kwargs):
        # the shared module-level instance unless options are given
        return rewards.AccuracyReward(**kwargs) if kwargs else rewards.accuracy_reward

    def format_(**kwargs):
        return rewards.FormatReward(**kwargs) if kwargs else rewards.format_reward

    return {
        "accuracy": accuracy,
        "format": format_,
        "length": rewards.length_penalty_reward,  # Kimi k1.5 group length penalty
        "overlong": rewards.soft_overlong_punishment,  # DAPO; needs max_completion_len, soft_punish_cache
        "steps": rewards.reasoning_steps_reward,  # open-r1 style step markers; target_steps
    }


def build_reward_funcs(names: list[str], kwargs_by_name: dict | None = None) -> list:
    """Reward callables for `names`: registered names (built with their kwargs) or dotted import paths (used as
    they are, or called with their kwargs when `reward_func_kwargs` names them)."""
    registry = reward_registry()
    kwargs_by_name = kwargs_by_name or {}
    funcs = []
    for name in names:
        kwargs = kwargs_by_name.get(name)
        if name in registry:
            try:
                func = registry[name](**(kwargs or {}))
            except TypeError as err:
                raise InputError(f"reward {name!r}: bad reward_func_kwargs {kwargs}: {err}") from None
        elif "." in name:
            module_path, attribute = name.rsplit(".", 1)
            sys.path.insert(0, os.getcwd())
            try:
                func = getattr(importlib.import_module(module_path), attribute)
            except (ImportError, AttributeError) as err:
                raise InputError(f"reward {name!r}: cannot import it ({err})") from None
            if kwargs is not None:
                func = func(**kwargs)
        else:
            raise InputError(f"Unknown reward {name!r}; expected one of {sorted(registry)} or a dotted import path")
        funcs.append(func)
    return funcs


class MetricsLogCallback(TrainerCallback):
    """Appends every log (loss, rewards, KL, evaluation accuracy, ...) as a JSON line, on the main process."""

    def __init__(self, path: str):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs}, default=str) + "\n")


def write_resolved_config(path: str, argv: list[str], **sections) -> None:
    """Every parsed argument, by dataclass, plus the command line that produced them and the library versions that
    ran them (a run's figures move with those)."""
    import yaml

    from grpo_ext.versions import library_versions

    resolved = {"command_line": argv, "versions": library_versions()}
    for name, value in sections.items():
        resolved[name] = value.to_dict() if hasattr(value, "to_dict") else asdict(value)
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(json.loads(json.dumps(resolved, default=str)), handle, sort_keys=False)


def load_training_problems(script_args):
    """The training problems: `dataset_mixture` when given, else `dataset_name` (hub or `data_files`). Hub data that
    cannot be read (offline, not cached; no network) is an `InputError` naming the option for a local file."""
    from grpo_ext.data import HubUnreachableError, load_math_dataset, load_mixture

    if script_args.dataset_mixture:
        try:
            problems = load_mixture(script_args.dataset_mixture, script_args.instruction, script_args.system_prompt)
        except HubUnreachableError as err:
            raise hub_error(err, "a dataset_mixture entry reads its problems", "that entry's data_files:",
                            f"path/to/{err.split}.jsonl") from err  # fmt: skip
        if script_args.max_train_samples is not None:
            problems = problems.select(range(min(script_args.max_train_samples, len(problems))))
        return problems
    try:
        return load_math_dataset(
            script_args.dataset_name,
            split=script_args.dataset_train_split,
            data_files=script_args.data_files,
            limit=script_args.max_train_samples,
            hub_id=script_args.dataset_hub_id,
            instruction=script_args.instruction,
            system_prompt=script_args.system_prompt,
            question_column=script_args.question_column,
            answer_column=script_args.answer_column,
        )
    except HubUnreachableError as err:
        raise hub_error(err, f"--dataset_name {script_args.dataset_name} reads its problems", "--data_files",
                        f"path/to/{err.split}.jsonl") from err  # fmt: skip


def load_eval_problems(script_args):
    """MathEvalCallback's problems (`math_eval_*`), loaded before any model so that missing data stops the run at
    once."""
    from grpo_ext.data import HubUnreachableError, load_math_dataset

    try:
        return load_math_dataset(
            script_args.math_eval_dataset_name,
            split=script_args.math_eval_split,
            data_files=script_args.math_eval_data_files,
            limit=script_args.math_eval_limit,
            instruction=script_args.instruction,
            system_prompt=script_args.system_prompt,
        )
    except HubUnreachableError as err:
        raise hub_error(err, f"--math_eval_steps evaluates on --math_eval_dataset_name "
                        f"{script_args.math_eval_dataset_name}", "--math_eval_data_files",
                        f"path/to/{err.split}.jsonl (or --math_eval_steps 0)") from err  # fmt: skip


def load_process_reward_model(path: str, step_delimiter: str):
    """A token-classification PRM (as saved by `launch/train_reward_model.py`) and its tokenizer.

    The PRM reads its score at the end of each step, so it must be scored with the step separator it was trained
    with (saved in its config as `step_separator`); a different `step_delimiter` is an error.
    """
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    model = AutoModelForTokenClassification.from_pretrained(path)
    trained_with = getattr(model.config, "step_separator", None)
    if trained_with is not None and trained_with != step_delimiter:
        raise InputError(
            f"the process reward model at {path} was trained with step_separator={trained_with!r}, but "
            f"step_delimiter={step_delimiter!r}: set step_delimiter to {trained_with!r}"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def resolve_recipe(argv: list[str]) -> list[str]:
    """`--config NAME` (or `--config=NAME`) may name a shipped recipe (`launch/recipes/NAME.yaml`) instead of a
    path."""
    argv = split_config_option(list(argv))
    if "--config" in argv:
        i = argv.index("--config") + 1
        if i < len(argv) and not os.path.exists(argv[i]):
            shipped = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes", f"{argv[i]}.yaml")
            if not os.path.exists(shipped):
                raise InputError(f"--config {argv[i]}: no such file, and no shipped recipe {shipped}")
            argv[i] = shipped
    return argv


def set_model_init_kwargs(training_args, model_args) -> None:
    """Pass `trl.ModelConfig`'s loading options to the trainer, which loads the model from its path; explicit
    `model_init_kwargs` in the recipe win."""
    model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = model_init_kwargs


def parse_training_args(parser, argv: list[str] | None):
    """Recipe (`--config`, a path or a shipped recipe name) plus command-line overrides -> (script, training, model)
    arguments, with a model path required, every model path and data file checked (`check_input_paths`) and the
    model loading options passed to the trainer."""
    argv = resolve_recipe(sys.argv[1:] if argv is None else argv)
    script_args, training_args, model_args = parse_command_line(parser, argv)
    if model_args.model_name_or_path is None:
        raise InputError("--model_name_or_path is required (in the recipe or on the command line)")
    check_input_paths(script_args, model_args)
    set_model_init_kwargs(training_args, model_args)
    return script_args, training_args, model_args


def check_input_paths(script_args, model_args) -> None:
    """Every model path and local data file the arguments name exists (or is a hub id), before anything loads."""
    check_model_path(model_args.model_name_or_path)
    for option in ("reward_model_name_or_path", "process_reward_model_name_or_path"):  # GRPO only
        check_model_path(getattr(script_args, option, None), f"--{option}")
    check_data_files(script_args.data_files, "--data_files")
    check_data_files(getattr(script_args, "math_eval_data_files", None), "--math_eval_data_files")
    for i, entry in enumerate(script_args.dataset_mixture or []):
        if isinstance(entry, dict):  # other shapes are refused, with the entry, by grpo_ext.data.load_mixture
            check_data_files(entry.get("data_files"), f"dataset_mixture[{i}].data_files")


def make_parser():
    from trl import ModelConfig, TrlParser

    from grpo_ext import GRPOConfig

    # allow_abbrev=False: a misspelt or truncated option is an error, never a silent prefix match
    return TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig), prog="grpo-ext-train", allow_abbrev=False)


def train(argv: list[str] | None = None):
    """Parse arguments (`argv` or `sys.argv[1:]`), train, save. Returns the trainer."""
    from trl import get_peft_config, get_quantization_config

    from grpo_ext import GRPOTrainer

    script_args, training_args, model_args = parse_training_args(make_parser(), argv)

    train_dataset = load_training_problems(script_args)
    eval_problems = load_eval_problems(script_args) if script_args.math_eval_steps else None

    reward_funcs = build_reward_funcs(script_args.reward_funcs, script_args.reward_func_kwargs)
    if script_args.reward_model_name_or_path:
        reward_funcs.append(script_args.reward_model_name_or_path)  # TRL loads it as a 1-label sequence classifier
    trainer_kwargs = {}
    if script_args.process_reward_model_name_or_path:
        trainer_kwargs["process_reward_model"], trainer_kwargs["process_reward_tokenizer"] = load_process_reward_model(
            script_args.process_reward_model_name_or_path, training_args.step_delimiter
        )
    elif training_args.supervision == "process":
        raise InputError("supervision: process needs --process_reward_model_name_or_path")
    os.makedirs(training_args.output_dir, exist_ok=True)
    metrics_path = os.path.join(training_args.output_dir, METRICS_FILE)
    trainer = GRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
        callbacks=[MetricsLogCallback(metrics_path)],
        **trainer_kwargs,
    )
    check_distributed_launch(trainer.accelerator)
    if script_args.math_eval_steps:
        from grpo_ext.evaluation import MathEvalCallback

        MathEvalCallback(
            trainer,
            eval_problems,
            eval_steps=script_args.math_eval_steps,
            max_new_tokens=script_args.math_eval_max_new_tokens,
        ).attach()

    return run_and_save(trainer, script_args, training_args, model_args, argv)


def run_and_save(trainer, script_args, training_args, model_args, argv: list[str] | None):
    """What every entry point does once its trainer is built (with a `MetricsLogCallback` writing METRICS_FILE):
    start a fresh metrics log unless resuming, write the resolved config, train, save, push, and end the launch
    safely. Returns the trainer."""
    metrics_path = os.path.join(training_args.output_dir, METRICS_FILE)
    if trainer.accelerator.is_main_process:
        if os.path.exists(metrics_path) and not training_args.resume_from_checkpoint:
            os.remove(metrics_path)  # a fresh run starts a fresh log; a resumed one appends
        write_resolved_config(
            os.path.join(training_args.output_dir, RESOLVED_CONFIG_FILE),
            argv,
            script_arguments=script_args,
            training_arguments=training_args,
            model_arguments=model_args,
        )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        complete_model_card(training_args.output_dir, model_args.model_name_or_path)
    trainer.accelerator.print(f"Model, tokenizer and logs saved to {training_args.output_dir}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    end_launch(trainer)
    return trainer


def main(argv: list[str] | None = None) -> None:
    """Console script entry point: bad input ends it with one line (returns None: the wrapper passes the return
    value to sys.exit)."""
    run_entry_point(train, argv, prog="grpo-ext-train")


if __name__ == "__main__":
    main()
