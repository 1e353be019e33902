"""Cost of `grpo_ext.GRPOTrainer` over TRL's `GRPOTrainer`: step time and peak GPU memory.

    python -m benchmarks.step_time [--tiny] [--output_dir DIR] [--rounds N] [--warmup_steps N] [--steps N]
                                   [--variants trl,a,trl_b,b,c,d] [--work_dir DIR]

What is measured (full size):

* Model: a randomly initialised Qwen2.5-0.5B-shaped Qwen2 (`benchmarks.common.QWEN25_05B_SHAPE`) with a 16,384-token
  BPE tokenizer trained offline on GSM8K text; bf16 weights (`model_init_kwargs={"dtype": "bfloat16"}`) and
  `bf16=True` on CUDA. Without CUDA the script falls back to float32 on CPU and records it in `fallbacks`.
* Workload: one optimizer step = 32 completions (4 GSM8K train questions x `num_generations=8`) of up to 256 tokens,
  `beta=0.04`, HF generation (no vLLM), TRL's other defaults (gradient checkpointing on). A random model rarely
  samples EOS, so completions run to the limit; the mean completion length TRL logs is reported. The reward is a
  cheap deterministic function of the text (`char_sum_reward`), so advantages are non-zero.
* Variants:
    - `trl`: `trl.GRPOTrainer`, defaults (the baseline);
    - `a`: `grpo_ext.GRPOTrainer`, defaults;
    - `trl_b`: `trl.GRPOTrainer` with `num_iterations=2`, `use_bias_correction_kl=True` (the baseline of `b` with
      the same settings: with `num_iterations=2` each generation serves two optimizer steps);
    - `b`: ours with `kl_estimator="k3+"`, `use_bias_correction_kl=True`, `num_iterations=2`;
    - `c`: ours with `supervision="process"` and a PRM of the policy's size (a random `Qwen2ForTokenClassification`,
      2 labels, same shape and tokenizer), wrapped by the trainer in `ProcessRewardModel`. Random text has few
      delimiters, so steps are forced: `step_splitter` cuts each completion into chunks of `step_chars` characters
      (200 at full size), scored at `step_delimiter="\\n"`;
    - `d`: ours with one iterative-RL refresh of an outcome reward model of the policy's size (a random
      `Qwen2ForSequenceClassification`, 1 label, in `reward_funcs`): `reward_model_refresh_steps = warmup_steps + 1`
      and `max_steps` the same, so the refresh happens once, at the last step, after the warm-up. Labels come from
      a rule (`label_scorer`, cheap), so the cost is mostly RM training (1 epoch, batch 8) plus two RM evaluations
      and the reference reset. A PRM refresh would add Math-Shepherd generation and is not measured here.
* Alternation: each of `--rounds` rounds builds and trains every variant in turn (a fresh trainer per variant and
  round, seed = round index, so within a round all variants see the same prompts), so drift hits them alike.
* Step time: a `TrainerCallback` takes `perf_counter()` after `synchronize()` at `on_step_begin` and `on_step_end`
  (one optimizer step: generation, scoring, reference/old log-probs, forward, backward, optimizer). The first
  `--warmup_steps` steps of each trainer are dropped. With `num_iterations=2` steps alternate between generating
  and reusing a generation, so times are first averaged over each generation cycle (`num_iterations` steps); the
  quoted "step time" of a variant is the median over its cycles (= the median step for `num_iterations=1`). Ratios
  divide a variant's median by the baseline's median from the same run.
* Peak memory: `torch.cuda.max_memory_allocated()` from before the trainer is built (weights included) to the end of
  its training (`reset_peak_memory` / `peak_memory_gib`); the maximum over rounds. None on CPU.
* `c`: the time spent inside `trainer.process_reward_model(...)` calls (wrapped, synchronized) divided by the step time,
  summed over measured steps. Splitting steps and building token advantages is ours but not PRM scoring.
* `d`: wall time of the refresh callback's `on_step_end` at the refresh (synchronized; label + gather + mix + RM
  evaluation before/after + RM training + reference reset), the number of RM training samples (new rows + replayed
  rows of the mix; `rm/` metrics of the refresher), seconds per 1,000 samples; the median over rounds. At full size
  the refresh trains on (2 + 1) x 32 = 96 rollouts (12 RM steps). Per-1,000 figures are a linear extrapolation: the
  fixed part (the RM's AdamW state, created at the first refresh, the reference reset) weighs less in larger refreshes.

`--tiny`: `benchmarks.common.TINY_SHAPE`, a 512-token tokenizer, float32 on CPU with one torch thread, 8 completions
of 16 tokens, 2 rounds of 2 + 2 steps: runs in well under a minute, as a smoke test of this script (its figures say
nothing about GPU cost).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

from benchmarks.common import (
    QWEN25_05B_SHAPE,
    SHARED_DATA,
    TINY_SHAPE,
    environment,
    median_and_spread,
    peak_memory_gib,
    reset_peak_memory,
    save_benchmark_model,
    synchronize,
    write_report,
)

NAME = "step_time"
TARGETS = {"step_time_ratio_max": 1.02, "memory_ratio_max": 1.03, "prm_fraction_max": 0.15}


@dataclass
class Size:
    shape: dict
    vocab_size: int
    batch_size: int  # completions per optimizer step (per_device_train_batch_size, one process)
    num_generations: int
    max_completion_length: int
    step_chars: int  # (c): characters per forced step
    rounds: int
    warmup_steps: int
    steps: int  # measured steps per variant and round
    num_prompts: int


SIZES = {
    "full": Size(QWEN25_05B_SHAPE, 16384, 32, 8, 256, 200, rounds=3, warmup_steps=2, steps=4, num_prompts=256),
    "tiny": Size(TINY_SHAPE, 512, 8, 4, 16, 12, rounds=2, warmup_steps=2, steps=2, num_prompts=32),
}
TINY_PROMPTS = ["What is 3 + 4?", "Compute 7 * 2.", "Natalia sold 48 clips.", "What is 1 + 1?"]


@dataclass
class Variant:
    description: str
    trl: bool = False
    options: dict = field(default_factory=dict)
    baseline_same_settings: str | None = None  # the TRL variant run with the same TRL settings
    prm: bool = False
    refresh: bool = False


VARIANTS = {
    "trl": Variant("trl.GRPOTrainer, defaults", trl=True),
    "a": Variant("grpo_ext.GRPOTrainer, defaults", baseline_same_settings="trl"),
    "trl_b": Variant("trl.GRPOTrainer, num_iterations=2, use_bias_correction_kl=True", trl=True,
                     options={"num_iterations": 2, "use_bias_correction_kl": True}),
    "b": Variant("grpo_ext.GRPOTrainer, kl_estimator=k3+, use_bias_correction_kl=True, num_iterations=2",
                 options={"kl_estimator": "k3+", "num_iterations": 2, "use_bias_correction_kl": True},
                 baseline_same_settings="trl_b"),
    "c": Variant("grpo_ext.GRPOTrainer, supervision=process, PRM of the policy's size",
                 options={"supervision": "process", "step_delimiter": "\n"}, prm=True),
    "d": Variant("grpo_ext.GRPOTrainer, one iterative-RL refresh of an ORM of the policy's size", refresh=True),
}


# ------------------------------------------------------------------------------------------------ rewards, steps


def char_sum_reward(completions, **kwargs) -> list[float]:
    """Cheap deterministic outcome reward with variance: (sum of character codes mod 101) / 100, in [0, 1]."""
    return [(sum(map(ord, c)) % 101) / 100 for c in completions]


def label_scorer(completions, golds) -> list[float]:
    """(d)'s rule for ORM labels at the refresh (cost ~0, both classes present): 1.0 when `char_sum_reward` >= 0.5."""
    return [float(r >= 0.5) for r in char_sum_reward(completions)]


