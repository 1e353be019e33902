r"""Exact checking of the arithmetic a solution writes down: "23 + 45 = 68", "3 x 4 = 12", GSM8K's "<<48/2=24>>".

A rule-based process reward: `ArithmeticStepChecker` scores each reasoning step 1 when every equation in it holds,
0 when one does not, and leaves a step without an equation unscored (None). Equations are parsed by a small
recursive-descent grammar over `fractions.Fraction` (numbers, + - * / x ÷, parentheses, unary minus) and never
evaluated as code; operand length and expression size are bounded, and there is no power operator, so a model
cannot make the check slow.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

MAX_DIGITS = 40  # digits per number
MAX_TOKENS = 200  # tokens per side of an equation

# A run of characters that can only be arithmetic; equations are found inside such runs.
_ARITHMETIC_RUN = re.compile(r"[0-9.,+\-*/×x÷()=$ \t]+")
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+")
_TOKEN = re.compile(r"\s*(?:(?P<number>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)|(?P<op>[-+*/×x÷()]))")
_OPERATORS = {"×": "*", "x": "*", "÷": "/"}


class _ParseError(ValueError):
    pass


def _tokenize(text: str) -> list[str]:
    text = text.replace("$", "").strip()
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position:].strip() == "":
                break
            raise _ParseError(text)
        number = match.group("number")
        if number is not None:
            if sum(ch.isdigit() for ch in number) > MAX_DIGITS:
                raise _ParseError("number too long")
            tokens.append(number.replace(",", ""))
        else:
            tokens.append(_OPERATORS.get(match.group("op"), match.group("op")))
        position = match.end()
        if len(tokens) > MAX_TOKENS:
            raise _ParseError("expression too long")
    if not tokens:
        raise _ParseError("empty")
    return tokens


def evaluate_expression(text: str) -> Fraction:
    """The exact value of an arithmetic expression (numbers, `+ - * / x × ÷`, parentheses, unary minus).

    Raises `ValueError` when `text` is not such an expression (or exceeds the size bounds) and
    `ZeroDivisionError` on division by zero. Grammar: expr := term (('+'|'-') term)*; term := factor (('*'|'/')
    factor)*; factor := '-' factor | number | '(' expr ')'.
    """
    tokens = _tokenize(text)
    position = 0

    def peek():
        return tokens[position] if position < len(tokens) else None

    def take():
        nonlocal position
        position += 1
        return tokens[position - 1]

    def expr(depth):
        value = term(depth)
        while peek() in ("+", "-"):
            value = value + term(depth) if take() == "+" else value - term(depth)
        return value

    def term(depth):
        value = factor(depth)
        while peek() in ("*", "/"):
            if take() == "*":
                value = value * factor(depth)
            else:
                value = value / factor(depth)
        return value

    def factor(depth):
        if depth > 20:
            raise _ParseError("nested too deep")
        token = peek()
        if token == "-":
            take()
            return -factor(depth + 1)
        if token == "(":
            take()
            value = expr(depth + 1)
            if peek() != ")":
                raise _ParseError("unbalanced parenthesis")
            take()
            return value
        if token is None or not (token[0].isdigit() or token[0] == "."):
            raise _ParseError(f"expected a number, got {token!r}")
        return Fraction(take())

    value = expr(0)
    if position != len(tokens):
        raise _ParseError(f"unexpected {tokens[position]!r}")
    return value


def _equal_as_written(value: Fraction, written: str) -> bool:
    """`value` equals the number `written`, up to the decimal places written (10/3 = 3.33 holds, 10/3 = 3.3 holds,
    10/3 = 3 does not)."""
    written = written.replace(",", "").replace("$", "").replace(" ", "")
    target = Fraction(written)
    if "." not in written:
        return value == target
    places = len(written.split(".")[1])
    return abs(value - target) <= Fraction(1, 2 * 10**places)


def check_equations(text: str) -> list[bool]:
    """Verdicts, in order, for the equations written in `text`.

    An equation is `a = b [= c ...]` inside a run of arithmetic characters, with an expression on every side; it
    holds when every side has the rightmost side's value (up to its decimal places when it is a written number). Runs that do not parse as equations (`x = 5`, a lone `=`) are not equations and give no verdict; a
    division by zero is a false equation.
    """
    verdicts = []
    for run in _ARITHMETIC_RUN.finditer(text):
        chunk = run.group().strip(" \t.,")
        if "=" not in chunk:
            continue
        sides = [side.strip(" \t,") for side in chunk.split("=")]
        if len(sides) < 2 or not all(sides):
            continue
        try:
            values = [evaluate_expression(side) for side in sides]
        except ZeroDivisionError:
            verdicts.append(False)
            continue
        except ValueError:
            continue
        rightmost = sides[-1].replace("$", "").strip().removeprefix("-").strip()
        if _NUMBER.fullmatch(rightmost):  # a written number: equal up to its decimal places
            verdicts.append(all(_equal_as_written(value, sides[-1]) for value in values[:-1]))
        else:
            verdicts.append(all(value == values[-1] for value in values[:-1]))
    return verdicts


class ArithmeticStepChecker:
    """Process reward from exact arithmetic: `checker(prompts, steps) -> list[list[float | None]]`.

    The shape `grpo_ext.GRPOTrainer(process_reward_model=...)` takes: step j of completion i scores `correct` when
    every equation in it holds, `wrong` when any does not, and `no_equation` (None: unscored) when it has none.
    """

    def __init__(self, correct: float = 1.0, wrong: float = 0.0, no_equation: float | None = None):
        self.correct, self.wrong, self.no_equation = correct, wrong, no_equation

    def score_step(self, step: str) -> float | None:
        verdicts = check_equations(step)
        if not verdicts:
            return self.no_equation
        return self.correct if all(verdicts) else self.wrong

    def __call__(self, prompts: Sequence, steps: Sequence[Sequence[str]]) -> list[list[float | None]]:
        return [[self.score_step(step) for step in completion_steps] for completion_steps in steps]
