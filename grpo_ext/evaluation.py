"""Evaluation on GSM8K and MATH: pass@k, maj@k, generation backends, scoring, the evaluation loop and the
periodic evaluation callback used during training. The command line is `launch/evaluate.py`.

Completions are scored by `rewards.grade_completions`, the code behind `rewards.accuracy_reward`, so a sample is
correct exactly when training would reward it. `run_evaluation` writes `samples.jsonl` (one line per problem),
`summary.json` and `summary.md` to its `output_dir`; `resume=True` skips problems already in `samples.jsonl`.

The generation backend is anything with `generate(prompts, n, params) -> list[list[str]]` (see `Generator`):
`TransformersGenerator` (batched, left padded, length-sorted), `VLLMGenerator` (when vLLM is installed), or a test
double. `MathEvalCallback` runs the same evaluation on a small subset every N training steps.
"""

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from transformers import TrainerCallback

from .versions import library_versions

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
        key = normalize_answer(answer) if isinstance(answer, str) else json.dumps(answer)  # a list of answers
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
            if k <= n and str(k) in records[0].get("maj", {}):
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
    """Summary as a Markdown table: one row overall (named by its score when the protocol has scores), one per
    further score, then one per level and per subject (the first score's)."""
    overall = summary["overall"]
    columns = [c for c in overall if c != "count"]
    protocol = f" — protocol {summary['protocol']}" if summary.get("protocol") else ""
    lines = [
        f"# {summary['dataset']} — {summary.get('model') or 'model'}{protocol}",
        "",
        "| group | problems | " + " | ".join(columns) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in columns) + " |",
    ]

    def row(name: str, metrics: dict) -> str:
        cells = [f"{100 * metrics[c]:.1f}" if c in metrics else "" for c in columns]
        return f"| {name} | {metrics['count']} | " + " | ".join(cells) + " |"

    scores = list(summary.get("scores", {}).items())
    # `overall` is the protocol's first score (lm-eval's GSM8K: strict-match); named so beside the others
    lines.append(row(f"all ({scores[0][0]})" if scores else "all", overall))
    for name, metrics in scores[1:]:
        lines.append(row(f"all ({name})", metrics))
    for level, metrics in summary.get("by_level", {}).items():
        lines.append(row(f"level {level}", metrics))
    for subject, metrics in summary.get("by_subject", {}).items():
        lines.append(row(subject, metrics))
    lines.append("")
    lines.append("Metrics in %. " + _generation_note(summary["generation"]))
    for name, tally in summary.get("tallies", {}).items():
        lines.append(f"{name.replace('_', ' ').capitalize()}: {tally['samples']} of {tally['of']} samples "
                     "(see protocol_notes in summary.json).")  # fmt: skip
    return "\n".join(lines) + "\n"


def _generation_note(generation: dict) -> str:
    stop = f" Stops at {generation['stop']}." if generation.get("stop") else ""
    penalty = generation.get("repetition_penalty", 1.0)
    penalty = f", repetition penalty {penalty}" if penalty != 1.0 else ""
    if generation["temperature"] == 0:
        return f"Greedy decoding{penalty}, max {generation['max_new_tokens']} new tokens.{stop}"
    return (
        f"{generation['num_samples']} samples per problem at temperature {generation['temperature']}, "
        f"top_p {generation['top_p']}, top_k {generation.get('top_k', 0)}, min_p {generation.get('min_p', 0.0)}"
        f"{penalty}, max {generation['max_new_tokens']} new tokens.{stop}"
    )


# --------------------------------------------------------------------------------------------------------------------
# Generation backends
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SamplingParams:
    """Every decoding setting, decided here and never by the model's `generation_config.json`; temperature 0 means
    greedy. `top_k` 0, `min_p` 0 and `repetition_penalty` 1 switch those filters off. Generation stops at any of
    `stop` (the protocol's stop strings, the chat template's end of turn, the EOS token; cut from the text, as
    vLLM and lm-eval do) or after `max_new_tokens`. `seed` is the run's seed; each problem samples with
    `problem_seed(seed, idx)`. `add_special_tokens`: the prompt is tokenized with the tokenizer's own special
    tokens (its BOS), as the reference tools tokenize plain-text prompts (`encode_prompts`); off for chat
    templates, which render their own."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    seed: int = 0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    add_special_tokens: bool = False


def problem_seed(seed: int, idx: int) -> int:
    """The sampling seed of problem `idx` in a run seeded with `seed`: the first 4 bytes of sha256("seed:idx"), so
    a problem's samples do not depend on which other problems share its batch, on `--save_every` or on `--resume`."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{idx}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string (the stop string itself excluded)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]


