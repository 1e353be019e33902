r"""Does it learn? GRPO with outcome supervision, GRPO with process supervision and Online RFT, from scratch.

    python -m benchmarks.learning --tiny                  # the offline quickstart: 2 CPU cores, a few minutes
    python -m benchmarks.learning --output_dir DIR        # the GPU size
    python -m benchmarks.learning --seeds 0 1 2           # several RL seeds from the same warm start
    python -m benchmarks.learning --tiny --warm_start_from DIR   # RL only, from a saved warm start

The task (`benchmarks.arithmetic_task`): generated multi-step arithmetic word problems whose solutions are one
equation per line ("23 + 45 = 68") ending in `\boxed{}`, with a held-out test set of 500. The run:

1. A Qwen2-shaped model (0.15M parameters at `--tiny`, 6.0M at full size) and a tokenizer are
   built offline (`grpo_ext.tiny`; Qwen2's digit-by-digit pre-tokeniser).
2. Warm start: supervised training on solutions of which `buggy_fraction` are a buggy pupil's (adds without
   carrying, subtracts the smaller digit from the larger), so that the model is right only part of the time.
   The loss is on completion tokens only (the same objective as TRL's `SFTTrainer` with prompt-completion data;
   a plain loop, which was 1.8x faster per step on 2 CPU cores, keeps the quickstart short).
3. From that checkpoint, with the same seed, prompts and budget, `grpo_ext.GRPOTrainer` runs each method:
   * `grpo_outcome`: GRPO, reward `rewards.accuracy_reward` (the rule-based `\boxed{}` check);
   * `grpo_process`: GRPO with `supervision="process"`: each line is a step, scored 1 when its equation holds and 0
     when not by `rewards.ArithmeticStepChecker` (exact, never executes text), the accuracy reward joining the last
     step; rewards are normalised over the group's steps (DeepSeekMath section 4.1.3);
   * `online_rft`: `advantage_estimator="online_rft"`: gradient coefficient 1 for correct samples, 0 otherwise.
   All three keep DeepSeekMath's KL term (k3, `beta`), so only the advantage differs.
4. Before and after: greedy accuracy, maj@8 and the mean accuracy of 8 samples at temperature 1 on the test set
   (`grpo_ext.evaluation`'s generator and scoring); reward curves (`learning_rewards.png`).

Results go to `--output_dir` as `learning.json`, `learning.md` and the plot. Every run saves its warm start (model and
tokenizer) to `--work_dir`/warm_start; `--warm_start_from` that directory skips steps 1-2 and starts the RL from it
(the test suite does so from `tests/fixtures/learning_warm_start`, saved by the command in its README).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import ProgressCallback

from .arithmetic_task import TASK_SIZES, make_problems, rl_rows, warm_start_rows
from .common import environment, save_benchmark_model, write_report

METHODS = ("grpo_outcome", "grpo_process", "online_rft")
METHOD_OPTIONS = {
    "grpo_outcome": {},
    "grpo_process": {"supervision": "process", "step_delimiter": "\n"},
    "online_rft": {"advantage_estimator": "online_rft"},
}


@dataclass(frozen=True)
class LearningSize:
    """Everything a size fixes: task, model, warm start, RL budget and evaluation."""

    task: str
    model: dict = field(default_factory=dict)
    vocab_size: int = 512
    train_problems: int = 8000
    test_problems: int = 500
    buggy_fraction: float = 0.6
    sft_steps: int = 1000
    sft_batch_size: int = 64
    sft_learning_rate: float = 3e-3
    grpo_steps: int = 30
    prompts_per_step: int = 16
    num_generations: int = 8
    grpo_learning_rate: float = 2e-4
    beta: float = 0.04
    max_completion_length: int = 32  # longest tiny solution: 25 tokens + EOS; full: 57 + EOS
    eval_samples: int = 8
    # torch's intra-op threads (None: torch's default). A model this small gains nothing from a second thread, and
    # beside one other busy process on 2 cores a second thread made a training step 30x slower.
    torch_threads: int | None = None


SIZES = {
    "tiny": LearningSize(
        task="tiny",
        model=dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256),
        torch_threads=1,
    ),
    "full": LearningSize(
        task="full",
        model=dict(hidden_size=256, num_layers=6, num_heads=8, num_kv_heads=4, intermediate_size=1024),
        vocab_size=1024,
        train_problems=30000,
        sft_steps=4000,
        sft_batch_size=128,
        sft_learning_rate=1e-3,
        grpo_steps=200,
        prompts_per_step=32,
        grpo_learning_rate=1e-4,
        max_completion_length=80,
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------------------------------------------------


def build_splits(size: LearningSize, rl_prompts: int, seed: int = 0) -> dict[str, list]:
    """Disjoint problem sets (by question text): warm-start, RL prompts and the held-out test set."""
    task = TASK_SIZES[size.task]
    test = make_problems(task, size.test_problems, seed=seed + 1)
    train = make_problems(task, size.train_problems, seed=seed, exclude={p.question for p in test})
    rl = make_problems(task, rl_prompts, seed=seed + 2, exclude={p.question for p in test + train})
    return {"train": train, "rl": rl, "test": test}


def build_model(size: LearningSize, corpus: list[str], path: Path, seed: int = 0) -> str:
    """A randomly initialised Qwen2 of `size.model` and a tokenizer trained on `corpus`, saved to `path`."""
    return save_benchmark_model(path, size.model, size.vocab_size, seed=seed, corpus=corpus)


def tokenize_rows(tokenizer, rows: list[dict]) -> list[tuple[list[int], int]]:
    """Each row's prompt+completion+EOS ids and where its completion starts."""
    prompts = tokenizer([row["prompt"] for row in rows], add_special_tokens=False)["input_ids"]
    completions = tokenizer([row["completion"] for row in rows], add_special_tokens=False)["input_ids"]
    return [(p + c + [tokenizer.eos_token_id], len(p)) for p, c in zip(prompts, completions)]


