"""What PPO's critic costs over GRPO on the same batch: bytes held and step time.

    python -m benchmarks.ppo_cost [--tiny | --small] [--output_dir DIR] [--rounds N] [--warmup_steps N] [--steps N]

* Model: a randomly initialised Qwen2 (`--tiny`: `benchmarks.common.TINY_SHAPE`, 512-token tokenizer, 16 tokens;
  `--small`: `SMALL_SHAPE` below, 32 tokens, on CPU; else Qwen2.5-0.5B's shape with a 16,384-token tokenizer, 256
  tokens, bf16 on CUDA), saved once and loaded by both trainers.
* Workload: one optimizer step = 8 completions (2 prompts x `num_generations=4`) of up to `max_completion_length`
  tokens, `beta=0.04`, a cheap deterministic reward of the text. GRPO: `grpo_ext.GRPOTrainer` defaults (k3 in the
  loss). PPO: `advantage_estimator="gae"` (k1 in the reward, a critic copied from the policy, its own AdamW).
* Bytes: at the last optimizer step of each trainer, just before the optimizers step (gradients present), the bytes
  of every parameter, gradient and optimizer-state tensor of the policy (and its optimizer), the reference model and
  the critic (and its optimizer), counted from the live objects (`benchmarks.common.held_training_bytes`). On CUDA
  also `torch.cuda.max_memory_allocated()` over the trainer's life.
* Step time: rounds alternate GRPO and PPO (a fresh trainer each, seed = round), `perf_counter()` at
  `on_step_begin`/`on_step_end` (generation, scoring, log-prob and value forwards, backward, both optimizers); the
  first `--warmup_steps` steps of each trainer are dropped; the ratio is PPO's median over GRPO's median.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from transformers import TrainerCallback

from .common import (
    QWEN25_05B_SHAPE,
    TINY_SHAPE,
    median_and_spread,
    peak_memory_gib,
    reset_peak_memory,
    save_benchmark_model,
    synchronize,
    write_report,
)

# Between the tiny shape (whose step is Python overhead) and 0.5B: a CPU can still run it in seconds per step.
SMALL_SHAPE = dict(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=1024)
PROMPTS = ["What is 3 + 4?", "Compute 7 * 2.", "Natalia sold 48 clips in April.", "What is 12 - 5?"]
VARIANTS = {"grpo": {}, "ppo": {"advantage_estimator": "gae"}}


def char_sum_reward(completions, **kwargs):
    """A cheap deterministic reward in [0, 1): the sum of the characters' codes modulo 101, over 101."""
    return [sum(map(ord, c)) % 101 / 101 for c in completions]


class CostProbe(TrainerCallback):
    """Step times, and the bytes held at the last step's optimizer step (register first: before the critic's
    callback steps and clears its gradients)."""

    def __init__(self, trainer, last_step: int):
        self.trainer, self.last_step = trainer, last_step
        self.step_seconds: list[float] = []
        self.bytes: dict | None = None
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        self.step_seconds.append(time.perf_counter() - self._start)

    def on_optimizer_step(self, args, state, control, **kwargs):
        if state.global_step + 1 == self.last_step:
            self.bytes = held_bytes(self.trainer)


def held_bytes(trainer) -> dict[str, dict[str, int]]:
    """Bytes of parameters, gradients and optimizer states of the policy, reference and critic, from live objects."""
    from .common import held_training_bytes

    unwrap = trainer.accelerator.unwrap_model
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    counts = {"policy": held_training_bytes([unwrap(trainer.model)], [optimizer])}
    if trainer.ref_model is not None:
        counts["reference"] = held_training_bytes([unwrap(trainer.ref_model)])
    if trainer.value_model is not None:
        counts["critic"] = held_training_bytes([trainer.value_model.model], [trainer.value_model.optimizer])
    return counts


