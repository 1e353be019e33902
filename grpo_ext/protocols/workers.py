"""The reference graders' sympy work, bounded in time from any thread: worker processes with a per-item deadline.

lm-eval bounds its Minerva `is_equiv` with SIGALRM, which works in the main thread only; Qwen2.5-Math and
DeepSeek-Math run their graders in process pools with a timeout per item. Here each check runs in a worker process,
`python -m grpo_ext.protocols.workers` (a fresh interpreter: safe from any thread, with torch or CUDA loaded in the
caller, and it never re-imports the caller's `__main__`), and the caller waits on the worker's pipe until the item's
deadline; past it the worker is killed (SIGKILL) and replaced, and the item is not equal, as a timeout is in each of
the three tools. A worker's address space is capped (`GRPO_EXT_WORKER_MEMORY_MB` above its size at start, default
2048), so a runaway integer is a MemoryError (not equal) rather than the machine's memory. Nothing in an item is
executed: see `grpo_ext.protocols.symbolic`.

Protocol: the worker prints `ready`, then answers each request line `{"check": name, "args": [...]}` with one line:
`1`, `0`, or `! message` when the check cannot run at all (no LaTeX parser), which the caller raises.

The rewards package bounds math-verify the same way (`rewards.pool`, a zygote that forks workers); its worker
program is fixed to math-verify, so these checks have their own, simpler pool: workers start in about a second and
are only replaced after a deadline passes.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from rewards.pool import PipeLines, readable

__all__ = ["SympyPool", "get_sympy_pool", "run_checks"]

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
_STARTUP_TIMEOUT_S = 120.0  # importing sympy takes 1-3 s; this only bounds a broken installation


def _lm_eval_is_equiv(x1: str, x2: str) -> bool:
    from .symbolic import lm_eval_is_equiv

    return lm_eval_is_equiv(x1, x2)


def _qwen_math_equal(pred: str, ref: str) -> bool:
    from .qwen25_math import math_equal
    from .symbolic import qwen_symbolic_equal

    return math_equal(pred, ref, symbolic=qwen_symbolic_equal)


def _deepseek_is_correct(pred, answer) -> bool:
    from .deepseek_math import is_correct
    from .symbolic import deepseek_symbolic_equal

    return is_correct(pred, answer, symbolic=deepseek_symbolic_equal)


# The checks a worker runs, by name: each tool's whole equivalence test, its sympy work included.
CHECKS = {
    "lm_eval_is_equiv": _lm_eval_is_equiv,
    "qwen_math_equal": _qwen_math_equal,
    "deepseek_is_correct": _deepseek_is_correct,
}


# --------------------------------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------------------------------


def _limit_memory() -> None:
    from rewards._verify_worker import limit_address_space

    limit_address_space(int(os.environ.get("GRPO_EXT_WORKER_MEMORY_MB", "2048") or 0))


def serve(requests, responses) -> None:
    """Worker loop: one JSON request per line in, one verdict line out, until EOF."""
    import logging

    logging.disable(logging.CRITICAL)
    from . import symbolic

    if symbolic.latex_parser_available() is None:
        symbolic.lm_eval_is_equiv("\\frac{1}{2}", "0.5")  # warm up the LaTeX parser and simplify
    _limit_memory()
    responses.write("ready\n")
    responses.flush()
    for line in requests:
        try:
            request = json.loads(line)
            answer = "1" if CHECKS[request["check"]](*request["args"]) else "0"
        except ImportError as err:
            answer = f"! {err}".replace("\n", " ")
        except Exception:  # MemoryError, RecursionError and malformed requests included: not equal
            answer = "0"
        responses.write(answer + "\n")
        responses.flush()


# --------------------------------------------------------------------------------------------------------------------
# Caller side
# --------------------------------------------------------------------------------------------------------------------


class _Worker(PipeLines):
    def __init__(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grpo_ext.protocols.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.ready = False

    def send(self, check: str, args: Any) -> None:
        self.proc.stdin.write((json.dumps({"check": check, "args": args}) + "\n").encode())
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class SympyPool:
    """Up to `size` worker processes (started when a call needs them, kept for later calls) that run the checks of
    `run(items, timeout)`, each item bounded by `timeout` seconds from the moment it is sent. Calls from several
    threads are serialised."""

    def __init__(self, size: int | None = None):
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        self.size = size or cores
        self.owner_pid = os.getpid()
        self.killed = 0  # workers killed at a deadline (for tests and monitoring)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    def run(self, items: list[tuple[str, Any]], timeout: float) -> list[bool]:
        """One verdict per (check name, args) item: the check's result, False past the deadline or if the worker
        died; a RuntimeError when a check cannot run at all (its message says why)."""
        if not items:
            return []
        results = [False] * len(items)
        with self._lock:
            self._workers = [w for w in self._workers if w.proc.poll() is None]
            while len(self._workers) < min(self.size, len(items)):
                self._workers.append(_Worker())
            pending = deque(range(len(items)))
            busy: dict[int, tuple[_Worker, int, float]] = {}  # fd -> (worker, item, deadline)
            started_by = time.monotonic() + _STARTUP_TIMEOUT_S
            try:
                while pending or busy:
                    for worker in self._workers:
                        if pending and worker.ready and worker.fd not in busy:
                            index = pending.popleft()
                            try:
                                worker.send(*items[index])
                            except OSError:  # died while idle: replace it, the item waits
                                pending.appendleft(index)
                                self._replace(worker)
                                break
                            busy[worker.fd] = (worker, index, time.monotonic() + timeout)
                    starting = {w.fd: w for w in self._workers if not w.ready}
                    now = time.monotonic()
                    if not busy and now > started_by:
                        raise RuntimeError("grpo_ext.protocols.workers did not start (is sympy installed?)")
                    wait = min((d for _, _, d in busy.values()), default=started_by) - now
                    for fd in readable([*busy, *starting], wait):
                        worker = busy[fd][0] if fd in busy else starting[fd]
                        lines = worker.read_lines()
                        if fd in starting:
                            if lines is None:
                                raise RuntimeError("a grpo_ext.protocols.workers process exited at start")
                            worker.ready = worker.ready or "ready" in lines
                            continue
                        _, index, _ = busy[fd]
                        if lines is None:  # died (memory limit): not equal
                            del busy[fd]
                            self._replace(worker)
                        elif lines:
                            del busy[fd]
                            if lines[0].startswith("!"):
                                raise RuntimeError(f"{items[index][0]} cannot run: {lines[0][1:].strip()}")
                            results[index] = lines[0] == "1"
                    now = time.monotonic()
                    for fd, (worker, index, deadline) in list(busy.items()):
                        if now >= deadline:
                            del busy[fd]
                            self.killed += 1
                            self._replace(worker)
            except BaseException:
                for worker, _, _ in busy.values():  # an answer still to come would be read as the next call's
                    worker.kill()
                    self._workers.remove(worker)
                raise
        return results

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.remove(worker)
        self._workers.append(_Worker())

    def close(self) -> None:
        if self.owner_pid != os.getpid():  # a forked child never closes its parent's workers
            return
        with self._lock:
            for worker in self._workers:
                worker.kill()
            self._workers = []


_default_pool: SympyPool | None = None
_default_lock = threading.Lock()


def get_sympy_pool() -> SympyPool:
    """The process-wide pool (created on first use; a forked child gets its own)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool.owner_pid != os.getpid():
            _default_pool = SympyPool()
            atexit.register(_default_pool.close)
        return _default_pool


_CACHE_SIZE = 100_000
_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


def run_checks(check: str, pairs: list[tuple[Any, Any]], timeout: float) -> list[bool]:
    """`check` on every (prediction, gold) pair in the worker pool, each bounded by `timeout` seconds; verdicts are
    cached by (check, pair), and repeated pairs are sent once."""
    keys = [(check, json.dumps(pair)) for pair in pairs]
    with _cache_lock:
        results = [_cache.get(key) for key in keys]
    todo: dict[tuple, list[int]] = {}
    for i, (key, result) in enumerate(zip(keys, results)):
        if result is None:
            todo.setdefault(key, []).append(i)
    if todo:
        unique = list(todo)
        verdicts = get_sympy_pool().run([(check, list(pairs[todo[key][0]])) for key in unique], timeout)
        with _cache_lock:
            for key, verdict in zip(unique, verdicts):
                _cache[key] = verdict
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
                for i in todo[key]:
                    results[i] = verdict
    return results  # type: ignore[return-value]


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
