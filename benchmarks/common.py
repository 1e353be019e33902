"""What every benchmark script shares: model shapes, offline model building, timing statistics, the environment
record and the JSON + Markdown report.

Benchmarks are scripts (`python benchmarks/<name>.py --tiny`), not tests: they print figures and write them to
`--output_dir`; tests only run their `--tiny` size to keep them working.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Qwen2.5-0.5B's transformer (its 151,936-token vocabulary replaced by a tokenizer trained offline).
QWEN25_05B_SHAPE = dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864)
# The shape `--tiny` runs use: seconds on a CPU.
TINY_SHAPE = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=64)


def tokenizer_corpus(data_dir: Path = SHARED_DATA) -> list[str] | None:
    """GSM8K train questions and answers (the text a math tokenizer should know), or None when the data is absent."""
    path = Path(data_dir) / "gsm8k" / "train.jsonl"
    if not path.is_file():
        return None
    from grpo_ext.data import read_jsonl

    return [row["question"] + "\n" + row["answer"] for _, row in read_jsonl(path)]


def save_benchmark_model(
    path: str | os.PathLike, shape: dict, vocab_size: int, seed: int = 0, corpus: list[str] | None = None
) -> str:
    """A randomly initialised Qwen2 model of `shape` and a BPE tokenizer of up to `vocab_size` tokens trained offline
    on `corpus` (by default: GSM8K text for vocabularies over 1,024 when `../shared/data` is present, else the small
    built-in corpus), saved to `path`."""
    from grpo_ext.tiny import build_tiny_tokenizer, save_tiny_causal_lm

    if corpus is None and vocab_size > 1024:
        corpus = tokenizer_corpus()
    tokenizer = build_tiny_tokenizer(vocab_size=vocab_size, corpus=corpus)
    return save_tiny_causal_lm(path, seed=seed, tokenizer=tokenizer, **shape)


def median_and_spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and count of repeated measurements (the median is what the reports quote)."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    """Peak GPU memory allocated by torch since the last `reset_peak_memory()`; None on CPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def environment() -> dict:
    """Device, library versions and the date: what a figure needs to be re-run and compared."""
    import torch

    from grpo_ext.versions import library_versions

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return {
        "date": datetime.date.today().isoformat(),
        "device": device,
        "python": platform.python_version(),
        **library_versions(),
        "torch_threads": torch.get_num_threads(),
    }


def versions_line(env: dict) -> str:
    """The library versions of `environment()` as one Markdown line, for a results table."""
    from grpo_ext.versions import LIBRARIES

    return "Versions: " + ", ".join(f"{name} {env[name]}" for name in LIBRARIES if env.get(name)) + "."


def write_report(output_dir: str | os.PathLike, name: str, results: dict, markdown: str,
                 also_written: tuple = ()) -> Path:
    """Write `<name>.json` (results plus the environment) and `<name>.md` (with the library versions) to
    `output_dir`; print the Markdown, then the path of every file the run wrote (these two and `also_written`)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    env = environment()
    payload = {"environment": env, **results}
    markdown = f"{markdown}\n\n{versions_line(env)}"
    json_path, markdown_path = output_dir / f"{name}.json", output_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    markdown_path.write_text(markdown + "\n")
    print(markdown)
    print("\nResults written to:")
    for path in (json_path, markdown_path, *[p for p in also_written if p]):
        print(f"  {Path(path).resolve()}")
    return json_path


def held_training_bytes(modules=(), optimizers=()) -> dict[str, int]:
    """Bytes of the tensors that training holds, counted from the live objects (not estimated): every parameter and
    buffer of `modules` (`parameters`: policy, reference, critic...), their `.grad` (`gradients`) and every tensor in
    the state of `optimizers` (`optimizer_state`: Adam's two moments and step counters), and their `total`.

    Each storage counts once (a tied embedding, a model listed twice, a parameter shared by two modules), so call it
    while the gradients exist (a `TrainerCallback.on_optimizer_step`: after the step, before they are zeroed).
    """
    import torch

    seen: set[tuple[str, int]] = set()

    def size(tensor) -> int:
        if not isinstance(tensor, torch.Tensor):
            return 0
        storage = tensor.untyped_storage()
        key = (str(tensor.device), storage.data_ptr())
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()

    parameters = sum(size(t) for m in modules for t in [*m.parameters(), *m.buffers()])
    gradients = sum(size(p.grad) for m in modules for p in m.parameters())
    state = sum(size(value) for opt in optimizers for per_param in opt.state.values() for value in per_param.values())
    return {"parameters": parameters, "gradients": gradients, "optimizer_state": state,
            "total": parameters + gradients + state}
