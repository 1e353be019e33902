"""A small pool of verification worker processes with a per-item deadline enforced by the parent.

Why processes: math-verify bounds its work with `signal.alarm`, which only works in the main thread; TRL
calls reward functions from worker threads too, where those timeouts are silently off, and sympy can spend
unbounded time and memory on a single expression. A process boundary is the only bound that holds in every
calling context: the parent waits on the worker's pipe until the item's deadline and, if it passes, kills the
worker (SIGKILL) and forks a replacement.

Processes: one zygote, `subprocess.Popen([sys.executable, "-m", "rewards._verify_worker", "--zygote", fd])`,
a fresh interpreter (like the `spawn` start method: safe from any thread and with torch/CUDA loaded, and it
never re-imports the caller's `__main__`) that imports only math-verify, then forks workers on request over a
Unix socket. A worker (or a killed worker's replacement) is thus ready in milliseconds. Everything starts
lazily on the first item that needs sympy, is reused across calls, and exits when the parent goes away.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

__all__ = ["VerifierPool", "default_pool_size", "get_default_pool"]

_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)
# The zygote importing sympy + math-verify takes ~1-3 s; this only bounds a broken installation.
_STARTUP_TIMEOUT_S = 120.0


def readable(fds: list[int], wait_s: float) -> list[int]:
    """The fds among `fds` with data or EOF within `wait_s` seconds (poll(2): no FD_SETSIZE limit)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    return [fd for fd, _ in poller.poll(max(wait_s, 0.0) * 1000.0)]


