"""Evaluate a model on GSM8K or MATH: greedy pass@1, and with sampling pass@k and maj@k.

    python launch/evaluate.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name gsm8k \
        --output_dir eval/qwen0.5b-gsm8k
    python launch/evaluate.py --model_name_or_path Qwen/Qwen2.5-Math-1.5B --dataset_name math500 \
        --temperature 0.6 --num_samples 16 --k 1 4 16 --backend vllm --output_dir eval/math500-maj16

Prompts are the zero-shot chat prompt of `grpo_ext.data.make_prompt` (few-shot with `--num_few_shot`); completions
are scored with `rewards.extract_answer` and `rewards.answers_match`, the same code that scores rollouts during
training. Writes `samples.jsonl` (one line per problem), `summary.json` and `summary.md` to `--output_dir`;
`--resume` skips problems already in `samples.jsonl`.

The generation backend is anything with `generate(prompts, n, params) -> list[list[str]]` (see `Generator`):
`TransformersGenerator` (batched, left padded, length-sorted), `VLLMGenerator` (when vLLM is installed), or a test
double. `MathEvalCallback` runs the same evaluation on a small subset every N training steps.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from transformers import TrainerCallback

from grpo_ext.data import DEFAULT_INSTRUCTION

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"
TABLE_FILE = "summary.md"
RUN_CONFIG_FILE = "run_config.json"


# --------------------------------------------------------------------------------------------------------------------
# Metrics (pure)
# --------------------------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021): 1 - C(n - c, k) / C(n, k).

    The probability that at least one of k samples drawn without replacement from n samples, c of them correct, is
    correct. Computed as 1 - prod_{i = n - c + 1}^{n} (1 - k / i), which avoids huge binomials.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def majority_vote(answers: Sequence[str | None], same: Callable[[str, str], bool] | None = None) -> int | None:
    """Index of a representative of the most frequent answer (maj@k), or None when no sample has an answer.

    Answers are grouped by equivalence: equal after `normalize_answer`, or `same(a, b)` for a group's representative
    `b` (e.g. `rewards.answers_match`, so `1/2` and `0.5` vote together). Samples without an answer do not vote.
    Ties go to the group seen first; the representative is the group's first member.
    """
    representatives: list[int] = []
    counts: list[int] = []
    by_key: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        key = normalize_answer(answer)
        group = by_key.get(key)
        if group is None and same is not None:
            group = next((g for g, r in enumerate(representatives) if same(answer, answers[r])), None)
        if group is None:
            group = len(representatives)
            representatives.append(i)
            counts.append(0)
        by_key.setdefault(key, group)
        counts[group] += 1
    if not counts:
        return None
    best = max(range(len(counts)), key=lambda g: (counts[g], -g))
    return representatives[best]


def normalize_answer(answer: str) -> str:
    """Cheap canonical form used to group identical answers before any symbolic comparison: the rewards fast
    path's (`rewards.normalize.normalize_answer`), so two answers that vote together are equal answers (`1 2` and
    `12` do not)."""
    from rewards.normalize import normalize_answer as rewards_normalize

    return rewards_normalize(answer)


def summarize(records: Sequence[dict], ks: Sequence[int]) -> dict[str, float]:
    """Mean metrics over per-problem records.

    `pass@1` is the mean fraction of correct samples (greedy accuracy when there is one sample); `pass@k` uses the
    unbiased estimator on each problem's (n, c); `maj@k` is the fraction of problems whose majority answer over the
    first k samples is correct (stored per record at scoring time).
    """
    if not records:
        return {"count": 0}
    metrics: dict[str, float] = {"count": len(records)}
    n = len(records[0]["corrects"])
    metrics["pass@1"] = sum(sum(r["corrects"]) / len(r["corrects"]) for r in records) / len(records)
    for k in ks:
        if k == 1 or k > n:
            continue
        metrics[f"pass@{k}"] = sum(pass_at_k(len(r["corrects"]), sum(r["corrects"]), k) for r in records) / len(records)
    if n > 1:
        for k in ks:
            if k <= n:
                metrics[f"maj@{k}"] = sum(bool(r["maj"][str(k)]) for r in records) / len(records)
    return metrics


def summarize_by(records: Sequence[dict], key: str, ks: Sequence[int]) -> dict[str, dict[str, float]]:
    """`summarize` for each value of `records[i][key]` (e.g. MATH level or subject), in sorted order."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        if key in record:
            groups.setdefault(str(record[key]), []).append(record)
    return {value: summarize(groups[value], ks) for value in sorted(groups)}


