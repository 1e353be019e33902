"""rewards.arithmetic: exact equation checking and the rule-based step reward, on hand-worked examples."""

import time
from fractions import Fraction

import pytest

from rewards.arithmetic import ArithmeticStepChecker, check_equations, evaluate_expression


@pytest.mark.parametrize(
    "text, value",
    [
        ("23 + 45", 68),
        ("2 + 3 * 4", 14),  # precedence
        ("(2 + 3) * 4", 20),
        ("10 - 4 - 3", 3),  # left associative
        ("48 / 2 / 3", 8),
        ("7 / 2", Fraction(7, 2)),
        ("-3 + 5", 2),
        ("2 * -3", -6),
        ("3 x 4", 12),
        ("3 × 4 ÷ 6", 2),
        ("1,234 + 6", 1240),
        ("$12 + $3", 15),
        ("0.1 + 0.2", Fraction(3, 10)),  # exact, not floating point
    ],
)
def test_evaluate_expression(text, value):
    assert evaluate_expression(text) == value


@pytest.mark.parametrize("text", ["", "x", "2 +", "(2 + 3", "2 3", "2 ** 3", "__import__('os')", "1e9"])
def test_not_an_expression(text):
    with pytest.raises(ValueError):
        evaluate_expression(text)


def test_division_by_zero_raises():
    with pytest.raises(ZeroDivisionError):
        evaluate_expression("5 / (3 - 3)")


@pytest.mark.parametrize(
    "text, verdicts",
    [
        ("23 + 45 = 68", [True]),
        ("23 + 45 = 58", [False]),
        ("27 + 45 = 62", [False]),  # a dropped carry
        ("3 - 5 = -2", [True]),
        ("3 - 5 = 2", [False]),
        ("She sold 48/2 = <<48/2=24>>24 clips.", [True]),  # GSM8K calculator annotation
        ("48/2 = 24 and 24 + 48 = 72.", [True, True]),
        ("48/2 = 24 and 24 + 48 = 71.", [True, False]),
        ("2 + 2 = 4 = 2 * 2", [True]),
        ("2 + 2 = 5 * 1", [False]),
        ("6 * 7 = 40 + 2 = 42", [True]),
        ("2 + 2 = 3 + 1 = 5", [False]),
        ("10 / 3 = 3.33", [True]),  # up to the decimal places written
        ("10 / 3 = 3.3", [True]),
        ("10 / 3 = 3.4", [False]),
        ("10 / 3 = 3", [False]),
        ("1 / 0 = 1", [False]),
        ("$1,200 + $300 = $1,500.", [True]),
        ("x = 5", []),
        ("the box = 5 items", []),
        ("no arithmetic here", []),
        ("\\boxed{68}", []),
    ],
)
def test_check_equations(text, verdicts):
    assert check_equations(text) == verdicts


def test_step_checker_scores_each_step():
    checker = ArithmeticStepChecker()
    steps = [["23 + 45 = 68", "68 - 12 = 56", "\\boxed{56}"], ["23 + 45 = 58", "58 - 12 = 46", "\\boxed{46}"], []]
    assert checker(["p1", "p2", "p3"], steps) == [[1.0, 1.0, None], [0.0, 1.0, None], []]
    assert ArithmeticStepChecker(correct=2.0, wrong=-1.0, no_equation=0.5)(None, [["1 + 1 = 3", "hi"]]) == [[-1.0, 0.5]]


def test_hostile_input_is_bounded():
    huge = "9" * 41 + " + 1 = 1"
    assert check_equations(huge) == []  # over the digit bound: not an equation, no giant arithmetic
    nested = "(" * 500 + "1" + ")" * 500 + " = 1"
    long_sum = " + ".join(["999999"] * 5000) + " = 1"
    start = time.perf_counter()
    assert check_equations(nested) == []
    assert check_equations(long_sum) == []
    assert time.perf_counter() - start < 1.0
