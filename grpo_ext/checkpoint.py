"""What grpo_ext adds to TRL's checkpoints (PPO's critic, the refreshed reward model, the reset reference, the
iterative-RL state) and to `output_dir`, written the same way whatever the engine.

* Full tensors from every process: `full_state_dict` gathers ZeRO-3 shards module by module and FSDP2 shards with
  torch's `get_model_state_dict(full_state_dict=True)`; the main process receives the whole state dict.
  `load_full_state_dict` puts a whole state dict back into shards (ZeRO-3: rank 0 writes inside the gather;
  FSDP2: broadcast from rank 0).
* A trainable model with its optimizer (`save_trainable` / `load_trainable`): DeepSpeed's own checkpoint of its
  engine (each process's optimizer partition: resume with the same number of processes, as for the policy), or one
  file of full weights and full optimizer state (any number of processes).
* Atomic writes: every file is written under a temporary name and renamed; a folder is complete when its marker,
  `state.json`, exists and every file it lists is there. The marker is written last, by the main process, after
  every process has written (`finish_folder`); `read_folder` refuses an incomplete folder, naming what is missing.
* `save_pretrained_full`: a model loadable with `from_pretrained`, written from full tensors beside its final place
  and renamed into it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence

import torch

from .engines import SHARDED_ENGINES, engine_name, settle_shards, unwrapped

MARKER_FILE = "state.json"
TRAINABLE_FILE = "trainable.pt"  # weights and optimizer state of a TrainableModel (non-DeepSpeed engines)
SCALER_FILE = "grad_scaler.pt"  # its fp16 gradient scaler, when it has one
DEEPSPEED_TAG = "deepspeed"  # the engine checkpoint's tag (a folder) for TrainableModels under DeepSpeed


class IncompleteCheckpointError(ValueError):
    """A checkpoint lacks (part of) one of grpo_ext's folders."""


# ----------------------------------------------------------------------------------------------------------------
# Atomic files and markers
# ----------------------------------------------------------------------------------------------------------------


def atomic_torch_save(value, path: str) -> None:
    tmp = path + ".tmp"
    torch.save(value, tmp)
    os.replace(tmp, path)


