r"""DeepSeekMath's unified paradigm (section 5.2.1) on one task and one budget: SFT, RFT, DPO, Online RFT, GRPO with
outcome and with process supervision, and PPO, all from the same warm start.

    python -m benchmarks.paradigm --tiny                        # 2 CPU cores, a few minutes, seed 0
    python -m benchmarks.paradigm --tiny --seeds 0 1 2          # mean and spread over three seeds
    python -m benchmarks.paradigm --output_dir DIR              # the GPU size
    python -m benchmarks.paradigm --tiny --methods rft dpo      # a subset

The task, model, warm start, RL settings and evaluation are the learning benchmark's (`benchmarks.learning`,
docs/benchmarks.md section 3): arithmetic word problems, a Qwen2-shaped model warm-started on solutions that are
partly a buggy pupil's. From that one warm start, for each seed, every method trains on the same RL prompts
(`grpo_steps` x `prompts_per_step` of them, each used once by the online methods) with the same optimizer (AdamW,
`grpo_learning_rate`, constant, gradient norm clipped at 1), the same number of optimizer steps (`grpo_steps`) and
the same number of completions per step (`prompts_per_step` x `num_generations`):

* `sft`: the correct (human-style) solution of each RL prompt; GC 1; TRL's `SFTTrainer`.
* `rft`: `num_generations` samples per RL prompt drawn once from the warm start, the distinct correct ones; GC 1;
  TRL's `SFTTrainer` on `grpo_ext.paradigm.rft_dataset`.
* `dpo`: the same samples, (correct, incorrect) pairs of one prompt, at most `num_generations // 2` per prompt;
  DPO's GC; TRL's `DPOTrainer` (beta 0.1) on `grpo_ext.paradigm.dpo_pairs`.
* `online_rft`: `num_generations` samples per prompt from the current policy; GC 1[correct];
  `advantage_estimator="online_rft"`.
* `grpo_outcome`, `grpo_process`: the same, online; the group-normalised reward (or step rewards, with
  `supervision="process"`) plus the KL term (k3 in the loss); `grpo_ext.GRPOTrainer`.
* `ppo`: the same, online; the GAE advantage from a learned critic, with k1's KL in the per-token reward (the
  paper's equation 2): `advantage_estimator="gae"`.

How the budget is matched (`method_budget`): the sampled methods draw the same number of completions,
`grpo_steps` x `prompts_per_step` x `num_generations` (tiny: 30 x 16 x 8 = 3,840): the online methods as they train,
`rft` and `dpo` once from the warm start (one draw per seed, shared by the two, at temperature 1 like the online
sampling). `sft` draws none: it trains on the same prompts' correct solutions. Every method takes `grpo_steps`
optimizer steps of `prompts_per_step` x `num_generations` sequences (`dpo`: half as many pairs, so as many
completions), cycling through its data when it has fewer rows (`sft`: 8 passes over 480 rows at tiny size; `rft`
over however many distinct correct samples the draw gave). What is not matched: a DPO step also runs the reference
model on its pairs; the online methods also generate; GRPO and Online RFT keep DeepSeekMath's KL (beta 0.04), the
offline SFT-style methods have none (as in the paper's gradient coefficients). One learning rate for all
(`--dpo_learning_rate` sets DPO's apart: at the shared 2e-4 DPO collapses on the tiny task, docs/paradigm.md).

Evaluation, before and after, on the held-out set: greedy accuracy, maj@8, and the unbiased pass@k for k = 1, 4, 16
from 16 samples per problem at temperature 1 (`benchmarks.learning.evaluate_accuracy`). Per method and seed: the
time per optimizer step (training only; sampling for `rft` / `dpo` reported apart), and the bytes of parameters,
gradients and optimizer states held by the trainer, counted from its live objects at its largest over the steps
(`benchmarks.common.held_training_bytes`: every `nn.Module` and optimizer the trainer holds, so the reference model,
and the critic of `ppo`, count), and on a GPU `torch.cuda.max_memory_allocated` over the run (`peak_gpu_gib`).
The online methods' reward curves go to `paradigm_rewards.png`; results to `paradigm.json` and `paradigm.md` in
`--output_dir`. A method that raises (`ppo` before its option exists) is
reported as failed and the others still run.

Warm start: `--tiny` starts from `tests/fixtures/learning_warm_start` (the warm start that `python -m
benchmarks.learning --tiny --test_problems 200` trains, checked against today's task by
tests/test_benchmark_learning.py), which saves its 1,000 SFT steps (2.5 min on idle cores); `--train_warm_start`
trains it in the run instead, `--warm_start_from DIR` takes another saved one. The held-out set is the size's
(tiny: 200 problems, the fixture's split); `--test_problems N` evaluates on its first N only, so the data split, and
with it a saved warm start, does not depend on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from transformers import ProgressCallback, TrainerCallback

from .arithmetic_task import rl_rows, warm_start_rows
from .common import (
    REPO_ROOT,
    environment,
    held_training_bytes,
    peak_memory_gib,
    reset_peak_memory,
    write_report,
)
from .learning import (
    METHOD_OPTIONS,
    _BarOnlyProgress,
    build_splits,
    evaluate_accuracy,
    make_rl_trainer,
    plot_rewards,
    train_warm_start,
    training_budget_args,
)
from .learning import SIZES as LEARNING_SIZES

OFFLINE_METHODS = ("sft", "rft", "dpo")
ONLINE_OPTIONS = {
    **METHOD_OPTIONS,  # online_rft, grpo_outcome, grpo_process: the learning benchmark's
    # PPO (issue 12): a critic and GAE; the paper's equation 2 puts k1's KL in the per-token reward
    "ppo": {"advantage_estimator": "gae", "kl_in": "reward", "kl_estimator": "k1"},
}
METHODS = (*OFFLINE_METHODS, "online_rft", "grpo_outcome", "grpo_process", "ppo")
PASS_KS = (1, 4, 16)  # pass@k from 16 samples per problem (DeepSeekMath's figure 7 compares pass@K with maj@K)
DPO_BETA = 0.1  # TRL's default
TINY_WARM_START = REPO_ROOT / "tests" / "fixtures" / "learning_warm_start"

# The tiny size's held-out set is the 200 problems of the fixture's split; the full size is the learning benchmark's.
SIZES = {"tiny": dataclasses.replace(LEARNING_SIZES["tiny"], test_problems=200), "full": LEARNING_SIZES["full"]}


# ---------------------------------------------------------------------------------------------------------------------
# Budget and data
# ---------------------------------------------------------------------------------------------------------------------


def method_budget(method: str, size) -> dict[str, int]:
    """What a method spends: `prompts` (RL prompts it trains on), `samples` (completions sampled: by the policy as it
    trains for the online methods, once from the warm start for `rft` and `dpo`, none for `sft`), `optimizer_steps`,
    `sequences_per_step` (completions in one step's gradient) and `batch_rows` (dataset rows per step: DPO's rows are
    pairs, two completions each)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    prompts = size.grpo_steps * size.prompts_per_step
    sequences = size.prompts_per_step * size.num_generations
    return {
        "prompts": prompts,
        "samples": 0 if method == "sft" else prompts * size.num_generations,
        "optimizer_steps": size.grpo_steps,
        "sequences_per_step": sequences,
        "batch_rows": sequences // 2 if method == "dpo" else sequences,
    }


