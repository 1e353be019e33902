"""A small pool of verification worker processes with a per-item deadline enforced by the parent.

Why processes: math-verify bounds its work with `signal.alarm`, which only works in the main thread; TRL
calls reward functions from worker threads too, where those timeouts are silently off, and sympy can spend
unbounded time and memory on a single expression. A process boundary is the only bound that holds in every
calling context: the parent waits on the worker's pipe until the item's deadline and, if it passes, kills the
worker (SIGKILL) and starts a replacement.

Workers are plain `subprocess.Popen([sys.executable, "-m", "rewards._verify_worker"])` children: a fresh
interpreter (like the `spawn` start method, safe from any thread and with torch/CUDA loaded, and it never
re-imports the caller's `__main__`), importing only math-verify. They start lazily on the first item that
needs sympy, are reused across calls, and exit when the parent closes their stdin or dies.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

__all__ = ["VerifierPool", "default_pool_size"]

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
# A worker importing sympy + math-verify takes ~1-3 s; this only bounds a broken installation.
_STARTUP_TIMEOUT_S = 120.0


def default_pool_size() -> int:
    """Cores this process may use (affinity-aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Worker:
    def __init__(self, memory_limit_mb: int):
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["REWARDS_WORKER_MEMORY_MB"] = str(memory_limit_mb)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rewards._verify_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.ready = False
        self.started_at = time.monotonic()

    def read_lines(self) -> list[str] | None:
        """Complete lines available now, or None when the worker has exited (EOF)."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in lines]

    def send(self, pred: str, gold: str, timeout: float) -> None:
        payload = json.dumps({"pred": pred, "gold": gold, "timeout": timeout}) + "\n"
        self.proc.stdin.write(payload.encode())
        self.proc.stdin.flush()

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class VerifierPool:
    """Runs `math-verify` equivalence checks in worker processes, each item bounded by a deadline.

    `run(pairs, timeout)` returns one bool per (pred, gold) pair: True when math-verify finds them equal,
    False when not, when the worker overran `timeout` seconds (it is killed and replaced) or died (e.g. hit
    its memory limit). Calls from several threads are serialized; each call spreads its items over `size`
    workers at a time. `spares` extra idle workers are kept started so that a killed worker's place is taken at
    once instead of after a fresh interpreter's start-up (~1-2 s of importing sympy).
    """

    def __init__(self, size: int | None = None, memory_limit_mb: int = 2048, spares: int = 1):
        self.size = size or default_pool_size()
        self.spares = spares
        self.memory_limit_mb = memory_limit_mb
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.killed = 0  # workers killed for overrunning a deadline (for tests and monitoring)
        self.last_latencies: list[float] = []  # seconds from dispatch to verdict, per item of the last run

    def start(self) -> None:
        """Start the workers now (otherwise they start on the first item that needs them)."""
        with self._lock:
            self._fill()

    def wait_ready(self, timeout: float = _STARTUP_TIMEOUT_S) -> None:
        """Start the workers and block until all of them have imported math-verify."""
        with self._lock:
            self._fill()
            deadline = time.monotonic() + timeout
            while any(not w.ready for w in self._workers):
                self._poll_starting(deadline - time.monotonic())
                if time.monotonic() > deadline:
                    raise RuntimeError("rewards verification workers did not start")

    def _fill(self) -> None:
        self._workers = [w for w in self._workers if w.proc.poll() is None]
        while len(self._workers) < self.size + self.spares:
            self._workers.append(_Worker(self.memory_limit_mb))

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.remove(worker)
        self._workers.append(_Worker(self.memory_limit_mb))

    def _poll_starting(self, wait_s: float) -> None:
        starting = {w.fd: w for w in self._workers if not w.ready}
        if not starting:
            return
        readable, _, _ = select.select(list(starting), [], [], max(wait_s, 0.0))
        for fd in readable:
            worker = starting[fd]
            lines = worker.read_lines()
            if lines is None:  # died while importing: try again with a fresh one
                if time.monotonic() - worker.started_at > _STARTUP_TIMEOUT_S:
                    raise RuntimeError("rewards verification worker exits during start-up (is math-verify installed?)")
                self._replace(worker)
            elif "ready" in lines:
                worker.ready = True

    def run(self, pairs: list[tuple[str, str]], timeout: float) -> list[bool]:
        if not pairs:
            return []
        results = [False] * len(pairs)
        latencies = [0.0] * len(pairs)
        with self._lock:
            self._fill()
            pending = deque(range(len(pairs)))
            busy: dict[int, tuple[_Worker, int, float]] = {}  # fd -> (worker, item index, deadline)
            first_ready_by = time.monotonic() + _STARTUP_TIMEOUT_S
            while pending or busy:
                for worker in self._workers:
                    if pending and worker.ready and worker.fd not in busy and len(busy) < self.size:
                        index = pending.popleft()
                        try:
                            worker.send(*pairs[index], timeout)
                        except OSError:  # died while idle
                            self._replace(worker)
                            pending.appendleft(index)
                            break
                        busy[worker.fd] = (worker, index, time.monotonic() + timeout)
                now = time.monotonic()
                if not busy:
                    if now > first_ready_by:
                        raise RuntimeError("rewards verification workers did not start")
                    self._poll_starting(first_ready_by - now)
                    continue
                starting = [w.fd for w in self._workers if not w.ready]
                wait_s = max(min(d for _, _, d in busy.values()) - now, 0.0)
                readable, _, _ = select.select(list(busy) + starting, [], [], wait_s)
                for fd in readable:
                    if fd not in busy:
                        continue
                    worker, index, deadline = busy[fd]
                    latencies[index] = time.monotonic() - (deadline - timeout)
                    lines = worker.read_lines()
                    if lines is None:  # died (memory limit, crash): the item scores False
                        del busy[fd]
                        self._replace(worker)
                    elif lines:
                        del busy[fd]
                        results[index] = lines[0].strip() == "1"
                if starting:
                    self._poll_starting(0.0)
                now = time.monotonic()
                for fd, (worker, index, deadline) in list(busy.items()):
                    if now >= deadline:
                        latencies[index] = now - (deadline - timeout)
                        del busy[fd]
                        self.killed += 1
                        self._replace(worker)
            self.last_latencies = latencies
        return results

    def close(self) -> None:
        with self._lock:
            for worker in self._workers:
                worker.kill()
            self._workers = []


_default_pool: VerifierPool | None = None
_default_lock = threading.Lock()


def get_default_pool() -> VerifierPool:
    """The process-wide pool used by `answers_match` and `accuracy_reward` (created on first use)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None:
            size = int(os.environ.get("REWARDS_NUM_WORKERS", "0") or 0) or None
            _default_pool = VerifierPool(size=size)
            atexit.register(_default_pool.close)
        return _default_pool
