r"""RFT (rejection-sampling fine-tuning, DeepSeekMath section 5.2.1): sample k completions per training problem from
the starting (SFT) model, keep the correct ones, fine-tune on them with TRL's SFTTrainer.

    accelerate launch --config_file accelerate_configs/single_gpu.yaml launch/rft.py \
        --config launch/recipes/rft_qwen2.5-0.5b-instruct_gsm8k.yaml

The samples are written to `--samples_file` (default `output_dir/samples.jsonl`) and read back when that file
already exists, so `launch/dpo.py` pointed at the same file trains on the same samples, as the paper's comparison
does. Correct means `rewards.accuracy_reward` against the problem's gold answer; duplicates are dropped per problem
(`grpo_ext.paradigm.rft_dataset`). Prompts are the same chat prompts as GRPO training and evaluation. Arguments:
`RFTScriptArguments`, `trl.SFTConfig`, `trl.ModelConfig` (TrlParser, `--config recipe.yaml` plus overrides). Writes
the model, the tokenizer, the samples, `resolved_config.yaml` and `metrics.jsonl`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from launch.common import InputError, run_entry_point
from launch.sft import train_and_save
from launch.train_grpo import ProblemDataArguments, load_training_problems, parse_training_args

SAMPLES_FILE = "samples.jsonl"


@dataclass
class OfflineSamplingArguments(ProblemDataArguments):
    """Problems, and how the starting model's completions are sampled (shared by `rft.py` and `dpo.py`)."""

    num_samples: int = field(default=8, metadata={"help": "Completions sampled per training problem (k)."})
    sampling_temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    sampling_top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    sampling_max_new_tokens: int = field(default=512, metadata={"help": "Longest sampled completion, in tokens."})
    sampling_batch_size: int = field(default=8, metadata={"help": "Problems per `generate` call."})
    samples_file: str | None = field(
        default=None,
        metadata={
            "help": "JSONL of the samples (one row per problem: idx, answer, samples). Read when it exists, so RFT "
            "and DPO can train on the same samples; else written after sampling. Default: output_dir/samples.jsonl."
        },
    )

    sample_only: bool = field(
        default=False,
        metadata={"help": "Write the samples file and stop, without training (sample once, then run RFT and DPO)."},
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_samples", "sampling_max_new_tokens", "sampling_batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class RFTScriptArguments(OfflineSamplingArguments):
    """Data and sampling options of `launch/rft.py`."""


def read_samples_file(path: str, problems, num_samples: int) -> list[list[str]]:
    """The samples saved for `problems`, checked row by row (same problems in the same order, k samples each)."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{where}: not JSON ({err})") from None
            if not isinstance(row, dict):
                raise InputError(f"{where}: expected an object with idx, answer and samples")
            if len(rows) >= len(problems):
                raise InputError(f"{where}: more rows than the {len(problems)} training problems")
            problem = problems[len(rows)]
            samples = row.get("samples")
            if row.get("idx") != problem["idx"] or row.get("answer") != problem["answer"]:
                raise InputError(
                    f"{where}: row is for problem idx={row.get('idx')!r} answer={row.get('answer')!r}, but the "
                    f"training problem there is idx={problem['idx']!r} answer={problem['answer']!r} "
                    "(samples of other problems: delete the file or change --samples_file)"
                )
            strings = isinstance(samples, list) and all(isinstance(text, str) for text in samples)
            if not strings or len(samples) != num_samples:
                raise InputError(f"{where}: `samples` must be a list of {num_samples} strings (--num_samples)")
            rows.append(samples)
    if len(rows) != len(problems):
        raise InputError(f"{path}: {len(rows)} rows for {len(problems)} training problems")
    return rows


def sample_from_starting_model(script_args, training_args, model_args, problems) -> list[list[str]]:
    """k completions per problem from `model_name_or_path`, each process sampling its share of the problems.

    Shares are contiguous and gathered in process order, so the result is in problem order; process i samples with
    seed `seed + i` (distinct draws on each share).
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_ext.engines import is_zero3_partitioned
    from grpo_ext.paradigm import sample_completions

    init_kwargs = {k: v for k, v in training_args.model_init_kwargs.items() if v is not None}  # as the trainer loads
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **init_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not is_zero3_partitioned(model):  # under ZeRO-3 transformers loaded it partitioned, already placed
        model = model.to(training_args.device)
    state = PartialState()
    with state.split_between_processes(list(range(len(problems)))) as share:
        samples = sample_completions(
            model, tokenizer, [problems[i]["prompt"] for i in share], script_args.num_samples,
            max_new_tokens=script_args.sampling_max_new_tokens, temperature=script_args.sampling_temperature,
            top_p=script_args.sampling_top_p, batch_size=script_args.sampling_batch_size,
            seed=training_args.seed + state.process_index,
        )  # fmt: skip
    return gather_object(samples)


def write_samples_file(path: str, problems, samples: list[list[str]]) -> None:
    """One JSONL row per problem: its `idx`, gold `answer` and `samples` (what `read_samples_file` checks)."""
    with open(path, "w", encoding="utf-8") as handle:
        for problem, texts in zip(problems, samples):
            handle.write(json.dumps({"idx": problem["idx"], "answer": problem["answer"], "samples": texts}) + "\n")


def load_or_sample(script_args, training_args, model_args, problems) -> list[list[str]]:
    """The samples file when it exists, else fresh samples from every process, written by the main one.

    Under `accelerate launch` the file must be visible to every process (one machine, or a shared filesystem).
    """
    from accelerate import PartialState

    if script_args.samples_file is None:
        script_args.samples_file = os.path.join(training_args.output_dir, SAMPLES_FILE)
    os.makedirs(os.path.dirname(os.path.abspath(script_args.samples_file)), exist_ok=True)
    state = PartialState()
    exists = os.path.exists(script_args.samples_file)
    state.wait_for_everyone()  # every process has looked before the main one writes
    if exists:
        return read_samples_file(script_args.samples_file, problems, script_args.num_samples)
    samples = sample_from_starting_model(script_args, training_args, model_args, problems)
    if state.is_main_process:
        write_samples_file(script_args.samples_file, problems, samples)
    return samples


def offline_parser(script_arguments_cls, training_config_cls, prog: str):
    """The TrlParser of an offline entry point: its script arguments, TRL's trainer config, TRL's ModelConfig."""
    from trl import ModelConfig, TrlParser

    # allow_abbrev=False: a misspelt or truncated option is an error, never a silent prefix match
    return TrlParser((script_arguments_cls, training_config_cls, ModelConfig), prog=prog, allow_abbrev=False)


def make_parser():
    from trl import SFTConfig

    return offline_parser(RFTScriptArguments, SFTConfig, "grpo-ext-rft")


def parse_and_sample(parser, argv: list[str] | None):
    """Parse `argv`, load the training problems and their samples (read from `--samples_file`, or drawn now and
    written there). Returns (script_args, training_args, model_args, problems, samples), or None with
    `--sample_only` (the samples are written; nothing to train)."""
    script_args, training_args, model_args = parse_training_args(parser, argv)
    problems = load_training_problems(script_args)
    samples = load_or_sample(script_args, training_args, model_args, problems)
    if script_args.sample_only:
        return None
    return script_args, training_args, model_args, problems, samples


def train(argv: list[str] | None = None):
    """Parse arguments (`argv` or `sys.argv[1:]`), sample (or read the samples), fine-tune, save.

    Returns the trainer, or None with `--sample_only`."""
    from trl import SFTTrainer

    from grpo_ext.paradigm import rft_dataset

    parsed = parse_and_sample(make_parser(), argv)
    if parsed is None:
        return None
    script_args, training_args, model_args, problems, samples = parsed
    train_dataset = rft_dataset(problems["prompt"], samples, problems["answer"])
    if len(train_dataset) == 0:
        raise InputError(
            f"no sample of the {sum(map(len, samples))} in {script_args.samples_file} is correct: nothing to "
            "fine-tune on (more --num_samples, another --sampling_temperature, or a stronger starting model)"
        )
    return train_and_save(SFTTrainer, train_dataset, script_args, training_args, model_args, argv,
                          summary=f"RFT: {len(train_dataset)} distinct correct samples of {len(problems)} problems")


def main(argv: list[str] | None = None) -> None:
    """Console script entry point: bad input ends it with one line (returns None: the wrapper passes the return
    value to sys.exit)."""
    run_entry_point(train, argv, prog="grpo-ext-rft")


if __name__ == "__main__":
    main()