def write_json(path: str, value: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def write_jsonl(path: str, rows: Sequence[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def finish_folder(directory: str, accelerator, meta: dict, files: Sequence[str]) -> None:
    """Mark `directory` complete: once every process has written its part, the main process writes `state.json`
    holding `meta`, the engine, the number of processes and the list of `files` the folder must hold."""
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()
    if accelerator is None or accelerator.is_main_process:
        engine = engine_name(accelerator)
        num_processes = accelerator.num_processes if accelerator is not None else 1
        write_json(os.path.join(directory, MARKER_FILE),
                   {**meta, "engine": engine, "num_processes": num_processes, "files": list(files)})


def read_folder(directory: str, purpose: str, what: str, missing_hint: str) -> dict:
    """`directory/state.json` after checking that it and every file it lists exist; otherwise
    `IncompleteCheckpointError` saying that `purpose` ("PPO", "iterative RL") cannot resume from the checkpoint,
    naming `what` the folder holds and what is missing; `missing_hint` says how a folder comes to be absent."""
    checkpoint = os.path.dirname(os.path.normpath(directory))
    name = os.path.basename(os.path.normpath(directory))
    refusal = f"cannot resume {purpose} from {checkpoint}"
    if not os.path.isdir(directory):
        raise IncompleteCheckpointError(f"{refusal}: it has no {name}/ folder ({what}). {missing_hint}")
    path = os.path.join(directory, MARKER_FILE)
    if not os.path.isfile(path):
        raise IncompleteCheckpointError(
            f"{refusal}: {path} is missing, so its {what} was not completely written (the run stopped while saving "
            "this checkpoint). Resume from an earlier checkpoint."
        )
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    missing = [n for n in meta.get("files", []) if not os.path.exists(os.path.join(directory, n))]
    if missing:
        raise IncompleteCheckpointError(
            f"{refusal}: {directory} is incomplete, missing {', '.join(missing)}. Resume from an earlier checkpoint."
        )
    return meta


# ----------------------------------------------------------------------------------------------------------------
# Full tensors from shards
# ----------------------------------------------------------------------------------------------------------------


def full_state_dict(model: torch.nn.Module, accelerator, keep=None) -> dict[str, torch.Tensor] | None:
    """The whole state dict of `model` (the entries whose name `keep(name)` accepts, with `keep`) as CPU tensors on
    the main process, None on the others; every process must call it. ZeRO-3: each module's own parameters are
    gathered in turn (at most one module's whole at a time); FSDP2: torch's
    `get_model_state_dict(full_state_dict=True, cpu_offload=True)`."""
    engine = engine_name(accelerator)
    main = accelerator is None or accelerator.is_main_process
    keep = keep or (lambda name: True)
    settle_shards(model)
    if engine == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {k: v for k, v in state.items() if keep(k)} if main else None
    module = unwrapped(model)
    if engine != "zero3":
        return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if keep(k)} if main else None
    import deepspeed

    state: dict[str, torch.Tensor] = {}
    for prefix, sub in module.named_modules():
        own = [*sub._parameters.items(), *_persistent_buffers(sub)]
        entries = [(f"{prefix}.{n}" if prefix else n, t) for n, t in own if t is not None]
        entries = [(n, t) for n, t in entries if keep(n)]
        if not entries:
            continue
        with deepspeed.zero.GatheredParameters([p for p in sub.parameters(recurse=False)]):
            if main:
                state.update((n, t.detach().cpu().clone()) for n, t in entries)
    return state if main else None


def _persistent_buffers(module):
    return [(n, b) for n, b in module._buffers.items() if n not in module._non_persistent_buffers_set]


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor] | None, accelerator,
                         strict: bool = True) -> None:
    """Put a whole state dict into `model` (with `strict=False`, the entries `state` has: an adapter's), every
    process calling it. Where parameters are whole on each process every process needs `state`; under ZeRO-3 and
    FSDP2 only the main process's is read (ZeRO-3: rank 0 writes inside the gather, the shards are re-partitioned;
    FSDP2: broadcast from rank 0)."""
    engine = engine_name(accelerator)
    settle_shards(model)
    if engine == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=strict)
        set_model_state_dict(model, state if accelerator.is_main_process else {}, options=options)
        return
    module = unwrapped(model)
    if engine != "zero3":
        module.load_state_dict(state, strict=strict)
        return
    import deepspeed

    rank0 = accelerator.process_index == 0
    if rank0 and strict and set(state) != set(full_names := _state_names(module)):
        raise ValueError(f"the state dict does not fit the model: {sorted(set(state) ^ full_names)[:5]}")
    with torch.no_grad():
        for prefix, sub in module.named_modules():
            entries = [(f"{prefix}.{n}" if prefix else n, t)
                       for n, t in [*sub._parameters.items(), *_persistent_buffers(sub)] if t is not None]
            if not strict and rank0:
                entries = [(n, t) for n, t in entries if n in state]
            with deepspeed.zero.GatheredParameters([p for p in sub.parameters(recurse=False)], modifier_rank=0):
                if rank0:
                    for name, tensor in entries:
                        tensor.copy_(state[name])


def _state_names(module) -> set[str]:
    return {f"{prefix}.{n}" if prefix else n for prefix, sub in module.named_modules()
            for n, t in [*sub._parameters.items(), *_persistent_buffers(sub)] if t is not None}


def save_full_weights(model: torch.nn.Module, path: str, accelerator, keep=None) -> None:
    """`full_state_dict(model, keep=keep)` written to `path` by the main process (every process calls it)."""
    state = full_state_dict(model, accelerator, keep)
    if state is not None:
        atomic_torch_save(state, path)


def load_full_weights(model: torch.nn.Module, path: str, accelerator, strict: bool = True) -> None:
    """Load what `save_full_weights` wrote, on any number of processes (every process calls it)."""
    sharded = engine_name(accelerator) in SHARDED_ENGINES
    reads = not sharded or accelerator.is_main_process
    state = torch.load(path, map_location="cpu", weights_only=True) if reads else None
    load_full_state_dict(model, state, accelerator, strict)