def offline_dataset(method: str, problems, prompt_rows: list[dict], samples: list[list[str]] | None, size, seed: int):
    """`sft`: each RL problem's correct solution; `rft`: the distinct correct samples; `dpo`: (correct, incorrect)
    pairs, at most `num_generations // 2` per prompt (so a prompt's pairs hold no more completions than were sampled
    for it), drawn with `seed`."""
    from datasets import Dataset

    from grpo_ext.paradigm import dpo_pairs, rft_dataset

    if method == "sft":
        return Dataset.from_list(warm_start_rows(problems, buggy_fraction=0.0, seed=seed))
    prompts = [row["prompt"] for row in prompt_rows]
    golds = [row["solution"] for row in prompt_rows]
    if method == "rft":
        dataset = rft_dataset(prompts, samples, golds)
    else:
        dataset = dpo_pairs(prompts, samples, golds, max_pairs_per_prompt=max(1, size.num_generations // 2), seed=seed)
    if len(dataset) == 0:
        raise ValueError(f"{method}: no training row from {sum(map(len, samples))} samples (none correct, or no "
                         "prompt with both a correct and an incorrect sample)")
    return dataset


# ---------------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------------


class HeldBytesCallback(TrainerCallback):
    """The largest `held_training_bytes` over a trainer's optimizer steps, counted after each step (gradients and
    optimizer states exist then) over every `nn.Module` and optimizer the trainer holds as an attribute, and every
    `grpo_ext.engines.TrainableModel` (PPO's critic with its optimizer): the policy, the reference model and a
    critic, whatever their names."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.peak: dict[str, int] | None = None

    def on_optimizer_step(self, args, state, control, **kwargs):
        import torch

        from grpo_ext.engines import TrainableModel

        held = list(vars(self.trainer).values())
        trainables = [value for value in held if isinstance(value, TrainableModel)]  # PPO's critic
        held = held_training_bytes(
            [value for value in held if isinstance(value, torch.nn.Module)] + [t.model for t in trainables],
            [value for value in held if isinstance(value, torch.optim.Optimizer)] + [t.optimizer for t in trainables],
        )
        if self.peak is None or held["total"] > self.peak["total"]:
            self.peak = held


def make_offline_trainer(method: str, warm_start_path: str, dataset, size, output_dir: str, seed: int):
    """TRL's `SFTTrainer` (`sft`, `rft`) or `DPOTrainer` (`dpo`) from the warm start, with the online methods'
    optimizer settings and steps (`training_budget_args`) and `method_budget`'s batch."""
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    batch = method_budget(method, size)["batch_rows"]
    budget = training_budget_args(size, output_dir, seed)
    if method == "dpo":
        trainer = DPOTrainer(model=warm_start_path, train_dataset=dataset,
                             args=DPOConfig(per_device_train_batch_size=batch, beta=DPO_BETA, **budget))
    else:
        trainer = SFTTrainer(model=warm_start_path, train_dataset=dataset,
                             args=SFTConfig(per_device_train_batch_size=batch, **budget))
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_BarOnlyProgress())
    return trainer


def train_method(method: str, warm_start_path: str, prompt_rows, problems, samples, size, output_dir: str, seed: int):
    """One method's run from the warm start: the trained model, its tokenizer and the figures of the run (`curve`:
    the online methods' mean training accuracy reward per step, the offline ones' training loss)."""
    reset_peak_memory()
    t0 = time.perf_counter()
    if method in OFFLINE_METHODS:
        dataset = offline_dataset(method, problems, prompt_rows, samples, size, seed)
        trainer = make_offline_trainer(method, warm_start_path, dataset, size, output_dir, seed)
    else:
        dataset = None
        options = ONLINE_OPTIONS[method]
        if method == "ppo":  # the critic at the shared learning rate, as every figure in docs/paradigm.md ran
            options = {**options, "value_learning_rate": size.grpo_learning_rate}
        trainer = make_rl_trainer(method, warm_start_path, prompt_rows, size, output_dir, seed, options)
    held = HeldBytesCallback(trainer)
    # first: PPO's critic callback steps the critic and frees its gradients at the same event
    trainer.callback_handler.callbacks.insert(0, held)
    t1 = time.perf_counter()
    trainer.train()
    t2 = time.perf_counter()
    curve_key = "loss" if method in OFFLINE_METHODS else "rewards/accuracy_reward/mean"
    figures = {
        "curve": [entry[curve_key] for entry in trainer.state.log_history if curve_key in entry],
        "curve_kind": "train loss" if method in OFFLINE_METHODS else "train accuracy reward",
        "optimizer_steps": trainer.state.global_step,
        "seconds_per_step": (t2 - t1) / max(1, trainer.state.global_step),
        "seconds": t2 - t0,
        "held_bytes": held.peak,
        "peak_gpu_gib": peak_memory_gib(),  # torch.cuda.max_memory_allocated over the run; None on a CPU
        "train_rows": len(dataset) if dataset is not None else None,
    }
    model = trainer.model
    model.eval()
    return model, trainer.processing_class, figures


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def mean_and_spread(values: list[float]) -> tuple[float, float | None]:
    """Mean, and the sample standard deviation over seeds (None for one seed)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _cell(values: list[float], digits: int = 3) -> str:
    mean, spread = mean_and_spread(values)
    return f"{mean:.{digits}f}" + (f" ±{spread:.{digits}f}" if spread is not None else "")


def metric_names(maj_k: int, pass_ks=PASS_KS) -> list[str]:
    return ["greedy", f"maj@{maj_k}", *(f"pass@{k}" for k in pass_ks)]


def markdown_table(results: dict, maj_k: int, pass_ks=PASS_KS) -> str:
    """One row for the warm start and one per method: each metric's mean over seeds (± the standard deviation when
    several), the first -> last 5 steps of the training curve, seconds per optimizer step, and the MiB held by the
    trainer (parameters + gradients + optimizer states, all its models). A failed method shows its error."""
    names = metric_names(maj_k, pass_ks)
    header = ["method", *names, "train curve, first -> last 5 steps", "s / step", "held MiB"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    before = results["warm_start"]["accuracy"]
    rows.append("| warm start | " + " | ".join(f"{before[name]:.3f}" for name in names) + " | - | - | - |")
    for method, runs in results["methods"].items():
        failed = [run for run in runs if "failed" in run]
        if failed:
            rows.append(f"| {method} | failed: {failed[0]['failed']} |" + " |" * (len(header) - 2))
            continue
        cells = [_cell([run["accuracy"][name] for run in runs]) for name in names]
        first = statistics.mean(statistics.mean(run["curve"][:5]) for run in runs)
        last = statistics.mean(statistics.mean(run["curve"][-5:]) for run in runs)
        kind = "loss " if runs[0]["curve_kind"] == "train loss" else ""
        held = [run["held_bytes"]["total"] / 2**20 for run in runs if run["held_bytes"]]
        held_cell = f"{statistics.mean(held):.2f}" if held else "-"
        seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        if "learning_rate" in runs[0]:  # a learning rate of its own (--dpo_learning_rate)
            seeds += f", lr {runs[0]['learning_rate']:g}"
        rows.append(f"| {method}{seeds} | " + " | ".join(cells) + f" | {kind}{first:.3f} -> {last:.3f} | "
                    f"{_cell([run['seconds_per_step'] for run in runs], 2)} | {held_cell} |")
    return "\n".join(rows)


def figure7_deltas(results: dict, maj_k: int, pass_k: int) -> dict[str, dict[str, float]]:
    """Per method that ran, the change of maj@maj_k and of pass@pass_k over the warm start (means over seeds):
    DeepSeekMath's figure 7 finds that RL raises maj@K but not pass@K."""
    before = results["warm_start"]["accuracy"]
    deltas = {}
    for method, runs in results["methods"].items():
        if any("failed" in run for run in runs):
            continue
        deltas[method] = {
            name: statistics.mean(run["accuracy"][name] for run in runs) - before[name]
            for name in (f"maj@{maj_k}", f"pass@{pass_k}")
        }
    return deltas


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the CPU size (from the saved tiny warm start)")
    parser.add_argument("--output_dir", default="benchmark_results", help="where paradigm.json/.md and the plot go")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (one run per method and seed)")
    parser.add_argument("--grpo_steps", type=int, help="override the size's optimizer steps (every method's)")
    parser.add_argument("--test_problems", type=int, help="evaluate on the first N held-out problems only")
    parser.add_argument("--dpo_learning_rate", type=float, help="DPO's learning rate (default: every method's "
                        "shared one, the size's grpo_learning_rate)")
    parser.add_argument("--work_dir", help="where checkpoints go (default: a temporary directory)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--warm_start_from", help="a saved warm start (default at --tiny: tests/fixtures/"
                       "learning_warm_start; at full size one is trained in the run)")
    start.add_argument("--train_warm_start", action="store_true", help="train the warm start in the run (--tiny)")
    args = parser.parse_args(argv)
    if args.warm_start_from and not (Path(args.warm_start_from) / "config.json").is_file():
        parser.error(f"--warm_start_from {args.warm_start_from}: no saved model there (no config.json)")
    size = SIZES["tiny" if args.tiny else "full"]
    if args.grpo_steps is not None and args.grpo_steps < 1:
        parser.error(f"--grpo_steps must be a positive integer, got {args.grpo_steps}")
    if args.dpo_learning_rate is not None and not args.dpo_learning_rate > 0:
        parser.error(f"--dpo_learning_rate must be positive, got {args.dpo_learning_rate}")
    if args.test_problems is not None and not 1 <= args.test_problems <= size.test_problems:
        parser.error(f"--test_problems must be between 1 and the size's {size.test_problems} held-out problems, "
                     f"got {args.test_problems}")
    return args


