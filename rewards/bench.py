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
import re
import statistics
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


# ------------------------------------------------------------------------------------ the warm GRPO batch
# What a training run sends: groups of completions for one prompt, answers repeating inside a group.
_GSM8K_CALC_RE = re.compile(r"<<[^>]*>>")
_INT_RE = re.compile(r"\d+")
_WARM_CHILD_LIMIT_S = 1800.0  # only bounds a broken run: TRL's whole workload takes seconds


def _gsm8k_rationale(answer_column: str) -> tuple[str, str]:
    """(reasoning lines without `<<...>>` calculator notes, final number) of a GSM8K `answer` column."""
    body, final = answer_column.rsplit("####", 1)
    return _GSM8K_CALC_RE.sub("", body).strip(), final.strip().replace(",", "")


def _wrong_number(gold: str, rng: random.Random) -> str:
    """A plausible wrong GSM8K answer: an off-by-a-little or a slip by a factor of ten."""
    if not gold.lstrip("-").isdigit():
        return gold + "1"
    value = int(gold)
    return str(rng.choice([v for v in (value + 1, value - 1, value + 2, value * 10, value // 10) if v != value]))


def _restate(body: str, gold: str, value: str) -> str:
    """`body` with its last mention of the final number `gold` replaced by `value` (a wrong solution's
    reasoning arrives at its own number)."""
    at = body.rfind(gold)
    return body if at < 0 or value == gold else body[:at] + value + body[at + len(gold) :]


def _gsm8k_completion(body: str, value: str, form: int) -> str:
    """The reasoning followed by the answer `value` in one of the forms a policy writes on GSM8K."""
    grouped = f"{int(value):,}" if value.lstrip("-").isdigit() else value
    endings = [
        f"#### {value}",
        f"The answer is {value}.",
        f"The final answer is $\\boxed{{{value}}}$.",
        f"So in total that is ${grouped}.",
    ]
    return f"{body}\n{endings[form % len(endings)]}".lstrip()


def _math_wrong_answer(answer: str, others: list[str], rng: random.Random) -> str:
    """A plausible wrong MATH answer: the first integer in the gold off by one or two (the first, so that a
    unit's exponent such as `cm}^2` stays), or (no digits) another problem's answer."""
    m = _INT_RE.search(answer)
    if m is None:
        return rng.choice(others)
    return answer[: m.start()] + str(int(m.group(0)) + rng.choice([1, 2])) + answer[m.end() :]


def _math_wrong_answers(answer: str, others: list[str], rng: random.Random, symbolic: bool) -> list[str]:
    """One or two wrong values for a MATH group. With `symbolic`, one of them may be the gold written as an
    expression that is not the gold, `<gold>+1` (a tuple, interval, matrix, word or number with `+1` after it:
    what a policy writes when it gets the structure right and a term wrong), the other a `_math_wrong_answer`."""
    count = rng.randint(1, 2)
    wrong = [_math_wrong_answer(answer, others, rng)]
    if symbolic and (count == 2 or rng.random() < 0.5):
        wrong = wrong[: count - 1] + [answer + "+1"]
    elif count == 2:
        wrong.append(_math_wrong_answer(answer, others, rng))
    return sorted(set(wrong))


def _math_variant(answer: str, form: int) -> str:
    """The gold written differently but equally: `\\dfrac`, no spaces, no `\\left`/`\\right`."""
    if form % 3 == 1:
        return answer.replace("\\frac", "\\dfrac").replace("\\left", "").replace("\\right", "")
    if form % 3 == 2:
        return answer.replace(" ", "")
    return answer


def _math_completion(solution: str, answer: str, value: str, form: int) -> str:
    """The MATH reference reasoning (whose one box holds `answer`) ending with `value` boxed, or stated after
    an answer phrase."""
    box = "\\boxed{" + answer + "}"
    start = solution.rfind(box)
    if form % 3 == 0:
        return solution[:start] + "\\boxed{" + value + "}" + solution[start + len(box) :]
    body = solution[:start] + answer + solution[start + len(box) :] if start > 0 else ""
    if form % 3 == 1:
        return f"{body}\nFinal Answer: The final answer is ${value}$. I hope it is correct.".lstrip()
    return f"{body}\nTherefore, the answer is ${value}$.".lstrip()


def _group(gold_values: tuple, make, rng: random.Random, size: int) -> list[tuple[str, float]]:
    """`size` completions for one prompt: a drawn number of them right, the rest sharing one or two wrong
    answers, each group written in two of the surface forms (a policy repeats its style)."""
    right, wrong = gold_values
    n_right = rng.randint(0, size)
    forms = rng.sample(range(12), 2)
    out = []
    for k in range(size):
        correct = k < n_right
        value = right(forms[k % 2]) if correct else wrong[k % len(wrong)]
        out.append((make(value, forms[k % 2]), float(correct)))
    rng.shuffle(out)
    return out


def build_warm_batch(data: Path, steps: int = 8, batch_size: int = 128, group_size: int = 8,
                     seed: int = 0, reasoning: bool = True, bare_golds: bool = False,
                     symbolic_wrong: bool = True) -> list[list[dict]]:
    """`steps + 1` batches of `batch_size` completions (the first is the warm-up call): groups of
    `group_size` completions per prompt, half of the groups GSM8K test problems and half MATH-500 problems
    (those whose solution has a single `\\boxed{}`), every prompt used once. Each item holds `completion` (the
    text), `solution` (the GSM8K final number or the MATH solution, as TRL's reward reads it),
    `label` (1.0 when the answer written equals the gold) and `kind`. With `reasoning=False` a completion is
    only the sentence stating the answer; with `bare_golds=True` a MATH item's `solution` is its bare answer
    (as in a dataset with an `answer` column) instead of the whole reference solution. With `symbolic_wrong`
    (the default) a MATH group's wrong answers include `<gold>+1` (see `_math_wrong_answers`); without it they
    only change an integer of the gold (the workload of the figures measured before issue 18)."""
    from .normalize import normalize_answer

    if batch_size % (2 * group_size):
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of 2 * group_size ({2 * group_size})")
    rng = random.Random(seed)
    groups_per_kind = (steps + 1) * batch_size // (2 * group_size)
    gsm = [json.loads(line)["answer"] for line in (data / "gsm8k" / "test.jsonl").open()]
    math_rows = [row for row in _math_rows(data) if row["solution"].count("\\boxed") == 1]
    if groups_per_kind > min(len(gsm), len(math_rows)):
        raise ValueError(f"{steps} steps of {batch_size} need {groups_per_kind} problems of each kind")
    all_math_answers = [row["answer"] for row in math_rows]
    groups = []
    for column in rng.sample(gsm, groups_per_kind):
        body, gold = _gsm8k_rationale(column)
        wrong = sorted({_wrong_number(gold, rng) for _ in range(rng.randint(1, 2))} - {gold})
        body = body if reasoning else ""
        make = lambda value, form, body=body, gold=gold: _gsm8k_completion(_restate(body, gold, value), value, form)
        pairs = _group((lambda form, gold=gold: gold, wrong), make, rng, group_size)
        groups.append([{"completion": c, "solution": gold, "label": label, "kind": "gsm8k"} for c, label in pairs])
    for row in rng.sample(math_rows, groups_per_kind):
        others = [a for a in all_math_answers if normalize_answer(a) != normalize_answer(row["answer"])]
        wrong = _math_wrong_answers(row["answer"], others, rng, symbolic_wrong)
        solution = row["solution"] if reasoning else "\\boxed{" + row["answer"] + "}"
        make = lambda value, form, solution=solution, row=row: _math_completion(solution, row["answer"], value, form)
        right = lambda form, answer=row["answer"]: _math_variant(answer, form // 3)
        pairs = _group((right, wrong), make, rng, group_size)
        gold_column = row["answer"] if bare_golds else row["solution"]
        groups.append([{"completion": c, "solution": gold_column, "label": label, "kind": "math"}
                       for c, label in pairs])
    gsm_groups, math_groups = groups[:groups_per_kind], groups[groups_per_kind:]
    per_step = batch_size // (2 * group_size)
    batches = []
    for s in range(steps + 1):
        batch_groups = gsm_groups[s * per_step : (s + 1) * per_step] + math_groups[s * per_step : (s + 1) * per_step]
        rng.shuffle(batch_groups)
        batches.append([item for group in batch_groups for item in group])
    return batches


def _warm_child(conn, side: str, batches: list[list[dict]], timeout: float) -> None:
    """In a fresh process: one warm-up call with `batches[0]` (it starts our worker pool), then each later
    batch as one timed call, as the trainer makes it; sends (rewards, seconds per call)."""
    import logging

    logging.disable(logging.CRITICAL)
    if side == "trl":
        from trl.rewards import accuracy_reward as reward
    else:
        from .accuracy import AccuracyReward
        from .pool import get_default_pool

        reward = AccuracyReward(timeout=timeout)

    def call(batch):
        completions = [[{"role": "assistant", "content": item["completion"]}] for item in batch]
        return reward(completions, solution=[item["solution"] for item in batch])

    call(batches[0])
    if side == "ours":
        get_default_pool().wait_ready()  # started even if the warm-up batch never needed it
    rewards, seconds = [], []
    for batch in batches[1:]:
        start = time.perf_counter()
        rewards.extend(call(batch))
        seconds.append(time.perf_counter() - start)
    conn.send((rewards, seconds))


def run_warm_batch(side: str, batches: list[list[dict]], timeout: float = 5.0) -> tuple[list, list[float]]:
    """Rewards of `batches[1:]` and the seconds of each call, scored by `side` ("ours" or "trl") in a fresh
    process (spawned: nothing imported or cached here carries over)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_warm_child, args=(child, side, batches, timeout), daemon=True)
    proc.start()
    try:
        if not parent.poll(_WARM_CHILD_LIMIT_S):
            raise RuntimeError(f"warm-batch benchmark of {side} did not finish in {_WARM_CHILD_LIMIT_S}s")
        return parent.recv()
    finally:
        proc.kill()
        proc.join()


def plus_one_call_rates(data: Path, n: int = 128, timeout: float = 5.0) -> dict[str, float]:
    """Items/s of one call of ours on the first `n` MATH-500 golds (bare answers) answered `\\boxed{<gold>+1}`,
    and of one call on the same golds answered right, each after a warm-up call that starts the worker pool,
    in a fresh process (nothing cached)."""
    answers = [row["answer"] for row in _math_rows(data)][:n]
    warm_up = [{"completion": "\\boxed{1}", "solution": "2"}]  # the child then starts the worker pool
    rates = {}
    for name, form in (("<gold>+1", "\\boxed{{{}+1}}"), ("right", "\\boxed{{{}}}")):
        batch = [{"completion": form.format(answer), "solution": answer} for answer in answers]
        _, seconds = run_warm_batch("ours", [warm_up, batch], timeout)
        rates[name] = len(batch) / seconds[0]
    return rates


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


def _agreement_of_kind(rewards: list, items: list[dict], kind: str) -> float:
    chosen = [i for i, item in enumerate(items) if item["kind"] == kind]
    return _agreement([rewards[i] for i in chosen], [items[i]["label"] for i in chosen])


def warm_batch_rate(batches: list[list[dict]], seconds: list[float]) -> float:
    """Items per second over the timed calls (`batches[1:]`, one call each)."""
    return sum(len(batch) for batch in batches[1:]) / sum(seconds)


def warm_batch_report(batches: list[list[dict]], sides: dict[str, tuple[list, list[float]]]) -> list[str]:
    """Lines giving each side's items/s over the timed calls, its fastest and slowest call, its agreement
    with the labels (overall and per kind), and the ratio of the first side's rate to each other's."""
    items = [item for batch in batches[1:] for item in batch]
    labels = [item["label"] for item in items]
    kinds = sorted({item["kind"] for item in items})
    lines, rates = [], {}
    for side, (rewards, seconds) in sides.items():
        rates[side] = warm_batch_rate(batches, seconds)
        per_kind = ", ".join(f"{kind} {_agreement_of_kind(rewards, items, kind):.4f}" for kind in kinds)
        calls = f"{1000 * min(seconds):.0f}-{1000 * max(seconds):.0f} ms"
        lines.append(f"{side:5s}: {rates[side]:9.1f} items/s  (calls {calls})  "
                     f"agreement {_agreement(rewards, labels):.4f} ({per_kind})")
    first, *others = rates
    lines += [f"ratio: {rates[first] / rates[other]:.1f}x ({first} / {other})" for other in others]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="number of completions in the mix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=5.0, help="our per-item deadline (s)")
    parser.add_argument("--trl-item-limit", type=float, default=20.0, help="watchdog for one TRL item (s)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with gsm8k/ and math500/")
    parser.add_argument("--no-real", action="store_true", help="skip the real labelled GSM8K model solutions")
    parser.add_argument("--warm-steps", type=int, default=8, help="timed calls of the warm GRPO batch")
    parser.add_argument("--warm-batch", type=int, default=128, help="completions per warm-batch call")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt in the warm batch")
    parser.add_argument("--warm-only", action="store_true", help="measure only the warm GRPO batch")
    parser.add_argument("--no-reasoning", action="store_true",
                        help="warm-batch completions are only the sentence stating the answer (no reasoning)")
    parser.add_argument("--bare-golds", action="store_true",
                        help="warm-batch MATH golds are the bare answers, not the reference solutions")
    parser.add_argument("--rounds", type=int, default=1,
                        help="warm-batch measurements, each side in a fresh process per round, alternating order")
    parser.add_argument("--numeric-wrong-only", action="store_true",
                        help="warm-batch wrong MATH answers only change an integer of the gold (no `<gold>+1`)")
    parser.add_argument("--plus-one-call", action="store_true",
                        help="measure only one call of 128 MATH-500 golds answered \\boxed{<gold>+1} and one answered "
                             "right (ours, warm pool, fresh process and caches per round)")
    args = parser.parse_args(argv)

    from .pool import default_pool_size

    if args.plus_one_call:
        for round_ in range(args.rounds):
            rates = plus_one_call_rates(args.data, timeout=args.timeout)
            print(f" round {round_ + 1}/{args.rounds}: " + ", ".join(f"{k} {v:,.0f} items/s" for k, v in rates.items()),
                  flush=True)
        return
    batches = build_warm_batch(args.data, args.warm_steps, args.warm_batch, args.group, args.seed,
                               reasoning=not args.no_reasoning, bare_golds=args.bare_golds,
                               symbolic_wrong=not args.numeric_wrong_only)
    print(f"warm GRPO batch: a warm-up call, then {args.warm_steps} calls of {args.warm_batch} completions "
          f"(groups of {args.group}, half GSM8K / half MATH-500 prompts, "
          f"{'answer only' if args.no_reasoning else 'reasoning + answer'}, MATH golds "
          f"{'bare answers' if args.bare_golds else 'reference solutions'}, wrong MATH answers "
          f"{'change an integer' if args.numeric_wrong_only else 'change an integer or are <gold>+1'}), "
          f"each side in a fresh process, {default_pool_size()} cores, deadline {args.timeout}s", flush=True)
    ratios = []
    for round_ in range(args.rounds):
        order = ("ours", "trl") if round_ % 2 == 0 else ("trl", "ours")  # alternate: load drifts
        sides = {side: run_warm_batch(side, batches, args.timeout) for side in order}
        lines = warm_batch_report(batches, {side: sides[side] for side in ("ours", "trl")})
        ratios.append(warm_batch_rate(batches, sides["ours"][1]) / warm_batch_rate(batches, sides["trl"][1]))
        print(f" round {round_ + 1}/{args.rounds} ({order[0]} first)", flush=True)
        for line in lines:
            print("  " + line, flush=True)
    if args.rounds > 1:
        print(f"  ratio over {args.rounds} rounds: min {min(ratios):.1f}x, median {statistics.median(ratios):.1f}x, "
              f"max {max(ratios):.1f}x")
    if args.warm_only:
        return

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