def save_pretrained_full(model: torch.nn.Module, directory: str, accelerator, tokenizer=None) -> None:
    """Write `model` loadable with `from_pretrained(directory)` from its full tensors (every process calls it; the
    main process writes), beside `directory` under a temporary name, then renamed into place."""
    state = full_state_dict(model, accelerator)
    if state is None:
        return
    tmp, old = directory + ".tmp", directory + ".old"
    for path in (tmp, old):
        shutil.rmtree(path, ignore_errors=True)
    unwrapped(model).save_pretrained(tmp, state_dict=state)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if os.path.isdir(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# A TrainableModel and its optimizer
# ----------------------------------------------------------------------------------------------------------------


def save_trainable(trainable, directory: str) -> list[str]:
    """Weights and optimizer state of a `grpo_ext.engines.TrainableModel` into `directory` (every process calls
    it); returns the names the folder must hold."""
    os.makedirs(directory, exist_ok=True)
    if trainable.deepspeed:
        trainable.module.save_checkpoint(directory, tag=DEEPSPEED_TAG)
        return [DEEPSPEED_TAG]
    accelerator = trainable.accelerator
    if trainable.engine == "fsdp2":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights, optimizer = get_state_dict(trainable.module, trainable.optimizer, options=options)
    else:
        weights, optimizer = trainable.model.state_dict(), trainable.optimizer.state_dict()
    files = [TRAINABLE_FILE] + ([SCALER_FILE] if trainable.scaler is not None else [])
    if accelerator is None or accelerator.is_main_process:
        state = {"model": {k: v.detach().cpu() for k, v in weights.items()}, "optimizer": optimizer}
        atomic_torch_save(state, os.path.join(directory, TRAINABLE_FILE))
        if trainable.scaler is not None:
            atomic_torch_save(trainable.scaler.state_dict(), os.path.join(directory, SCALER_FILE))
    return files


def load_trainable(trainable, directory: str, num_processes: int | None = None) -> None:
    """Restore what `save_trainable` wrote. A DeepSpeed checkpoint needs the engine and the number of processes it
    was written with (`num_processes`, from the folder's marker, when known)."""
    accelerator = trainable.accelerator
    deepspeed_checkpoint = os.path.isdir(os.path.join(directory, DEEPSPEED_TAG))
    if trainable.deepspeed != deepspeed_checkpoint:
        written = "a DeepSpeed engine" if deepspeed_checkpoint else "full weights (DDP, FSDP2 or one process)"
        raise ValueError(f"{directory} holds {written}, which this {trainable.engine} run cannot load: resume with "
                         "the engine the checkpoint was written with")
    if trainable.deepspeed:
        if num_processes is not None and num_processes != accelerator.num_processes:
            raise ValueError(f"{directory} holds DeepSpeed optimizer partitions of {num_processes} processes; resume "
                             f"with {num_processes} processes (this run has {accelerator.num_processes})")
        trainable.module.load_checkpoint(directory, tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                         load_lr_scheduler_states=False)
        return
    if trainable.engine == "fsdp2":
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        state = torch.load(os.path.join(directory, TRAINABLE_FILE), map_location="cpu", weights_only=True) \
            if accelerator.is_main_process else {"model": {}, "optimizer": {}}
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        # one call each: torch's set_state_dict takes an empty model state dict (the other ranks') as optimizer-only
        set_model_state_dict(trainable.module, state["model"], options=options)
        set_optimizer_state_dict(trainable.module, trainable.optimizer, state["optimizer"], options=options)
    else:
        state = torch.load(os.path.join(directory, TRAINABLE_FILE), map_location="cpu", weights_only=True)
        trainable.model.load_state_dict(state["model"])
        trainable.optimizer.load_state_dict(state["optimizer"])
    if trainable.scaler is not None:
        trainable.scaler.load_state_dict(torch.load(os.path.join(directory, SCALER_FILE), weights_only=True))
