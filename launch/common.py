"""Checks and teardown shared by the launch entry points (`train_grpo.py`, `sft.py`, `train_reward_model.py`,
`evaluate.py`): a launch either does what its command line and accelerate config say, or stops with one line that
says why, and it always exits.

* `check_model_path`, `check_data_files`: a path that does not exist is named as such before anything loads.
* `check_distributed_launch`: what the launcher asked for (`WORLD_SIZE`, `ACCELERATE_USE_FSDP`, ...) against the
  state the Accelerator actually built.
* `end_launch`: the teardown order that cannot hang.
* `run_entry_point`: bad input ends the process with `prog: error: ...` instead of a traceback.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class InputError(ValueError):
    """Bad input the user can fix (a path, an option, a launch config); the entry points print it as one line."""


# ---------------------------------------------------------------------------------------------------------- paths


def check_model_path(path: str | None, option: str = "--model_name_or_path") -> None:
    """`path` must be a local file or directory, or a hub id whose model can be loaded.

    Rule: an existing local path is used as it is. A name that cannot be a hub id (absolute, `./x`, `a/b/c`; checked
    by `huggingface_hub.utils.validate_repo_id`) and does not exist is an error. A hub-shaped name (`name` or
    `org/name`, e.g. `runs/my-model`) with no local directory of that name goes to the hub as before when it is in
    the Hugging Face cache or the hub has it; otherwise (offline mode and not cached, or the hub answers that it has
    no such repository) it is an error naming the local path that was looked for. When the hub cannot be reached,
    loading goes ahead and transformers decides, as without this check.
    """
    if path is None or os.path.exists(path):
        return
    from huggingface_hub import is_offline_mode, repo_exists, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    missing = f"{option} {path}: no such file or directory ({os.path.abspath(path)})"
    try:
        validate_repo_id(path)
    except HFValidationError:
        raise InputError(missing) from None
    if any(isinstance(try_to_load_from_cache(path, name), str) for name in ("config.json", "adapter_config.json")):
        return
    if is_offline_mode():
        raise InputError(f"{missing}, and no hub model {path!r} in the Hugging Face cache (offline mode, the hub "
                         "was not asked)")
    try:
        exists = repo_exists(path)
    except Exception:  # no network, proxy, server error: leave the decision to transformers, as before
        return
    if not exists:
        raise InputError(f"{missing}, and no model {path!r} on the Hugging Face hub (a private one needs a token)")


def check_data_files(files: str | os.PathLike | Iterable[str | os.PathLike] | None, option: str) -> None:
    """Every local data file given to `option` exists (a missing one would otherwise fail deep inside loading)."""
    if files is None:
        return
    for path in [files] if isinstance(files, (str, os.PathLike)) else files:
        if not os.path.isfile(path):
            what = "is a directory, not a file" if os.path.isdir(path) else "no such file"
            raise InputError(f"{option} {path}: {what} ({os.path.abspath(path)})")


# ---------------------------------------------------------------------------------------------------------- launch


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes")


def launch_mismatch(env: Mapping[str, str], distributed_type: Any, num_processes: int) -> str | None:
    """Why the built distributed state is not what the launcher asked for, or None when it is.

    Asked for, by `accelerate launch` / torchrun through the environment: `WORLD_SIZE` processes in one group,
    FSDP (`ACCELERATE_USE_FSDP=true`), DeepSpeed (`ACCELERATE_USE_DEEPSPEED=true`). Built: the Accelerator's
    `distributed_type` and `num_processes`. Known ways they differ: without a GPU and without `use_cpu`, each process
    builds a single-process state (N independent trainings writing to one output_dir); with `use_cpu`, FSDP and
    DeepSpeed configs silently become CPU data parallel (DDP over gloo).
    """
    kind = str(getattr(distributed_type, "value", distributed_type))
    world_size = int(env.get("WORLD_SIZE", "1") or 1)
    if world_size > 1 and num_processes != world_size:
        return (
            f"the launcher started {world_size} processes (WORLD_SIZE={world_size}) but this one runs as "
            f"{num_processes} of {num_processes} (distributed type {kind}): the processes would train independently "
            "and overwrite each other's output_dir. On a machine without GPUs pass --use_cpu true (gloo); "
            "otherwise check that the GPUs are visible (CUDA_VISIBLE_DEVICES)"
        )
    for flag, wanted in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")):
        if _env_flag(env, flag) and kind != wanted:
            return (
                f"the accelerate config asks for {wanted} ({flag}=true) but the Accelerator runs {kind}: accelerate "
                f"uses {wanted} only on GPUs, and with use_cpu it silently runs without it. For a CPU run use "
                "accelerate_configs/multi_gpu.yaml"
            )
    return None


def check_distributed_launch(accelerator, env: Mapping[str, str] | None = None) -> None:
    """Stop with an `InputError` when the launch config did not take effect (`launch_mismatch`); call it once the
    trainer's Accelerator is built, before training."""
    env = os.environ if env is None else env
    reason = launch_mismatch(env, accelerator.distributed_type, accelerator.num_processes)
    if reason:
        raise InputError(reason)


