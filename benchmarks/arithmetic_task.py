r"""A GSM8K-shaped task small enough to learn from scratch in minutes: multi-step arithmetic word problems.

    Question: Ann has 27 marbles. She finds 45 more. She gives away 18. How many marbles does Ann have now?
    27 + 45 = 72
    72 - 18 = 54
    \boxed{54}

One step per line, each an equation that `rewards.arithmetic.check_equations` can verify, then the answer in
`\boxed{}`. The warm-start data is partly noisy in the way pupils are: a "buggy" solution adds without carrying
(27 + 45 = 62) and subtracts the smaller digit from the larger (52 - 17 = 45), then carries its wrong value through
the later steps, so a model fitted to it is right only part of the time and RL has something to fix.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = [("Ann", "She"), ("Ben", "He"), ("Cara", "She"), ("Dan", "He"), ("Eve", "She"), ("Finn", "He")]
ITEMS = ["apples", "marbles", "stickers", "coins", "books", "shells"]
GAINS = ["finds {n} more", "buys {n} more", "gets {n} more"]
LOSSES = ["gives away {n}", "loses {n}", "sells {n}"]


@dataclass(frozen=True)
class TaskSize:
    """Shape of the generated problems."""

    min_steps: int
    max_steps: int
    start_range: tuple[int, int]  # the starting amount
    operand_range: tuple[int, int]  # each amount gained or lost


TASK_SIZES = {
    "tiny": TaskSize(2, 2, (10, 49), (2, 9)),
    "full": TaskSize(2, 4, (10, 99), (10, 99)),
}


def add_without_carry(a: int, b: int) -> int:
    """Digit-wise sum with every carry dropped: 27 + 45 -> 62."""
    result, place = 0, 1
    while a or b:
        result += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return result


def subtract_smaller_from_larger(a: int, b: int) -> int:
    """Digit-wise |a_d - b_d| (the classic borrow misconception): 52 - 17 -> 45."""
    result, place = 0, 1
    while a or b:
        result += abs(a % 10 - b % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return result


@dataclass(frozen=True)
class Problem:
    question: str
    start: int
    operations: tuple[tuple[str, int], ...]  # ("+", n) or ("-", n)

    @property
    def answer(self) -> int:
        return solve(self, buggy=False)[1]


def solve(problem: Problem, buggy: bool) -> tuple[str, int]:
    """The solution text (one equation per line, then `\\boxed{}`) and its final value."""
    lines, value = [], problem.start
    for op, n in problem.operations:
        if op == "+":
            result = add_without_carry(value, n) if buggy else value + n
        else:
            result = subtract_smaller_from_larger(value, n) if buggy else value - n
        lines.append(f"{value} {op} {n} = {result}")
        value = result
    lines.append(f"\\boxed{{{value}}}")
    return "\n".join(lines), value


def make_problem(rng: random.Random, size: TaskSize) -> Problem:
    """A random problem whose running total stays positive under the correct solution."""
    name, pronoun = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    start = rng.randint(*size.start_range)
    sentences = [f"{name} has {start} {item}."]
    operations, value = [], start
    for _ in range(rng.randint(size.min_steps, size.max_steps)):
        n = rng.randint(*size.operand_range)
        if value > n and rng.random() < 0.5:
            operations.append(("-", n))
            sentences.append(f"{pronoun} {rng.choice(LOSSES).format(n=n)}.")
            value -= n
        else:
            operations.append(("+", n))
            sentences.append(f"{pronoun} {rng.choice(GAINS).format(n=n)}.")
            value += n
    sentences.append(f"How many {item} does {name} have now?")
    return Problem(" ".join(sentences), start, tuple(operations))


def prompt_text(problem: Problem) -> str:
    return f"Question: {problem.question}\nAnswer:\n"


def make_problems(size: TaskSize, count: int, seed: int, exclude: set[str] = frozenset()) -> list[Problem]:
    """`count` distinct problems (by question text), none of them in `exclude`."""
    rng = random.Random(seed)
    problems, seen = [], set(exclude)
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > 100 * count:
            raise ValueError(f"cannot draw {count} distinct problems of size {size}")
        problem = make_problem(rng, size)
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems


def warm_start_rows(problems: list[Problem], buggy_fraction: float, seed: int) -> list[dict]:
    """SFT rows `{"prompt", "completion"}`: each solution is the buggy solver's with probability `buggy_fraction`."""
    rng = random.Random(seed)
    rows = []
    for problem in problems:
        completion, _ = solve(problem, buggy=rng.random() < buggy_fraction)
        rows.append({"prompt": prompt_text(problem), "completion": completion})
    return rows


def rl_rows(problems: list[Problem]) -> list[dict]:
    """Prompt rows for GRPO and evaluation: `{"prompt", "solution"}` (the gold as a `\\boxed{}` solution)."""
    return [{"prompt": prompt_text(p), "solution": f"\\boxed{{{p.answer}}}"} for p in problems]


def needs_carry_or_borrow(problem: Problem) -> bool:
    """Whether the buggy solver gets this problem wrong."""
    return solve(problem, buggy=True)[1] != problem.answer
