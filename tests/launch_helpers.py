"""Helpers for the launch tests (imported by them, and by the launched scripts through PYTHONPATH)."""

import os
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


def launch_two_cpu_processes(script, *args: str, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """`accelerate launch` of `script` on 2 CPU processes (gloo); fails the test with the output if it fails.

    `accelerate launch --cpu --num_processes 2` starts one process unless mpirun is configured; `--multi_gpu` goes
    through torchrun, and the script's CPU accelerator (`use_cpu`, `Accelerator(cpu=True)`) then runs two processes.
    A free port, because other tests' multi-process runs may hold torchrun's default 29500 at the same time."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(script), *args,
    ]  # fmt: skip
    pythonpath = str(TESTS_DIR) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


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