def run_variant(model_path, work_dir, options, seed, steps, max_completion_length, cuda):
    import torch
    from datasets import Dataset

    from grpo_ext import GRPOConfig, GRPOTrainer

    torch.manual_seed(seed)
    args = GRPOConfig(
        output_dir=f"{work_dir}/run", per_device_train_batch_size=8, num_generations=4, max_steps=steps,
        max_completion_length=max_completion_length, beta=0.04, learning_rate=1e-5, logging_steps=1,
        save_strategy="no", report_to="none", use_cpu=not cuda, bf16=cuda, seed=seed, disable_tqdm=True,
        model_init_kwargs={"dtype": "bfloat16"} if cuda else None, **options,
    )
    data = Dataset.from_dict({"prompt": [PROMPTS[i % len(PROMPTS)] for i in range(8 * steps)]})
    reset_peak_memory()
    trainer = GRPOTrainer(model=model_path, reward_funcs=[char_sum_reward], args=args, train_dataset=data)
    probe = CostProbe(trainer, last_step=steps)
    trainer.callback_handler.callbacks.insert(0, probe)
    trainer.train()
    peak = peak_memory_gib()
    del trainer
    return probe.step_seconds, probe.bytes, peak


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny model on CPU (seconds)")
    parser.add_argument("--small", action="store_true", help="SMALL_SHAPE on CPU (a minute or two)")
    parser.add_argument("--output_dir", default="benchmarks/results")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup_steps", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per trainer, warm-up included")
    parser.add_argument("--work_dir", default=None)
    options = parser.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available() and not (options.tiny or options.small)
    work_dir = options.work_dir or tempfile.mkdtemp(prefix="ppo_cost_")
    size = "tiny" if options.tiny else "small" if options.small else "full"
    shape, vocab, length = {"tiny": (TINY_SHAPE, 512, 16), "small": (SMALL_SHAPE, 4096, 32),
                            "full": (QWEN25_05B_SHAPE, 16384, 256)}[size]
    model_path = save_benchmark_model(f"{work_dir}/model", shape, vocab_size=vocab)
    times = {name: [] for name in VARIANTS}
    bytes_held, peaks = {}, {name: [] for name in VARIANTS}
    for seed in range(options.rounds):
        for name, variant in VARIANTS.items():
            seconds, counted, peak = run_variant(model_path, f"{work_dir}/{name}", variant, seed, options.steps,
                                                 length, cuda)
            times[name] += seconds[options.warmup_steps:]
            bytes_held[name] = counted
            if peak is not None:
                peaks[name].append(peak)
    step_time = {name: median_and_spread(values) for name, values in times.items()}
    ratio = step_time["ppo"]["median"] / step_time["grpo"]["median"]
    results = {
        "settings": {**vars(options), "shape": shape, "vocab_size": vocab, "max_completion_length": length,
                     "device": "cuda" if cuda else "cpu"},
        "step_seconds": step_time, "ppo_over_grpo_step_time": ratio, "bytes": bytes_held,
        "peak_memory_gib": {name: max(v) if v else None for name, v in peaks.items()},
    }
    lines = [
        f"PPO's critic over GRPO, same batch ({'CUDA, bf16' if cuda else 'CPU, float32'}; shape {shape})",
        "",
        "| variant | model | parameters (bytes) | gradients (bytes) | optimizer state (bytes) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, per_model in bytes_held.items():
        for model, counts in per_model.items():
            lines.append(f"| {name} | {model} | {counts['parameters']:,} | {counts['gradients']:,} "
                         f"| {counts['optimizer_state']:,} |")
    totals = {name: sum(c["total"] for c in per_model.values()) for name, per_model in bytes_held.items()}
    lines += [
        "",
        (f"Total bytes held: GRPO {totals['grpo']:,}, PPO {totals['ppo']:,} "
         f"(x{totals['ppo'] / totals['grpo']:.2f})."),
        (f"Median step: GRPO {step_time['grpo']['median']:.3f} s, PPO {step_time['ppo']['median']:.3f} s "
         f"(PPO/GRPO = {ratio:.2f}; {step_time['grpo']['n']} steps each, alternating rounds)."),
    ]
    if cuda:
        lines.append(f"Peak GPU memory: GRPO {results['peak_memory_gib']['grpo']:.2f} GiB, "
                     f"PPO {results['peak_memory_gib']['ppo']:.2f} GiB.")
    write_report(options.output_dir, "ppo_cost" + ("" if size == "full" else f"_{size}"), results, "\n".join(lines))
    return results


if __name__ == "__main__":
    main()
