r"""A small evaluator of closed-form real LaTeX constants, used only to prove two answers *different*.

`numeric_value("3\sqrt{13}")` -> 10.816653826391969, `numeric_value(r"\frac{\pi}{6}")` -> 0.5235987755982988.
It reads numbers, `+ - * / ^`, `\cdot`, `\times`, `\frac{}{}`, `\sqrt{}`, `\sqrt[n]{}`, `\pi`, parentheses,
braces and implicit products (`2\pi`, `3\sqrt{5}`), and returns None on anything else (variables, `i`,
`\pm`, `=`, commas, text, percentages, subscripts such as `204_5`, a digit followed by `\frac`, which may be a
mixed number, a value written before `(` or `{`, which math-verify reads as a sum or a product (`2(3)` is 5 there,
`2(1+3)` is 8), and any float overflow). It is a recursive-descent parser over a token list: nothing is
executed.

Used as a fast negative in `equivalence.fast_verdict`: when both answers evaluate and differ by more than
1e-4 relative, math-verify (which rounds to 6 decimals) cannot find them equal, so the pair never reaches
sympy. Equal values are not taken as proof of equality: those pairs still go to math-verify.
"""

from __future__ import annotations

import math
import re

__all__ = ["numeric_value", "clearly_different"]

_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+|\\[a-zA-Z]+|[-+*/^(){}\[\]]|\S")
_MAX_TOKENS = 200
_COMMANDS_AS_TIMES = {"\\cdot", "\\times"}


class Refuse(Exception):
    """A token this package's readers do not accept: the reader answers "don't know" (None)."""


class TokenCursor:
    """`peek` and `take` over the token list `toks` from position `i`; a missing or unexpected token refuses."""

    toks: list[str]
    i: int

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise Refuse
        self.i += 1
        return token


class _Parser(TokenCursor):
    def __init__(self, tokens: list[str]):
        self.toks = tokens
        self.i = 0

    def expr(self) -> float:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> float:
        value = self.unary()
        while True:
            token = self.peek()
            if token in ("*", "/") or token in _COMMANDS_AS_TIMES:
                self.take()
                right = self.unary()
                if token == "/":
                    if right == 0:
                        raise Refuse
                    value /= right
                else:
                    value *= right
            elif token is not None and (token in ("\\frac", "\\sqrt", "\\pi") or token[0].isdigit()):
                if token == "\\frac" and self.toks[self.i - 1][0].isdigit():
                    raise Refuse  # 1\frac{4}{5} may be a mixed number
                if token[0].isdigit():
                    raise Refuse  # "2 3" is not a product
                value *= self.power()  # implicit product: 2\pi, 3\sqrt{5}
            elif token in ("(", "{"):
                raise Refuse  # math-verify reads 2(3) and 2{3} as 5, (3)(4) as 7, but 2(1+3) as 8
            else:
                return value

    def unary(self) -> float:
        if self.peek() in ("+", "-"):
            sign = -1.0 if self.take() == "-" else 1.0
            return sign * self.unary()
        return self.power()

    def power(self) -> float:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            # Only `^{...}` or a single digit: `2^10` and `2^-1` are ambiguous in LaTeX.
            token = self.peek()
            if token != "{" and not (token is not None and token.isdigit() and len(token) == 1):
                raise Refuse
            exponent = self.atom()
            if abs(exponent) > 1000 or (base < 0 and exponent != int(exponent)) or (base == 0 and exponent < 0):
                raise Refuse
            return base**exponent
        return base

    def group(self) -> float:
        self.take("{")
        value = self.expr()
        self.take("}")
        return value

    def atom(self) -> float:
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return float(token)
        if token == "\\pi":
            return math.pi
        if token == "(":
            value = self.expr()
            self.take(")")
            return value
        if token == "{":
            value = self.expr()
            self.take("}")
            return value
        if token == "\\frac":
            numerator = self.group() if self.peek() == "{" else self.single_digit()
            denominator = self.group() if self.peek() == "{" else self.single_digit()
            if denominator == 0:
                raise Refuse
            return numerator / denominator
        if token == "\\sqrt":
            index = 2.0
            if self.peek() == "[":
                self.take("[")
                index = self.expr()
                self.take("]")
                if index != int(index) or index < 2:
                    raise Refuse
            radicand = self.group() if self.peek() == "{" else self.single_digit()
            if radicand < 0:
                raise Refuse
            return radicand ** (1.0 / index)
        raise Refuse

    def single_digit(self) -> float:
        token = self.take()
        if not token.isdigit():
            raise Refuse
        if len(token) > 1:  # \frac12: the tokenizer read "12"; LaTeX takes one digit per argument
            if len(token) != 2:
                raise Refuse
            self.toks.insert(self.i, token[1])
            token = token[0]
        return float(token)


def numeric_value(normalized: str) -> float | None:
    """Value of a closed-form real constant written in (normalized) LaTeX, or None when it is not one."""
    if not normalized or len(normalized) > 300:
        return None
    tokens = _TOKEN_RE.findall(normalized)
    if len(tokens) > _MAX_TOKENS:
        return None
    parser = _Parser(tokens)
    try:
        value = parser.expr()
        if parser.peek() is not None:
            return None
    except (Refuse, OverflowError, ZeroDivisionError, ValueError, RecursionError):
        return None
    return value if isinstance(value, float) and math.isfinite(value) else None


def clearly_different(pred_normalized: str, gold_normalized: str) -> bool:
    """True when both are closed-form real constants whose values differ by more than 1e-4 relative."""
    a = numeric_value(pred_normalized)
    if a is None:
        return False
    b = numeric_value(gold_normalized)
    if b is None:
        return False
    return abs(a - b) > 1e-4 * max(1.0, abs(a), abs(b))
