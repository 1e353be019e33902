"""Generation without vLLM: tokens/s of the transformers generation paths a GRPO user can switch on.

What is measured: the trainer's own generation method, `GRPOTrainer._generate_single_turn` (TRL 1.16, called on a
`grpo_ext.GRPOTrainer`, which does not override it), on a fixed batch of prompts. One trainer is built per variant
from the same saved model, with greedy decoding (`generation_kwargs={"do_sample": False}`) so that every correct
variant must return the same token ids as the default. A *run* generates the whole workload: `--steps` training
steps' worth of completions (`--completions_per_step` each), handed to the trainer in chunks of its
`generation_batch_size`, exactly as the trainer does when it generates for `steps_per_generation` steps at once.

Variants (the GRPOConfig keys each sets; see `VARIANTS`):

- `default`: TRL's default transformers path, `model.generate` with a dynamic cache, one call per step.
- `generation_batch_x4`: `generation_batch_size` = 4 x the per-step batch (`steps_per_generation` = 4): one
  `model.generate` call for four steps. (Here a step is one `per_device_train_batch_size` micro-batch with
  `gradient_accumulation_steps=1`; TRL's default `steps_per_generation` is `gradient_accumulation_steps`, so a recipe
  with 4 accumulation steps already generates 4 micro-batches in one call.)
- `continuous_batching`, `continuous_batching+generation_batch_x4`: `use_transformers_continuous_batching=True`
  (formerly `use_transformers_paged`): `model.generate_batch`, paged attention with continuous batching.
- `static_cache`: `cache_implementation="static"`. TRL builds its GenerationConfig with `disable_compile=True`, so
  this is a static cache *without* compilation; `generation_kwargs={"disable_compile": False}` is not a way out
  (TRL passes `disable_compile` itself and the GenerationConfig call fails with a duplicate keyword).
- `static_cache+compile`, `static_cache+compile+generation_batch_x4`: the static cache with transformers' automatic
  `torch.compile` of the decoding forward: `grpo_ext.GRPOConfig(compile_generation=True)`, which sets
  `trainer.generation_config.disable_compile = False` (TRL offers no key). transformers compiles `generate` only on
  CUDA-like devices, so these are skipped on CPU. (`TrainingArguments.torch_compile` should not help generation: accelerate wraps the
  model in `torch.compile`, and `generate` called on the wrapper is the eager module's; read from the code, not
  measured.)

Timing: one warm-up run (reported as `warmup_seconds`; for the compiled variants it includes compilation, and
`one_off_seconds` = warm-up minus the median run is the one-off cost), then `--repeats` timed runs, each bracketed
by `torch.cuda.synchronize()`. Reported per variant: median (min, max) tokens/s, where tokens are the completion
tokens the trainer returns (after its cut at the first EOS); speedup = median tokens/s / the default's median
tokens/s; exact-match fraction = share of completions whose ids equal the default's, the minimum over all of the
variant's runs; matching-prefix fraction = mean share of each default completion that the variant reproduces before
the first differing token; peak GPU memory. "Fastest correct" is the fastest variant whose exact-match fraction is
1.0. A variant that raises is reported as failed, not fatal.

bf16 rounding depends on batch shapes and kernels, and a randomly initialised model has many near-tied logits, so on a
GPU a correct path may still flip a greedy choice. To tell that from a broken path, every variant's completions are
also scored by a float32 forward of the same model (`greedy_margins`): a completion is "within noise" when none of
its tokens falls further below the top float32 logit than the default path's own worst token does. "Fastest within
the default's noise" is reported beside "fastest correct"; the exact-match rule stays the one that decides.

Full size (CUDA, bf16, sdpa): Qwen2.5-0.5B's transformer with a 16,384-token tokenizer trained offline, randomly
initialised; GSM8K train prompts in the recipes' chat format; 32 completions per step (4 prompts x 8 generations) of
256 new tokens, 4 steps per run, 3 timed runs. `--tiny`: the tiny shape, float32 on CPU, seconds.

    python -m benchmarks.generation                 # full size, needs a CUDA GPU
    python -m benchmarks.generation --tiny          # CPU, under a minute
    python -m benchmarks.generation --variants default generation_batch_x4

Cost: every variant runs the workload 1 + `--repeats` times; at the issue's 8.7 s per step the default alone is
about 2.5 minutes at full size, the uncompiled static cache likely as much. The report is rewritten after each
variant, so a run cut short by a time limit keeps what it measured; `--variants` and `--repeats` trim a run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    QWEN25_05B_SHAPE,
    SHARED_DATA,
    TINY_SHAPE,
    median_and_spread,
    peak_memory_gib,
    reset_peak_memory,
    save_benchmark_model,
    synchronize,
    write_report,
)


@dataclass
class Variant:
    """A generation path: the GRPOConfig keys it sets, its generation batch (in steps), and whether it turns on
    transformers' compilation of `generate` (`compile_generation=True`)."""

    config: dict = field(default_factory=dict)
    steps_per_generation: int = 1
    compile: bool = False
    continuous_batching: bool = False