def default_pool_size() -> int:
    """Cores this process may use (affinity-aware), shared among the `LOCAL_WORLD_SIZE` training processes of
    the node (set by accelerate/torchrun: 8 ranks on 128 cores get 16 workers each, not 128), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_processes = 1
    return max(1, cores // local_processes)


class _Zygote:
    """The process that forks verification workers (see `rewards._verify_worker.zygote`)."""

    def __init__(self, memory_limit_mb: int):
        env = dict(os.environ)
        env["PYTHONPATH"] = _PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["REWARDS_WORKER_MEMORY_MB"] = str(memory_limit_mb)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rewards._verify_worker", "--zygote", str(child_sock.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                pass_fds=[child_sock.fileno()],
            )
        finally:
            child_sock.close()
        self.sock.settimeout(_STARTUP_TIMEOUT_S)
        if self.sock.recv(1) != b"R":
            self.close()
            raise RuntimeError("rewards verification zygote failed to start (is math-verify installed?)")
        self.sock.settimeout(30.0)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork_worker(self) -> tuple[int, int, int]:
        """Fork a worker; returns (pid, fd to write requests to, fd to read verdicts from)."""
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        try:
            socket.send_fds(self.sock, [b"F"], [req_r, resp_w])
            reply = b""
            while len(reply) < 8:
                chunk = self.sock.recv(8 - len(reply))
                if not chunk:
                    raise ConnectionError("rewards verification zygote exited")
                reply += chunk
        except BaseException:
            os.close(req_w)
            os.close(resp_r)
            raise
        finally:
            os.close(req_r)
            os.close(resp_w)
        return struct.unpack("q", reply)[0], req_w, resp_r

    def close(self) -> None:
        self.sock.close()  # the zygote exits on EOF
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PipeLines:
    """Line framing of a worker's response pipe: `read_lines` returns the complete lines `fd` has now."""

    fd: int
    buffer: bytes = b""

    def read_lines(self) -> list[str] | None:
        """Complete lines available now, or None when the worker has exited (EOF)."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in lines]


class _Worker(PipeLines):
    def __init__(self, pid: int, request_fd: int, response_fd: int):
        self.pid = pid
        self.request_fd = request_fd
        self.fd = response_fd
        self.buffer = b""
        self.ready = False
        self.alive = True
        # A pidfd names this process and no later one with a reused pid (Linux >= 5.3).
        try:
            self.pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None

    def send(self, pred: str, gold: str, timeout: float, raw: bool = False) -> None:
        request = {"pred": pred, "gold": gold, "timeout": timeout}
        if raw:  # whole texts, read by math-verify's own extraction (see rewards._verify_worker)
            request["raw"] = True
        payload = (json.dumps(request) + "\n").encode()
        while payload:
            payload = payload[os.write(self.request_fd, payload) :]

    def kill(self, exited: bool = False) -> None:
        """SIGKILL the worker (unless it has `exited` already) and close its pipes."""
        if not self.alive:
            return
        self.alive = False
        if not exited:
            try:
                if self.pidfd is not None:
                    signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
                else:
                    os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for fd in (self.request_fd, self.fd, self.pidfd):
            if fd is None:
                continue
            try:
                os.close(fd)
            except OSError:
                pass


class VerifierPool:
    """Runs `math-verify` equivalence checks in worker processes, each item bounded by a deadline.

    `run(pairs, timeout)` returns one bool per (pred, gold) pair: True when math-verify finds them equal
    (a (pred, gold, True) triple holds whole texts for math-verify's own extraction),
    False when not, when the worker overran `timeout` seconds (it is killed and replaced) or died (e.g. hit
    its memory limit). Calls from several threads are serialized; each call spreads its items over `size`
    workers at a time. `spares` extra idle workers are kept started so that a killed worker's place is taken at
    once (forking one takes milliseconds, but its first answer still waits for the fork).
    """

    def __init__(self, size: int | None = None, memory_limit_mb: int = 2048, spares: int = 1):
        self.size = size or default_pool_size()
        self.spares = spares
        self.memory_limit_mb = memory_limit_mb
        self._workers: list[_Worker] = []
        self._zygote: _Zygote | None = None
        self._lock = threading.Lock()
        self.owner_pid = os.getpid()
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

    def _new_worker(self) -> _Worker:
        for attempt in range(2):
            if self._zygote is None or not self._zygote.alive():
                if self._zygote is not None:
                    self._zygote.close()
                self._zygote = _Zygote(self.memory_limit_mb)
            try:
                return _Worker(*self._zygote.fork_worker())
            except (OSError, struct.error):
                if attempt:
                    raise
                self._zygote.close()
                self._zygote = None
        raise AssertionError("unreachable")

    def _fill(self) -> None:
        self._workers = [w for w in self._workers if w.alive]
        while len(self._workers) < self.size + self.spares:
            self._workers.append(self._new_worker())

    def _replace(self, worker: _Worker, exited: bool = False) -> None:
        worker.kill(exited)
        self._workers.remove(worker)
        self._workers.append(self._new_worker())

    def _poll_starting(self, wait_s: float) -> None:
        starting = {w.fd: w for w in self._workers if not w.ready}
        if not starting:
            return
        for fd in readable(list(starting), wait_s):
            worker = starting[fd]
            lines = worker.read_lines()
            if lines is None:  # died at once (e.g. memory limit too small): try a fresh one
                self._replace(worker, exited=True)
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
                        pred, gold, *raw = pairs[index]
                        try:
                            worker.send(pred, gold, timeout, *raw)
                        except OSError:  # died while idle
                            self._replace(worker, exited=True)
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
                for fd in readable(list(busy) + starting, wait_s):
                    if fd not in busy:
                        continue
                    worker, index, deadline = busy[fd]
                    latencies[index] = time.monotonic() - (deadline - timeout)
                    lines = worker.read_lines()
                    if lines is None:  # died (memory limit, crash): the item scores False
                        del busy[fd]
                        self._replace(worker, exited=True)
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
        if self.owner_pid != os.getpid():  # a forked child never closes its parent's workers
            return
        with self._lock:
            for worker in self._workers:
                worker.kill()
            self._workers = []
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None


_default_pool: VerifierPool | None = None
_default_lock = threading.Lock()


def get_default_pool() -> VerifierPool:
    """The process-wide pool used by `answers_match` and `accuracy_reward` (created on first use)."""
    global _default_pool
    with _default_lock:
        # After os.fork() the child must not share the parent's worker pipes: it gets a pool of its own.
        if _default_pool is None or _default_pool.owner_pid != os.getpid():
            size = int(os.environ.get("REWARDS_NUM_WORKERS", "0") or 0) or None
            _default_pool = VerifierPool(size=size)
            atexit.register(_default_pool.close)
        return _default_pool
