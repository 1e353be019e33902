"""Checks and teardown shared by the launch entry points (`train_grpo.py`, `sft.py`, `train_reward_model.py`,
`evaluate.py`): a launch either does what its command line and accelerate config say, or stops with one line that
says why, and it always exits.

* `check_model_path`, `check_data_files`: a path that does not exist is named as such before anything loads.
* `hub_error`: hub data that could not be read, as one line naming the option that reads a local file instead.
* `check_distributed_launch`: what the launcher asked for (`WORLD_SIZE`, `ACCELERATE_USE_FSDP`, ...) against the
  state the Accelerator actually built.
* `end_launch`: the teardown order that cannot hang.
* `parse_command_line`: TRL's recipe-plus-overrides parsing, with every mistake (an unknown option, in the recipe or
  on the command line, with the closest valid name; a bad value; an option check) as one `InputError`.
* `run_entry_point`: bad input ends the process with `prog: error: ...` instead of a traceback.
"""

from __future__ import annotations

import difflib
import gc
import json
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


def hub_error(err, who: str, option: str, example: str) -> InputError:
    """One line for hub data that could not be read: what asked for it, and the option that reads a local file
    instead. Offline, `datasets` fails at once unless its cache holds the dataset; with no network, after retries."""
    if err.offline:
        why = "which offline mode cannot reach (and the datasets cache holds no copy)"
    else:
        why = f"which could not be reached ({' '.join(err.reason.split())})"
    return InputError(f"{who} from {err.source}'s {err.split} split on the hub, {why}: pass {option} {example}")


# ---------------------------------------------------------------------------------------------------------- options


def unknown_option_error(name: str, known: Iterable[str], where: str = "") -> InputError:
    """`InputError` for an option `name` the parser does not have, naming the closest of `known` (difflib's ratio
    >= 0.6, as argparse's own suggestions in Python 3.12+)."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return InputError(f"{where}unknown option {name}{hint}")


def check_option_names(parser, argv: list[str]) -> None:
    """Every `--option` on the command line and every key of the `--config` recipe is one of `parser`'s (a
    transformers `HfArgumentParser` / TRL `TrlParser`).

    Checked before parsing because the parser reports unknown names only after building its dataclasses, whose own
    checks may fail first with an unrelated message (transformers': "Your setup doesn't support bf16/gpu")."""
    import yaml

    options = [name for name in parser._option_string_actions if name.startswith("--")]
    for arg in argv:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name not in ("--config", "--") and name not in parser._option_string_actions:
            raise unknown_option_error(name, [*options, "--config"])
    if "--config" in argv:
        if argv.index("--config") + 1 == len(argv):
            raise InputError("--config needs a YAML file (a recipe of option: value)")
        path = argv[argv.index("--config") + 1]
        check_data_files(path, "--config")
        try:
            with open(path, encoding="utf-8") as handle:
                recipe = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError) as err:
            raise InputError(f"--config {path}: cannot read it as YAML ({err})") from None
        if not isinstance(recipe, dict):
            raise InputError(f"--config {path}: expected a YAML mapping of option: value, got {type(recipe).__name__}")
        dests = {action.dest for action in parser._actions}
        for key in recipe:
            if key != "env" and key not in dests:
                raise unknown_option_error(str(key), sorted(dests), where=f"--config {path}: ")


def split_config_option(argv: list[str]) -> list[str]:
    """`--config=FILE` as `--config FILE`, the only form TRL's parser reads."""
    out = []
    for arg in argv:
        out.extend(["--config", arg.split("=", 1)[1]] if arg.startswith("--config=") else [arg])
    return out


def _raise_input_error(message: str):
    raise InputError(message)


