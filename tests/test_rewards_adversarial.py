"""Pathological and malicious answers: bounded time and memory in every calling context, nothing executed."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rewards import AccuracyReward, VerifierPool, answers_match, clear_cache, get_default_pool
from rewards._verify_worker import serve
from rewards.pool import readable

DEADLINE = 1.0  # short per-item deadline keeps the suite fast; the bound checked is deadline + 1 s
# An item that overruns in a worker scores 0.0 within the deadline plus the parent's overhead: milliseconds (poll
# wake-up, SIGKILL, forking a replacement from the zygote), so 1 s of slack is a hang guard for it.
BOUND = DEADLINE + 1.0
# The parent's own linear scan of a pathological text (extraction, textual guards) takes ~0.5 s per megabyte on a
# shared 2-core machine; ten times that per megabyte is a hang guard (a quadratic scan of 1 MB would take hours).
SCAN_S_PER_MB = 5.0
# Generous deadline for the items a test needs answered (not killed): they take milliseconds.
ANSWERED_TIMEOUT = 30.0

PATHOLOGICAL = {
    "power tower": r"The answer is \boxed{10^{10^{10^{10}}}}",
    "factorial of tower": r"\boxed{9^{9^{9^9}}!}",
    "100k-digit number": "\\boxed{" + "9" * 100_000 + "}",
    "100k-digit bare number": "So the total is " + "7" * 100_000,
    "megabyte nested braces": "\\boxed{" + "{" * 500_000 + "1" + "}" * 500_000 + "}",
    "megabyte unbalanced braces": "\\boxed{" + "{" * 1_000_000,
    "deep sqrt nesting": "\\boxed{" + "\\sqrt{" * 5_000 + "2" + "}" * 5_000 + "}",
    "huge harmonic sum": r"\boxed{\sum_{k=1}^{10^{7}} \frac{1}{k}}",
    "huge binomial": r"\boxed{\binom{10^{9}}{10^{5}}}",
    # These pass the textual pre-checks: only the worker deadline bounds them.
    "gamma of a million (reaches sympy)": r"\boxed{\Gamma(10^{6})}",
    "exponential tower (reaches sympy)": r"\boxed{e^{e^{e^{e^{10}}}}}",
}


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    # Start-up is not part of any item's deadline: the workers' imports, and the parent's first call (lazy imports
    # on the fast path, ~0.1-0.3 s), which would otherwise land in whichever timed test runs first.
    get_default_pool().wait_ready()
    assert AccuracyReward(timeout=ANSWERED_TIMEOUT)([r"\boxed{3\sqrt{13}}"], answer=[r"\sqrt{117}"]) == [1.0]


def _bound(text: str) -> float:
    """Wall-clock bound for scoring `text`: the worker deadline's `BOUND` plus the parent's scan of the text."""
    return BOUND + SCAN_S_PER_MB * len(text) / 1e6


def _score_timed(completion: str, gold: str) -> tuple[list, float]:
    clear_cache()
    reward = AccuracyReward(timeout=DEADLINE)
    start = time.monotonic()
    out = reward([completion], answer=[gold])
    return out, time.monotonic() - start


@pytest.mark.parametrize("gold", ["5", r"\frac{\pi}{2}"])
@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_scores_zero_within_deadline_main_thread(name, gold):
    out, elapsed = _score_timed(PATHOLOGICAL[name], gold)
    assert out == [0.0]
    assert elapsed < _bound(PATHOLOGICAL[name]), f"{name}: {elapsed:.2f}s"


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_scores_zero_within_deadline_worker_thread(name):
    box = {}

    def target():
        box["result"] = _score_timed(PATHOLOGICAL[name], r"\frac{\pi}{2}")

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    out, elapsed = box["result"]
    assert out == [0.0]
    assert elapsed < _bound(PATHOLOGICAL[name]), f"{name}: {elapsed:.2f}s"


# A gold column that is prose (no box, several lines): it and the completion go to math-verify's own extraction
# in the worker (the fall-through), which must be bounded the same way.
PROSE_GOLD = "Solving the equation gives\n$x = \\frac{\\pi}{2}$, which is the angle."


def test_prose_gold_reaches_math_verify_extraction():
    # the path the next test bounds is live: math-verify reads this gold column and scores against it
    reward = AccuracyReward(timeout=ANSWERED_TIMEOUT)
    assert reward([r"\boxed{\frac{\pi}{2}}", r"\boxed{\frac{\pi}{3}}"], solution=[PROSE_GOLD] * 2) == [1.0, 0.0]


@pytest.mark.parametrize("name", ["gamma of a million (reaches sympy)", "exponential tower (reaches sympy)",
                                  "megabyte nested braces", "100k-digit bare number"])
@pytest.mark.parametrize("in_thread", [False, True])
def test_pathological_read_by_math_verify_scores_zero_within_deadline(name, in_thread):
    def score():
        clear_cache()
        # The gold column's own reading is a real parse (~0.1-0.5 s in a fresh worker): done first, unbounded by the
        # short deadline, so that what is timed is the pathological completion alone.
        assert AccuracyReward(timeout=ANSWERED_TIMEOUT)([r"\boxed{\frac{\pi}{2}}"], solution=[PROSE_GOLD]) == [1.0]
        start = time.monotonic()
        out = AccuracyReward(timeout=DEADLINE)([PATHOLOGICAL[name]], solution=[PROSE_GOLD])
        return out, time.monotonic() - start

    box = {}
    if in_thread:
        thread = threading.Thread(target=lambda: box.update(result=score()))
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive()
    else:
        box["result"] = score()
    out, elapsed = box["result"]
    assert out == [0.0]
    assert elapsed < _bound(PATHOLOGICAL[name]), f"{name}: {elapsed:.2f}s"


def test_concurrent_calls_from_thread_pool_stay_correct():
    reward = AccuracyReward(timeout=DEADLINE)
    batch = [PATHOLOGICAL["gamma of a million (reaches sympy)"], r"\boxed{2\sqrt{2}}", r"\boxed{\sqrt{8}}", "17"]
    golds = [r"\frac{\pi}{2}", r"\sqrt{8}", r"2\sqrt{2}", "18"]
    clear_cache()
    with ThreadPoolExecutor(max_workers=3) as ex:
        results = list(ex.map(lambda _: reward(batch, answer=golds), range(3)))
    assert results == [[0.0, 1.0, 1.0, 0.0]] * 3


def test_batch_with_pathological_items_keeps_the_good_ones():
    reward = AccuracyReward(timeout=DEADLINE)
    clear_cache()
    completions = [PATHOLOGICAL["gamma of a million (reaches sympy)"], r"\boxed{3\sqrt{13}}", PATHOLOGICAL["power tower"]]
    start = time.monotonic()
    out = reward(completions, answer=[r"\sqrt{117}"] * 3)
    assert out == [0.0, 1.0, 0.0]
    assert time.monotonic() - start < BOUND + DEADLINE  # two workers: at most two deadlines in sequence


def test_expensive_item_reaching_sympy_kills_its_worker():
    pool = get_default_pool()
    killed = pool.killed
    out, elapsed = _score_timed(PATHOLOGICAL["gamma of a million (reaches sympy)"], r"\frac{\pi}{2}")
    assert out == [0.0] and elapsed < BOUND
    # Deterministic: the worker's own math-verify alarm cannot answer first (next two tests).
    assert pool.killed == killed + 1
    assert answers_match(r"2\sqrt{2}", r"\sqrt{8}")  # the pool still answers afterwards


def test_worker_alarm_is_a_backstop_well_after_the_deadline(monkeypatch):
    # math-verify's alarm in a worker is ceil(deadline) + 10 s, so it never races the parent's kill at the deadline
    monkeypatch.delenv("REWARDS_WORKER_MEMORY_MB", raising=False)  # serve() would cap this process's memory
    seen = []

    def check(pred, gold, seconds, raw=False):
        seen.append(seconds)
        return pred == gold

    items = [("1", 1.0), ("2", 0.3), ("1", 5), ("1", 2.5)]  # (gold, deadline); the prediction is "1"
    requests = [json.dumps({"pred": "1", "gold": gold, "timeout": deadline}) + "\n" for gold, deadline in items]
    responses = io.StringIO()
    serve(check, requests, responses)
    assert seen == [11, 11, 15, 13]
    assert responses.getvalue() == "ready\n1\n0\n1\n1\n"


def test_overrunning_worker_does_not_answer_before_it_is_killed():
    # A parent that is late to the deadline (a loaded machine) still finds the worker computing at deadline + 1 s,
    # so an overrunning item always ends in a kill, never in an answer from math-verify's own alarm.
    pool = VerifierPool(size=1, spares=0)
    try:
        pool.wait_ready()
        worker = pool._workers[0]
        worker.send(r"\Gamma(10^{6})", r"\frac{\pi}{2}", DEADLINE)  # sent directly: nobody watches its deadline
        assert readable([worker.fd], BOUND) == []
    finally:
        pool.close()


def test_hung_worker_is_killed_and_replaced():
    pool = VerifierPool(size=1)
    try:
        pool.wait_ready()
        assert pool.run([(r"2\sqrt{2}", r"\sqrt{8}")], timeout=5.0) == [True]
        stuck = pool._workers[0].pid
        os.kill(stuck, signal.SIGSTOP)  # a worker that never answers
        start = time.monotonic()
        assert pool.run([(r"3\sqrt{13}", r"\sqrt{117}")], timeout=DEADLINE) == [False]
        assert time.monotonic() - start < BOUND
        assert pool.killed == 1
        assert pool._workers[0].pid != stuck
        assert pool.run([(r"3\sqrt{13}", r"\sqrt{117}")], timeout=30.0) == [True]  # the replacement works
    finally:
        pool.close()


def test_worker_memory_is_limited():
    pool = VerifierPool(size=1, memory_limit_mb=512)
    try:
        pool.wait_ready()
        pid = pool._workers[0].pid
        limits = Path(f"/proc/{pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max address space"))
        soft = line.split()[3]
        assert soft != "unlimited" and int(soft) < 8 * 2**30
    finally:
        pool.close()


def test_pathological_in_a_subprocess():
    code = (
        "import time; from rewards import AccuracyReward, get_default_pool;"
        "get_default_pool().wait_ready(); r = AccuracyReward(timeout=1.0); t = time.monotonic();"
        r"out = r([r'\boxed{\Gamma(10^{6})}', r'\boxed{10^{10^{10^{10}}}}', r'\boxed{\sqrt{8}}'],"
        r" answer=[r'\frac{\pi}{2}', '5', r'2\sqrt{2}']); print(out, time.monotonic() - t)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out, elapsed = done.stdout.rsplit("]", 1)
    assert out + "]" == "[0.0, 0.0, 1.0]"
    assert float(elapsed) < BOUND + DEADLINE


def test_pathological_read_by_math_verify_in_a_subprocess():
    # The gold's own reading and a right completion are real parses (~0.1-0.5 s in a fresh worker): scored first
    # under a generous deadline (cached), so that what is timed is the pathological completion alone.
    code = (
        "import sys, time; from rewards import AccuracyReward, get_default_pool;"
        f"get_default_pool().wait_ready(); r = AccuracyReward(timeout={DEADLINE}); gold = sys.argv[1];"
        rf"print(AccuracyReward(timeout={ANSWERED_TIMEOUT})([r'\boxed{{\frac{{\pi}}{{2}}}}'], solution=[gold]));"
        r"t = time.monotonic(); out = r([r'\boxed{\Gamma(10^{6})}', r'\boxed{\frac{\pi}{2}}'], solution=[gold, gold]);"
        " print(out, time.monotonic() - t)"
    )
    done = subprocess.run([sys.executable, "-c", code, PROSE_GOLD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answered, timed = done.stdout.splitlines()
    assert answered == "[1.0]"
    out, elapsed = timed.rsplit("]", 1)
    assert out + "]" == "[0.0, 1.0]"
    assert float(elapsed) < BOUND


INJECTIONS = [
    "__import__('os').system('touch {marker}')",
    "eval(\"open('{marker}', 'w').write('x')\")",
    "exec(\"import os; os.system('touch {marker}')\")",
    "1+__import__('subprocess').call(['touch', '{marker}'])",
    "(lambda: __import__('os').system('touch {marker}'))()",
    "\\text{__import__('os').system('touch {marker}')}",
    "Symbol('x').__class__.__mro__[-1].__subclasses__()",
    "$(touch {marker})",
    "`touch {marker}`",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_code_injection_runs_nothing(template, tmp_path):
    marker = tmp_path / "pwned"
    payload = template.replace("{marker}", str(marker))
    reward = AccuracyReward(timeout=2.0)
    completions = [
        f"\\boxed{{{payload}}}",
        f"The answer is {payload}",
        f"#### {payload}",
        payload,
    ]
    for gold in ("5", r"\frac{\pi}{2}", "x"):
        assert reward(completions, answer=[gold] * 4) == [0.0] * 4
        assert answers_match(payload, gold) is False
    # whole texts read by math-verify's own extraction (a prose gold column, math in the completion)
    assert reward([f"${payload}$", f"So \\( {payload} \\)"], solution=[PROSE_GOLD] * 2) == [0.0, 0.0]
    assert not marker.exists()


def test_closing_the_pool_leaves_no_processes():
    pool = VerifierPool(size=2)
    pool.wait_ready()
    pids = [w.pid for w in pool._workers] + [pool._zygote.proc.pid]
    assert len(pids) == 4  # two lanes, one spare, the zygote
    pool.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