def explain_parse_error(error: ValueError, env: Mapping[str, str] | None = None) -> None:
    """Raise an `InputError` naming the launch when a config's own check failed because the processes did not join:
    TRL's "generation_batch_size (2) must be divisible by num_generations (4)" means little when 2 processes were
    launched and each counts itself alone. Returns when the launch is not the cause (the caller re-raises)."""
    from accelerate.state import PartialState

    if not PartialState._shared_state:  # the arguments failed before any distributed state was built
        return
    env = os.environ if env is None else env
    state = PartialState()
    # only the process count: FSDP is not yet visible in the partial state the arguments build
    reason = launch_mismatch({"WORLD_SIZE": env.get("WORLD_SIZE", "1")}, state.distributed_type, state.num_processes)
    if reason:
        raise InputError(f"{reason} (what failed: {error})") from error


# ---------------------------------------------------------------------------------------------------------- teardown


def release_reducers() -> int:
    """Free the C++ reducer (and its logger) of every DistributedDataParallel wrapper still alive; returns how many.

    A Reducer holds the gloo process group; if it is the last holder, its destructor joins gloo's worker threads
    while holding the GIL, and a worker that is destroying a finished collective waits for the GIL: a deadlock
    (seen at exit, after everything was saved). Freed while the group is still registered, it is not the last holder.
    """
    from torch.nn.parallel import DistributedDataParallel

    released = 0
    for obj in gc.get_objects():
        if isinstance(obj, DistributedDataParallel) and "reducer" in obj.__dict__:
            for name in ("logger", "reducer"):  # the logger holds the reducer too
                obj.__dict__.pop(name, None)
            released += 1
    gc.collect()
    return released


def end_launch(trainer) -> None:
    """Finish a run in the one order that cannot hang: drop the trainer's distributed wrappers (DDP, DeepSpeed
    engine; `trainer.model` stays usable), free any reducer still alive, then finish the trackers and destroy the
    process group (`Trainer.end`). Call it last, after `save_model` and `push_to_hub`."""
    trainer.model_wrapped = trainer.model
    trainer.deepspeed = None
    trainer.accelerator.free_memory()  # its prepared models, optimizers, dataloaders; destroys a DeepSpeed engine
    gc.collect()
    release_reducers()
    if hasattr(trainer, "end"):
        trainer.end()  # transformers >= 5.18
    else:
        trainer.accelerator.end_training()


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        release_reducers()
        dist.destroy_process_group()


def run_entry_point(train: Callable[[list[str] | None], Any], argv: list[str] | None, prog: str) -> None:
    """Run `train(argv)` as a command. Bad input (`InputError`, or a malformed data row, which names its file and
    line) ends the process with one line, `prog: error: ...`, and exit status 2, as argparse does; any other
    exception keeps its traceback. On any exception the process group is destroyed first (reducers freed), so a
    failed rank exits too. Returns None: console-script wrappers pass the return value to `sys.exit`."""
    from grpo_ext.data import DatasetFormatError

    try:
        train(argv)
    except BaseException as err:
        _destroy_process_group()
        if isinstance(err, (InputError, DatasetFormatError)):
            print(f"{prog}: error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
