"""Helpers for the launch tests (imported by them, and by the launched scripts through PYTHONPATH)."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent


def free_port() -> int:
    """A TCP port that is free right now (for accelerate's --main_process_port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_cpu_processes(
    script, *args: str, timeout: float = 300, cwd=None, config_file=None, check: bool = True
) -> subprocess.CompletedProcess:
    """`accelerate launch` of `script` on 2 CPU processes (gloo); with `check`, fails the test with the output if the
    launch fails. A launch still running after `timeout` seconds is killed with its ranks and raises TimeoutExpired.

    Without `config_file` the processes come from flags: `accelerate launch --cpu --num_processes 2` starts one process
    unless mpirun is configured; `--multi_gpu` goes through torchrun, and the script's CPU accelerator (`use_cpu`,
    `Accelerator(cpu=True)`) then runs two processes. With `config_file` (e.g. accelerate_configs/multi_gpu.yaml) the
    config says how, and `--num_processes 2` overrides its process count."""
    if config_file is None:
        how = ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
    else:
        how = ["--config_file", str(config_file)]
    return launch([*how, "--num_processes", "2", "--mixed_precision", "no"], script, *args, timeout=timeout, cwd=cwd,
                  check=check)


def launch(launch_args, script, *args: str, timeout: float = 300, cwd=None, check: bool = True):
    """`accelerate launch <launch_args> script args...` with one torch thread per process, no GPU, this folder on
    PYTHONPATH and a free port (other tests' launches may hold torchrun's default 29500 at the same time)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch_args,
               "--main_process_port", str(free_port()), str(script), *args]  # fmt: skip
    pythonpath = str(TESTS_DIR) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath, "CUDA_VISIBLE_DEVICES": ""}
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stacks = python_stacks(proc.pid)  # where the ranks hang, when py-spy is installed
            kill_process_tree(proc.pid)  # torchrun starts the ranks in sessions of their own
            stdout, stderr = proc.communicate()
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr + stacks) from None
    result = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def python_stacks(pid: int) -> str:
    """`py-spy dump --native` of every process below `pid` ("" when py-spy is not installed)."""
    import psutil

    py_spy = shutil.which("py-spy")
    if py_spy is None:
        return ""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return ""
    dumps = [subprocess.run([py_spy, "dump", "--native", "--pid", str(child.pid)], capture_output=True, text=True)
             for child in children]
    return "".join(f"\n--- py-spy dump\n{dump.stdout}{dump.stderr}" for dump in dumps)


def kill_process_tree(pid: int) -> list[int]:
    """SIGKILL `pid` and every process below it; returns the pids of the descendants (the ranks of a launch)."""
    import psutil  # a dependency of accelerate

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    children = parent.children(recursive=True)
    for process in [*children, parent]:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    return [child.pid for child in children]


def distinct_characters_reward(completions, **kwargs):
    """A reward that differs between the completions of a random model, so GRPO advantages (and updates) are
    non-zero even when no completion is correct."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [len(set(text)) / 10.0 for text in texts]


def save_tiny_reward_model(path, kind: str, step_separator: str = "\n\n", seed: int = 0) -> str:
    """A tiny random Qwen2 reward model with the tiny tokenizer: `orm` (1-label sequence classifier) or `prm`
    (2-label token classifier that records its step separator, as launch/train_reward_model.py saves it)."""
    from iterative_helpers import tiny_orm, tiny_prm, tiny_tokenizer

    if kind == "orm":
        model = tiny_orm(seed)
    else:
        model = tiny_prm(seed)
        model.config.step_separator = step_separator
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def repeat_config_file_launch(repeat: int, timeout: float, work_dir: Path) -> dict:
    """Launch `launch/train_grpo.py` `repeat` times with accelerate_configs/multi_gpu.yaml on 2 CPU processes (the
    launch that hung at exit in about 16 of 43 runs when the DDP reducer outlived the process group) and count the
    launches that exited 0, failed, or were still running after `timeout` seconds (hung)."""
    import time

    from grpo_ext.tiny import save_tiny_causal_lm

    repo = TESTS_DIR.parent
    model = save_tiny_causal_lm(work_dir / "tiny-qwen2")
    counts = {"ok": 0, "failed": 0, "hung": 0, "seconds": []}
    for i in range(repeat):
        start = time.monotonic()
        try:
            result = launch_two_cpu_processes(
                repo / "launch" / "train_grpo.py",
                "--model_name_or_path", model, "--data_files", str(repo.parent / "shared/data/gsm8k/train.jsonl"),
                "--max_train_samples", "8", "--per_device_train_batch_size", "2", "--num_generations", "4",
                "--max_completion_length", "8", "--max_steps", "2", "--use_cpu", "true", "--bf16", "false",
                "--report_to", "none", "--save_strategy", "no", "--output_dir", str(work_dir / f"run-{i}"),
                timeout=timeout, cwd=repo, config_file=repo / "accelerate_configs" / "multi_gpu.yaml", check=False,
            )  # fmt: skip
            outcome = "ok" if result.returncode == 0 else "failed"
            tail = "" if outcome == "ok" else result.stderr[-2000:]
        except subprocess.TimeoutExpired as err:
            outcome, tail = "hung", (err.stderr or "")[-6000:]
        seconds = time.monotonic() - start
        counts[outcome] += 1
        counts["seconds"].append(round(seconds, 1))
        print(f"launch {i + 1}/{repeat}: {outcome} in {seconds:.0f} s", flush=True)
        if tail:
            print(tail, flush=True)
    return counts


if __name__ == "__main__":
    import argparse
    import json
    import tempfile

    parser = argparse.ArgumentParser(description="Repeat the config-file 2-process GRPO launch; report any hang.")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=600, help="seconds before a launch counts as hung")
    cli = parser.parse_args()
    sys.path.insert(0, str(TESTS_DIR.parent))
    with tempfile.TemporaryDirectory() as tmp:
        summary = repeat_config_file_launch(cli.repeat, cli.timeout, Path(tmp))
    print(json.dumps(summary))
    sys.exit(0 if summary["ok"] == cli.repeat else 1)
