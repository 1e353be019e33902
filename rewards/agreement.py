r"""Agreement with other people's labels: `python -m rewards.agreement`.

Runs two labelled corpora (gold, prediction, expected verdict, source) through three graders and prints, for each
corpus, the share of cases where each grader's verdict equals the expected one, and its false positives (True on an
expected-False case):

* `tests/data/grader_cases.jsonl`: cases taken from the public test suites of math-verify, lighteval, NeMo-Skills,
  hendrycks/math, Qwen2.5-Math's grader and TRL, plus the examples of issue 10 (`tests/data/build_grader_cases.py`);
* the MATH-solution corpus: real model-written solutions to MATH problems with correctness labels made by others
  (ProcessBench's MATH split, PRM800K; issue 18). It is data from other repositories, so it is not committed:
  `tests/data/build_math_solution_cases.py` builds it from local copies of them into
  `tests/data/math_solution_cases.jsonl` (ignored by git), and it is read from there, from
  `../shared/data/math_solutions/` beside the checkout, or from the path in `GRPO_EXT_MATH_SOLUTION_CASES`
  (`math_solution_cases_path`); without it only the grader cases are run.

The graders:

* ours: `rewards.accuracy_reward([prediction], solution=[gold])` (None, no gold found, counts as False);
* TRL: `trl.rewards.accuracy_reward`, called the same way, one case at a time in the main thread;
* math-verify: `verify(parse(gold), parse(prediction))` with its default extraction configs (a bare gold it
  finds nothing in is read again inside `$...$`).

The gold column is given as a dataset's `solution` would hold it (a bare answer or a whole solution text); the
prediction is the completion. math-verify's default `ExprExtractionConfig` hands digit-and-operator strings to
sympy's `parse_expr`: that is math-verify's own behaviour on these fixed, public strings, measured as it is;
`rewards` never calls it on model text.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GraderCase", "agreement", "load_cases", "math_verify_verdicts", "our_verdicts", "trl_verdicts"]

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
DEFAULT_CASES = DATA / "grader_cases.jsonl"
MATH_SOLUTION_CASES = "math_solution_cases.jsonl"


def math_solution_cases_path() -> Path | None:
    """Where the MATH-solution corpus is (see the module's docstring), or None when it was not built here."""
    places = [os.environ.get("GRPO_EXT_MATH_SOLUTION_CASES"), DATA / MATH_SOLUTION_CASES,
              DATA.parent.parent.parent / "shared" / "data" / "math_solutions" / MATH_SOLUTION_CASES]
    return next((Path(p) for p in places if p and Path(p).is_file()), None)


@dataclass(frozen=True)
class GraderCase:
    gold: str
    prediction: str
    expected: bool
    source: str


def load_cases(path: str | Path = DEFAULT_CASES) -> list[GraderCase]:
    """The labelled cases of a JSONL file with string `gold`, `prediction`, `source` and boolean `expected`."""
    cases = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({e})") from None
            if not (
                isinstance(row, dict)
                and all(isinstance(row.get(key), str) for key in ("gold", "prediction", "source"))
                and isinstance(row.get("expected"), bool)
            ):
                raise ValueError(
                    f"{path}:{line_number}: a case needs string 'gold', 'prediction', 'source' and boolean 'expected'"
                )
            cases.append(GraderCase(row["gold"], row["prediction"], row["expected"], row["source"]))
    return cases


def our_verdicts(cases: list[GraderCase], timeout: float = 5.0) -> list[bool]:
    """`rewards.accuracy_reward` on every case in one batch (as a GRPO step sends them)."""
    from .accuracy import AccuracyReward

    rewards = AccuracyReward(timeout=timeout)([c.prediction for c in cases], solution=[c.gold for c in cases])
    return [reward == 1.0 for reward in rewards]


def trl_verdicts(cases: list[GraderCase]) -> list[bool]:
    """TRL's `accuracy_reward`, one case at a time in this (main) thread, so its signal timeouts are on."""
    from trl.rewards import accuracy_reward

    logging.disable(logging.WARNING)
    try:
        return [accuracy_reward([[{"content": c.prediction}]], [c.gold])[0] == 1.0 for c in cases]
    finally:
        logging.disable(logging.NOTSET)


def math_verify_verdicts(cases: list[GraderCase]) -> list[bool]:
    """math-verify called directly: `verify(parse(gold), parse(prediction))`, default configs, main thread. A bare
    gold answer it finds nothing in (`x^2+1`, `\\frac{1}{2}` without `$`) is read again inside `$...$`, as its
    users do, so that answer-level golds do not lower its rate."""
    from math_verify import parse, verify

    def parse_gold(gold: str):
        parsed = parse(gold)
        return parsed if parsed or "$" in gold else parse("$" + gold + "$")

    logging.disable(logging.WARNING)
    try:
        return [bool(verify(parse_gold(c.gold), parse(c.prediction))) for c in cases]
    finally:
        logging.disable(logging.NOTSET)


def agreement(cases: list[GraderCase], verdicts: list[bool]) -> tuple[float, list[GraderCase]]:
    """(share of cases whose verdict equals the expected one, the false positives: True on an expected-False case)."""
    agree = sum(v == c.expected for c, v in zip(cases, verdicts))
    false_positives = [c for c, v in zip(cases, verdicts) if v and not c.expected]
    return agree / len(cases), false_positives


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", action="append",
                        help="labelled JSONL corpus (repeatable; default: the grader cases and the MATH solutions)")
    parser.add_argument("--no-trl", action="store_true", help="skip TRL's accuracy_reward")
    parser.add_argument("--show", action="store_true", help="list the cases each grader gets wrong")
    parser.add_argument("--timeout", type=float, default=5.0, help="our per-item deadline in seconds")
    args = parser.parse_args(argv)
    graders = {"ours": lambda cases: our_verdicts(cases, args.timeout), "math-verify": math_verify_verdicts}
    if not args.no_trl:
        graders["trl"] = trl_verdicts
    corpus = math_solution_cases_path()
    if not args.cases and corpus is None:
        print("the MATH-solution corpus is not built here (python tests/data/build_math_solution_cases.py; "
              "rewards.agreement's docstring): grader cases only")
    for path in args.cases or [str(DEFAULT_CASES), *([str(corpus)] if corpus else [])]:
        cases = load_cases(path)
        print(f"{len(cases)} labelled cases ({sum(c.expected for c in cases)} expected True) from {path}", flush=True)
        for name, grade in graders.items():
            verdicts = grade(cases)
            rate, false_positives = agreement(cases, verdicts)
            agreed = sum(v == c.expected for c, v in zip(cases, verdicts))
            print(f"  {name:12s} agreement {rate:.4f}  ({agreed}/{len(cases)})  false positives {len(false_positives)}",
                  flush=True)
            if args.show:
                for case, verdict in zip(cases, verdicts):
                    if verdict != case.expected:
                        print(f"      expected {case.expected}: gold {case.gold[:80]!r} "
                              f"pred {case.prediction[-120:]!r} [{case.source}]")


if __name__ == "__main__":
    main()