def chunk_splitter(size: int):
    """Step splitter cutting a completion into consecutive `size`-character chunks (whitespace-only chunks dropped):
    random text has few delimiters, this gives the PRM a known number of steps to score."""

    def splitter(text: str) -> list[str]:
        return [text[i : i + size] for i in range(0, len(text), size) if text[i : i + size].strip()]

    return splitter


# ------------------------------------------------------------------------------------------------ timing


class StepTimer:
    """`TrainerCallback` recording each optimizer step's wall time (synchronized) and the PRM time inside it."""

    def __init__(self):
        self.step_seconds: list[float] = []
        self.prm_seconds: list[float] = []
        self._start = None
        self._prm = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize()
        self._prm = 0.0
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        self.step_seconds.append(time.perf_counter() - self._start)
        self.prm_seconds.append(self._prm)

    def timed(self, fn):
        """`fn` with its synchronized wall time added to the current step's PRM time."""

        def wrapper(*args, **kwargs):
            synchronize()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            synchronize()
            self._prm += time.perf_counter() - start
            return out

        return wrapper


def _as_callback(timer: StepTimer):
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            timer.on_step_begin(*a, **kw)

        def on_step_end(self, *a, **kw):
            timer.on_step_end(*a, **kw)

    return _Callback()


def cycle_times(step_seconds: list[float], cycle: int) -> list[float]:
    """Mean step time over each complete generation cycle of `cycle` consecutive steps."""
    return [statistics.fmean(step_seconds[i : i + cycle]) for i in range(0, len(step_seconds) - cycle + 1, cycle)]