def end_of_turn(tokenizer) -> str | None:
    """The text a chat template puts after an assistant message (e.g. `<|im_end|>` for ChatML), found by rendering
    a one-turn conversation; None without a chat template or when the template adds nothing."""
    if getattr(tokenizer, "chat_template", None) is None:
        return None
    marker = "\u2063ANSWER\u2063"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": marker}], tokenize=False
    )
    after = text[text.rindex(marker) + len(marker) :].strip() if marker in text else ""
    return after or None


def encode_prompts(tokenizer, prompts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    """Each prompt's token ids. With `add_special_tokens`, the tokenizer's default special tokens (the BOS of Llama
    and DeepSeek tokenizers; none for Qwen's), except on a prompt that already starts with the BOS text: lm-eval's
    rule for plain-text contexts (`has_bos_prefix` in lm_eval/models/huggingface.py `tok_batch_encode` and
    vllm_causallms.py `tok_encode`), and what Qwen's and DeepSeek's harnesses get from vLLM's defaults. Without,
    the text alone: a chat template renders its own BOS, and TRL tokenizes training prompts so."""
    bos = getattr(tokenizer, "bos_token", None)
    return [
        tokenizer(prompt, add_special_tokens=add_special_tokens and not (bos and prompt.startswith(bos)))["input_ids"]
        for prompt in prompts
    ]


def single_token_ids(tokenizer, stop: Sequence[str]) -> list[int]:
    """Token ids of the stop strings that are one token (`<|im_end|>`): a backend must stop on these ids, since
    special tokens are not in the detokenised text that stop strings are matched against."""
    ids = [tokenizer.encode(text, add_special_tokens=False) for text in stop]
    return list(dict.fromkeys(i[0] for i in ids if len(i) == 1))


def stop_strings(tokenizer, protocol_stop: Sequence[str] = ()) -> tuple[str, ...]:
    """The protocol's stop strings, then the chat template's end of turn and the EOS token, without repeats."""
    candidates = [*protocol_stop, end_of_turn(tokenizer), tokenizer.eos_token]
    return tuple(dict.fromkeys(s for s in candidates if s))


class Generator(Protocol):
    """A generation backend: `n` completions (text only, prompt excluded, cut at `params.stop`) for each prompt, in
    prompt order; sampling for prompt i is seeded with `seeds[i]` (`params.seed` for every prompt when None)."""

    def generate(
        self, prompts: list[str], n: int, params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[str]]: ...


def new_tokens_within(max_positions: int | None, prompt_length: int, max_new_tokens: int) -> int:
    """How many tokens may be generated after a prompt of `prompt_length` tokens: `max_new_tokens`, capped at
    `max_positions - prompt_length` (>= 0) when the model has a position limit. Past its positions a model's outputs
    are undefined (transformers warns, "exceeded the model's predefined maximum length"); vLLM stops there too
    (`max_model_len`)."""
    if max_positions is None:
        return max_new_tokens
    return max(0, min(max_new_tokens, max_positions - prompt_length))


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

    def generation_config(self, n: int, params: SamplingParams):
        """A complete `GenerationConfig` from `params` alone: every sampling filter set explicitly (so none is
        inherited from the model's generation_config.json), EOS = the tokenizer's EOS plus every stop string that is
        one token, the other stop strings through transformers' `stop_strings`."""
        from transformers import GenerationConfig

        do_sample = params.temperature > 0
        stop_ids = list(dict.fromkeys([self.tokenizer.eos_token_id, *single_token_ids(self.tokenizer, params.stop)]))
        return GenerationConfig(
            do_sample=do_sample,
            num_beams=1,
            temperature=params.temperature if do_sample else 1.0,
            top_p=params.top_p if do_sample else 1.0,
            top_k=params.top_k if do_sample else None,  # greedy: no warper runs; None avoids transformers' warning
            min_p=params.min_p if do_sample else None,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            repetition_penalty=params.repetition_penalty,
            no_repeat_ngram_size=0,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=n,
            eos_token_id=stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
            stop_strings=list(params.stop) or None,
        )

    def decode(self, ids, stop: Sequence[str]) -> str:
        """A completion's text: cut at the first stop string, then special tokens (padding) removed."""
        text = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=False), stop)
        for special in self.tokenizer.all_special_tokens:
            text = text.replace(special, "")
        return text

    def generate(
        self, prompts: list[str], n: int, params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[str]]:
        """Batches of `batch_size` prompts, longest first. Sampling with `seeds`: one prompt at a time (its n samples
        together) after `torch.manual_seed(seeds[i])`, so a problem's samples do not depend on the batching; without
        `seeds`: batched after one `torch.manual_seed(params.seed)`."""
        import torch

        do_sample = params.temperature > 0
        if not do_sample and n != 1:
            raise ValueError("greedy decoding (temperature 0) gives one completion per prompt; use n=1")
        per_prompt = do_sample and seeds is not None
        config = self.generation_config(n, params)
        prompt_ids = encode_prompts(self.tokenizer, prompts, params.add_special_tokens)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompt_ids[i]))
        batch_size = 1 if per_prompt else self.batch_size
        if do_sample and not per_prompt:
            torch.manual_seed(params.seed)
        results: list[list[str]] = [[] for _ in prompts]
        max_positions = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        was_training = self.model.training
        model_config, self.model.generation_config = self.model.generation_config, config  # nothing inherited
        self.model.eval()
        try:
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                batch_ids = {"input_ids": [prompt_ids[i] for i in batch]}
                inputs = self.tokenizer.pad(batch_ids, padding=True, padding_side="left", return_tensors="pt")
                inputs = inputs.to(self.model.device)
                if per_prompt:
                    torch.manual_seed(seeds[batch[0]])
                room = new_tokens_within(max_positions, inputs["input_ids"].shape[1], params.max_new_tokens)
                if room == 0:  # the prompt fills the model's positions
                    texts = [""] * (len(batch) * n)
                else:
                    batch_config = (config if room == params.max_new_tokens
                                    else self.generation_config(n, replace(params, max_new_tokens=room)))
                    with torch.no_grad():
                        output = self.model.generate(**inputs, generation_config=batch_config, tokenizer=self.tokenizer)
                    completions = output[:, inputs["input_ids"].shape[1] :]
                    texts = [self.decode(ids, params.stop) for ids in completions]
                for j, i in enumerate(batch):
                    results[i] = texts[j * n : (j + 1) * n]
        finally:
            self.model.generation_config = model_config
            self.model.train(was_training)
        return results


