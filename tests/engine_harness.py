"""Real engines on 2 CPU processes, for the engine-matrix tests (tests/test_engines.py): how each is launched and
what its TrainingArguments need, and the two test-only switches a CPU machine needs.

    accelerate launch <engine_launch_args(engine)> tests/engine_checks.py ENGINE MODEL_PATH OUTPUT_DIR

Engines: "ddp" (torch DDP over gloo), "zero2" and "zero3" (DeepSpeed, its CPU accelerator over gloo; launched without
`--cpu`, which would drop DeepSpeed), "fsdp2" (accelerate's FSDP2 preparation, torch's `fully_shard`, over gloo).

The switches, each bypassing one thing and nothing else:

* `enable_fsdp_on_cpu`: accelerate 1.16 builds FSDP only for GPU-type devices; under a CPU an FSDP config silently
  becomes DDP. The switch lets `AcceleratorState` keep the FSDP plugin on a multi-CPU run. Everything after it
  (accelerate's `fully_shard` per transformer block, its optimizer parameter swap, torch's FSDP2 collectives and
  state dicts) is the real code.
* `skip_deepspeed_shm_kernel`: DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce kernel the first
  time a process group starts (58 s on 2 cores, then cached); without it DeepSpeed's collectives go through torch's
  gloo. ZeRO's partitioning, hooks, gathering and optimizer are DeepSpeed's own.

On a GPU machine (`GRPO_EXT_ENGINE_DEVICE=gpu`, docs/benchmarks.md) the same checks run in bf16 over NCCL, on as many
processes as `GRPO_EXT_ENGINE_PROCESSES` says (default 1), without either switch.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {"zero2": "deepspeed_zero2.yaml", "zero3": "deepspeed_zero3.yaml", "fsdp2": "fsdp2.yaml"}
ENGINES = ("ddp", "zero2", "zero3", "fsdp2")


def on_gpu() -> bool:
    return os.environ.get("GRPO_EXT_ENGINE_DEVICE", "cpu") == "gpu"


def engine_launch_args(engine: str) -> list[str]:
    """`accelerate launch` arguments that start `engine` on 2 CPU processes (on a GPU machine: bf16, the GPUs)."""
    processes = os.environ.get("GRPO_EXT_ENGINE_PROCESSES", "1") if on_gpu() else "2"
    if engine == "ddp":
        how = (["--multi_gpu"] if processes != "1" else []) + ["--num_machines", "1", "--dynamo_backend", "no"]
    else:
        how = ["--config_file", str(REPO / "accelerate_configs" / CONFIGS[engine])]
    return [*how, "--num_processes", processes, "--mixed_precision", "bf16" if on_gpu() else "no"]


def training_kwargs(engine: str) -> dict:
    """The TrainingArguments that put `engine` on CPU processes: DeepSpeed needs `use_cpu=False` (its own CPU
    accelerator) and gloo, which `use_cpu=True` picks for the others; transformers refuses bf16 on a CPU. On a GPU
    machine: bf16, NCCL."""
    if on_gpu():
        return {"use_cpu": False, "bf16": True}
    if engine in ("zero2", "zero3"):
        return {"use_cpu": False, "ddp_backend": "gloo", "bf16": False}
    return {"use_cpu": True, "bf16": False}


def setup(engine: str) -> None:
    """Apply the switches `engine` needs on a CPU machine; call before any trainer or accelerator exists."""
    import torch

    torch.set_num_threads(1)
    if on_gpu():
        return
    if engine == "fsdp2":
        enable_fsdp_on_cpu()
    if engine in ("zero2", "zero3"):
        skip_deepspeed_shm_kernel()


def accelerator(engine: str):
    """A bare `Accelerator` on `engine` (checks without a trainer): gloo for DeepSpeed, whose ranks otherwise each
    count themselves alone on a CPU; the CPU device for the others."""
    from accelerate import Accelerator, PartialState

    if on_gpu():
        return Accelerator()
    if engine in ("zero2", "zero3"):
        PartialState(backend="gloo")
        return Accelerator()
    return Accelerator(cpu=True)


def enable_fsdp_on_cpu() -> None:
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            # AcceleratorState copies PartialState's type at every construction: set both
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = init


def skip_deepspeed_shm_kernel() -> None:
    import deepspeed.comm.torch

    deepspeed.comm.torch.build_shm_op = lambda: None