def markdown_table(summary: dict) -> str:
    """Summary as a Markdown table: one row overall, then one per level and per subject."""
    overall = summary["overall"]
    columns = [c for c in overall if c != "count"]
    lines = [
        f"# {summary['dataset']} — {summary.get('model') or 'model'}",
        "",
        "| group | problems | " + " | ".join(columns) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |",
    ]

    def row(name: str, metrics: dict) -> str:
        cells = [f"{100 * metrics[c]:.1f}" if c in metrics else "" for c in columns]
        return f"| {name} | {metrics['count']} | " + " | ".join(cells) + " |"

    lines.append(row("all", overall))
    for level, metrics in summary.get("by_level", {}).items():
        lines.append(row(f"level {level}", metrics))
    for subject, metrics in summary.get("by_subject", {}).items():
        lines.append(row(subject, metrics))
    lines.append("")
    lines.append("Metrics in %. " + _generation_note(summary["generation"]))
    return "\n".join(lines) + "\n"


def _generation_note(generation: dict) -> str:
    if generation["temperature"] == 0:
        return f"Greedy decoding, max {generation['max_new_tokens']} new tokens."
    return (
        f"{generation['num_samples']} samples per problem at temperature {generation['temperature']}, "
        f"top_p {generation['top_p']}, max {generation['max_new_tokens']} new tokens."
    )


# --------------------------------------------------------------------------------------------------------------------
# Generation backends
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SamplingParams:
    """Decoding settings shared by every backend; temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    seed: int = 0


class Generator(Protocol):
    """A generation backend: `n` completions (text only, prompt excluded) for each prompt, in prompt order."""

    def generate(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[str]]: ...


class TransformersGenerator:
    """`model.generate` in batches of `batch_size` prompts, left padded, longest prompts first.

    Sorting by length keeps the padding inside a batch small (and puts the largest batch first, so an
    out-of-memory error shows at once); results are returned in the caller's order.
    """

    def __init__(self, model, tokenizer, batch_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_pretrained(cls, path: str, batch_size: int = 16, dtype: str = "auto", device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        return cls(model, AutoTokenizer.from_pretrained(path), batch_size=batch_size)

    def generate(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[str]]:
        import torch

        do_sample = params.temperature > 0
        if not do_sample and n != 1:
            raise ValueError("greedy decoding (temperature 0) gives one completion per prompt; use n=1")
        torch.manual_seed(params.seed)
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        results: list[list[str]] = [[] for _ in prompts]
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                inputs = self.tokenizer(
                    [prompts[i] for i in batch],
                    return_tensors="pt",
                    padding=True,
                    padding_side="left",
                    add_special_tokens=False,
                ).to(self.model.device)
                sampling = {"temperature": params.temperature, "top_p": params.top_p} if do_sample else {}
                with torch.no_grad():
                    output = self.model.generate(
                        **inputs,
                        max_new_tokens=params.max_new_tokens,
                        do_sample=do_sample,
                        num_return_sequences=n,
                        pad_token_id=self.tokenizer.pad_token_id,
                        **sampling,
                    )
                texts = self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
                for j, i in enumerate(batch):
                    results[i] = texts[j * n : (j + 1) * n]
        finally:
            self.model.train(was_training)
        return results


class VLLMGenerator:
    """vLLM offline generation (continuous batching: all prompts are submitted at once)."""

    def __init__(self, model_path: str, **llm_kwargs):
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError("--backend vllm needs vLLM: pip install 'grpo-ext[vllm]'") from err
        self.llm = LLM(model=model_path, **llm_kwargs)

    def generate(self, prompts: list[str], n: int, params: SamplingParams) -> list[list[str]]:
        from vllm import SamplingParams as VLLMSamplingParams

        sampling = VLLMSamplingParams(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
        )
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
        return [[candidate.text for candidate in output.outputs] for output in outputs]


# --------------------------------------------------------------------------------------------------------------------
# Scoring and the evaluation loop
# --------------------------------------------------------------------------------------------------------------------


def score_problems(
    completions: Sequence[list[str]], golds: Sequence[str], ks: Sequence[int], timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Extract and check every completion of every problem (one batched `rewards.match_many` call, which spreads
    the symbolic comparisons over the verifier pool); majority votes for each k <= n over the first k samples.

    Extraction is `rewards.accuracy_reward`'s: the gold goes through `extract_gold` (a `#### x` rationale or a
    `\\boxed{}` solution is accepted), and the last-number fallback is used only when the gold is a plain number.
    A problem whose gold cannot be read scores 0 (training would ignore it)."""
    from rewards import answers_match, extract_gold, extract_prediction, match_many

    golds = [extract_gold(gold) for gold in golds]
    extracted = [[extract_prediction(text, gold) for text in texts] for texts, gold in zip(completions, golds)]
    pairs = [
        (pred, gold) for preds, gold in zip(extracted, golds) if gold is not None for pred in preds if pred is not None
    ]
    verdicts = iter(match_many(pairs, timeout=timeout))

    def same(a: str, b: str) -> bool:
        return bool(answers_match(a, b, timeout=timeout))

    records = []
    for texts, preds, gold in zip(completions, extracted, golds):
        corrects = [gold is not None and pred is not None and bool(next(verdicts)) for pred in preds]
        record: dict[str, Any] = {
            "completion": texts[0],
            "extracted_answer": preds[0],
            "correct": corrects[0],
            "corrects": corrects,
        }
        if len(texts) > 1:
            record["completions"] = list(texts)
            record["extracted_answers"] = preds
            record["maj"] = {}
            for k in ks:
                if k <= len(texts):
                    winner = majority_vote(preds[:k], same=same)
                    record["maj"][str(k)] = winner is not None and corrects[winner]
        records.append(record)
    return records


