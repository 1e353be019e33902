r"""Verification workers: processes that run math-verify on (prediction, gold) pairs.

`rewards.pool.VerifierPool` starts one *zygote*, `python -m rewards._verify_worker --zygote FD`: a fresh
interpreter (safe from any thread and with torch/CUDA loaded in the caller; the caller's `__main__` is never
re-imported) that imports math-verify, warms up its parser, and then forks a worker on each request that
arrives on the Unix socket FD, together with the worker's two pipe ends (SCM_RIGHTS). Forking from this
small single-threaded process makes a worker, or the replacement of a killed one, ready in milliseconds.

Worker protocol (its two pipes, one JSON document per line): the worker prints `ready`, then answers each
request `{"pred": str, "gold": str, "timeout": float}` with one line: `1` (equal) or `0` (not equal /
unparseable / error). With `"raw": true` the two strings are whole texts (a completion and a gold column), read
by math-verify's own extraction with its default configs (`parse(text)`), for the items the parent's extraction
could not decide.

Safety:
* Nothing is evaluated. math-verify's `ExprExtractionConfig` path (used for raw texts) hands strings to sympy's
  `parse_expr`, which is `eval` underneath; math_verify's reference to it is replaced by `_digits_expr`, which
  accepts only digits, `.`, spaces, `+ - * / ^ ( ) × ÷` (all math-verify's expression regex lets through) and
  reads them with the LaTeX grammar; latex2sympy2_extended's `parse_expr` is replaced by a function that refuses.
  The LaTeX path goes through an ANTLR grammar that builds sympy objects and executes nothing.
* Each worker's address space is capped with `RLIMIT_AS` (its size at fork + `REWARDS_WORKER_MEMORY_MB`), so
  a runaway integer makes a `MemoryError` (scored 0) instead of exhausting the machine.
* The parent enforces the wall-clock deadline and SIGKILLs a worker that overruns: that is the one bound that
  counts. math-verify's own `signal.alarm` timeouts are set `ALARM_MARGIN_S` after it (`alarm_seconds`), a
  backstop for a worker whose parent has gone; they never answer before the parent's deadline, even when the
  parent is descheduled for seconds on a loaded machine, so an overrunning item always ends in a kill.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import struct
import sys


def _refuse_parse_expr(*args, **kwargs):
    raise RuntimeError("sympy.parse_expr (eval-based) is disabled in the rewards verification worker")


_DIGITS_EXPR_CHARS = frozenset("0123456789. \t+-*/^()×÷")


def _digits_expr(text: str, *args, **kwargs):
    """math-verify's `parse_expr` for its plain-expression matches (`1/2`, `(9+1)`, `3 × 4`), without `eval`:
    only digits and arithmetic are accepted, and they are read by latex2sympy's ANTLR grammar."""
    from latex2sympy2_extended import latex2sympy

    if not isinstance(text, str) or not set(text) <= _DIGITS_EXPR_CHARS:
        _refuse_parse_expr()
    return latex2sympy(text.replace("**", "^").replace("×", "\\times ").replace("÷", "\\div "))


# Seconds between the parent's deadline and math-verify's own alarm in a worker: many times the parent's normal
# lateness in killing an overrunning worker (milliseconds), so the two bounds never race.
ALARM_MARGIN_S = 10


def alarm_seconds(deadline_s: float) -> int:
    """math-verify's `timeout_seconds` / `parsing_timeout` for an item whose parent deadline is `deadline_s`:
    `ceil(deadline_s) + ALARM_MARGIN_S` (`signal.alarm` takes whole seconds), so 1.0 -> 11 and 5 -> 15.

    Each alarm starts after the worker has received the item, i.e. after the parent's deadline clock started,
    so a worker can answer by its own alarm no earlier than `ALARM_MARGIN_S` seconds after the deadline.
    """
    return math.ceil(deadline_s) + ALARM_MARGIN_S


def _limit_memory() -> None:
    limit_address_space(int(os.environ.get("REWARDS_WORKER_MEMORY_MB", "0") or 0))