class VLLMGenerator:
    """vLLM offline generation (continuous batching: all prompts are submitted at once). The engine is built with
    `generation_config="vllm"`, so the model's generation_config.json sets no default; each prompt carries its own
    sampling parameters (its seed) from `SamplingParams`; one-token stop strings also go in as `stop_token_ids`.
    Prompts go in as token ids from `encode_prompts`, so both backends see the same tokens (vLLM would add the BOS
    to a chat template's text that already has one)."""

    def __init__(self, model_path: str, **llm_kwargs):
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError("--backend vllm needs vLLM: pip install 'grpo-ext[vllm]'") from err
        self.llm = LLM(model=model_path, **{"generation_config": "vllm", **llm_kwargs})

    def sampling_kwargs(self, n: int, params: SamplingParams, seed: int) -> dict:
        """vLLM's SamplingParams arguments for one prompt (greedy: temperature 0 and the filters off)."""
        greedy = params.temperature == 0
        return {
            "n": n,
            "temperature": params.temperature,
            "top_p": 1.0 if greedy else params.top_p,
            "top_k": -1 if greedy or params.top_k == 0 else params.top_k,
            "min_p": 0.0 if greedy else params.min_p,
            "repetition_penalty": params.repetition_penalty,
            "max_tokens": params.max_new_tokens,
            "stop": list(params.stop),
            "stop_token_ids": single_token_ids(self.llm.get_tokenizer(), params.stop),
            "seed": seed,
        }

    def generate(
        self, prompts: list[str], n: int, params: SamplingParams, seeds: Sequence[int] | None = None
    ) -> list[list[str]]:
        from vllm import SamplingParams as VLLMSamplingParams

        seeds = list(seeds) if seeds is not None else [params.seed] * len(prompts)
        sampling = [VLLMSamplingParams(**self.sampling_kwargs(n, params, seed)) for seed in seeds]
        ids = encode_prompts(self.llm.get_tokenizer(), prompts, params.add_special_tokens)
        outputs = self.llm.generate([{"prompt_token_ids": i} for i in ids], sampling, use_tqdm=False)
        return [[candidate.text for candidate in output.outputs] for output in outputs]