def render_chat(tokenizer) -> Callable[[list[dict]], str]:
    """Prompt renderer: the tokenizer's chat template with the generation prompt appended."""

    def render(messages: list[dict]) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return render


def run_evaluation(
    dataset,
    generator: Generator,
    render: Callable[[list[dict]], str],
    params: SamplingParams,
    num_samples: int = 1,
    ks: Sequence[int] = (1,),
    output_dir: str | None = None,
    resume: bool = False,
    chunk_size: int = 64,
    answer_timeout: float = 5.0,
    run_info: dict | None = None,
    progress: bool = True,
) -> dict:
    """Generate, score and summarise; with `output_dir`, stream records to `samples.jsonl` and write the summary.

    `dataset` rows need `idx`, `prompt` (chat messages) and `answer`; `level`/`subject` are carried into the records
    and give per-level / per-subject tables. Returns the summary dict (also written to `summary.json`).
    """
    from tqdm.auto import tqdm

    if params.temperature == 0 and num_samples != 1:
        raise ValueError("--num_samples > 1 needs sampling: set --temperature > 0")
    run_info = dict(run_info or {})
    generation = {**asdict(params), "num_samples": num_samples}
    records: list[dict] = []
    samples_path = None
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        samples_path = os.path.join(output_dir, SAMPLES_FILE)
        records = _prepare_output(output_dir, resume, {**run_info, "generation": generation})

    done = {r["idx"] for r in records}
    pending = [row for row in dataset if row["idx"] not in done]
    bar = tqdm(total=len(done) + len(pending), initial=len(done), disable=not progress, desc="evaluate")
    running = [sum(r["corrects"]) / len(r["corrects"]) for r in records]
    if running:
        bar.set_postfix(acc=f"{sum(running) / len(running):.3f}")
    for start in range(0, len(pending), chunk_size):
        rows = pending[start : start + chunk_size]
        prompts = [render(row["prompt"]) for row in rows]
        outputs = generator.generate(prompts, num_samples, params)
        if len(outputs) != len(rows) or any(len(o) != num_samples for o in outputs):
            raise RuntimeError(f"generator returned {[len(o) for o in outputs]} completions for {len(rows)} prompts")
        new = []
        scores = score_problems(outputs, [row["answer"] for row in rows], ks, timeout=answer_timeout)
        for row, prompt, score in zip(rows, prompts, scores):
            record = {"idx": row["idx"], "prompt": prompt, "gold": row["answer"]}
            for key in ("level", "subject"):
                if key in row and row[key] is not None:
                    record[key] = row[key]
            record.update(score)
            new.append(record)
            running.append(sum(record["corrects"]) / num_samples)
        if samples_path is not None:
            with open(samples_path, "a", encoding="utf-8") as handle:
                for record in new:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        records.extend(new)
        bar.update(len(rows))
        bar.set_postfix(acc=f"{sum(running) / len(running):.3f}")
    bar.close()

    records.sort(key=lambda r: r["idx"])
    summary = {**run_info, "generation": generation, "overall": summarize(records, ks)}
    if any("level" in r for r in records):
        summary["by_level"] = summarize_by(records, "level", ks)
    if any("subject" in r for r in records):
        summary["by_subject"] = summarize_by(records, "subject", ks)
    if output_dir is not None:
        with open(os.path.join(output_dir, SUMMARY_FILE), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
        with open(os.path.join(output_dir, TABLE_FILE), "w", encoding="utf-8") as handle:
            handle.write(markdown_table(summary))
    return summary


def _prepare_output(output_dir: str, resume: bool, run_config: dict) -> list[dict]:
    """Records already written (with `resume`), after checking the earlier run used the same settings."""
    samples_path = os.path.join(output_dir, SAMPLES_FILE)
    config_path = os.path.join(output_dir, RUN_CONFIG_FILE)
    exists = os.path.exists(samples_path)
    if exists and not resume:
        raise FileExistsError(f"{samples_path} exists: pass --resume to continue it, or choose another --output_dir")
    records = []
    if exists:
        if os.path.exists(config_path):
            with open(config_path, encoding="utf-8") as handle:
                previous = json.load(handle)
            if previous != json.loads(json.dumps(run_config)):
                raise ValueError(
                    f"--resume: {config_path} was written with different settings:\n  before: {previous}\n"
                    f"  now:    {run_config}"
                )
        with open(samples_path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    # A run killed mid-write leaves a partial last line: drop it and regenerate that problem.
                    with open(samples_path, "w", encoding="utf-8") as out:
                        out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
                    print(f"--resume: dropped unreadable line {line_number} of {samples_path}", file=sys.stderr)
                    break
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(run_config, handle, indent=2)
    return records


# --------------------------------------------------------------------------------------------------------------------
# Periodic evaluation during training
# --------------------------------------------------------------------------------------------------------------------


class MathEvalCallback(TrainerCallback):
    """Greedy accuracy on a small problem set every `eval_steps` optimizer steps, logged with the training metrics.

    At an evaluation step the callback generates, forces a log at that step, and adds `<prefix>/accuracy` and
    `<prefix>/count` to that log row, so the figures reach `log_history`, `metrics.jsonl` and every `report_to`
    backend together with the step's loss and rewards. (Calling `trainer.log` from a callback instead would cancel
    the step's regular log and, in GRPOTrainer, flush its reward metrics early.) Attach it with `attach`, which puts
    it first so that the reporting callbacks see the added keys. Problems are split across processes in equal shards
    (`equal_shard`) and the counts gathered; every rank generates the same number of rows (needed under ZeRO-3/FSDP,
    where generation is a collective).

        MathEvalCallback(trainer, load_math_dataset("gsm8k", data_files=...), eval_steps=50).attach()
    """

    def __init__(
        self,
        trainer,
        dataset,
        eval_steps: int,
        max_new_tokens: int = 512,
        batch_size: int = 16,
        prefix: str = "math_eval",
        answer_timeout: float = 5.0,
    ):
        if eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1, got {eval_steps}")
        self.trainer = trainer
        self.dataset = dataset
        self.eval_steps = eval_steps
        self.params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
        self.batch_size = batch_size
        self.prefix = prefix
        self.answer_timeout = answer_timeout
        self.pending: dict[str, float] | None = None

    def attach(self) -> "MathEvalCallback":
        """Register with the trainer, before the reporting callbacks."""
        self.trainer.callback_handler.callbacks.insert(0, self)
        return self

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.eval_steps == 0:
            self.pending = self.evaluate()
            control.should_log = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.pending is not None and logs is not None:
            logs.update(self.pending)
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(self.pending)  # the trainer stored a copy of `logs` before this call
            self.pending = None
        return control

    def evaluate(self) -> dict[str, float]:
        from accelerate.utils import gather_object
        from trl.models import unwrap_model_for_generation

        accelerator = self.trainer.accelerator
        tokenizer = self.trainer.processing_class
        shard, num_real = equal_shard(list(self.dataset), accelerator.process_index, accelerator.num_processes)
        render = render_chat(tokenizer)
        correct = 0.0
        if shard:  # every rank holds the same number of rows, so all make the same generate calls
            with unwrap_model_for_generation(self.trainer.model_wrapped, accelerator) as model:
                generator = TransformersGenerator(model, tokenizer, batch_size=self.batch_size)
                outputs = generator.generate([render(row["prompt"]) for row in shard], 1, self.params)
            scores = score_problems(outputs, [row["answer"] for row in shard], ks=(1,), timeout=self.answer_timeout)
            correct = float(sum(score["corrects"][0] for score in scores[:num_real]))  # padding rows not counted
        counts = gather_object([(correct, num_real)])
        total = sum(n for _, n in counts)
        return {
            f"{self.prefix}/accuracy": sum(c for c, _ in counts) / max(total, 1),
            f"{self.prefix}/count": float(total),
        }


def equal_shard(rows: list, process_index: int, num_processes: int) -> tuple[list, int]:
    """Rank `process_index`'s contiguous share of `rows`, padded (by cycling from the start) so that every rank holds
    ceil(len(rows) / num_processes) rows, and how many of them are real. Equal shards keep the ranks' generate calls
    in step, which ZeRO-3 and FSDP need (their forwards are collectives)."""
    per_rank = -(-len(rows) // num_processes)
    start = process_index * per_rank
    shard = [rows[i % len(rows)] for i in range(start, start + per_rank)] if rows else []
    return shard, max(0, min(per_rank, len(rows) - start))


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


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
    num_few_shot: int = field(
        default=0,
        metadata={
            "help": "Worked examples prepended as chat turns: the first rows of few_shot_data_files, or of "
            "the hub train split (GSM8K train; MATH train for MATH and MATH-500)."
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
    max_new_tokens: int = field(default=1024, metadata={"help": "Maximum completion length in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy; > 0 samples (needed for num_samples > 1)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold."})
    num_samples: int = field(default=1, metadata={"help": "Completions per problem (n of pass@k, maj@k)."})
    k: list[int] = field(default_factory=lambda: [1], metadata={"help": "k values for pass@k and maj@k (k <= n)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    output_dir: str = field(default="eval_outputs", metadata={"help": "Where samples.jsonl and summaries go."})
    resume: bool = field(default=False, metadata={"help": "Continue a partial run in output_dir."})
    save_every: int = field(default=64, metadata={"help": "Problems generated between appends to samples.jsonl."})
    answer_timeout: float = field(default=5.0, metadata={"help": "Seconds allowed per answer comparison."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vLLM tensor parallel size."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vLLM GPU memory fraction."})

    def __post_init__(self):
        if self.backend not in ("transformers", "vllm"):
            raise ValueError(f"--backend must be `transformers` or `vllm`, got {self.backend!r}")
        if self.num_samples < 1:
            raise ValueError(f"--num_samples must be >= 1, got {self.num_samples}")
        bad = [k for k in self.k if not 1 <= k <= self.num_samples]
        if bad:
            raise ValueError(f"--k values must lie in [1, num_samples={self.num_samples}], got {bad}")
        if self.temperature == 0 and self.num_samples > 1:
            raise ValueError("--num_samples > 1 needs sampling: set --temperature > 0")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must lie in (0, 1], got {self.top_p}")
        for name in ("max_new_tokens", "batch_size", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not self.answer_timeout > 0:
            raise ValueError(f"--answer_timeout must be positive, got {self.answer_timeout}")


def make_parser():
    from trl import TrlParser

    # allow_abbrev=False: a misspelt or truncated option is an error, never a silent prefix match
    return TrlParser(EvalArguments, prog="grpo-ext-evaluate", description=__doc__, allow_abbrev=False)


def evaluate(argv: list[str] | None = None, generator: Generator | None = None, render=None) -> dict:
    """Parse arguments, load data and model, evaluate; return the summary. `generator`/`render` replace the model
    (tests, callers)."""
    from grpo_ext.data import load_math_dataset

    (args,) = make_parser().parse_args_and_config(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # every process would generate everything and append to the same samples.jsonl
        raise RuntimeError(
            "evaluate.py runs as a single process (python launch/evaluate.py ...); for several GPUs use "
            "--backend vllm --tensor_parallel_size N"
        )
    dataset = load_math_dataset(
        args.dataset_name,
        split=args.dataset_split,
        data_files=args.data_files,
        limit=args.limit,
        hub_id=args.dataset_hub_id,
        instruction=args.instruction,
        system_prompt=args.system_prompt,
        num_few_shot=args.num_few_shot,
        few_shot_data_files=args.few_shot_data_files,
    )
    if generator is None:
        if args.model_name_or_path is None:
            raise ValueError("--model_name_or_path is required")
        from launch.common import check_model_path

        check_model_path(args.model_name_or_path)  # a missing path is named, not reported as a hub failure
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
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
    elif render is None:
        raise ValueError("pass `render` together with `generator`")
    params = SamplingParams(
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    run_info = {
        "model": args.model_name_or_path,
        "dataset": args.dataset_name,
        "split": args.dataset_split if args.data_files is None else None,
        "data_files": args.data_files,
        "num_few_shot": args.num_few_shot,
        "few_shot_data_files": args.few_shot_data_files,
        "instruction": args.instruction,
        "system_prompt": args.system_prompt,
    }
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
    )
    print(markdown_table(summary))
    return summary


def main(argv: list[str] | None = None) -> None:
    """Console script `grpo-ext-evaluate` (returns None: the wrapper passes the return value to sys.exit)."""
    evaluate(argv)


if __name__ == "__main__":
    main()
