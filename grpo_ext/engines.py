"""The models grpo_ext adds beside TRL's policy, placed on whichever engine accelerate runs: DDP, DeepSpeed ZeRO-2/3
or FSDP2.

TRL and transformers place the policy, its reference and TRL's reward models. grpo_ext adds PPO's critic, the reward
model an iterative-RL refresh retrains, and the PRM it scores steps with; they are placed here, the way TRL places
its own models where it can:

* `engine_name(accelerator)`: "single", "ddp", "zero2", "zero3" or "fsdp2" (DeepSpeed stages 0 and 1 count as
  "zero2": parameters whole on every process); every engine-aware branch reads it.
* `prepare_frozen(model, accelerator)`: a scoring-only model, prepared as TRL prepares its reference and reward models
  (`trl.models.prepare_deepspeed`, `prepare_fsdp`, or accelerate's evaluation-mode `prepare_model`).
* `TrainableModel`: a second trainable model with an AdamW of its own: its own DeepSpeed engine under ZeRO (as
  OpenRLHF keeps one engine per model), accelerate's `fully_shard` under FSDP2, DDP otherwise. It keeps float32
  weights on the non-DeepSpeed engines, as DeepSpeed keeps float32 master weights: an update of 1e-6 is lost to
  bfloat16 rounding of a weight of order 1.
* `copy_parameters(source, target)`: target <- source, parameter by parameter, through TRL's
  `SyncRefModelCallback.sync_target_model` with alpha 1 (it gathers ZeRO-3 shards; FSDP2 shards laid out alike
  copy locally).
* `gathered_for_generation(model, accelerator)`: the whole model for `generate` on this process alone, so that
  processes may generate different numbers of sequences: TRL's `unwrap_model_for_generation` under ZeRO-3 (which
  gathers), every FSDP2 unit unsharded under FSDP2.
* `same_number_of_forwards(count, accelerator)`: under ZeRO-3 and FSDP2 every forward is a collective, so a process
  with fewer batches to score runs padding forwards until all have run as many.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable

import torch

from .errors import ConfigurationError

ENGINES = ("single", "ddp", "zero2", "zero3", "fsdp2")
SHARDED_ENGINES = ("zero3", "fsdp2")  # parameters split over processes: forwards are collectives


def engine_name(accelerator) -> str:
    """The engine `accelerator` runs, one of `ENGINES` ("single" for None). FSDP version 1 is refused: the shipped
    config is FSDP2, and grpo_ext's models are placed with FSDP2's `fully_shard` only."""
    from accelerate.utils import DistributedType

    if accelerator is None:
        return "single"
    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return "zero3" if accelerator.state.deepspeed_plugin.zero_stage == 3 else "zero2"
    if kind == DistributedType.FSDP:
        if not accelerator.is_fsdp2:
            raise ConfigurationError(
                "grpo_ext places its critic and reward models with FSDP2 (fully_shard); FSDP version 1 is not "
                "supported. Set fsdp_version: 2 in the accelerate config (accelerate_configs/fsdp2.yaml)."
            )
        return "fsdp2"
    return "ddp" if accelerator.num_processes > 1 else "single"


def unwrapped(model) -> torch.nn.Module:
    """The module inside DDP / DeepSpeed engine wrappers (`.module`), or the model itself."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


# ----------------------------------------------------------------------------------------------------------------
# Frozen models and weight copies
# ----------------------------------------------------------------------------------------------------------------


def prepare_frozen(model: torch.nn.Module, accelerator) -> torch.nn.Module:
    """A model that only scores, placed as TRL places its reference and reward models: a DeepSpeed inference engine
    (ZeRO-3 keeps it sharded; other stages hold it whole), `fully_shard` under FSDP2, else on the device with the
    run's mixed precision. In eval mode, no gradients."""
    from trl.models import prepare_deepspeed, prepare_fsdp

    model.requires_grad_(False)
    engine = engine_name(accelerator)
    if engine in ("zero2", "zero3"):
        return prepare_deepspeed(model, accelerator)  # in eval mode
    if engine == "fsdp2":
        return prepare_fsdp(model, accelerator)  # in eval mode
    model = accelerator.prepare_model(model, evaluation_mode=True, device_placement=True)
    model.eval()  # (a DeepSpeed engine's eval() returns None: not chained)
    return model


