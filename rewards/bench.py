r"""Benchmark: this package's `accuracy_reward` against `trl.rewards.accuracy_reward` on the same items.

    python -m rewards.bench [--n 2000] [--seed 0] [--timeout 5] [--data ../shared/data] [--no-real]

Builds a fixed mix of completions from the shipped GSM8K test and MATH-500 golds (correct answers in varied
surface forms, wrong answers, 1% pathological), scores it with both implementations in one run and prints
items/s, their ratio, the worst single-item latency and each one's agreement with the labels. TRL runs in a
child process, item by item as it does inside the trainer (main thread, so its signal timeouts are on), with
a watchdog: an item that takes longer than `--trl-item-limit` seconds is counted as wrong at that cost and the
child is restarted (math-verify's alarm cannot interrupt sympy's big-integer arithmetic). Then, unless
`--no-real`, both score the real labelled model solutions in gsm8k/example_model_solutions.jsonl.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

PATHOLOGICAL = [
    r"\boxed{10^{10^{10^{10}}}}",
    r"\boxed{9^{9^{9^9}}!}",
    "\\boxed{" + "9" * 100_000 + "}",
    "\\boxed{" + "{" * 200_000 + "1" + "}" * 200_000 + "}",
    r"\boxed{\sum_{k=1}^{10^{7}} \frac{1}{k}}",
    r"\boxed{\binom{10^{9}}{10^{5}}}",
    r"\boxed{\Gamma(10^{6})}",  # passes the textual pre-checks: bounded by the worker deadline
]


# ----------------------------------------------------------------------------------------------- the item mix
def _gsm8k_golds(data: Path) -> list[str]:
    rows = [json.loads(line) for line in (data / "gsm8k" / "test.jsonl").open()]
    return [row["answer"].rsplit("####", 1)[1].strip().replace(",", "") for row in rows]


def _math_rows(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "math500" / "test.jsonl").open()]


def _gsm8k_correct(gold: str, rng: random.Random) -> str:
    n = gold
    grouped = f"{int(n):,}" if n.lstrip("-").isdigit() else n
    forms = [
        f"Adding these up gives {n}.\n#### {n}",
        f"So the total is {grouped} dollars.",
        f"Therefore, the answer is ${grouped}.",
        f"The final answer is $\\boxed{{{n}}}$.",
        f"She ends up with {n}.00 in total.",
        f"\\boxed{{\\${grouped}}}",
        f"Step 1: compute 2+3=5.\nStep 2: so we get {n}.0",
    ]
    return rng.choice(forms)


def _gsm8k_wrong(gold: str, rng: random.Random) -> str:
    try:
        wrong = str(int(gold) + rng.choice([-10, -2, -1, 1, 3, 100]))
    except ValueError:
        wrong = gold + "1"
    return rng.choice([f"#### {wrong}", f"So the answer is {wrong}.", f"\\boxed{{{wrong}}}", f"I get {wrong} apples"])


def _math_correct(answer: str, rng: random.Random) -> str:
    variant = answer
    if rng.random() < 0.5:
        variant = variant.replace("\\frac", "\\dfrac").replace("\\left(", "(").replace("\\right)", ")")
    if rng.random() < 0.3:
        variant = variant.replace(" ", "")
    forms = [
        f"Putting it together, the answer is $\\boxed{{{variant}}}$.",
        f"Final Answer: The final answer is ${variant}$. I hope it is correct.",
        f"Thus we obtain \\[\\boxed{{{variant}}}\\]",
        f"<think>work</think> \\boxed{{{variant}}}",
    ]
    return rng.choice(forms)


def build_items(data: Path, n: int = 2000, seed: int = 0) -> list[dict]:
    """Fixed mix: 60% GSM8K, 40% MATH-500; half correct, half wrong; 1% pathological (label 0)."""
    from .normalize import normalize_answer

    rng = random.Random(seed)
    gsm = _gsm8k_golds(data)
    math_rows = _math_rows(data)
    items = []
    n_path = max(1, n // 100)
    for i in range(n - n_path):
        correct = rng.random() < 0.5
        if rng.random() < 0.6:
            gold = rng.choice(gsm)
            text = _gsm8k_correct(gold, rng) if correct else _gsm8k_wrong(gold, rng)
            items.append({"completion": text, "solution": gold, "label": float(correct), "kind": "gsm8k"})
        else:
            row = rng.choice(math_rows)
            if correct:
                text = _math_correct(row["answer"], rng)
            else:
                other = rng.choice(math_rows)
                while normalize_answer(other["answer"]) == normalize_answer(row["answer"]):
                    other = rng.choice(math_rows)
                text = _math_correct(other["answer"], rng)
            items.append({"completion": text, "solution": row["solution"], "label": float(correct), "kind": "math"})
    for i in range(n_path):
        gold = rng.choice(gsm)
        items.append({"completion": PATHOLOGICAL[i % len(PATHOLOGICAL)], "solution": gold, "label": 0.0,
                      "kind": "pathological"})
    rng.shuffle(items)
    return items


# ----------------------------------------------------------------------------------------------------- TRL
def _trl_child(conn, items):
    """Score items one at a time with TRL, sending (index, reward, seconds) after each."""
    import logging
    import resource

    logging.disable(logging.CRITICAL)
    try:  # keep a runaway big integer from exhausting the machine
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
    except (ValueError, OSError):
        pass
    from trl.rewards import accuracy_reward

    conn.send("ready")
    for index, item in items:
        start = time.perf_counter()
        try:
            reward = accuracy_reward([[{"role": "assistant", "content": item["completion"]}]], [item["solution"]])[0]
        except Exception:
            reward = 0.0
        conn.send((index, reward, time.perf_counter() - start))
    conn.send(None)


def run_trl(items: list[dict], item_limit: float) -> tuple[list, list[float], float, int]:
    """TRL rewards, per-item seconds, total scoring seconds (startup excluded) and the number of hung items."""
    ctx = mp.get_context("spawn")
    rewards: list = [0.0] * len(items)
    seconds = [0.0] * len(items)
    hung = 0
    todo = list(enumerate(items))
    while todo:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_trl_child, args=(child, todo), daemon=True)
        proc.start()
        if not parent.poll(300) or parent.recv() != "ready":
            raise RuntimeError("TRL benchmark child did not start")
        done_upto = 0
        while True:
            if not parent.poll(item_limit):
                index = todo[done_upto][0]
                rewards[index], seconds[index] = 0.0, item_limit
                hung += 1
                proc.kill()
                proc.join()
                todo = todo[done_upto + 1 :]
                break
            try:
                message = parent.recv()
            except EOFError:  # died (memory limit): count like a hang at the time it took
                index = todo[done_upto][0]
                rewards[index], seconds[index] = 0.0, item_limit
                hung += 1
                todo = todo[done_upto + 1 :]
                break
            if message is None:
                todo = []
                proc.join()
                break
            index, reward, secs = message
            rewards[index], seconds[index] = reward, secs
            done_upto += 1
    return rewards, seconds, sum(seconds), hung


# ------------------------------------------------------------------------------------------------- ours
def run_ours(items: list[dict], timeout: float) -> tuple[list, list[float], float, float]:
    """Our rewards, per-item latency bounds, scoring seconds (warm pool) and worker start-up seconds."""
    from .accuracy import AccuracyReward
    from .equivalence import clear_cache
    from .pool import get_default_pool

    pool = get_default_pool()
    pool.close()  # fresh workers: no parse cache left from an earlier measurement
    start = time.perf_counter()
    pool.wait_ready()
    startup = time.perf_counter() - start
    clear_cache()
    reward = AccuracyReward(timeout=timeout)
    completions = [item["completion"] for item in items]
    solutions = [item["solution"] for item in items]
    start = time.perf_counter()
    rewards = reward(completions, solution=solutions)
    total = time.perf_counter() - start
    # Worst single-item latency: the slowest pool item (dispatch to verdict), and the slowest in-process
    # decision (extraction + fast path), timed item by item.
    from .equivalence import fast_verdict
    from .extraction import extract_answer, extract_gold

    worst_pool = max(pool.last_latencies, default=0.0)
    worst_local = 0.0
    for completion, solution in zip(completions, solutions):
        t0 = time.perf_counter()
        gold = extract_gold(solution)
        pred = extract_answer(completion)
        if gold is not None and pred is not None:
            fast_verdict(pred, gold)
        worst_local = max(worst_local, time.perf_counter() - t0)
    return rewards, [worst_pool, worst_local], total, startup


def _agreement(rewards: list, labels: list[float]) -> float:
    return sum((r is not None and float(r) == label) for r, label in zip(rewards, labels)) / len(labels)


def _real_items(data: Path) -> list[dict]:
    path = data / "gsm8k" / "example_model_solutions.jsonl"
    golds = {}
    for line in (data / "gsm8k" / "test.jsonl").open():
        row = json.loads(line)
        golds[row["question"]] = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
    items = []
    for line in path.open():
        row = json.loads(line)
        for key, value in row.items():
            if isinstance(value, dict) and "solution" in value and row["question"] in golds:
                items.append({"completion": value["solution"], "solution": golds[row["question"]],
                              "label": float(bool(value["is_correct"])), "kind": key})
    return items


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="number of completions in the mix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0, help="our per-item deadline (s)")
    parser.add_argument("--trl-item-limit", type=float, default=20.0, help="watchdog for one TRL item (s)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with gsm8k/ and math500/")
    parser.add_argument("--no-real", action="store_true", help="skip the real labelled GSM8K model solutions")
    args = parser.parse_args(argv)

    from .pool import default_pool_size

    items = build_items(args.data, args.n, args.seed)
    labels = [item["label"] for item in items]
    kinds = [item["kind"] for item in items]
    print(f"{len(items)} items ({kinds.count('gsm8k')} GSM8K, {kinds.count('math')} MATH-500, "
          f"{kinds.count('pathological')} pathological), {default_pool_size()} cores, deadline {args.timeout}s")

    ours, worst, ours_s, startup = run_ours(items, args.timeout)
    ours_rate = len(items) / ours_s
    print(f"ours : {ours_rate:9.1f} items/s  ({ours_s:.2f}s; worker start-up {startup:.2f}s not included)  "
          f"worst item {max(worst):.3f}s (pool {worst[0]:.3f}s, in-process {worst[1]:.4f}s)  "
          f"agreement {_agreement(ours, labels):.4f}", flush=True)
    trl, trl_secs, trl_s, hung = run_trl(items, args.trl_item_limit)
    trl_rate = len(items) / trl_s
    print(f"trl  : {trl_rate:9.1f} items/s  ({trl_s:.2f}s)  worst item {max(trl_secs):.3f}s  "
          f"agreement {_agreement(trl, labels):.4f}  ({hung} items hung > {args.trl_item_limit}s, counted at that)")
    print(f"ratio: {ours_rate / trl_rate:.1f}x")
    normal = [i for i, k in enumerate(kinds) if k != "pathological"]
    ours_normal, _, ours_normal_s, _ = run_ours([items[i] for i in normal], args.timeout)
    trl_normal_s = sum(trl_secs[i] for i in normal)
    print(f"without the {len(items) - len(normal)} pathological items: ours {len(normal) / ours_normal_s:.1f} items/s, "
          f"trl {len(normal) / trl_normal_s:.1f} items/s -> {trl_normal_s / ours_normal_s:.1f}x")
    for kind in ("gsm8k", "math"):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        print(f"  {kind:6s} agreement: ours {_agreement([ours[i] for i in idx], [labels[i] for i in idx]):.4f}  "
              f"trl {_agreement([trl[i] for i in idx], [labels[i] for i in idx]):.4f}")

    if not args.no_real and (args.data / "gsm8k" / "example_model_solutions.jsonl").exists():
        real = _real_items(args.data)
        real_labels = [item["label"] for item in real]
        ours_r, _, ours_rs, _ = run_ours(real, args.timeout)
        trl_r, _, trl_rs, _ = run_trl(real, args.trl_item_limit)
        print(f"real GSM8K model solutions ({len(real)}, {sum(real_labels):.0f} labelled correct): "
              f"agreement ours {_agreement(ours_r, real_labels):.4f} ({len(real) / ours_rs:.0f} items/s), "
              f"trl {_agreement(trl_r, real_labels):.4f} ({len(real) / trl_rs:.0f} items/s)")


if __name__ == "__main__":
    main()
