"""Evaluate a model on GSM8K or MATH: greedy pass@1, and with sampling pass@k and maj@k.

    python launch/evaluate.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name gsm8k \
        --output_dir eval/qwen0.5b-gsm8k
    python launch/evaluate.py --model_name_or_path Qwen/Qwen2.5-Math-1.5B --dataset_name math500 \
        --temperature 0.6 --num_samples 16 --k 1 4 16 --backend vllm --output_dir eval/math500-maj16

Prompts are the zero-shot chat prompt of `grpo_ext.data.make_prompt` (few-shot with `--num_few_shot`), or with
`--protocol` those of lm-evaluation-harness, Qwen2.5-Math's or DeepSeek-Math's evaluation (`grpo_ext.protocols`),
scored as each tool scores. Writes `samples.jsonl` (one line per problem), `summary.json`, `summary.md` and
`run_config.json` to `--output_dir`, and prints their paths; `--resume` skips problems already in `samples.jsonl`.
The metrics, backends and scoring live in `grpo_ext.evaluation`.

Bad input (an unknown option, a missing file, an output_dir in use, hub data that offline mode cannot reach) stops
the command with one line, `grpo-ext-evaluate: error: ...`, before any model loads.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from grpo_ext.data import DEFAULT_INSTRUCTION, HubUnreachableError
from grpo_ext.evaluation import (
    RUN_CONFIG_FILE,
    SAMPLES_FILE,
    SUMMARY_FILE,
    TABLE_FILE,
    Generator,
    OutputDirError,
    SamplingParams,
    TransformersGenerator,
    VLLMGenerator,
    check_output_dir,
    markdown_table,
    render_chat,
    run_evaluation,
    stop_strings,
)
from launch.common import (
    InputError,
    check_data_files,
    check_model_path,
    hub_error,
    parse_command_line,
    run_entry_point,
)


@dataclass
class EvalArguments:
    """Arguments of `launch/evaluate.py` (also readable from a YAML file with `--config`)."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "Hub id or local path of the model."})
    dataset_name: str = field(
        default="gsm8k", metadata={"help": "`gsm8k`, `math` (full MATH test), `math500`, or one of their hub ids."}
    )
    dataset_split: str = field(default="test", metadata={"help": "Hub split to evaluate (ignored with data_files)."})
    dataset_hub_id: str | None = field(default=None, metadata={"help": "Override the hub id (e.g. a MATH mirror)."})
    data_files: list[str] | None = field(
        default=None, metadata={"help": "Local JSONL file(s) in the hub rows' shape, instead of the hub."}
    )
    limit: int | None = field(default=None, metadata={"help": "Evaluate only the first N problems."})
    protocol: str = field(
        default="chat",
        metadata={
            "help": "Prompt, exemplars, stop strings and extraction: `chat` (the tokenizer's chat template), "
            "`lm_eval_gsm8k`, `gsm8k_cot_8shot`, `minerva_math_4shot` (lm-evaluation-harness), `qwen25_math_cot`, "
            "`qwen_boxed`, `qwen25_math_fewshot_cot` (Qwen2.5-Math's evaluation), `deepseek_math` (DeepSeek-Math's "
            "own harness). See grpo_ext/protocols."
        },
    )
    num_few_shot: int | None = field(
        default=None,
        metadata={
            "help": "Worked examples. `chat` (default 0): chat turns from the first rows of few_shot_data_files or of "
            "the hub train split. Other protocols: default the tool's (lm_eval_gsm8k 5, sampled from the train split "
            "as lm-eval does; gsm8k_cot_8shot 8 and minerva_math_4shot 4, the first N fixed exemplars; the other "
            "Qwen protocols 0). Required, with no default, for qwen25_math_fewshot_cot (the first N of Qwen's "
            "exemplars) and deepseek_math (0 for instruct/RL models, 8 GSM8K / 4 MATH for base models)."
        },
    )
    few_shot_data_files: list[str] | None = field(
        default=None, metadata={"help": "Local JSONL file(s) the few-shot examples come from (e.g. a train split)."}
    )
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={"help": "Appended to every question."})
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system turn."})
    backend: str = field(default="transformers", metadata={"help": "`transformers` or `vllm`."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call (transformers backend)."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, bfloat16, float16, float32."})
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Maximum new tokens (default the protocol's: chat 1024, lm-eval 256, Qwen 2048, DeepSeek 1024); "
            "never past the model's positions (max_position_embeddings), where generation stops as vLLM's does at "
            "max_model_len."
        },
    )
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy; > 0 samples (needed for num_samples > 1)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold (1 = off)."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off); never taken from the model's config."})
    min_p: float = field(default=0.0, metadata={"help": "Min-p sampling (0 = off)."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Repetition penalty (1 = off), greedy too."})
    num_samples: int = field(default=1, metadata={"help": "Completions per problem (n of pass@k, maj@k)."})
    k: list[int] = field(default_factory=lambda: [1], metadata={"help": "k values for pass@k and maj@k (k <= n)."})
    seed: int = field(
        default=0, metadata={"help": "Run seed; problem idx samples with grpo_ext.evaluation.problem_seed(seed, idx)."}
    )
    output_dir: str = field(default="eval_outputs", metadata={"help": "Where samples.jsonl and summaries go."})
    resume: bool = field(default=False, metadata={"help": "Continue a partial run in output_dir."})
    save_every: int = field(default=64, metadata={"help": "Problems generated between appends to samples.jsonl."})
    answer_timeout: float | None = field(
        default=None,
        metadata={
            "help": "Seconds allowed per answer comparison (default: the protocol's tool's own bound, lm-eval's "
            "is_equiv 5, Qwen's math_equal 3, DeepSeek's 15; 5 otherwise)."
        },
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM tensor parallel size."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM GPU memory fraction."})

    def __post_init__(self):
        if self.backend not in ("transformers", "vllm"):
            raise InputError(f"--backend must be `transformers` or `vllm`, got {self.backend!r}")
        if self.num_samples < 1:
            raise InputError(f"--num_samples must be >= 1, got {self.num_samples}")
        bad = [k for k in self.k if not 1 <= k <= self.num_samples]
        if bad:
            raise InputError(f"--k values must lie in [1, num_samples={self.num_samples}], got {bad}")
        if self.temperature == 0 and self.num_samples > 1:
            raise InputError("--num_samples > 1 needs sampling: set --temperature > 0")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit must be >= 1, got {self.limit}")
        if self.temperature < 0:
            raise InputError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InputError(f"--top_p must lie in (0, 1], got {self.top_p}")
        if self.top_k < 0 or not 0 <= self.min_p < 1 or not self.repetition_penalty > 0:
            raise InputError(
                f"--top_k must be >= 0, --min_p in [0, 1), --repetition_penalty > 0; got {self.top_k}, {self.min_p}, "
                f"{self.repetition_penalty}"
            )
        from grpo_ext.protocols import get_protocol

        try:
            get_protocol(self.protocol)
        except ValueError as err:
            raise InputError(str(err)) from None
        if self.num_few_shot is not None and self.num_few_shot < 0:
            raise InputError(f"--num_few_shot must be >= 0, got {self.num_few_shot}")
        for name in ("max_new_tokens", "batch_size", "save_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.answer_timeout is not None and not self.answer_timeout > 0:
            raise InputError(f"--answer_timeout must be positive, got {self.answer_timeout}")


def make_parser():
    from trl import TrlParser

    # allow_abbrev=False: a misspelt or truncated option is an error, never a silent prefix match
    return TrlParser(EvalArguments, prog="grpo-ext-evaluate", description=__doc__, allow_abbrev=False)


def parse_args(argv: list[str] | None) -> EvalArguments:
    """The command line (and a `--config` YAML, whose keys are the option names) as EvalArguments; every mistake is
    one `InputError` (`launch.common.parse_command_line`)."""
    (args,) = parse_command_line(make_parser(), sys.argv[1:] if argv is None else list(argv))
    return args


def check_latex_parser(protocol) -> None:
    """Before anything loads: a score that is a tool's own sympy verdict needs sympy's LaTeX parser (antlr4 4.11,
    which pyproject pins); without it the run would stop at the first such comparison, after generating."""
    from grpo_ext.protocols.symbolic import latex_parser_available

    needing = [score.name for score in protocol.scores if score.needs_latex_parser]
    reason = latex_parser_available() if needing else None
    if reason is not None:
        raise InputError(
            f"--protocol {protocol.name}: its {needing[0]} score is the reference tool's own verdict, which reads "
            f"LaTeX with sympy's parse_latex; that needs antlr4-python3-runtime 4.11 ({reason}). pyproject pins it "
            "(math-verify[antlr4_11_0]): reinstall the project, pip install -e ."
        )


def load_problems(args: EvalArguments, protocol):
    """The problems to evaluate, with `prompt` as the protocol renders it (chat messages for `chat`, text
    otherwise), the number of few-shot examples used, and the protocol as run on this dataset with that many shots
    (`Protocol.resolve`)."""
    from grpo_ext.data import load_math_dataset, resolve_dataset_name
    from grpo_ext.protocols import render_prompts

    chat = protocol.uses_chat_template
    num_few_shot = args.num_few_shot if args.num_few_shot is not None else protocol.num_few_shot
    if num_few_shot is None:
        raise InputError(
            f"--protocol {protocol.name} needs --num_few_shot (no source gives a default): {protocol.notes}"
        )
    kind = resolve_dataset_name(args.dataset_name)
    if not chat and kind not in protocol.datasets:
        raise InputError(f"--protocol {protocol.name} is for {list(protocol.datasets)}, not {args.dataset_name!r}")
    if not chat:
        protocol = protocol.resolve(kind, num_few_shot)
        check_latex_parser(protocol)
    try:
        dataset = load_math_dataset(
            args.dataset_name,
            split=args.dataset_split,
            data_files=args.data_files,
            limit=args.limit,
            hub_id=args.dataset_hub_id,
            instruction=args.instruction,
            system_prompt=args.system_prompt,
            num_few_shot=num_few_shot if chat else 0,
            few_shot_data_files=args.few_shot_data_files,
        )
    except HubUnreachableError as err:
        if err.few_shot:  # chat turns from the train split: the problems came from the hub already
            shots = "gsm8k" if kind == "gsm8k" else "math"
            raise hub_error(err, f"--num_few_shot {num_few_shot} takes its examples", "--few_shot_data_files",
                            f"path/to/{shots}/train.jsonl") from err  # fmt: skip
        raise hub_error(err, f"--dataset_name {args.dataset_name} reads its problems", "--data_files",
                        f"path/to/{kind}/{err.split}.jsonl") from err  # fmt: skip
    if chat:
        return dataset, num_few_shot, protocol
    pool = []
    if num_few_shot and protocol.samples_train_shots:
        try:
            pool = list(load_math_dataset(args.dataset_name, split="train", data_files=args.few_shot_data_files))
        except HubUnreachableError as err:
            raise hub_error(err, f"--protocol {protocol.name} takes its few-shot examples", "--few_shot_data_files",
                            f"path/to/{kind}/train.jsonl") from err  # fmt: skip
    prompts = render_prompts(protocol, list(dataset), pool, num_few_shot, kind)
    return dataset.remove_columns("prompt").add_column("prompt", prompts), num_few_shot, protocol


def evaluate(argv: list[str] | None = None, generator: Generator | None = None, render=None, tokenizer=None) -> dict:
    """Parse arguments, load data and model, evaluate; return the summary. `generator`/`render` replace the model
    (tests, callers); `tokenizer` (optional with them) supplies the EOS and end-of-turn stop strings."""
    from grpo_ext.protocols import get_protocol

    args = parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # every process would generate everything and append to the same samples.jsonl
        raise InputError(
            "evaluate.py runs as a single process (python launch/evaluate.py ...); for several GPUs use "
            "--backend vllm --tensor_parallel_size N"
        )
    check_data_files(args.data_files, "--data_files")
    check_data_files(args.few_shot_data_files, "--few_shot_data_files")
    if generator is None:
        if args.model_name_or_path is None:
            raise InputError("--model_name_or_path is required")
        check_model_path(args.model_name_or_path)  # a missing path is named, not reported as a hub failure
    # Everything up to the model reads the options and the files and hub data they name: grpo_ext's own checks of
    # them raise plain ValueErrors (an unknown dataset, a shot count a protocol does not take, too few rows)
    try:
        check_output_dir(args.output_dir, args.resume)
        dataset, num_few_shot, protocol = load_problems(args, get_protocol(args.protocol))
    except ValueError as err:
        if type(err) not in (ValueError, OutputDirError):
            raise  # InputError and DatasetFormatError say what already; any other kind is not a check
        raise InputError(str(err)) from err
    if generator is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
        if protocol.uses_chat_template:
            render = render or render_chat(tokenizer)
        if args.backend == "vllm":
            generator = VLLMGenerator(
                args.model_name_or_path,
                dtype=args.dtype,
                seed=args.seed,
                tensor_parallel_size=args.tensor_parallel_size,
                gpu_memory_utilization=args.gpu_memory_utilization,
            )
        else:
            generator = TransformersGenerator.from_pretrained(
                args.model_name_or_path, batch_size=args.batch_size, dtype=args.dtype
            )
    elif render is None and protocol.uses_chat_template:
        raise ValueError("pass `render` together with `generator`")
    if not protocol.uses_chat_template:
        render = str  # the protocol already rendered the prompt text
    params = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        max_new_tokens=args.max_new_tokens or protocol.max_new_tokens,
        seed=args.seed,
        stop=stop_strings(tokenizer, protocol.stop) if tokenizer is not None else protocol.stop,
        add_special_tokens=protocol.add_special_tokens,
    )
    run_info = {
        "model": args.model_name_or_path,
        "protocol": protocol.name,
        "protocol_source": protocol.source,
        "protocol_notes": protocol.notes or None,
        "dataset": args.dataset_name,
        "split": args.dataset_split if args.data_files is None else None,
        "data_files": args.data_files,
        "limit": args.limit,
        "num_few_shot": num_few_shot,
        "few_shot_data_files": args.few_shot_data_files,
    }
    if protocol.uses_chat_template:
        run_info.update(instruction=args.instruction, system_prompt=args.system_prompt)
    try:
        summary = run_evaluation(
            dataset,
            generator,
            render,
            params,
            num_samples=args.num_samples,
            ks=sorted(set(args.k)),
            output_dir=args.output_dir,
            resume=args.resume,
            chunk_size=args.save_every,
            answer_timeout=args.answer_timeout,
            run_info=run_info,
            scores=protocol.scores,
            tallies=protocol.tallies,
        )
    except OutputDirError as err:  # --resume with other settings or a smaller --limit
        raise InputError(str(err)) from err
    print(markdown_table(summary))
    print_outputs(args.output_dir)
    return summary


def print_outputs(output_dir: str) -> None:
    """Where the results went, as full paths (the table alone does not say)."""
    print("Written:")
    for name, what in ((SUMMARY_FILE, "metrics, settings, library versions"), (TABLE_FILE, "the table above"),
                       (SAMPLES_FILE, "one line per problem: prompt, completions, answers, verdicts"),
                       (RUN_CONFIG_FILE, "the settings --resume checks")):  # fmt: skip
        print(f"  {os.path.join(os.path.abspath(output_dir), name)}  ({what})")


def main(argv: list[str] | None = None) -> None:
    """Console script `grpo-ext-evaluate`: bad input ends it with one line, `grpo-ext-evaluate: error: ...`, exit
    status 2 (returns None: the wrapper passes the return value to sys.exit)."""
    run_entry_point(evaluate, argv, prog="grpo-ext-evaluate")


if __name__ == "__main__":
    main()