# ------------------------------------------------------------------------------------------------ set-up


def load_prompts(size: Size, tiny: bool):
    """`{"prompt", "answer"}` rows: GSM8K train questions (full size, when present), else short fixed prompts."""
    from datasets import Dataset

    path = SHARED_DATA / "gsm8k" / "train.jsonl"
    rows = []
    if not tiny and path.is_file():
        from grpo_ext.data import read_jsonl

        rows = [{"prompt": row["question"], "answer": row["answer"].split("####")[-1].strip()}
                for _, row in read_jsonl(path)[: size.num_prompts]]
        source = f"GSM8K train, first {len(rows)} questions"
    else:
        rows = [{"prompt": TINY_PROMPTS[i % len(TINY_PROMPTS)], "answer": str(i % 10)} for i in range(size.num_prompts)]
        source = "built-in short prompts" + ("" if tiny else f" ({path} not found)")
    return Dataset.from_list(rows), source


def build_models(work: str, size: Size, dtype_name: str) -> dict[str, str]:
    """Policy (+ tokenizer), PRM and ORM of the policy's shape, saved under `work`; returns their paths."""
    import torch
    from transformers import AutoConfig, Qwen2ForSequenceClassification, Qwen2ForTokenClassification

    policy = save_benchmark_model(os.path.join(work, "policy"), size.shape, size.vocab_size, seed=0)
    dtype = getattr(torch, dtype_name)
    paths = {"policy": policy}
    for name, cls, num_labels, seed in (("prm", Qwen2ForTokenClassification, 2, 1),
                                        ("orm", Qwen2ForSequenceClassification, 1, 2)):
        config = AutoConfig.from_pretrained(policy, num_labels=num_labels)
        torch.manual_seed(seed)
        cls(config).to(dtype).save_pretrained(os.path.join(work, name))
        paths[name] = os.path.join(work, name)
    return paths


def make_trainer(variant: Variant, paths: dict, dataset, size: Size, run: dict, output_dir: str,
                 max_steps: int, seed: int):
    import torch
    import trl
    from transformers import AutoTokenizer

    import grpo_ext

    options = dict(
        output_dir=output_dir,
        per_device_train_batch_size=size.batch_size,
        num_generations=size.num_generations,
        max_completion_length=size.max_completion_length,
        max_steps=max_steps,
        beta=0.04,
        learning_rate=1e-6,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        bf16=run["bf16"],
        use_cpu=run["device"] == "cpu",
        model_init_kwargs={"dtype": run["dtype"]},
        dataloader_num_workers=0,
        **variant.options,
    )
    if variant.refresh:
        steps = max_steps  # one refresh, at the last step
        options.update(reward_model_refresh_steps=steps, reward_model_train_epochs=1.0, reward_model_batch_size=8)
    config_cls, trainer_cls = (trl.GRPOConfig, trl.GRPOTrainer) if variant.trl else (grpo_ext.GRPOConfig,
                                                                                       grpo_ext.GRPOTrainer)
    args = config_cls(**options)
    kwargs = {}
    reward_funcs = [char_sum_reward]
    dtype = getattr(torch, run["dtype"])
    if variant.prm:
        from transformers import Qwen2ForTokenClassification

        kwargs.update(
            process_reward_model=Qwen2ForTokenClassification.from_pretrained(paths["prm"], dtype=dtype),
            process_reward_tokenizer=AutoTokenizer.from_pretrained(paths["policy"]),
            step_splitter=chunk_splitter(size.step_chars),
        )
    if variant.refresh:
        from transformers import Qwen2ForSequenceClassification

        orm = Qwen2ForSequenceClassification.from_pretrained(paths["orm"], dtype=dtype)
        reward_funcs = [char_sum_reward, orm]
        kwargs["reward_processing_classes"] = [None, AutoTokenizer.from_pretrained(paths["policy"])]
    torch.manual_seed(seed)
    trainer = trainer_cls(model=paths["policy"], reward_funcs=reward_funcs, args=args, train_dataset=dataset, **kwargs)
    if variant.refresh:
        trainer.refresher.scorer = label_scorer
    return trainer