VARIANTS = {
    "default": Variant(),
    "generation_batch_x4": Variant(steps_per_generation=4),
    "continuous_batching": Variant(config={"use_transformers_continuous_batching": True}, continuous_batching=True),
    "continuous_batching+generation_batch_x4": Variant(
        config={"use_transformers_continuous_batching": True}, steps_per_generation=4, continuous_batching=True
    ),
    "static_cache+compile": Variant(config={"cache_implementation": "static", "compile_generation": True}, compile=True),
    "static_cache+compile+generation_batch_x4": Variant(
        config={"cache_implementation": "static", "compile_generation": True}, steps_per_generation=4, compile=True
    ),
    "static_cache": Variant(config={"cache_implementation": "static"}),
}

# Small continuous-batching cache for `--tiny`: left to itself, transformers sizes the paged cache from free memory,
# which on a CPU means filling gigabytes of host memory on every call.
TINY_CONTINUOUS_BATCHING_CONFIG = {"num_blocks": 16, "page_size": 64, "max_batch_tokens": 256}

# Questions for when ../shared/data is absent (the benchmark then still runs, on fewer distinct prompts).
FALLBACK_QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips "
    "did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she "
    "earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her parents "
    "decided to give her $15 for that purpose, and her grandparents twice as much as her parents. How much more "
    "money does Betty need to buy the wallet?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny model, float32 on CPU, seconds")
    parser.add_argument("--output_dir", default="benchmark_results", help="where generation.json/.md go")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                        help="variants to run (default: all); `default` always runs, it is the reference")
    parser.add_argument("--completions_per_step", type=int, default=None, help="32 (tiny: 8)")
    parser.add_argument("--num_generations", type=int, default=None, help="completions per prompt: 8 (tiny: 4)")
    parser.add_argument("--max_completion_length", type=int, default=None, help="new tokens: 256 (tiny: 16)")
    parser.add_argument("--steps", type=int, default=4, help="training steps' worth of completions per run")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs after the warm-up: 3 (tiny: 2)")
    parser.add_argument("--vocab_size", type=int, default=None, help="tokenizer size: 16384 (tiny: 512)")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation seed")
    args = parser.parse_args(argv)

    tiny = args.tiny
    for name, full, small in [
        ("completions_per_step", 32, 8),
        ("num_generations", 8, 4),
        ("max_completion_length", 256, 16),
        ("repeats", 3, 2),
        ("vocab_size", 16384, 512),
    ]:
        if getattr(args, name) is None:
            setattr(args, name, small if tiny else full)
    for name in ("completions_per_step", "num_generations", "max_completion_length", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.completions_per_step % args.num_generations:
        parser.error(f"--completions_per_step ({args.completions_per_step}) must be a multiple of --num_generations "
                     f"({args.num_generations})")
    args.variants = ["default"] + [v for v in (args.variants or VARIANTS) if v != "default"]
    for name in args.variants:
        if args.steps % VARIANTS[name].steps_per_generation:
            parser.error(f"--steps ({args.steps}) must be a multiple of {name}'s steps_per_generation "
                         f"({VARIANTS[name].steps_per_generation})")
    return args


def load_prompts(num_prompts: int) -> tuple[list[list[dict]], str]:
    """`num_prompts` GSM8K train problems as the recipes' chat prompts (the first rows; the fallback questions, cycled,
    when the data is absent) and where they came from."""
    from grpo_ext.data import load_math_dataset, make_prompt

    path = Path(SHARED_DATA) / "gsm8k" / "train.jsonl"
    if path.is_file():
        rows = load_math_dataset("gsm8k", data_files=str(path), limit=num_prompts)
        return list(rows["prompt"]), f"GSM8K train, first {num_prompts} problems"
    questions = [FALLBACK_QUESTIONS[i % len(FALLBACK_QUESTIONS)] for i in range(num_prompts)]
    return [make_prompt(q) for q in questions], "built-in GSM8K-style questions (../shared/data absent)"


def zero_reward(completions, **kwargs):
    return [0.0] * len(completions)


def describe(variant: Variant, args) -> dict:
    """What a user sets to get `variant`: its GRPOConfig keys (beyond the benchmark's common ones), its generation
    batch and whether the trainer's generation config is switched to compile."""
    config = dict(variant.config)
    if variant.steps_per_generation > 1:
        config["generation_batch_size"] = args.completions_per_step * variant.steps_per_generation
    if variant.continuous_batching and args.tiny:
        config["transformers_continuous_batching_config"] = dict(TINY_CONTINUOUS_BATCHING_CONFIG)
    return {
        "grpo_config": config,
        "generation_batch_size": args.completions_per_step * variant.steps_per_generation,
        "compile": variant.compile,
    }


def build_trainer(name: str, variant: Variant, model_path: str, args, work_dir: Path, prompts):
    """The grpo_ext trainer a user would get with this variant's GRPOConfig keys (greedy decoding)."""
    import torch
    from datasets import Dataset

    from grpo_ext import GRPOConfig, GRPOTrainer

    cuda = torch.cuda.is_available() and not args.tiny
    config = describe(variant, args)["grpo_config"]
    training_args = GRPOConfig(
        output_dir=str(work_dir / name.replace("+", "_")),
        per_device_train_batch_size=args.completions_per_step,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
        generation_kwargs={"do_sample": False},
        model_init_kwargs={"dtype": "bfloat16" if cuda else "float32", "attn_implementation": "sdpa"},
        bf16=cuda,
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        seed=0,
        **config,
    )
    trainer = GRPOTrainer(
        model=model_path,
        reward_funcs=[zero_reward],
        args=training_args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
    )
    return trainer


def generate_workload(trainer, prompt_ids: list[list[int]]) -> tuple[float, list[list[int]]]:
    """Seconds to generate completions for all of `prompt_ids`, in chunks of the trainer's generation batch, and the
    completions (token ids, cut after the first EOS as the trainer cuts them)."""
    chunk = trainer.args.generation_batch_size
    trainer.model.train()  # the mode the training loop generates in
    synchronize()
    start = time.perf_counter()
    completions = []
    for i in range(0, len(prompt_ids), chunk):
        ids, _ = trainer._generate_single_turn(prompt_ids[i:i + chunk], None, {}, trainer.num_generations)
        completions.extend(list(map(list, ids)))
    synchronize()
    return time.perf_counter() - start, completions


def agreement(reference: list[list[int]], completions: list[list[int]]) -> tuple[float, float]:
    """(exact-match fraction, mean matching-prefix fraction) of `completions` against `reference`."""
    if len(completions) != len(reference):
        return 0.0, 0.0
    exact, prefix = 0, 0.0
    for ref, out in zip(reference, completions):
        exact += ref == out
        common = 0
        for a, b in zip(ref, out):
            if a != b:
                break
            common += 1
        prefix += common / max(len(ref), 1)
    return exact / len(reference), prefix / len(reference)


def skip_reason(variant: Variant, device: str) -> str | None:
    if variant.compile and device != "cuda":
        return ("transformers compiles generate() only on CUDA-like devices; on CPU this would time the uncompiled "
                "static cache again")
    return None


def measure_variant(name, variant, model_path, args, work_dir, prompts, reference):
    """Build the trainer, warm up, time `args.repeats` runs and compare every run's completions to `reference`
    (None for the default itself, which is the reference)."""
    import torch

    trainer = build_trainer(name, variant, model_path, args, work_dir, prompts)
    try:
        prompt_ids, _, _ = trainer._tokenize_prompts(prompts)
        reset_peak_memory()
        warmup_seconds, first = generate_workload(trainer, prompt_ids)
        if len(first) != len(prompt_ids):
            raise RuntimeError(f"{len(first)} completions for {len(prompt_ids)} prompts")
        runs = [generate_workload(trainer, prompt_ids) for _ in range(args.repeats)]
        peak = peak_memory_gib()
    finally:
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if variant.compile:
            torch._dynamo.reset()
    outputs = [first] + [c for _, c in runs]
    ref = first if reference is None else reference
    matches = [agreement(ref, c) for c in outputs]
    tokens = [sum(map(len, c)) for c in outputs]
    if len(set(tokens)) != 1:
        raise RuntimeError(f"{name}: runs returned different token counts {tokens}")
    seconds = [s for s, _ in runs]
    tps = [tokens[0] / s for s in seconds]
    result = {
        "status": "ok",
        "completions": len(first),
        "tokens_generated": tokens[0],
        "full_length_fraction": sum(len(c) == args.max_completion_length for c in first) / len(first),
        "seconds": median_and_spread(seconds),
        "tokens_per_second": median_and_spread(tps),
        "warmup_seconds": warmup_seconds,
        "one_off_seconds": max(warmup_seconds - median_and_spread(seconds)["median"], 0.0),
        "exact_match_fraction": min(m[0] for m in matches),
        "matching_prefix_fraction": min(m[1] for m in matches),
        "peak_memory_gib": peak,
    }
    return result, first, prompt_ids


def greedy_margins(judge, prompt_ids, completions, batch_size: int = 16) -> list[float]:
    """Per completion, the most that any of its tokens falls short of the top logit in a float32 teacher-forced
    forward of the same model (`judge`): 0.0 when every token is float32's greedy choice. A path that only reorders
    bf16 rounding picks near-ties differently and stays within the default path's own margins; a broken path (wrong
    cache, wrong positions) picks tokens far below the top logit."""
    import torch

    device = judge.device
    margins = []
    for start in range(0, len(completions), batch_size):
        rows = [list(p) + list(c) for p, c in zip(prompt_ids[start:start + batch_size],
                                                  completions[start:start + batch_size])]
        width = max(map(len, rows))
        input_ids = torch.zeros(len(rows), width, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):  # right padding: earlier positions do not see it
            input_ids[i, :len(row)] = torch.tensor(row)
            attention_mask[i, :len(row)] = 1
        with torch.no_grad():
            logits = judge(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits.float()
        for i, completion in enumerate(completions[start:start + batch_size]):
            if not completion:
                margins.append(0.0)
                continue
            first = len(prompt_ids[start + i])
            scores = logits[i, first - 1:first - 1 + len(completion)]
            chosen = scores.gather(1, torch.tensor(completion, device=device).unsqueeze(1)).squeeze(1)
            margins.append((scores.max(dim=1).values - chosen).max().item())
    return margins


def add_greedy_check(results: dict, model_path: str, device: str, prompt_ids, outputs: dict) -> None:
    """Judge every measured variant's completions with a float32 copy of the model (see `greedy_margins`); the
    default path's largest margin is the noise floor of its dtype."""
    import torch
    from transformers import AutoModelForCausalLM

    judge = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
    judge.to(device).eval()
    margins = {name: greedy_margins(judge, prompt_ids, completions) for name, completions in outputs.items()}
    del judge
    noise = max(margins["default"])
    results["default_max_greedy_margin"] = noise
    for name, values in margins.items():
        entry = results["variants"][name]
        entry["max_greedy_margin"] = max(values)
        entry["within_default_noise_fraction"] = sum(m <= noise for m in values) / len(values)
    results["fastest_within_noise"] = fastest(results["variants"], "within_default_noise_fraction")


def fastest(variants: dict, criterion: str = "exact_match_fraction") -> str | None:
    """The measured variant with the highest median tokens/s among those whose `criterion` fraction is 1.0."""
    passing = {n: v for n, v in variants.items() if v["status"] == "ok" and v.get(criterion) == 1.0}
    return max(passing, key=lambda n: passing[n]["tokens_per_second"]["median"]) if passing else None


def markdown_report(results: dict) -> str:
    setup = results["setup"]
    lines = [
        "# Generation without vLLM: tokens/s of the GRPO trainer's transformers paths",
        "",
        f"Device: {setup['device']}, {setup['dtype']}, sdpa. Model: {setup['model']}. Prompts: {setup['prompts']}.",
        f"Workload per run: {setup['steps']} steps x {setup['completions_per_step']} completions "
        f"({setup['completions_per_step'] // setup['num_generations']} prompts x {setup['num_generations']} "
        f"generations) of up to {setup['max_completion_length']} new tokens, greedy; 1 warm-up run, then "
        f"{setup['repeats']} timed runs (median [min-max]). Continuous batching config: "
        f"{setup['continuous_batching_config']}.",
        "",
        "| variant | GRPOConfig | tok/s median [min-max] | speedup | exact match | prefix match | within noise "
        "| warm-up s | one-off s | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in results["variants"].items():
        config = ", ".join(f"{key}={json.dumps(value)}" for key, value in v["grpo_config"].items()
                           if key != "transformers_continuous_batching_config")  # in the header
        config = config or "(TRL defaults)"
        if v["status"] != "ok":
            lines.append(f"| {name} | {config} | {v['status']}: {v['reason']} | | | | | | | |")
            continue
        tps = v["tokens_per_second"]
        peak = "-" if v["peak_memory_gib"] is None else f"{v['peak_memory_gib']:.2f}"
        noise = f"{v['within_default_noise_fraction']:.3f}" if "within_default_noise_fraction" in v else "-"
        lines.append(
            f"| {name} | {config} | {tps['median']:,.0f} [{tps['min']:,.0f}-{tps['max']:,.0f}] | "
            f"{v['speedup']:.2f}x | {v['exact_match_fraction']:.3f} | {v['matching_prefix_fraction']:.3f} | "
            f"{noise} | {v['warmup_seconds']:.2f} | {v['one_off_seconds']:.2f} | {peak} |"
        )
    default = results["variants"]["default"]
    lines += [
        "",
        f"Tokens per run: {default['tokens_generated']:,} ({default['full_length_fraction']:.0%} of the "
        f"{default['completions']} completions ran to the full length).",
    ]
    if "default_max_greedy_margin" in results:
        lines.append(
            "Within noise: share of completions whose every token is within the default path's own largest margin "
            f"({results['default_max_greedy_margin']:.4g} logits) of the top logit of a float32 forward of the same "
            "model; exact match and prefix match compare token ids with the default's.")
    for key, label in [("fastest_correct", "Fastest correct (exact match 1.0)"),
                       ("fastest_within_noise", "Fastest within the default's noise")]:
        best = results.get(key)
        if best is None:
            lines.append(f"{label}: none." if key in results else f"{label}: not judged yet.")
            continue
        v = results["variants"][best]
        lines.append(f"{label}: **{best}**, {v['tokens_per_second']['median']:,.0f} tokens/s, "
                     f"{v['speedup']:.2f}x the default (target: 3x).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("The full size needs a CUDA GPU (bf16); run with --tiny on a CPU.")
    if args.tiny:
        torch.set_num_threads(1)  # tiny models run fastest on one thread
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    shape = TINY_SHAPE if args.tiny else QWEN25_05B_SHAPE
    name = "generation_tiny" if args.tiny else "generation"
    prompt_rows, prompt_source = load_prompts(args.steps * args.completions_per_step // args.num_generations)
    # One row per completion, each prompt repeated num_generations times in a row, as TRL's RepeatSampler orders them.
    prompts = [p for p in prompt_rows for _ in range(args.num_generations)]

    results = {
        "setup": {
            "device": device,
            "dtype": "bfloat16" if device == "cuda" else "float32",
            "model": f"Qwen2 {shape}, vocab {args.vocab_size}, random init (seed {args.seed})",
            "prompts": prompt_source,
            "steps": args.steps,
            "completions_per_step": args.completions_per_step,
            "num_generations": args.num_generations,
            "max_completion_length": args.max_completion_length,
            "repeats": args.repeats,
            "tiny": args.tiny,
            "continuous_batching_config": json.dumps(TINY_CONTINUOUS_BATCHING_CONFIG) if args.tiny
            else 'TRL\'s default ({"max_memory_percent": 0.5}, the rest sized by transformers)',
        },
        "variants": {},
        "fastest_correct": None,
    }
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        model_path = save_benchmark_model(work_dir / "model", shape, args.vocab_size, seed=args.seed)
        reference, prompt_ids, outputs = None, None, {}
        for variant_name in args.variants:
            variant = VARIANTS[variant_name]
            reason = skip_reason(variant, device)
            if reason is not None:
                entry = {"status": "skipped", "reason": reason}
            else:
                print(f"[generation] {variant_name} ...", flush=True)
                started = time.perf_counter()
                try:
                    entry, completions, prompt_ids = measure_variant(variant_name, variant, model_path, args,
                                                                     work_dir, prompts, reference)
                except Exception as err:  # a path that fails on this device is a finding, not the end of the run
                    if variant_name == "default":
                        raise
                    entry = {"status": "failed", "reason": f"{type(err).__name__}: {err}"[:500]}
                else:
                    if reference is None:
                        reference = completions
                    outputs[variant_name] = completions
                    base = results["variants"].get("default", entry)["tokens_per_second"]["median"]
                    entry["speedup"] = entry["tokens_per_second"]["median"] / base
                    print(f"[generation] {variant_name}: {entry['tokens_per_second']['median']:,.0f} tokens/s, "
                          f"{entry['speedup']:.2f}x, exact match {entry['exact_match_fraction']:.3f} "
                          f"({time.perf_counter() - started:.0f} s with set-up)", flush=True)
            results["variants"][variant_name] = {**describe(variant, args), **entry}
            results["fastest_correct"] = fastest(results["variants"])
            # Keep what is measured so far on disk (a run cut short by a time limit still leaves its figures).
            with contextlib.redirect_stdout(io.StringIO()):
                write_report(args.output_dir, name, results, markdown_report(results))
        print("[generation] float32 greedy check ...", flush=True)
        add_greedy_check(results, model_path, device, prompt_ids, outputs)
    write_report(args.output_dir, name, results, markdown_report(results))
    return results


if __name__ == "__main__":
    main()
