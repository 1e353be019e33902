"""Train an outcome (ORM) or process (PRM) reward model, configured by YAML with command-line overrides.

    accelerate launch launch/train_reward_model.py --reward_model_type prm \
        --model_name_or_path Qwen/Qwen2.5-0.5B --data_files prm_train.jsonl --output_dir runs/prm \
        --per_device_train_batch_size 8 --learning_rate 1e-5 --num_train_epochs 1 --bf16 true
    accelerate launch launch/train_reward_model.py --config my_rm.yaml --learning_rate 5e-6

Arguments are the fields of `RewardModelScriptArguments` below and of `transformers.TrainingArguments`, parsed by
TRL's `TrlParser` (`--config` YAML sets defaults, the command line overrides them).

Rows (JSONL lines or `datasets` rows; column names are options):

* ORM, pointwise: `{"prompt": ..., "completion": ..., "label": 0 | 1}`  (BCE on the scalar logit)
* ORM, pairwise:  `{"prompt": ..., "chosen": ..., "rejected": ...}`   (Bradley-Terry, as TRL's RewardTrainer;
  the prompt is optional, as in TRL's implicit-prompt preference format)
* PRM: `{"prompt": ..., "steps": [str, ...], "labels": [bool, ...]}` (Math-Shepherd / PRM800K-derived sets; TRL's
  stepwise-supervision datasets call the steps `completions`: pass `--steps_column completions`). Labels may also
  be soft, floats in [0, 1] (Math-Shepherd soft estimation).

Prompts and completions may be strings or conversations (lists of `{"role", "content"}`). The tokenisation and the
losses are those of `grpo_ext.reward_models`, shared with the reward model's scoring and with iterative RL's
in-training refresh. The ORM is an `AutoModelForSequenceClassification` (num_labels=1), the PRM an
`AutoModelForTokenClassification` (num_labels=2, class 1 = good step, step separator saved in its config as
`step_separator`). The model and tokenizer are saved to `output_dir`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from transformers import IntervalStrategy, Trainer, TrainingArguments

from grpo_ext.reward_models import (
    DEFAULT_STEP_SEPARATOR,
    evaluate_reward_model,
    make_collate,
    orm_text,
    prompt_text,
    reward_model_loss,
)
from launch.common import (
    InputError,
    check_data_files,
    check_distributed_launch,
    check_model_path,
    end_launch,
    parse_command_line,
    run_entry_point,
)


@dataclass
class RewardModelScriptArguments:
    """Model, data and format options of `launch/train_reward_model.py`."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint to start from (a causal LM gets a new classification head)."}
    )
    reward_model_type: str = field(
        default="orm", metadata={"help": "`orm` (outcome, sequence classification) or `prm` (process, token "
                                 "classification).", "choices": ["orm", "prm"]}
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "A `datasets.load_dataset` name or local dataset directory."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_name` to train on."})
    data_files: list[str] | None = field(default=None, metadata={"help": "Local JSONL file(s), instead of a dataset."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split of `dataset_name` to evaluate on (loss and accuracy every epoch)."}
    )
    eval_data_files: list[str] | None = field(
        default=None, metadata={"help": "Local JSONL file(s) to evaluate on (loss and accuracy every epoch)."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Prompt column (optional for pairwise ORM)."})
    completion_column: str = field(default="completion", metadata={"help": "Completion column (pointwise ORM)."})
    label_column: str = field(default="label", metadata={"help": "0/1 label column (pointwise ORM)."})
    chosen_column: str = field(default="chosen", metadata={"help": "Preferred completion column (pairwise ORM)."})
    rejected_column: str = field(default="rejected", metadata={"help": "Dispreferred completion (pairwise ORM)."})
    steps_column: str = field(default="steps", metadata={"help": "List-of-steps column (PRM)."})
    step_labels_column: str = field(default="labels", metadata={"help": "Per-step label column (PRM)."})
    orm_format: str = field(
        default="auto", metadata={"help": "`pointwise`, `pairwise`, or `auto` (pairwise when the chosen column "
                                  "exists).", "choices": ["auto", "pointwise", "pairwise"]}
    )
    step_separator: str = field(
        default=DEFAULT_STEP_SEPARATOR, metadata={"help": "Text appended after every step; the step's label sits "
                                                  "on its last token (PRM)."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Truncate inputs to this many tokens (prompt cut first; None: no cut)."}
    )
    max_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    model_dtype: str = field(
        default="float32", metadata={"help": "Weights dtype when loading.", "choices": ["auto", "bfloat16",
                                                                                          "float16", "float32"]}
    )

    def __post_init__(self):
        if self.reward_model_type not in ("orm", "prm"):
            raise InputError(f"reward_model_type must be 'orm' or 'prm', got {self.reward_model_type!r}")
        if self.orm_format not in ("auto", "pointwise", "pairwise"):
            raise InputError(f"orm_format must be auto, pointwise or pairwise, got {self.orm_format!r}")
        if isinstance(self.data_files, str):
            self.data_files = [self.data_files]
        if isinstance(self.eval_data_files, str):
            self.eval_data_files = [self.eval_data_files]
        if self.eval_split and self.eval_data_files:
            raise InputError("give at most one of --eval_split (a split of --dataset_name) or --eval_data_files")
        if self.eval_split and not self.dataset_name:
            raise InputError("--eval_split names a split of --dataset_name; with --data_files use --eval_data_files")


# ---------------------------------------------------------------------------------------------------------- data


def load_rows(script_args: RewardModelScriptArguments) -> list[tuple[str, dict]]:
    """Raw training rows with a location string (`file:line` or `dataset[split] row i`) for error messages."""
    if bool(script_args.data_files) == bool(script_args.dataset_name):
        raise InputError("give exactly one of --data_files (JSONL) or --dataset_name")
    rows = _raw_rows(script_args, script_args.data_files, script_args.dataset_split)
    return rows[: script_args.max_samples] if script_args.max_samples is not None else rows


def load_eval_rows(script_args: RewardModelScriptArguments) -> list[tuple[str, dict]] | None:
    """Raw evaluation rows (`--eval_data_files` or `--eval_split`), or None when neither is given."""
    if not (script_args.eval_data_files or script_args.eval_split):
        return None
    return _raw_rows(script_args, script_args.eval_data_files, script_args.eval_split)


def _raw_rows(script_args: RewardModelScriptArguments, data_files: list[str] | None, split: str):
    """Rows of JSONL files, or of one split of `--dataset_name`; a source without rows is an error naming it."""
    if data_files:
        from grpo_ext.data import read_jsonl  # names the file and line of a row that is not a JSON object

        rows = []
        for path in data_files:
            rows_of_file = read_jsonl(path)
            if not rows_of_file:
                raise InputError(f"{path}: no rows (the file is empty or holds only blank lines)")
            rows.extend((f"{path}:{line_no}", row) for line_no, row in rows_of_file)
        return rows
    from datasets import load_dataset

    dataset = load_dataset(script_args.dataset_name, script_args.dataset_config, split=split)
    where = f"{script_args.dataset_name}[{split}]"
    if len(dataset) == 0:
        raise InputError(f"{where}: no rows")
    return [(f"{where} row {i}", row) for i, row in enumerate(dataset)]


def _text(value: Any, where: str, column: str) -> Any:
    is_conversation = isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value)
    if isinstance(value, str) or is_conversation:
        return value
    raise InputError(f"{where}: column {column!r} must be a string or a list of messages, got {type(value).__name__}")


def _label(value: Any, where: str, column: str) -> float:
    if isinstance(value, bool) or (isinstance(value, (int, float)) and 0 <= value <= 1):
        return float(value)
    raise InputError(f"{where}: column {column!r} must hold labels in {{0, 1}} (or [0, 1]), got {value!r}")


def _column(row: dict, column: str, where: str, option: str) -> Any:
    if column not in row:
        raise InputError(f"{where}: missing column {column!r} (set --{option}; the row has {sorted(row)})")
    return row[column]


def to_training_rows(raw: list[tuple[str, dict]], script_args: RewardModelScriptArguments, tokenizer) -> list[dict]:
    """Validate raw rows and convert them to the rows `grpo_ext.reward_models.make_collate` expects."""
    a = script_args
    out = []
    if a.reward_model_type == "prm":
        for where, row in raw:
            prompt = _text(_column(row, a.prompt_column, where, "prompt_column"), where, a.prompt_column)
            steps = _column(row, a.steps_column, where, "steps_column")
            labels = _column(row, a.step_labels_column, where, "step_labels_column")
            if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
                raise InputError(f"{where}: column {a.steps_column!r} must be a non-empty list of strings")
            blank = [j for j, step in enumerate(steps) if not step.strip()]
            if blank:  # an empty step has no text of its own: its label would sit on the separator alone
                raise InputError(f"{where}: step {blank[0]} of column {a.steps_column!r} is empty or blank")
            if not isinstance(labels, list) or len(labels) != len(steps):
                raise InputError(f"{where}: {len(steps)} steps but labels {labels!r} (one label per step needed)")
            out.append({"prompt": prompt_text(prompt, tokenizer), "steps": steps,
                        "labels": [_label(y, where, a.step_labels_column) for y in labels]})
        return out
    pairwise = a.orm_format == "pairwise" or (a.orm_format == "auto" and a.chosen_column in raw[0][1])
    for where, row in raw:
        if pairwise:
            prompt = _text(row.get(a.prompt_column, ""), where, a.prompt_column)
            chosen = _text(_column(row, a.chosen_column, where, "chosen_column"), where, a.chosen_column)
            rejected = _text(_column(row, a.rejected_column, where, "rejected_column"), where, a.rejected_column)
            out.append({"chosen_text": orm_text(prompt, chosen, tokenizer),
                        "rejected_text": orm_text(prompt, rejected, tokenizer)})
        else:
            prompt = _text(_column(row, a.prompt_column, where, "prompt_column"), where, a.prompt_column)
            completion = _text(_column(row, a.completion_column, where, "completion_column"), where,
                               a.completion_column)
            label = _label(_column(row, a.label_column, where, "label_column"), where, a.label_column)
            if label not in (0.0, 1.0):
                raise InputError(f"{where}: ORM label must be 0 or 1, got {label!r}")
            out.append({"text": orm_text(prompt, completion, tokenizer), "label": label})
    return out


# ---------------------------------------------------------------------------------------------------------- training


class RewardModelTrainer(Trainer):
    """`transformers.Trainer` whose loss is `grpo_ext.reward_models.reward_model_loss` (pointwise BCE, pairwise
    Bradley-Terry, or PRM step cross-entropy, read from the batch), and whose evaluation reports that loss and
    the accuracy of `evaluate_reward_model` (ORM: sign of the score agrees with the label; pairwise: chosen
    scored above rejected; PRM: per step). Every process evaluates the whole evaluation set."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, _, _ = reward_model_loss(model, inputs)
        return (loss, None) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        rows = self.eval_dataset if eval_dataset is None else eval_dataset
        scores = evaluate_reward_model(self.model, self.data_collator, rows, self.args.per_device_eval_batch_size)
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in scores.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def load_model_and_tokenizer(script_args: RewardModelScriptArguments):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    if not script_args.model_name_or_path:
        raise InputError("--model_name_or_path is required")
    tokenizer = AutoTokenizer.from_pretrained(script_args.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = script_args.model_dtype if script_args.model_dtype == "auto" else getattr(torch, script_args.model_dtype)
    if script_args.reward_model_type == "orm":
        model = AutoModelForSequenceClassification.from_pretrained(script_args.model_name_or_path, num_labels=1,
                                                                   dtype=dtype)
    else:
        model = AutoModelForTokenClassification.from_pretrained(script_args.model_name_or_path, num_labels=2,
                                                                dtype=dtype)
        model.config.step_separator = script_args.step_separator  # scoring must append the same separator
    model.config.pad_token_id = tokenizer.pad_token_id  # the ORM reads its score at the last non-pad token
    return model, tokenizer


def train(script_args: RewardModelScriptArguments, training_args: TrainingArguments) -> Trainer:
    from transformers import set_seed

    set_seed(training_args.seed)  # the new classification head is initialised at load time: make it reproducible
    model, tokenizer = load_model_and_tokenizer(script_args)
    rows = to_training_rows(load_rows(script_args), script_args, tokenizer)
    eval_raw = load_eval_rows(script_args)
    eval_rows = to_training_rows(eval_raw, script_args, tokenizer) if eval_raw is not None else None
    if eval_rows is not None and training_args.eval_strategy == IntervalStrategy.NO:
        training_args.eval_strategy = IntervalStrategy.EPOCH  # evaluation data given: report it every epoch
    collate = make_collate(script_args.reward_model_type, tokenizer, script_args.step_separator, script_args.max_length)
    training_args.remove_unused_columns = False  # rows are pre-tokenised by the collator
    trainer = RewardModelTrainer(model=model, args=training_args, train_dataset=rows, eval_dataset=eval_rows,
                                 data_collator=collate, processing_class=tokenizer)
    check_distributed_launch(trainer.accelerator)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    if eval_rows is not None:
        trainer.save_metrics("eval", trainer.evaluate())  # eval_results.json beside the model
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
    end_launch(trainer)
    return trainer


def parse_args(argv: list[str] | None = None) -> tuple[RewardModelScriptArguments, TrainingArguments]:
    """`--config` YAML plus command-line overrides, through TRL's parser."""
    from trl import TrlParser

    # allow_abbrev=False: a misspelt or truncated option is an error, never a silent prefix match
    parser = TrlParser((RewardModelScriptArguments, TrainingArguments), prog="grpo-ext-train-rm", allow_abbrev=False)
    script_args, training_args = parse_command_line(parser, sys.argv[1:] if argv is None else argv)
    check_model_path(script_args.model_name_or_path)
    check_data_files(script_args.data_files, "--data_files")
    return script_args, training_args


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`grpo-ext-train-rm`); bad input ends it with one line. Returns None because console
    wrappers `sys.exit` the result."""
    run_entry_point(lambda args: train(*parse_args(args)), argv, prog="grpo-ext-train-rm")


if __name__ == "__main__":
    main()
