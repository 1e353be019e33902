"""A thin SFT warm start with TRL's SFTTrainer, for recipes that start RL from a base model.

    accelerate launch --config_file accelerate_configs/single_gpu.yaml launch/sft.py \
        --model_name_or_path Qwen/Qwen2.5-Math-1.5B --dataset_name math --output_dir runs/math-1.5b-sft \
        --num_train_epochs 1 --learning_rate 1e-5

Each problem becomes a prompt-completion pair: the prompt is the same chat prompt that GRPO training and
evaluation use (`grpo_ext.data.make_prompt`), the completion is the reference solution ending in `\\boxed{answer}`
(GSM8K rationales are rewritten: `<<calc>>` annotations dropped, `#### x` replaced by `\\boxed{x}`). TRL computes
the loss on the completion only. Arguments: `SFTScriptArguments`, `trl.SFTConfig`, `trl.ModelConfig` (TrlParser,
`--config recipe.yaml` plus overrides). Writes the model, the tokenizer, `resolved_config.yaml` and `metrics.jsonl`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from launch.common import check_distributed_launch, run_entry_point
from launch.train_grpo import (
    METRICS_FILE,
    MetricsLogCallback,
    ProblemDataArguments,
    load_training_problems,
    parse_training_args,
    run_and_save,
)


@dataclass
class SFTScriptArguments(ProblemDataArguments):
    """Data options of `launch/sft.py`: the same problem sources and prompts as `train_grpo.py`."""


def sft_completion(row: dict, dataset_kind: str) -> list[dict[str, str]]:
    """The assistant turn to imitate: the reference solution, ending with the answer in `\\boxed{}`."""
    from grpo_ext.data import gsm8k_rationale_as_boxed

    if dataset_kind == "gsm8k":
        text = gsm8k_rationale_as_boxed(row["solution"])
    elif dataset_kind == "custom" and row["solution"] == row["answer"]:
        text = f"The final answer is \\boxed{{{row['answer']}}}."  # no worked solution in the source
    else:
        text = row["solution"]
    return [{"role": "assistant", "content": text}]


def make_parser():
    from trl import ModelConfig, SFTConfig, TrlParser

    # allow_abbrev=False: a misspelt or truncated option is an error, never a silent prefix match
    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig), prog="grpo-ext-sft", allow_abbrev=False)


def train(argv: list[str] | None = None):
    """Parse arguments (`argv` or `sys.argv[1:]`), fine-tune, save. Returns the trainer."""
    from trl import SFTTrainer

    from grpo_ext.data import resolve_dataset_name

    script_args, training_args, model_args = parse_training_args(make_parser(), argv)

    problems = load_training_problems(script_args)
    kind = resolve_dataset_name(script_args.dataset_name)
    train_dataset = problems.map(
        lambda row: {"completion": sft_completion(row, resolve_dataset_name(row.get("source", kind)))},
        remove_columns=[c for c in problems.column_names if c != "prompt"],
    )

    os.makedirs(training_args.output_dir, exist_ok=True)
    return train_and_save(SFTTrainer, train_dataset, script_args, training_args, model_args, argv)


def train_and_save(trainer_cls, train_dataset, script_args, training_args, model_args, argv: list[str] | None,
                   summary: str | None = None):
    """What every offline entry point (`sft.py`, `rft.py`, `dpo.py`) does with its TRL trainer class and data: build
    the trainer (PEFT and quantization from `model_args`), check the launch took effect, print `summary`, log
    metrics and the resolved config, train, save, push, and end the launch safely. Returns the trainer."""
    from trl import get_peft_config, get_quantization_config

    trainer = trainer_cls(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    check_distributed_launch(trainer.accelerator)
    if summary:
        trainer.accelerator.print(summary)
    trainer.add_callback(MetricsLogCallback(os.path.join(training_args.output_dir, METRICS_FILE)))
    return run_and_save(trainer, script_args, training_args, model_args, argv)


def main(argv: list[str] | None = None) -> None:
    """Console script entry point: bad input ends it with one line (returns None: the wrapper passes the return
    value to sys.exit)."""
    run_entry_point(train, argv, prog="grpo-ext-sft")


if __name__ == "__main__":
    main()