def run_variant(name: str, variant: Variant, paths, dataset, size: Size, run: dict, work: str, seed: int) -> dict:
    """Build, train and tear down one variant; return its raw measurements for this round."""
    import torch

    reset_peak_memory()
    allocated_before = torch.cuda.memory_allocated() / 2**30 if run["device"] == "cuda" else None
    max_steps = size.warmup_steps + (1 if variant.refresh else size.steps)
    trainer = make_trainer(variant, paths, dataset, size, run, os.path.join(work, f"run-{name}-{seed}"),
                           max_steps, seed)
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # per-step log dicts; this script prints its own progress
    timer = StepTimer()
    trainer.add_callback(_as_callback(timer))
    if variant.prm:
        trainer.process_reward_model = timer.timed(trainer.process_reward_model)
    refresh = {}
    if variant.refresh:
        from grpo_ext.iterative import IterativeRLCallback

        callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, IterativeRLCallback))
        original, refresher = callback.on_step_end, trainer.refresher

        def timed_refresh(*args, **kwargs):
            iteration = refresher.iteration
            synchronize()
            start = time.perf_counter()
            out = original(*args, **kwargs)
            synchronize()
            if refresher.iteration > iteration:  # this step refreshed
                refresh["seconds"] = time.perf_counter() - start
                refresh["metrics"] = dict(refresher.last_metrics)
            return out

        callback.on_step_end = timed_refresh
    trainer.train()
    peak = peak_memory_gib() if run["device"] == "cuda" else None
    logs = [entry for entry in trainer.state.log_history if "completions/mean_length" in entry]
    measured_logs = logs[size.warmup_steps:] or logs
    result = {
        "step_seconds": timer.step_seconds[size.warmup_steps:],
        "prm_seconds": timer.prm_seconds[size.warmup_steps:],
        "peak_memory_gib": peak,
        "allocated_before_gib": allocated_before,
        "mean_completion_length": statistics.fmean(e["completions/mean_length"] for e in measured_logs),
        "clipped_ratio": statistics.fmean(e.get("completions/clipped_ratio", float("nan")) for e in measured_logs),
        "steps_per_completion": [e["process/steps_per_completion"] for e in measured_logs
                                 if "process/steps_per_completion" in e],
        "refresh": refresh,
    }
    if variant.refresh and not refresh:
        raise RuntimeError("variant d: the iterative-RL refresh did not happen")
    del trainer, timer
    gc.collect()
    if run["device"] == "cuda":
        torch.cuda.empty_cache()
    return result


# ------------------------------------------------------------------------------------------------ report


