r"""Verification worker: a separate Python process that runs math-verify on (prediction, gold) pairs.

Started by `rewards.pool.VerifierPool` as `python -m rewards._verify_worker`. Protocol (stdin/stdout, one
JSON document per line): the worker prints `ready` once imports are done, then answers each request
`{"pred": str, "gold": str, "timeout": float}` with one line: `1` (equal) or `0` (not equal / unparseable).

Safety:
* Only `LatexExtractionConfig` is used. math-verify's `ExprExtractionConfig` path calls sympy's
  `parse_expr`, which is `eval` underneath; it is never configured here, and as a second line of defence the
  `parse_expr` references inside math_verify and latex2sympy2_extended are replaced by a function that refuses.
  The LaTeX path goes through an ANTLR grammar that builds sympy objects and executes nothing.
* The address space is capped with `RLIMIT_AS` (env `REWARDS_WORKER_MEMORY_MB`), so a runaway integer makes
  a `MemoryError` here (scored 0) instead of exhausting the machine.
* The parent enforces the wall-clock deadline and kills this process when it overruns; math-verify's own
  `signal.alarm` timeouts are also on (this is a main thread), which usually returns 0 before that.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys


def _refuse_parse_expr(*args, **kwargs):
    raise RuntimeError("sympy.parse_expr (eval-based) is disabled in the rewards verification worker")


def _limit_memory() -> None:
    limit_mb = int(os.environ.get("REWARDS_WORKER_MEMORY_MB", "0") or 0)
    if limit_mb <= 0:
        return
    try:
        import resource

        with open("/proc/self/statm") as f:  # current virtual size, so the cap is headroom above it
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = current + limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, OSError, ValueError):
        pass  # not Linux: the parent's deadline remains the bound


def main() -> None:
    logging.disable(logging.CRITICAL)  # math-verify logs every timeout and parse failure as a warning
    import latex2sympy2_extended.latex2sympy2 as l2s
    import math_verify.parser as mv_parser
    from math_verify import LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    mv_parser.parse_expr = _refuse_parse_expr
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

    # Warm up the ANTLR parser and sympy's caches so the first real item is not the slow one.
    for warm in ("\\frac{1}{2}", "(1, \\sqrt{2})", "x^2 + 1", "[0, \\infty)", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"):
        verify(parse_answer(warm, 5), parse_answer("0", 5), timeout_seconds=5)
    parsed_cache.clear()

    _limit_memory()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            seconds = max(1, math.ceil(float(request.get("timeout", 5))))
            gold = parse_answer(request["gold"], seconds)
            pred = parse_answer(request["pred"], seconds)
            result = bool(gold) and bool(pred) and verify(gold, pred, timeout_seconds=seconds)
        except (Exception, TimeoutException):  # MemoryError and RecursionError included
            result = False
        out.write("1\n" if result else "0\n")
        out.flush()


if __name__ == "__main__":
    main()