def completion_batch(examples: list[tuple[list[int], int]], pad_token_id: int):
    """Right-padded ids with labels on the completion tokens only (-100 elsewhere)."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_token_id)
    labels = torch.full((len(examples), width), -100)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, start) in enumerate(examples):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, start : len(ids)] = torch.tensor(ids[start:])
        attention_mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def warm_start(model, tokenizer, rows: list[dict], size: LearningSize, seed: int = 0) -> list[float]:
    """Completion-only cross-entropy with AdamW, linear warm-up (20 steps) and linear decay; returns the losses."""
    import torch
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=size.sft_learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * max(0.0, 1.0 - step / size.sft_steps)
    )
    examples = tokenize_rows(tokenizer, rows)
    model.train()
    losses = []
    progress = tqdm(range(size.sft_steps), desc="warm start (SFT)")
    for step in progress:
        batch = completion_batch([rng.choice(examples) for _ in range(size.sft_batch_size)], tokenizer.pad_token_id)
        loss = model(**{k: v.to(model.device) for k, v in batch.items()}).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 50 == 0:
            progress.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------------


def evaluate_accuracy(model, tokenizer, rows: list[dict], size: LearningSize, seed: int = 0,
                      pass_ks: tuple[int, ...] = ()) -> dict[str, float]:
    """Greedy accuracy, maj@k and mean sampled accuracy (temperature 1) over `rows` (`{"prompt", "solution"}`), and
    the unbiased pass@j for each j in `pass_ks` (then max(k, *pass_ks) samples are drawn per problem, maj@k voting
    over the first k of them; `accuracy_metrics`)."""
    from grpo_ext.evaluation import SamplingParams, TransformersGenerator, score_problems

    prompts = [row["prompt"] for row in rows]
    golds = [row["solution"] for row in rows]
    k = size.eval_samples
    n = max((k, *pass_ks))
    ks = sorted({k, *pass_ks})
    generator = TransformersGenerator(model, tokenizer, batch_size=len(rows))
    greedy = generator.generate(prompts, 1, SamplingParams(0.0, 1.0, size.max_completion_length, seed))
    generator.batch_size = max(1, 512 // n)
    # top_k 50: transformers' default, which this benchmark's figures were measured with before decoding became explicit
    sampled = generator.generate(prompts, n, SamplingParams(1.0, 1.0, size.max_completion_length, seed, top_k=50))
    return accuracy_metrics(score_problems(greedy, golds, ks=[1]), score_problems(sampled, golds, ks=ks), k, pass_ks)


def accuracy_metrics(greedy_records: list[dict], sampled_records: list[dict], maj_k: int,
                     pass_ks: tuple[int, ...] = ()) -> dict[str, float]:
    """`greedy` (fraction of problems whose one greedy completion is correct), `maj@{maj_k}`, `sampled` (mean
    fraction of correct samples) and `pass@{j}` for j in `pass_ks` (unbiased, 1 - C(n - c, j) / C(n, j) per
    problem, averaged), from `grpo_ext.evaluation.score_problems` records."""
    from grpo_ext.evaluation import summarize

    greedy = summarize(greedy_records, ks=[1])
    sampled = summarize(sampled_records, ks=sorted({maj_k, *pass_ks}))
    metrics = {"greedy": greedy["pass@1"], f"maj@{maj_k}": sampled[f"maj@{maj_k}"], "sampled": sampled["pass@1"]}
    metrics.update({f"pass@{j}": sampled[f"pass@{j}"] for j in pass_ks})
    return metrics


# ---------------------------------------------------------------------------------------------------------------------
# RL
# ---------------------------------------------------------------------------------------------------------------------


def grpo_config(method: str, size: LearningSize, output_dir: str, seed: int, options: dict | None = None):
    """The same budget for every method; only METHOD_OPTIONS differ (or `options`, when given, replace them)."""
    from grpo_ext import GRPOConfig

    return GRPOConfig(
        per_device_train_batch_size=size.prompts_per_step * size.num_generations,
        num_generations=size.num_generations,
        max_completion_length=size.max_completion_length,
        temperature=1.0,
        beta=size.beta,
        **training_budget_args(size, output_dir, seed),
        **(METHOD_OPTIONS[method] if options is None else options),
    )


def training_budget_args(size: LearningSize, output_dir: str, seed: int) -> dict:
    """The `transformers.TrainingArguments` every trainer of the benchmarks shares: steps, optimizer settings, seed,
    float32, no checkpoints."""
    import torch

    return dict(
        output_dir=output_dir,
        learning_rate=size.grpo_learning_rate,
        lr_scheduler_type="constant",
        max_steps=size.grpo_steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        bf16=False,  # a few-million-parameter model: float32 costs nothing and keeps CPU and GPU runs alike
        gradient_checkpointing=False,  # TRL's default saves memory this model does not need, at a recompute's cost
        use_cpu=not torch.cuda.is_available(),
    )


class _BarOnlyProgress(ProgressCallback):
    """TRL's progress bar without a metrics dictionary printed under it every step (they go to the report)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def make_rl_trainer(method: str, warm_start_path: str, prompts: list[dict], size: LearningSize, output_dir: str,
                    seed: int, options: dict | None = None):
    """The `grpo_ext.GRPOTrainer` of one RL run from the warm start (`grpo_config`'s settings), with a progress bar
    and no metrics printed under it."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grpo_ext import GRPOTrainer
    from rewards import ArithmeticStepChecker, accuracy_reward

    args = grpo_config(method, size, output_dir, seed, options)  # first: a bad option fails before any loading
    tokenizer = AutoTokenizer.from_pretrained(warm_start_path)
    model = AutoModelForCausalLM.from_pretrained(warm_start_path)
    extra = {"process_reward_model": ArithmeticStepChecker()} if method == "grpo_process" else {}
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[accuracy_reward],
        args=args,
        train_dataset=Dataset.from_list(prompts),
        processing_class=tokenizer,
        **extra,
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_BarOnlyProgress())
    return trainer


def train_rl(method: str, warm_start_path: str, prompts: list[dict], size: LearningSize, output_dir: str, seed: int):
    """One RL run from the warm start; returns the trained model, the tokenizer and the per-step mean reward."""
    trainer = make_rl_trainer(method, warm_start_path, prompts, size, output_dir, seed)
    trainer.train()
    rewards = [entry["rewards/accuracy_reward/mean"] for entry in trainer.state.log_history
               if "rewards/accuracy_reward/mean" in entry]
    model = trainer.model
    model.eval()
    return model, trainer.processing_class, rewards


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def plot_rewards(curves: dict[str, list[list[float]]], path: Path, title: str) -> Path | None:
    """Mean training accuracy reward per step, one line per method (mean over seeds); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, runs in curves.items():
        steps = min(map(len, runs))
        mean = [statistics.mean(run[s] for run in runs) for s in range(steps)]
        ax.plot(range(1, steps + 1), mean, label=method)
    ax.set_xlabel("RL step")
    ax.set_ylabel("training accuracy reward (mean of the batch)")
    seeds = max(map(len, curves.values()))
    ax.set_title(title + (f", mean of {seeds} seeds" if seeds > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown_table(results: dict, k: int) -> str:
    rows = [
        f"| model | greedy | maj@{k} | sampled (mean of {k}) | first -> last 5 steps train reward | RL minutes |",
        "|---|---|---|---|---|---|",
    ]
    before = results["warm_start"]["accuracy"]
    rows.append(f"| warm start (SFT) | {before['greedy']:.3f} | {before[f'maj@{k}']:.3f} | {before['sampled']:.3f} "
                f"| - | - |")
    for method, runs in results["methods"].items():
        def mean(key, runs=runs):
            return statistics.mean(run["accuracy"][key] for run in runs)

        first = statistics.mean(statistics.mean(run["rewards"][:5]) for run in runs)
        last = statistics.mean(statistics.mean(run["rewards"][-5:]) for run in runs)
        minutes = statistics.mean(run["seconds"] for run in runs) / 60
        seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
        rows.append(f"| {method}{seeds} | {mean('greedy'):.3f} ({mean('greedy') - before['greedy']:+.3f}) "
                    f"| {mean(f'maj@{k}'):.3f} | {mean('sampled'):.3f} | {first:.3f} -> {last:.3f} | {minutes:.1f} |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the CPU size: the offline quickstart")
    parser.add_argument("--output_dir", default="benchmark_results", help="where learning.json/.md and the plot go")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="RL methods to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="RL seeds (one run per method and seed)")
    parser.add_argument("--warm_start_seed", type=int, default=0, help="seed of the model's initialisation and the "
                        "warm start's data order")
    for name in ("sft_steps", "grpo_steps", "test_problems"):
        parser.add_argument(f"--{name}", type=int, help=f"override the size's {name}")
    parser.add_argument("--work_dir", help="where checkpoints go (default: a temporary directory)")
    parser.add_argument("--warm_start_from", help="a warm start saved by an earlier run (its --work_dir/warm_start): "
                        "skip the model's initialisation and the SFT, and run the RL from it")
    args = parser.parse_args(argv)
    if args.warm_start_from and not (Path(args.warm_start_from) / "config.json").is_file():
        parser.error(f"--warm_start_from {args.warm_start_from}: no saved model there (no config.json)")
    for name in ("sft_steps", "grpo_steps", "test_problems"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}")
    return args


def train_warm_start(size: LearningSize, problems, work_dir: Path, device: str, seed: int):
    """Build the model and tokenizer (`work_dir`/init), fit them to the buggy pupil's solutions of `problems` and save
    them to `work_dir`/warm_start; returns that path, the tokenizer, the model and the mean loss of the last 20
    steps."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    sft_rows = warm_start_rows(problems, size.buggy_fraction, seed=0)
    set_seed(seed)
    init_path = build_model(size, [row["prompt"] + row["completion"] for row in sft_rows], work_dir / "init", seed)
    tokenizer = AutoTokenizer.from_pretrained(init_path)
    model = AutoModelForCausalLM.from_pretrained(init_path).to(device)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocab {len(tokenizer)}, "
          f"device {device}")
    losses = warm_start(model, tokenizer, sft_rows, size, seed=seed)
    path = str(work_dir / "warm_start")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, tokenizer, model, statistics.mean(losses[-20:])


def run(args: argparse.Namespace) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    size = SIZES["tiny" if args.tiny else "full"]
    overrides = {name: getattr(args, name) for name in ("sft_steps", "grpo_steps", "test_problems")
                 if getattr(args, name) is not None}
    size = dataclasses.replace(size, **overrides)
    if size.torch_threads is not None:
        torch.set_num_threads(size.torch_threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="learning-"))
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    splits = build_splits(size, rl_prompts=size.grpo_steps * size.prompts_per_step)
    test_rows, prompt_rows = rl_rows(splits["test"]), rl_rows(splits["rl"])
    t0 = time.perf_counter()
    if args.warm_start_from:
        warm_path, final_loss = args.warm_start_from, None
        tokenizer = AutoTokenizer.from_pretrained(warm_path)
        model = AutoModelForCausalLM.from_pretrained(warm_path).to(device)
    else:
        warm_path, tokenizer, model, final_loss = train_warm_start(
            size, splits["train"], work_dir, device, args.warm_start_seed
        )
    sft_seconds = time.perf_counter() - t0
    before = evaluate_accuracy(model, tokenizer, test_rows, size)
    print(f"warm start: {before} ({sft_seconds:.0f} s)")

    results = {
        "size": dataclasses.asdict(size),
        "command": "python -m benchmarks.learning " + " ".join(args.argv),
        "warm_start": {"accuracy": before, "seconds": sft_seconds, "final_loss": final_loss,
                       "from": args.warm_start_from or "trained in this run"},
        "methods": {},
    }
    for method in args.methods:
        for seed in args.seeds:
            print(f"RL: {method}, seed {seed}, {size.grpo_steps} steps")
            t0 = time.perf_counter()
            model, tokenizer, rewards = train_rl(
                method, warm_path, prompt_rows, size, str(work_dir / f"{method}-{seed}"), seed
            )
            seconds = time.perf_counter() - t0
            accuracy = evaluate_accuracy(model, tokenizer, test_rows, size)
            print(f"{method} seed {seed}: {accuracy} ({seconds:.0f} s)")
            results["methods"].setdefault(method, []).append(
                {"seed": seed, "accuracy": accuracy, "rewards": rewards, "seconds": seconds}
            )
    results["total_seconds"] = time.perf_counter() - started

    k = size.eval_samples
    device_name = environment()["device"]
    plot = plot_rewards(
        {m: [run["rewards"] for run in runs] for m, runs in results["methods"].items()},
        output_dir / "learning_rewards.png",
        title=f"{size.task} arithmetic task, {device_name}",
    )
    results["plot"] = str(plot) if plot else None
    table = markdown_table(results, k)
    markdown = (
        f"## Learning: {size.task} size, {device_name}, {results['total_seconds'] / 60:.1f} min in all\n\n"
        f"`{results['command']}`\n\n{table}\n\n"
        f"Held-out test set: {size.test_problems} problems. Greedy and maj@{k} on it before (warm start) and after "
        f"{size.grpo_steps} RL steps of {size.prompts_per_step} prompts x {size.num_generations} samples."
    )
    write_report(output_dir, "learning", results, markdown, also_written=(plot,))
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