def summarize(raw: dict[str, list[dict]]) -> dict:
    """Per-variant medians, ratios to the baselines, PRM fraction and refresh cost from the rounds' raw results."""
    out = {}
    for name, rounds in raw.items():
        variant = VARIANTS[name]
        entry = {"description": variant.description, "options": variant.options}
        peaks = [r["peak_memory_gib"] for r in rounds if r["peak_memory_gib"] is not None]
        entry["peak_memory_gib"] = max(peaks) if peaks else None
        entry["allocated_before_gib"] = max((r["allocated_before_gib"] or 0.0) for r in rounds) if peaks else None
        entry["mean_completion_length"] = statistics.fmean(r["mean_completion_length"] for r in rounds)
        entry["clipped_ratio"] = statistics.fmean(r["clipped_ratio"] for r in rounds)
        if variant.refresh:
            seconds = [r["refresh"]["seconds"] for r in rounds]
            samples = [r["refresh"]["metrics"]["rm/num_new_rows"] + r["refresh"]["metrics"]["rm/num_replay_rows"]
                       for r in rounds]
            train = [r["refresh"]["metrics"]["rm/train_seconds"] for r in rounds]
            entry["refresh"] = {
                "seconds": median_and_spread(seconds),
                "rm_training_samples": statistics.median(samples),
                "rm_train_steps": statistics.median(r["refresh"]["metrics"]["rm/train_steps"] for r in rounds),
                "rm_train_seconds": median_and_spread(train),
                "seconds_per_1000_samples": 1000 * statistics.median(s / n for s, n in zip(seconds, samples)),
                "train_seconds_per_1000_samples": 1000 * statistics.median(t / n for t, n in zip(train, samples)),
                "metrics_per_round": [r["refresh"]["metrics"] for r in rounds],
            }
            out[name] = entry
            continue
        steps = [s for r in rounds for s in r["step_seconds"]]
        cycle = variant.options.get("num_iterations", 1)
        cycles = [c for r in rounds for c in cycle_times(r["step_seconds"], cycle)]
        entry["steps_per_cycle"] = cycle
        entry["step_seconds_raw"] = median_and_spread(steps)
        entry["step_seconds"] = median_and_spread(cycles)
        entry["per_round_step_seconds"] = [r["step_seconds"] for r in rounds]
        if variant.prm:
            prm = sum(s for r in rounds for s in r["prm_seconds"])
            entry["prm_fraction"] = prm / sum(steps)
            entry["prm_seconds_per_step"] = median_and_spread([s for r in rounds for s in r["prm_seconds"]])
            counts = [c for r in rounds for c in r["steps_per_completion"]]
            entry["prm_steps_per_completion"] = statistics.fmean(counts) if counts else None
        out[name] = entry

    def ratio(name, base, key):
        if name not in out or base not in out:
            return None
        num, den = out[name].get(key), out[base].get(key)
        if isinstance(num, dict):
            num, den = num["median"], den["median"]
        return None if num is None or den is None else num / den

    for name, entry in out.items():
        if name == "trl" or VARIANTS[name].refresh:
            continue
        entry["step_time_ratio_to_trl"] = ratio(name, "trl", "step_seconds")
        entry["memory_ratio_to_trl"] = ratio(name, "trl", "peak_memory_gib")
        same = VARIANTS[name].baseline_same_settings
        if same:
            entry["same_settings_baseline"] = same
            entry["step_time_ratio_to_same_settings"] = ratio(name, same, "step_seconds")
            entry["memory_ratio_to_same_settings"] = ratio(name, same, "peak_memory_gib")
    return out


def check_targets(summary: dict) -> dict:
    """Each issue target as measured: True/False, None where not measurable (e.g. memory on CPU)."""

    def below(value, limit):
        return None if value is None else value <= limit

    checks = {}
    for name, key in (("a", "step_time_ratio_to_same_settings"), ("b", "step_time_ratio_to_same_settings")):
        if name in summary:
            checks[f"{name}_step_time_within_2pct"] = below(summary[name].get(key), TARGETS["step_time_ratio_max"])
            checks[f"{name}_memory_within_3pct"] = below(summary[name].get("memory_ratio_to_same_settings"),
                                                          TARGETS["memory_ratio_max"])
    if "c" in summary:
        checks["c_prm_fraction_under_15pct"] = below(summary["c"]["prm_fraction"], TARGETS["prm_fraction_max"])
    return checks


def _fmt(value, spec=".3f", none="n/a"):
    return none if value is None else format(value, spec)