def copy_parameters(source: Iterable[torch.nn.Parameter], target: Iterable[torch.nn.Parameter]) -> None:
    """target_i <- source_i for two aligned sequences of parameters (same shapes), in place, on every process.

    TRL's `SyncRefModelCallback.sync_target_model(source, target, alpha=1)`, which computes
    `target <- (1 - alpha) * target + alpha * source`: under ZeRO-3 it gathers both sides and rank 0 writes (the
    shards are then re-partitioned); otherwise each process updates its own tensors, which for FSDP2 shards laid
    out alike (policy and reference under one plugin) are the local shards."""
    from accelerate.state import AcceleratorState
    from trl.trainer.callbacks import SyncRefModelCallback

    source, target = torch.nn.ParameterList(source), torch.nn.ParameterList(target)
    if len(source) != len(target):
        raise ValueError(f"copy_parameters: {len(source)} source parameters for {len(target)} target parameters")
    # TRL's sync asks AcceleratorState for the ZeRO stage: without any accelerator yet, its plain branch
    sync = SyncRefModelCallback.sync_target_model if AcceleratorState._shared_state else \
        SyncRefModelCallback._sync_target_model
    with torch.no_grad():
        sync(source, target, alpha=1.0)


@contextlib.contextmanager
def gathered_for_generation(model, accelerator):
    """Yield the unwrapped model whole on this process, for `generate` calls that other processes do not match.

    ZeRO-3: TRL's `unwrap_model_for_generation` (gathers every parameter and lifts DeepSpeed's hooks; pass the
    engine). FSDP2: every `fully_shard` unit is unsharded and kept so until the block ends, so the forwards inside
    need no collective. A model transformers loaded partitioned under ZeRO-3 (no engine, no accelerator given): its
    parameters gathered. Other engines: the unwrapped model. The memory is the whole model's on every process, as
    for TRL's own generation under ZeRO-3 (`ds3_gather_for_generation`)."""
    engine = engine_name(accelerator)
    if accelerator is None and is_zero3_partitioned(model):  # loaded by transformers under ZeRO-3, in no engine
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            yield unwrapped(model)
        return
    if engine == "zero3":
        from trl.models import unwrap_model_for_generation

        settle_shards(model)
        with unwrap_model_for_generation(model, accelerator) as whole:
            yield whole
        return
    if engine != "fsdp2":
        yield unwrapped(model)
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:  # every process unshards the same units in the same order: collective, once
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield model
    finally:
        reshard_after_forward = accelerator.state.fsdp_plugin.reshard_after_forward  # as accelerate sharded them
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(bool(reshard_after_forward), recurse=False)


def settle_shards(model) -> None:
    """Put a sharded model's parameters back in their shards before they are read or written outside a forward.
    ZeRO-3: the engine's prefetched parameters land and are released (DeepSpeed's `empty_partition_cache`); after a
    forward it may hold the next forward's first parameters in flight, and gathering one then fails with "Cannot
    partition a param in flight". FSDP2: every unit is resharded; after a forward a unit that does not reshard
    after forward (the root) holds its parameters as whole tensors, not its DTensor shards. Anything else: no-op."""
    if model is None:
        return
    if hasattr(model, "empty_partition_cache"):
        model.empty_partition_cache()
        return
    from torch.distributed.fsdp import FSDPModule

    for unit in model.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()