def limit_address_space(limit_mb: int) -> None:
    """Cap this process's address space at `limit_mb` MiB above its size now (0: no cap), so a runaway computation
    is a MemoryError rather than the machine's memory. Linux only; elsewhere the caller's deadline remains the bound."""
    if limit_mb <= 0:
        return
    try:
        import resource

        with open("/proc/self/statm") as f:  # current virtual size, so the cap is headroom above it
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = current + limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        pass


def _make_checker():
    """Import math-verify once and return `check(pred, gold, seconds) -> bool`."""
    logging.disable(logging.CRITICAL)  # math-verify logs every timeout and parse failure as a warning
    import latex2sympy2_extended.latex2sympy2 as l2s
    import math_verify.parser as mv_parser
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    mv_parser.parse_expr = _digits_expr
    l2s.parse_expr = _refuse_parse_expr
    # math-verify's default LaTeX normalization (units, malformed operators such as \frac12, nits);
    # the same settings TRL's accuracy_reward uses for predictions.
    config = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]
    parsed_cache: dict[str, list] = {}  # golds repeat across a group's completions

    def parse_answer(answer: str, seconds: int):
        # The answer was already extracted by the parent; \boxed{} makes math-verify take all of it.
        if answer not in parsed_cache:
            if len(parsed_cache) > 4096:
                parsed_cache.clear()
            parsed_cache[answer] = parse("\\boxed{" + answer + "}", extraction_config=config, parsing_timeout=seconds)
        return parsed_cache[answer]

    default_configs = [LatexExtractionConfig(), ExprExtractionConfig()]  # math-verify's own defaults

    def parse_text(text: str, seconds: int, gold: bool):
        """math-verify's own extraction of a whole text; a gold column holding a bare answer that it finds
        nothing in (`x^2+1`, `\\frac{1}{2}`) is read again inside `$...$`."""
        parsed = parse(text, extraction_config=default_configs, parsing_timeout=seconds)
        if not parsed and gold and "$" not in text:
            parsed = parse("$" + text + "$", extraction_config=default_configs, parsing_timeout=seconds)
        return parsed

    def check(pred: str, gold: str, seconds: int, raw: bool = False) -> bool:
        try:
            if raw:
                gold_parsed, pred_parsed = parse_text(gold, seconds, True), parse_text(pred, seconds, False)
            else:
                gold_parsed, pred_parsed = parse_answer(gold, seconds), parse_answer(pred, seconds)
            return bool(gold_parsed) and bool(pred_parsed) and verify(gold_parsed, pred_parsed, timeout_seconds=seconds)
        except (Exception, TimeoutException):  # MemoryError and RecursionError included
            return False

    # Warm up the ANTLR parser and sympy's caches so that no worker's first real item is the slow one.
    for warm in ("\\frac{1}{2}", "(1, \\sqrt{2})", "x^2 + 1", "[0, \\infty)", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"):
        check(warm, "0", 5)
    parsed_cache.clear()
    return check


def serve(check, requests, responses) -> None:
    """Worker loop: one JSON request per line in, one verdict per line out, until EOF."""
    _limit_memory()
    responses.write("ready\n")
    responses.flush()
    for line in requests:
        try:
            request = json.loads(line)
            seconds = alarm_seconds(max(float(request.get("timeout", 5)), 0.0))
            result = check(str(request["pred"]), str(request["gold"]), seconds, bool(request.get("raw")))
        except (ValueError, KeyError, TypeError):
            result = False
        responses.write("1\n" if result else "0\n")
        responses.flush()


def zygote(sock_fd: int) -> None:
    """Fork a worker for every (request-read, response-write) pipe pair received on the socket."""
    check = _make_checker()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps exited workers
    sock = socket.socket(fileno=sock_fd)
    sock.sendall(b"R")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 16, 2)
        except OSError:
            return
        if not message or len(fds) != 2:  # the parent has gone
            return
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                with os.fdopen(fds[0], "r") as requests, os.fdopen(fds[1], "w") as responses:
                    serve(check, requests, responses)
            finally:
                os._exit(0)
        for fd in fds:
            os.close(fd)
        sock.sendall(struct.pack("q", pid))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--zygote":
        zygote(int(sys.argv[2]))
    else:  # a stand-alone worker on stdin/stdout
        serve(_make_checker(), sys.stdin, sys.stdout)