def markdown(results: dict, env: dict) -> str:
    s, run = results["variants"], results["run"]
    lines = [
        f"## Step time: grpo_ext.GRPOTrainer vs trl.GRPOTrainer ({run['size']})",
        "",
        f"`{results['command']}` on {env['device']}, {env['date']}; torch {env['torch']}, transformers "
        f"{env['transformers']}, trl {env['trl']}, accelerate {env['accelerate']}.",
        f"{run['dtype']} on {run['device']}; {run['completions_per_step']} completions x {run['max_completion_length']}"
        f" tokens per step, beta {run['beta']}; {run['rounds']} alternating rounds, {run['warmup_steps']} warm-up "
        f"steps dropped per trainer, {run['steps']} measured steps per variant and round; prompts: {run['prompts']}.",
        "",
        "| variant | configuration | step s (median [min, max], n) | / TRL | / TRL same settings | peak GiB | "
        "mem / TRL | mem / same | mean completion tokens |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in s.items():
        if VARIANTS[name].refresh:
            continue
        st = e["step_seconds"]
        unit = "" if e["steps_per_cycle"] == 1 else f" (per-step mean over {e['steps_per_cycle']}-step cycles)"
        lines.append(
            f"| {name} | {e['description']} | {st['median']:.3f} [{st['min']:.3f}, {st['max']:.3f}], {st['n']}{unit} "
            f"| {_fmt(e.get('step_time_ratio_to_trl'), '.3f', '1 (baseline)' if name == 'trl' else 'n/a')} "
            f"| {_fmt(e.get('step_time_ratio_to_same_settings'), '.3f', '-')} "
            f"| {_fmt(e['peak_memory_gib'], '.2f', 'n/a (CPU)')} "
            f"| {_fmt(e.get('memory_ratio_to_trl'), '.3f', '-')} "
            f"| {_fmt(e.get('memory_ratio_to_same_settings'), '.3f', '-')} "
            f"| {e['mean_completion_length']:.1f} |"
        )
    lines.append("")
    lines.append("`/ TRL` divides by the `trl` row (TRL defaults); `/ TRL same settings` by the TRL run with the "
                 "variant's TRL options (`a` by `trl`, `b` by `trl_b`). Memory is the peak allocated from before the "
                 "trainer is built to the end of training, maximum over rounds.")
    residue = {n: e["allocated_before_gib"] for n, e in s.items() if e.get("allocated_before_gib") is not None}
    if residue:
        lines.append("Memory still allocated when each trainer was built (left over by earlier ones; part of its "
                     "peak): " + ", ".join(f"{n} {v:.2f} GiB" for n, v in residue.items()) + ".")
    if "c" in s:
        c = s["c"]
        lines.append(f"\n**(c) PRM scoring**: {100 * c['prm_fraction']:.1f}% of the step time "
                     f"({c['prm_seconds_per_step']['median']:.3f} s per step, median; "
                     f"{_fmt(c['prm_steps_per_completion'], '.1f')} steps per completion, forced "
                     f"{run['step_chars']}-character chunks).")
    if "d" in s:
        r = s["d"]["refresh"]
        lines.append(f"\n**(d) iterative-RL refresh (ORM of the policy's size)**: {r['seconds']['median']:.3f} s per "
                     f"refresh (median of {r['seconds']['n']}) on {r['rm_training_samples']:.0f} RM training samples "
                     f"({r['rm_train_steps']:.0f} RM steps of batch 8) = **{r['seconds_per_1000_samples']:.2f} s per "
                     f"1,000 samples** (RM training alone {r['train_seconds_per_1000_samples']:.2f} s); peak "
                     f"{_fmt(s['d']['peak_memory_gib'], '.2f', 'n/a (CPU)')} GiB.")
    targets = results["targets"]
    if targets:
        lines.append("\nTargets: " + ", ".join(f"{k}: {'n/a' if v is None else ('met' if v else 'NOT met')}"
                                             for k, v in targets.items()) + ".")
    if run["fallbacks"]:
        lines.append("\nFallbacks: " + "; ".join(run["fallbacks"]) + ".")
    if run["size"] == "tiny":
        lines.append("\n`--tiny` is a smoke run of the script on CPU: its figures say nothing about GPU cost, and the "
                     "targets are not judged.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU, seconds (a smoke run)")
    parser.add_argument("--output_dir", default="benchmark_results", help="where step_time.json/.md go")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default: 3 full, 2 tiny)")
    parser.add_argument("--warmup_steps", type=int, help="steps dropped per trainer (even; default 2)")
    parser.add_argument("--steps", type=int, help="measured steps per variant and round (even; default 4 full, 2 tiny)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all)")
    parser.add_argument("--work_dir", help="where models and trainer outputs go (default: a temporary directory, "
                        "removed at the end)")
    args = parser.parse_args(argv)
    size = dataclasses.replace(SIZES["tiny" if args.tiny else "full"])  # a copy: the defaults stay as they are
    for key in ("rounds", "warmup_steps", "steps"):
        value = getattr(args, key)
        if value is None:
            continue
        if value < (1 if key != "warmup_steps" else 0):
            parser.error(f"--{key} must be >= {1 if key != 'warmup_steps' else 0}, got {value}")
        setattr(size, key, value)
    if size.warmup_steps % 2 or size.steps % 2:
        parser.error("--warmup_steps and --steps must be even: variants b and trl_b use num_iterations=2, and "
                     "their steps are timed in whole generation cycles")
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        parser.error(f"--variants: unknown {unknown}; choose from {','.join(VARIANTS)}")
    if "trl" not in names and any(not VARIANTS[n].trl and not VARIANTS[n].refresh for n in names):
        parser.error("--variants: the ratios need the TRL baseline 'trl'")
    if "b" in names and "trl_b" not in names:
        parser.error("--variants: 'b' is compared with 'trl_b'; include it")
    return args, size, names