def parse_command_line(parser, argv: list[str]) -> tuple:
    """`parser.parse_args_and_config(argv)` (TRL's `TrlParser`: a YAML `--config` recipe, then command-line
    overrides) with every mistake as one `InputError`: an unknown option (`check_option_names`); argparse's own
    errors, a value of the wrong type or a missing required option, without argparse's usage screen (hundreds of
    options); and a `ValueError` from the dataclasses' checks (transformers', TRL's, grpo_ext's), with its message."""
    argv = split_config_option(argv)
    check_option_names(parser, argv)
    parser.error = _raise_input_error  # argparse would print the whole usage and exit
    try:
        *parsed, rest = parser.parse_args_and_config(argv, return_remaining_strings=True)
    except ValueError as err:
        if isinstance(err, InputError):
            raise
        explain_parse_error(err)
        raise InputError(str(err)) from err
    if rest:  # words no option takes (option names and recipe keys were checked above)
        raise InputError(f"unrecognized arguments: {' '.join(map(str, rest))}")
    return tuple(parsed)


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


# ---------------------------------------------------------------------------------------------------------- outputs


def complete_model_card(output_dir: str, base_model: str | None) -> bool:
    """Name a local base model in the model card TRL wrote to `output_dir/README.md`; returns whether it changed.

    TRL's card template links the base model on the hub and loads the model by its hub id, so for a model loaded from
    a local directory (no hub id) it reads "a fine-tuned version of [None](https://huggingface.co/None)" and
    `pipeline(..., model="None")`. The card then names the directory, and the pipeline loads `output_dir`."""
    path = os.path.join(output_dir, "README.md")
    if base_model is None or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as handle:
        card = handle.read()
    completed = card.replace("[None](https://huggingface.co/None)", f"the local model `{base_model}`")
    completed = completed.replace('model="None"', f"model={json.dumps(output_dir)}")
    if completed == card:
        return False
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(completed)
    return True


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


def _prints_errors() -> bool:
    """Whether this process prints a bad-input line: the first process of each machine. Every process of a launch
    checks the same command line, recipe and files, so the others would print the same line again."""
    return os.environ.get("LOCAL_RANK", "0") in ("", "0")


def record_for_launcher(line: str) -> None:
    """Give torchrun (`accelerate launch` with several processes) this process's error line: its failure summary
    shows the error file's message as the failed rank's cause, instead of "To enable traceback see: ...". Written by
    every process, so the line survives when torchrun stops the first process before it printed."""
    import time

    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"message": line, "timestamp": int(time.time())}, handle)


# Deprecation notices that libraries raise at each other, which a user of the entry points can do nothing about:
# TRL 1.16 defaults `gradient_checkpointing` (transformers 5.24+ renamed it `activation_checkpointing`, keeping the
# old name as an alias) and calls the old model methods; something at exit looks up torch's `reduce_op` alias.
LIBRARY_DEPRECATIONS = (
    r"`(is_)?gradient_checkpointing\w*` is deprecated",
    r"`torch\.distributed\.reduce_op` is deprecated",
)


def silence_library_deprecations() -> None:
    """Hide `LIBRARY_DEPRECATIONS` (FutureWarnings only, matched by message) in this process; every other warning
    still shows."""
    import warnings

    for message in LIBRARY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)


def run_entry_point(train: Callable[[list[str] | None], Any], argv: list[str] | None, prog: str) -> None:
    """Run `train(argv)` as a command. Bad input (`InputError`, grpo_ext's `ConfigurationError`, or a malformed data
    row, which names its file and line) ends the process with one line, `prog: error: ...`, printed by the first
    process of each machine (and handed to torchrun's failure summary, `record_for_launcher`), and exit status 2, as
    argparse does; any other exception keeps its traceback. On any exception the process group is destroyed first
    (reducers freed), so a failed rank exits too. Returns None: console-script wrappers pass the return value to
    `sys.exit`."""
    from grpo_ext.data import DatasetFormatError
    from grpo_ext.errors import ConfigurationError

    silence_library_deprecations()
    try:
        train(argv)
    except BaseException as err:
        _destroy_process_group()
        if isinstance(err, (InputError, ConfigurationError, DatasetFormatError)):
            line = f"{prog}: error: {err}"
            record_for_launcher(line)
            if _prints_errors():
                print(line, file=sys.stderr)
            sys.exit(2)
        raise