def run(args: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_ext.paradigm import sample_completions

    size = SIZES["tiny" if args.tiny else "full"]
    if args.grpo_steps is not None:
        size = dataclasses.replace(size, grpo_steps=args.grpo_steps)
    if size.torch_threads is not None:
        torch.set_num_threads(size.torch_threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="paradigm-"))
    output_dir = Path(args.output_dir)
    started = time.perf_counter()

    splits = build_splits(size, rl_prompts=size.grpo_steps * size.prompts_per_step)
    test_rows = rl_rows(splits["test"])[: args.test_problems]
    prompt_rows = rl_rows(splits["rl"])
    warm_from = args.warm_start_from or (str(TINY_WARM_START) if args.tiny and not args.train_warm_start else None)
    t0 = time.perf_counter()
    if warm_from:
        warm_path = warm_from
        tokenizer = AutoTokenizer.from_pretrained(warm_path)
        model = AutoModelForCausalLM.from_pretrained(warm_path).to(device)
    else:
        warm_path, tokenizer, model, _ = train_warm_start(size, splits["train"], work_dir, device, seed=0)
    warm_seconds = time.perf_counter() - t0
    before = evaluate_accuracy(model, tokenizer, test_rows, size, pass_ks=PASS_KS)
    print(f"warm start: {before}")

    results = {
        "size": dataclasses.asdict(size),
        "command": "python -m benchmarks.paradigm " + " ".join(args.argv),
        "test_problems": len(test_rows),
        "budget": {method: method_budget(method, size) for method in args.methods},
        "warm_start": {"accuracy": before, "seconds": warm_seconds, "from": warm_from or "trained in this run"},
        "offline_samples": {},
        "methods": {},
    }
    for seed in args.seeds:
        samples = None
        if {"rft", "dpo"} & set(args.methods):  # one draw per seed from the warm start, shared by RFT and DPO
            t0 = time.perf_counter()
            samples = sample_completions(model, tokenizer, [row["prompt"] for row in prompt_rows],
                                         size.num_generations, size.max_completion_length, temperature=1.0,
                                         batch_size=max(1, 512 // size.num_generations), seed=seed)
            results["offline_samples"][str(seed)] = {"count": sum(map(len, samples)),
                                                     "seconds": time.perf_counter() - t0}
        for method in args.methods:
            print(f"{method}, seed {seed}, {size.grpo_steps} steps")
            entry = {"seed": seed}
            method_size = size
            if method == "dpo" and args.dpo_learning_rate is not None:
                method_size = dataclasses.replace(size, grpo_learning_rate=args.dpo_learning_rate)
                entry["learning_rate"] = args.dpo_learning_rate
            try:
                trained, trained_tokenizer, figures = train_method(
                    method, warm_path, prompt_rows, splits["rl"], samples, method_size,
                    str(work_dir / f"{method}-{seed}"), seed,
                )
                entry.update(figures, accuracy=evaluate_accuracy(trained, trained_tokenizer, test_rows, size,
                                                                 pass_ks=PASS_KS))
                print(f"{method} seed {seed}: {entry['accuracy']} ({figures['seconds']:.0f} s)")
            except Exception as err:  # noqa: BLE001 - a method that fails is a finding, not the end of the run
                entry["failed"] = f"{type(err).__name__}: {err}"[:300]
                print(f"{method} seed {seed} FAILED: {entry['failed']}")
            results["methods"].setdefault(method, []).append(entry)
    results["total_seconds"] = time.perf_counter() - started

    maj_k, pass_k = size.eval_samples, max(PASS_KS)
    results["figure7"] = figure7_deltas(results, maj_k, pass_k)
    device_name = environment()["device"]
    output_dir.mkdir(parents=True, exist_ok=True)
    online = {m: [run["curve"] for run in runs] for m, runs in results["methods"].items()
              if m not in OFFLINE_METHODS and not any("failed" in run for run in runs)}
    plot = plot_rewards(online, output_dir / "paradigm_rewards.png",
                        title=f"{size.task} arithmetic task, {device_name}") if online else None
    results["plot"] = str(plot) if plot else None
    figure7 = "; ".join(f"{m} maj@{maj_k} {d[f'maj@{maj_k}']:+.3f}, pass@{pass_k} {d[f'pass@{pass_k}']:+.3f}"
                        for m, d in results["figure7"].items())
    markdown = (
        f"## Paradigm: {size.task} size, {device_name}, {results['total_seconds'] / 60:.1f} min in all\n\n"
        f"`{results['command']}`\n\n{markdown_table(results, maj_k)}\n\n"
        f"Held-out test set: {len(test_rows)} problems; greedy, maj@{maj_k} and unbiased pass@k from "
        f"{max(PASS_KS)} samples at temperature 1. Every method: {size.grpo_steps} optimizer steps of "
        f"{size.prompts_per_step * size.num_generations} completions from the same warm start "
        f"({results['warm_start']['from']}); mean over {len(args.seeds)} seed(s), ± the standard deviation over "
        "seeds.\n\n"
        f"Change over the warm start (DeepSeekMath figure 7: RL raises maj@K, not pass@K): {figure7 or 'none ran'}."
    )
    write_report(output_dir, "paradigm", results, markdown, also_written=(plot,))
    failed = [m for m, runs in results["methods"].items() if any("failed" in run for run in runs)]
    if failed:
        print(f"FAILED methods (see the table): {', '.join(failed)}")
    return results


def main(argv: list[str] | None = None) -> dict:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from launch.common import silence_library_deprecations

    silence_library_deprecations()  # TRL's and transformers' notices to each other, not to the user
    return run(args)


if __name__ == "__main__":
    main()