# --------------------------------------------------------------------------------------------------------------------
# Scoring and the evaluation loop
# --------------------------------------------------------------------------------------------------------------------


def score_problems(
    completions: Sequence[list[str]], golds: Sequence[str], ks: Sequence[int], timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Check every completion of every problem; majority votes for each k <= n over the first k samples.

    A sample is correct exactly when `rewards.accuracy_reward` rewards it: the verdicts are
    `rewards.grade_completions`' (one batched call, spread over the verifier pool), including math-verify's own
    reading of the whole texts where our extraction finds no answer or cannot read the gold. maj@k votes on the
    extracted answers (`extract_prediction`); a sample whose answer only math-verify could read has none and does
    not vote (the pool returns verdicts, not what it extracted). A problem whose gold cannot be read by either
    scores 0 (training would ignore it)."""
    from rewards import grade_completions

    flat = grade_completions(
        [text for texts in completions for text in texts],
        [gold for texts, gold in zip(completions, golds) for _ in texts],
        timeout=timeout,
    )
    grades = iter(flat)
    by_problem = [[next(grades) for _ in texts] for texts in completions]
    extracted = [[grade.prediction for grade in problem] for problem in by_problem]
    corrects = [[bool(grade.correct) for grade in problem] for problem in by_problem]
    return _records(completions, extracted, corrects, ks, _answers_match(timeout))


def score_with(
    score, completions: Sequence[list[str]], rows: Sequence[dict], ks: Sequence[int], timeout: float = 5.0
) -> list[dict[str, Any]]:
    """`score_problems` for a protocol's `Score` (`grpo_ext.protocols`): its extraction (`score.extract(text,
    row)`), its gold and its judge (`score.judge`, every pair bounded by `timeout` seconds; without one an answer
    is correct when it equals the gold string); maj@k groups answers by the same test. A `whole_text` score's
    verdicts are `rewards.match_texts` on (completion, gold) and it has no maj@k."""
    from rewards import match_texts

    golds = [score.gold(row) for row in rows]
    if score.whole_text:
        pairs = [(text, gold) for texts, gold in zip(completions, golds) if gold is not None for text in texts]
        verdicts = iter(match_texts(pairs, timeout=timeout))
        corrects = [[gold is not None and bool(next(verdicts)) for _ in texts] for texts, gold in zip(completions, golds)]
        return _records(completions, [[None] * len(texts) for texts in completions], corrects, (), None)
    extracted = [[score.extract(text, row) for text in texts] for texts, row in zip(completions, rows)]
    # one verdict per (answered sample, readable gold), in order, judged in one batch
    pairs = [
        (pred, gold) for preds, gold in zip(extracted, golds) if gold is not None for pred in preds if pred is not None
    ]
    verdicts = iter(score.judge(pairs, timeout) if score.judge else [pred == gold for pred, gold in pairs])
    corrects = [
        [gold is not None and pred is not None and bool(next(verdicts)) for pred in preds]
        for preds, gold in zip(extracted, golds)
    ]
    same = None if score.judge is None else (lambda a, b: bool(score.judge([(a, b)], timeout)[0]))
    return _records(completions, extracted, corrects, ks, same)


def _answers_match(timeout: float) -> Callable[[str, str], bool]:
    """`rewards.answers_match` with `timeout`: the equivalence maj@k groups answers by."""
    from rewards import answers_match

    def same(a: str, b: str) -> bool:
        return bool(answers_match(a, b, timeout=timeout))

    return same


def _records(completions, extracted, corrects, ks, same: Callable[[str, str], bool] | None) -> list[dict[str, Any]]:
    """Per-problem records from each sample's extracted answer and verdict: `correct(s)`, and with n > 1 the
    majority vote for each k over the extracted answers (grouped by `same`, or by equality when None); the problem
    is solved at k when the winning sample is correct."""
    records = []
    for texts, preds, oks in zip(completions, extracted, corrects):
        record: dict[str, Any] = {
            "completion": texts[0],
            "extracted_answer": preds[0],
            "correct": oks[0],
            "corrects": oks,
        }
        if len(texts) > 1:
            record["completions"] = list(texts)
            record["extracted_answers"] = preds
            record["maj"] = {}
            for k in ks:
                if k <= len(texts):
                    winner = majority_vote(preds[:k], same=same)
                    record["maj"][str(k)] = winner is not None and oks[winner]
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
    render: Callable[[Any], str],
    params: SamplingParams,
    num_samples: int = 1,
    ks: Sequence[int] = (1,),
    output_dir: str | None = None,
    resume: bool = False,
    chunk_size: int = 64,
    answer_timeout: float | None = None,
    run_info: dict | None = None,
    progress: bool = True,
    scores: Sequence = (),
    tallies: Sequence[tuple[str, Callable[[str], bool]]] = (),
) -> dict:
    """Generate, score and summarise; with `output_dir`, stream records to `samples.jsonl` and write the summary.

    `dataset` rows need `idx`, `prompt` (what `render` turns into the prompt text: chat messages, or the text itself)
    and `answer`; `level`/`subject` are carried into the records and give per-level / per-subject tables. Problem
    `idx` samples with seed `problem_seed(params.seed, idx)`. `scores` (a protocol's `Score`s) replace the default
    scoring (`score_problems`): the first fills `correct`/`corrects`/`maj` and `overall`, each one its entry of
    `record["scores"]` and `summary["scores"]`. `tallies` (a protocol's (name, test) pairs) count the samples
    each test holds for: per sample in `record["tallies"]`, in all in `summary["tallies"]`. `answer_timeout`
    bounds each answer comparison in seconds (None: each score's tool's own bound, `Score.timeout`, else 5).
    Returns the summary dict (also written to `summary.json`).
    """
    from tqdm.auto import tqdm

    if params.temperature == 0 and num_samples != 1:
        raise ValueError("--num_samples > 1 needs sampling: set --temperature > 0")
    run_info = dict(run_info or {})
    generation = {**asdict(params), "stop": list(params.stop), "num_samples": num_samples,
                  "seeding": "per problem: problem_seed(seed, idx)"}  # fmt: skip
    records: list[dict] = []
    samples_path = None
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        samples_path = os.path.join(output_dir, SAMPLES_FILE)
        records = _prepare_output(output_dir, resume, {**run_info, "generation": generation})

    wanted = {row["idx"] for row in dataset}
    done = {r["idx"] for r in records}
    if done - wanted:
        raise OutputDirError(
            f"--resume: {samples_path} holds {len(done - wanted)} problem(s) outside this run's {len(wanted)} "
            f"(e.g. idx {min(done - wanted)}): a smaller --limit than the earlier run's cannot be honoured without "
            "dropping them; use that run's --limit or a larger one, or a new --output_dir"
        )
    pending = [row for row in dataset if row["idx"] not in done]
    # seconds per answer comparison: --answer_timeout, else each score's tool's own bound (5 s when it has none)
    timeouts = {score.name: answer_timeout or score.timeout or 5.0 for score in scores}
    bar = tqdm(total=len(done) + len(pending), initial=len(done), disable=not progress, desc="evaluate")
    running = [sum(r["corrects"]) / len(r["corrects"]) for r in records]
    if running:
        bar.set_postfix(acc=f"{sum(running) / len(running):.3f}")
    for start in range(0, len(pending), chunk_size):
        rows = pending[start : start + chunk_size]
        prompts = [render(row["prompt"]) for row in rows]
        seeds = [problem_seed(params.seed, row["idx"]) for row in rows]
        outputs = generator.generate(prompts, num_samples, params, seeds=seeds)
        if len(outputs) != len(rows) or any(len(o) != num_samples for o in outputs):
            raise RuntimeError(f"generator returned {[len(o) for o in outputs]} completions for {len(rows)} prompts")
        new = []
        if scores:
            by_score = [score_with(score, outputs, rows, ks, timeout=timeouts[score.name]) for score in scores]
            primary = by_score[0]
        else:
            primary = score_problems(outputs, [row["answer"] for row in rows], ks, timeout=answer_timeout or 5.0)
        for i, (row, prompt, score) in enumerate(zip(rows, prompts, primary)):
            record = {"idx": row["idx"], "prompt": prompt, "gold": row["answer"]}
            for key in ("level", "subject"):
                if key in row and row[key] is not None:
                    record[key] = row[key]
            record.update(score)
            if tallies:
                record["tallies"] = {name: [bool(test(text)) for text in outputs[i]] for name, test in tallies}
            if scores:
                record["scores"] = {
                    s.name: {k: r[i][k] for k in ("extracted_answers", "corrects", "maj") if k in r[i]}
                    | {"extracted_answer": r[i]["extracted_answer"]}
                    for s, r in zip(scores, by_score)
                }
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
    summary = {**run_info, "generation": generation, "versions": library_versions(), "overall": summarize(records, ks)}
    if scores:
        summary["answer_timeouts"] = timeouts
        summary["scores"] = {
            s.name: summarize([{**r, **r["scores"][s.name]} for r in records], ks) for s in scores
        }
    if tallies:
        total = sum(len(r["corrects"]) for r in records)
        summary["tallies"] = {
            name: {"samples": sum(sum(r["tallies"][name]) for r in records), "of": total} for name, _ in tallies
        }
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


class OutputDirError(ValueError):
    """`output_dir` holds another run: it exists without `resume`, or the run to resume used other settings or more
    problems. The message names the option to change."""


def check_output_dir(output_dir: str, resume: bool) -> None:
    """An earlier run's samples are continued only when asked (`resume`); cheap, so callers check before loading a
    model (`run_evaluation` checks again, and checks the settings)."""
    samples_path = os.path.join(output_dir, SAMPLES_FILE)
    if os.path.exists(samples_path) and not resume:
        raise OutputDirError(f"{samples_path} exists: pass --resume to continue it, or choose another --output_dir")


def _differences(before: dict, now: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for each setting that differs, nested keys dotted (one line, unlike two whole dicts)."""
    changed = []
    for key in sorted(set(before) | set(now), key=str):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += _differences(old, new, f"{prefix}{key}.")
        elif old != new or (key in before) != (key in now):
            shown = [repr(side[key]) if key in side else "(absent)" for side in (before, now)]
            changed.append(f"{prefix}{key}: {shown[0]} -> {shown[1]}")
    return changed


def _without_limit(config: dict) -> dict:
    return {key: value for key, value in config.items() if key != "limit"}


def _prepare_output(output_dir: str, resume: bool, run_config: dict) -> list[dict]:
    """Records already written (with `resume`), after checking the earlier run used the same settings."""
    samples_path = os.path.join(output_dir, SAMPLES_FILE)
    config_path = os.path.join(output_dir, RUN_CONFIG_FILE)
    check_output_dir(output_dir, resume)
    exists = os.path.exists(samples_path)
    records = []
    if exists:
        if os.path.exists(config_path):
            with open(config_path, encoding="utf-8") as handle:
                previous = json.load(handle)
            # the limit is stored but may grow: a larger --limit extends the run (a smaller one is refused later)
            changed = _differences(_without_limit(previous), _without_limit(json.loads(json.dumps(run_config))))
            if changed:
                raise OutputDirError(f"--resume: {config_path} was written with different settings: "
                                     + "; ".join(changed))  # fmt: skip
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
            params = replace(self.params, stop=stop_strings(tokenizer))  # the chat template's end of turn, EOS
            with unwrap_model_for_generation(self.trainer.model_wrapped, accelerator) as model:
                generator = TransformersGenerator(model, tokenizer, batch_size=self.batch_size)
                outputs = generator.generate([render(row["prompt"]) for row in shard], 1, params)
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