def is_zero3_partitioned(model) -> bool:
    """Whether DeepSpeed partitioned `model`'s parameters (transformers loads models so under ZeRO-3)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def same_number_of_forwards(count: int, accelerator) -> int:
    """How many forwards this process must run so that every process runs the same number: `count` where the model
    is whole on each process, the largest `count` of all processes under ZeRO-3 and FSDP2 (each forward gathers the
    parameters with the other processes; a process that stops early leaves them waiting)."""
    if engine_name(accelerator) not in SHARDED_ENGINES:
        return count
    total = torch.tensor([count], device=accelerator.device)
    return int(accelerator.reduce(total, reduction="max").item())


# ----------------------------------------------------------------------------------------------------------------
# A second trainable model
# ----------------------------------------------------------------------------------------------------------------


class TrainableModel:
    """A model trained with an AdamW of its own beside (or between the steps of) TRL's policy.

    Placement by engine:

    * "single", "ddp": float32 weights, `accelerator.prepare_model` (DDP across processes, the run's autocast;
      without an accelerator, the model itself);
    * "zero2", "zero3": a DeepSpeed engine of its own, built from the run's DeepSpeed config (same ZeRO stage and
      precision; its own micro-batch size, accumulation and clipping), with DeepSpeed's float32 master weights;
    * "fsdp2": float32 weights, `accelerator.prepare(model, optimizer)` (one `fully_shard` per transformer block,
      the plugin's mixed precision).

    The policy's optimizer wrapper, gradient scaler and accumulation state are never shared: `backward` and
    `step` drive this model alone. Under fp16 without DeepSpeed it has a `GradScaler` of its own.

    Args:
        model: the model, whole (or, under ZeRO-3, already partitioned by `zero.Init`).
        accelerator: the run's accelerator.
        learning_rate, betas, eps, weight_decay: AdamW's.
        max_grad_norm: clip the gradient norm to this before each step (0 or None: no clipping).
        micro_batch_size, gradient_accumulation_steps: what one `step` accumulates (DeepSpeed's batch bookkeeping).
    """

    def __init__(
        self, model: torch.nn.Module, accelerator, *, learning_rate: float, betas=(0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0, max_grad_norm: float | None = 1.0, micro_batch_size: int = 1,
        gradient_accumulation_steps: int = 1,
    ):  # fmt: skip
        self.accelerator = accelerator
        self.engine = engine_name(accelerator)
        self.max_grad_norm = max_grad_norm or 0.0
        self.scaler = None
        model.requires_grad_(True)
        model.train()
        adamw = dict(lr=learning_rate, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        if self.engine in ("zero2", "zero3"):
            import deepspeed

            config = _deepspeed_config(accelerator, model, micro_batch_size, gradient_accumulation_steps,
                                       self.max_grad_norm)
            optimizer = torch.optim.AdamW(model.parameters(), **adamw)
            self.module, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        elif self.engine == "fsdp2":
            model = model.float()
            optimizer = torch.optim.AdamW(model.parameters(), **adamw)
            self.module, prepared = accelerator.prepare(model, optimizer)
            self.optimizer = prepared.optimizer  # the torch optimizer, outside accelerate's step gating and scaler
        else:
            model = model.float()
            self.module = model if accelerator is None else accelerator.prepare_model(model)
            self.optimizer = torch.optim.AdamW(self.module.parameters(), **adamw)
        if accelerator is not None and not self.deepspeed and accelerator.mixed_precision == "fp16":
            if self.engine == "fsdp2":  # scales and unscales DTensor gradients
                from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler as GradScaler
            else:
                from torch.amp import GradScaler
            self.scaler = GradScaler(accelerator.device.type)

    @property
    def model(self) -> torch.nn.Module:
        """The bare model (inside DDP / the DeepSpeed engine); under ZeRO-3 and FSDP2 its parameters are shards."""
        return unwrapped(self.module)

    @property
    def deepspeed(self) -> bool:
        return self.engine in ("zero2", "zero3")

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def backward(self, loss: torch.Tensor, sync: bool = True) -> None:
        """Accumulate the gradient of `loss`. `sync=False` on the micro-batches before the last of an optimizer step:
        DDP and FSDP2 then skip their gradient all-reduce, DeepSpeed knows the step is not at its boundary. `loss` is
        taken as it is (already divided for accumulation where the caller accumulates)."""
        if self.deepspeed:
            self.module.set_gradient_accumulation_boundary(is_boundary=sync)
            self.module.backward(loss, scale_wrt_gas=False)
            return
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        with self._no_sync(not sync):
            loss.backward()

    def _no_sync(self, skip: bool):
        if not skip or self.engine == "single":
            return contextlib.nullcontext()
        if self.engine == "fsdp2":
            return _fsdp2_no_sync(self.module)
        return self.module.no_sync()

    def step(self) -> float | None:
        """Clip (to `max_grad_norm`) and take the optimizer step on the accumulated gradients, then clear them.
        Returns the gradient norm before clipping (None where none was computed)."""
        if self.deepspeed:
            self.module.step()
            norm = self.module.get_global_grad_norm()
            return None if norm is None else float(norm)
        norm = None
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        parameters = [p for p in self.module.parameters() if p.grad is not None]
        if self.max_grad_norm > 0 and parameters:
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
            norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    # -- checkpoints: grpo_ext.checkpoint does the writing ---------------------------------------------------------

    def save(self, directory: str) -> list[str]:
        """Weights and optimizer state into `directory` (all processes call it); returns the files the folder must
        hold. DeepSpeed: the engine's own checkpoint (each process's optimizer partition; resume needs the same
        number of processes). Otherwise one file of full weights and full optimizer state (any number)."""
        from . import checkpoint

        return checkpoint.save_trainable(self, directory)

    def load(self, directory: str, num_processes: int | None = None) -> None:
        """Restore what `save` wrote (all processes call it); `num_processes`: how many wrote it, when known."""
        from . import checkpoint

        checkpoint.load_trainable(self, directory, num_processes)


def _fsdp2_no_sync(module):
    @contextlib.contextmanager
    def skipping():
        module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.set_requires_gradient_sync(True)

    return skipping()


def _deepspeed_config(accelerator, model, micro_batch_size: int, accumulation: int, max_grad_norm: float) -> dict:
    """The run's DeepSpeed config for a second engine: its ZeRO stage and precision, with this model's batch sizes,
    accumulation and clipping, no optimizer or scheduler block (the AdamW is passed in), and every "auto" left by
    the config file resolved (as transformers resolves the policy's) or dropped to DeepSpeed's default."""
    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    config.update(
        train_micro_batch_size_per_gpu=micro_batch_size, gradient_accumulation_steps=accumulation,
        train_batch_size=micro_batch_size * accumulation * accelerator.num_processes,
        gradient_clipping=max_grad_norm, zero_allow_untested_optimizer=True,
        zero_force_ds_cpu_optimizer=False,  # a torch AdamW, also when the config offloads the optimizer to CPU
    )  # fmt: skip
    precision = accelerator.mixed_precision
    for key in ("fp16", "bf16"):
        block = config.setdefault(key, {})
        if block.get("enabled", "auto") == "auto":
            block["enabled"] = precision == key
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    zero = config["zero_optimization"]
    if hidden is not None and zero.get("stage") == 3:  # as transformers and TRL size the buckets
        for key, value in (("reduce_bucket_size", hidden * hidden),
                           ("stage3_prefetch_bucket_size", int(0.9 * hidden * hidden)),
                           ("stage3_param_persistence_threshold", 10 * hidden)):
            if zero.get(key, "auto") == "auto":
                zero[key] = value
    return _drop_auto(config)


def _drop_auto(value):
    if isinstance(value, dict):
        return {k: _drop_auto(v) for k, v in value.items() if v != "auto"}
    return value
