r"""DPO on the starting model's own samples (DeepSeekMath section 5.2.1): pairs of a correct and an incorrect
completion of the same training problem, trained with TRL's DPOTrainer.

    accelerate launch --config_file accelerate_configs/single_gpu.yaml launch/dpo.py \
        --config launch/recipes/dpo_qwen2.5-0.5b-instruct_gsm8k.yaml

Sampling is `launch/rft.py`'s (same options); point `--samples_file` at the file an RFT run wrote to train both on
the same samples. Correct means `rewards.accuracy_reward` against the gold answer; pairs are built per problem by
`grpo_ext.paradigm.dpo_pairs` (all correct x incorrect pairs, at most `--max_pairs_per_prompt` of them drawn with
`--seed`). Arguments: `DPOScriptArguments`, `trl.DPOConfig`, `trl.ModelConfig`. Writes the model, the tokenizer,
the samples, `resolved_config.yaml` and `metrics.jsonl`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from launch.common import InputError, run_entry_point
from launch.rft import OfflineSamplingArguments, offline_parser, parse_and_sample
from launch.sft import train_and_save


@dataclass
class DPOScriptArguments(OfflineSamplingArguments):
    """Data, sampling and pairing options of `launch/dpo.py`."""

    max_pairs_per_prompt: int | None = field(
        default=None, metadata={"help": "At most this many (correct, incorrect) pairs per problem (None: all)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_pairs_per_prompt is not None and self.max_pairs_per_prompt < 1:
            raise InputError(f"--max_pairs_per_prompt must be >= 1, got {self.max_pairs_per_prompt}")


def make_parser():
    from trl import DPOConfig

    return offline_parser(DPOScriptArguments, DPOConfig, "grpo-ext-dpo")


def train(argv: list[str] | None = None):
    """Parse arguments (`argv` or `sys.argv[1:]`), sample (or read the samples), pair, train, save.

    Returns the trainer, or None with `--sample_only`."""
    from trl import DPOTrainer

    from grpo_ext.paradigm import dpo_pairs

    parsed = parse_and_sample(make_parser(), argv)
    if parsed is None:
        return None
    script_args, training_args, model_args, problems, samples = parsed
    train_dataset = dpo_pairs(
        problems["prompt"], samples, problems["answer"],
        max_pairs_per_prompt=script_args.max_pairs_per_prompt, seed=training_args.seed,
    )  # fmt: skip
    if len(train_dataset) == 0:
        raise InputError(
            f"no problem in {script_args.samples_file} has both a correct and an incorrect sample: no DPO pair "
            "(more --num_samples or another --sampling_temperature)"
        )
    return train_and_save(DPOTrainer, train_dataset, script_args, training_args, model_args, argv,
                          summary=f"DPO: {len(train_dataset)} pairs from {len(problems)} problems")


def main(argv: list[str] | None = None) -> None:
    """Console script entry point: bad input ends it with one line (returns None: the wrapper passes the return
    value to sys.exit)."""
    run_entry_point(train, argv, prog="grpo-ext-dpo")


if __name__ == "__main__":
    main()