def main(argv: list[str] | None = None) -> dict:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars, once per trainer
    command = "python -m benchmarks.step_time " + shlex.join(sys.argv[1:] if argv is None else argv)
    args, size, names = parse_args(argv)
    fallbacks = []
    threads = torch.get_num_threads()
    if args.tiny:
        device, dtype, bf16 = "cpu", "float32", False
        torch.set_num_threads(1)  # tiny models: thread spin-waits dominate with several threads (restored at the end)
    elif torch.cuda.is_available():
        device, dtype, bf16 = "cuda", "bfloat16", True
    else:
        device, dtype, bf16 = "cpu", "float32", False
        fallbacks.append("no CUDA device: float32 on CPU instead of bf16 on GPU; no peak-memory figures")
    run = {"size": "tiny" if args.tiny else "full", "device": device, "dtype": dtype, "bf16": bf16, "beta": 0.04,
           "completions_per_step": size.batch_size, "num_generations": size.num_generations,
           "max_completion_length": size.max_completion_length, "rounds": size.rounds,
           "warmup_steps": size.warmup_steps, "steps": size.steps, "step_chars": size.step_chars,
           "shape": size.shape, "vocab_size": size.vocab_size, "variants": names, "fallbacks": fallbacks}

    try:
        if args.work_dir:
            return _run(args, size, names, run, command, args.work_dir)
        with tempfile.TemporaryDirectory(prefix="step_time-") as work:  # models are large at full size: removed after
            return _run(args, size, names, run, command, work)
    finally:
        torch.set_num_threads(threads)


def _run(args, size: Size, names: list[str], run: dict, command: str, work: str) -> dict:
    print(f"[step_time] building models in {work} ...", flush=True)
    paths = build_models(work, size, run["dtype"])
    dataset, run["prompts"] = load_prompts(size, args.tiny)

    raw: dict[str, list[dict]] = {name: [] for name in names}
    for round_index in range(size.rounds):
        # every variant once per round; the order flips every other round so that no variant always runs first
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            result = run_variant(name, VARIANTS[name], paths, dataset, size, run, work, seed=round_index)
            raw[name].append(result)
            if VARIANTS[name].refresh:
                figure = f"refresh {result['refresh']['seconds']:.3f}s"
            else:
                figure = f"median step {statistics.median(result['step_seconds']):.3f}s"
            print(f"[step_time] round {round_index + 1}/{size.rounds} {name:5s}: {figure}, peak "
                  f"{_fmt(result['peak_memory_gib'], '.2f')} GiB, mean completion length "
                  f"{result['mean_completion_length']:.1f} ({time.perf_counter() - start:.1f}s wall)", flush=True)

    summary = summarize(raw)
    # targets are judged on the full size only: --tiny on CPU says nothing about GPU cost
    results = {"command": command, "run": run, "variants": summary,
               "targets": {} if args.tiny else check_targets(summary)}
    path = write_report(args.output_dir, NAME, results, markdown(results, environment()))
    print(f"[step_time] wrote {path} and {path.with_suffix('.md')}")
    return results


if __name__ == "__main__":
    main()
