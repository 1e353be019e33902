r"""Prove two MATH answers *different* without sympy: tuples, intervals, unions, sets, matrices, `\pm` and
polynomial or rational expressions in one-letter variables and words.

`structurally_different(pred, gold)` is True only when math-verify (as the verification workers call it) is
certain to find the pair unequal, so that the pair need not travel to a worker:

* each answer is read into a *shape*: a matrix (`pmatrix`/`bmatrix`, entries by position), a union of
  intervals (`\cup`), a list (`(a, b)`, `[a, b)`, `\{a, b\}` or bare `a, b`; a two-entry list with round or
  square brackets may be an interval or a tuple, math-verify compares both by their entries), a scalar, or
  an *opaque* answer: a tuple, interval, set, matrix or union with `+ c` / `- c` after it (`(6,31,-1)+1`),
  which math-verify cannot parse (sympy does not add a number to a tuple) and compares as text, so never
  equal to a gold it parses; `a \pm b` is the two values `a + b`, `a - b`, as math-verify reads it;
* each entry is evaluated at two fixed sample points of its variables: exactly, as rationals, when the answer
  has no decimal and the entry no root, `\pi` or fractional power (math-verify compares such answers exactly),
  else with 50-digit `mpmath` arithmetic (magnitudes capped at 1e15, so no cancellation can reach the
  tolerance);
* two answers differ when some value of one is not equal (exact values) or farther than 1e-4 (relative, at
  least 1e-4 absolute; math-verify rounds floats to 6 decimals) from every value of the other, when two
  matrices differ in shape or in one entry, when two unions (merged into disjoint, non-touching intervals)
  differ in their number of intervals or in an endpoint, or when only one of them is a matrix, or a union
  against a finite set of values, or when one is opaque and the other is not and differs from it also under
  each reading a grader that did add the number could give (to every entry, endpoint or matrix entry, `M + cI`,
  to every interval of a union or to its last one). Equal values prove nothing: those pairs still go to
  math-verify. An answer math-verify may read in two ways has both readings, and the pair differs only when
  every reading of one differs from every reading of the other: a bare `10,\!080` (10080 alone, the list
  {10, 80} inside `10,\!080+1`), a value written before `(` (a product in `x(x-1)` and `(a+5)(b+2)`, a sum in
  `2(3)`, which is 5 there, and `(3)(4)`, 7).

Read as math-verify reads them: `x = a` and `x \in S` (one-letter `x`) are compared through `a` / `S`, and
two such answers only when they name the same letter and `a` does not mention it (math-verify compares
`x - a` with sides flipped and solves); a trailing `\text{unit}` / `\mbox{unit}` with an optional one-digit
power is dropped; `204_5` is 204, also inside an expression (`52_8+1` is 53); a multiple-choice `\text{(C)}` is
the symbol c; `\sin \cos \tan \cot \sec \csc` of a one-letter argument followed by an operator, a bracket
or the end (`\cot x + 1`) or of a bracketed argument (`\sin(2x)`) are those functions; upper-case letters other
than E and I are read in lower case (`3R^2` is `3r^2`); any other
`\text{...}` of letters is a symbol named by its letters in lower case (`\text{Evelyn}` is `evelyn`,
`864 \mbox{ inches}^2+1` is `864 inches^2 + 1`), except the words math-verify reads otherwise (`and`, `or`, `e`,
`i`, `pi`, `gamma`, `oo`, `nan`, `zoo`, anything with `inf`, `percent`, `pct` or `sqrt`), and a word is not
compared with a product of variables (math-verify equates `\text{ab}` with `a b`).

The reader refuses (returns no shape) whatever math-verify could read differently: `e`, `E`, `I` (Euler's
number, the imaginary unit there), runs of two or more letters outside `\text{}` (words, `and`/`or`, unit names,
concatenated symbols), a one-letter unit name (`o t h c l s g m d`) or a word at the end after a digit, brace or
space (math-verify strips a trailing unit: `2t` is 2, `5 m` is 5), `=` elsewhere, `<`, `_` other than a base,
`%`, `!`, `|`, every command but `\frac \dfrac \tfrac \sqrt \pi \cdot \times \infty \pm \cup \left \right
\begin \end`, the six trigonometric functions and spacing, a power of a function or of its one-letter argument
(`\sin^2 x`, `\sin x^2`), `\sin 2x`, an implicit product after `/` (`1/2x` is `1/(2x)` there), a number followed
by a fraction (the mixed number `3\frac{1}{2}`), chained or letter exponents, variables under a root or with a
fractional exponent, and more than 300 characters. It is a recursive-descent parser over a token list: nothing is
executed.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction
from functools import lru_cache

from .numeric import Refuse, TokenCursor

__all__ = ["answer_shape", "answer_shapes", "structurally_different"]

_MAX_CHARS = 300
_MAX_TOKENS = 200
_MAGNITUDE_CAP = 1e15
_TOLERANCE = 1e-4
_PRECISION_DIGITS = 50
_TINY = Fraction(1, 10**15)

_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+|\\\\|\\[a-zA-Z]+|\\[{}]|\\[,;:! ]|[-+*/^(){}\[\],&]|[a-zA-Z]+|\S")
_SPACING = {"\\,", "\\;", "\\:", "\\!", "\\ ", "\\quad", "\\qquad", "\\left", "\\right"}
_COMMANDS = {"\\frac", "\\dfrac", "\\tfrac", "\\sqrt", "\\pi", "\\cdot", "\\times", "\\infty", "\\pm", "\\cup",
             "\\begin", "\\end", "\\\\", "\\{", "\\}"} | _SPACING
_MATRIX_ENVS = ("pmatrix", "bmatrix")
# Trigonometric functions, read with a one-letter argument (`\cot x`) or a bracketed one (`\sin(2x)`).
_FUNCTIONS = ("\\sin", "\\cos", "\\tan", "\\cot", "\\sec", "\\csc")
_COMMANDS |= set(_FUNCTIONS)
# What may follow a function's one-letter argument (`\sin x y` or `\sin x^2` may be read as sin(xy), sin(x^2)).
_AFTER_ARGUMENT = {None, "+", "-", "*", "/", "\\cdot", "\\times", ",", ")", "}", "]", "&", "\\\\", "\\pm", "\\cup"}
# How a value written before `(` is read: math-verify multiplies `x(x-1)` but adds `2(3)` (5) and `(3)(4)` (7).
# An answer with such a juxtaposition is read both ways ("product", "sum"); "refuse" outside `_readings`.
_READING = threading.local()
# Characters math-verify reads in ways this reader does not follow (relations, subscripts, percent, ...).
_REFUSED_CHARS_RE = re.compile(r"[=<>_%|$'\";:~?@#]|(?<!\\)!|(?<![\\a-zA-Z])[eEI](?![a-zA-Z])")
# Other upper-case letters are read in lower case, as math-verify reads them (`3R^2` is `3r^2` there).
_UPPER_LETTER_RE = re.compile(r"(?<![\\a-zA-Z])[A-Z](?![a-zA-Z])")
_DECIMAL_RE = re.compile(r"\d?\.\d")
_LETTER_RUN_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")
_COMMAND_RE = re.compile(r"\\(?:begin|end)\{[a-z]+\}|\\[a-zA-Z]+")
# Outside brackets, `10,\!080` and `1,000` are numbers with a thousands separator to math-verify.
# math-verify's unit normalization strips a trailing word after a digit, brace or space (`2t` -> `2`).
# Its unit names include the single letters o t h c l s g m d (`5i` and `2k` keep their letter); a test holds
# this list to the installed latex2sympy2_extended.
_UNIT_LETTERS = "othclsgmd"
_TRAILING_LETTER_RE = re.compile(rf"(?:\d|\}}|\s)\s*(?:[a-zA-Z]{{2,}}|[{_UNIT_LETTERS}])\s*$", re.IGNORECASE)


_ASSIGNMENT_RE = re.compile(r"\s*([a-df-z])\s*(?:=|\\in(?![a-zA-Z]))\s*(?=\S)")
# math-verify drops a trailing `\text{unit}` / `\mbox{unit}` with a one-digit power (`15\mbox{ cm}^2` is 15)
# and reads a base subscript as the digits (`204_5` is 204).
_UNIT_TEXT_RE = re.compile(r"\\(?:text|mbox)\s*\{[^{}]*\}\s*(?:\^\s*\d|\^\s*\{\s*\d\s*\})?\s*$")
# A multiple-choice answer `\text{(C)}` is the symbol c to math-verify (E excepted: e is Euler's number).
_CHOICE_RE = re.compile(r"\s*\\text(?:bf)?\s*\{\s*\(?\s*([A-DF-HJ-Za-df-z])\s*\)?\s*\}\s*")
_BASE_SUBSCRIPT_RE = re.compile(r"\s*(\d+)\s*_\s*(?:\d+|\{\s*\d+\s*\})\s*")
_BASE_INLINE_RE = re.compile(r"(?<![\d.])(\d+)\s*_\s*(?:\d+|\{\s*\d+\s*\})")
# A `\text{...}` (`\mbox`, `\textbf`, `\mathrm`) group inside an answer: math-verify reads a word as a symbol.
_TEXT_GROUP_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mbox|mathrm)\s*\{([^{}]*)\}")
# Words math-verify does not read as a plain symbol: list separators, Euler's number and the imaginary unit,
# latex2sympy2_extended's constants (pi, gamma) and names whose printed form is a sympy constant's (oo, nan, zoo:
# math-verify compares symbols by their printed names).
_SPECIAL_WORDS = {"and", "or", "e", "i", "pi", "gamma", "oo", "nan", "zoo"}
# latex2sympy2_extended rewrites these inside words (`inf` -> \infty, `percent` -> %, ...).
_REWRITTEN_WORD_PARTS = ("inf", "percent", "pct", "sqrt")


@lru_cache(maxsize=1)
def _context():
    """A private mpmath context at 50 digits: mpmath's global `mp` is never touched (its precision is process
    state that another thread or sympy may be using)."""
    from mpmath.ctx_mp import MPContext

    context = MPContext()
    context.dps = _PRECISION_DIGITS
    return context


class _Inexact(Exception):
    """The exact (rational) evaluation met `\\sqrt`, `\\pi` or a fractional power: evaluate with mpmath instead."""


def _is_word(token: str) -> bool:
    return token.startswith("\\W")


def _sample_values(name: str, point: int, exact: bool = False):
    """The value of a variable (a letter, or a word `\\W...`) at sample point 0 or 1: distinct, unremarkable
    values in (1, 5), so that a nonzero polynomial of small degree vanishes at neither point. Exact rationals
    (for the exact evaluation) or 50-digit reals with an irrational part. Two words may share a value: that can
    only leave a pair undecided, never prove equal answers different."""
    if len(name) == 1:
        rank, scale = ord(name) - 96, 7
    else:  # a word: one of 1009 values in the same range
        rank, scale = sum(ord(c) * 31**k for k, c in enumerate(name[2:])) % 1009, 280
    if exact:
        return 1 + Fraction(rank, scale) + Fraction(point + 1, 13) * Fraction(99, 70)
    mpf = _context().mpf
    return 1 + mpf(rank) / scale + mpf(point + 1) / mpf(13) * mpf(2).sqrt()


class _Expression(TokenCursor):
    """Recursive-descent reader of one scalar entry; `value(point)` evaluates it at a sample point, as an exact
    `Fraction` when `exact` and the entry is rational (numbers, variables, + - * /, integer powers), else with
    50-digit mpmath (`\\sqrt`, `\\pi`, fractional powers)."""

    def __init__(self, tokens: list[str], exact: bool = False):
        self.tokens = tokens
        self.exact = exact

    def value(self, point: int):
        if self.exact:
            try:
                return self._evaluate(point, True)
            except _Inexact:
                pass
        return self._evaluate(point, False)

    def tiny(self):
        """Smaller divisors are refused (the quotient would pass the magnitude cap)."""
        return _TINY if self.in_exact else 1 / _MAGNITUDE_CAP

    def _evaluate(self, point: int, exact: bool):
        self.toks, self.i, self.point, self.letters, self.in_exact = list(self.tokens), 0, point, set(), exact
        result = self.expr()
        if self.i != len(self.toks):
            raise Refuse
        return result

    # grammar --------------------------------------------------------------------------------------------
    def expr(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            value = _capped(value + self.term() if self.take() == "+" else value - self.term())
        return value

    def term(self):
        value = self.unary()
        divided = False
        while True:
            token = self.peek()
            if token in ("*", "/", "\\cdot", "\\times"):
                self.take()
                right = self.unary()
                if token == "/":
                    if abs(right) < self.tiny():
                        raise Refuse
                    value, divided = value / right, True
                else:
                    value = value * right
            elif token == "(" and _juxtaposition() != "refuse":
                if divided:
                    raise Refuse
                right = self.power()
                value = value * right if _juxtaposition() == "product" else value + right
            elif token is not None and (
                token in ("\\frac", "\\sqrt", "\\pi") or token in _FUNCTIONS or token.isalpha() or _is_word(token)
            ):
                if divided:
                    raise Refuse  # `1/2x` is 1/(2x) in math-verify
                if token.startswith("\\") and token.endswith("frac") and self.toks[self.i - 1][0].isdigit():
                    raise Refuse  # `3\frac{1}{2}` is the mixed number 7/2
                value = value * self.power()
            else:
                return value
            value = _capped(value)

    def unary(self):
        if self.peek() in ("+", "-"):
            return -self.unary() if self.take() == "-" else self.unary()
        return self.power()

    def power(self):
        letters_before = len(self.letters)
        base = self.atom()
        if self.peek() != "^":
            return base
        base_has_letters = len(self.letters) > letters_before
        self.take()
        token = self.peek()
        if token == "{":
            exponent = self.group()
        elif token is not None and token.isdigit() and len(token) == 1:
            self.take()
            exponent = int(token)
        else:
            raise Refuse  # `2^10`, `2^-1`, `a^b` are read differently by different graders
        if self.peek() == "^" or abs(exponent) > 100:
            raise Refuse
        integral = exponent == int(exponent)
        if (base_has_letters and not integral) or (base < 0 and not integral) or (base == 0 and exponent <= 0):
            raise Refuse
        if not integral and self.in_exact:
            raise _Inexact
        return _capped(base ** (int(exponent) if integral else exponent))

    def group(self):
        self.take("{")
        value = self.expr()
        self.take("}")
        return value

    def argument(self):
        """A `\\frac`/`\\sqrt` argument: `{...}` or one digit (`\\frac12` is 1/2, as math-verify fixes it)."""
        if self.peek() == "{":
            return self.group()
        token = self.take()
        if not token.isdigit() or len(token) > 2:
            raise Refuse
        if len(token) == 2:
            self.toks.insert(self.i, token[1])
        return Fraction(int(token[0])) if self.in_exact else int(token[0])

    def atom(self):
        context = _context()
        mpf = context.mpf
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return _capped(Fraction(token) if self.in_exact else mpf(token))
        if (token.isalpha() and len(token) == 1) or _is_word(token):
            self.letters.add(token)
            return _sample_values(token, self.point, self.in_exact)
        if token == "\\pi":
            if self.in_exact:
                raise _Inexact
            return +context.pi
        if token in ("(", "{"):
            value = self.expr()
            self.take(")" if token == "(" else "}")
            if self.peek() == "(" and _juxtaposition() == "refuse":
                raise Refuse  # `(3)(4)` is 7 in math-verify
            return value
        if token in _FUNCTIONS:
            return self.function(token)
        if token in ("\\frac", "\\dfrac", "\\tfrac"):
            numerator = self.argument()
            denominator = self.argument()
            if abs(denominator) < self.tiny():
                raise Refuse
            return _capped(Fraction(numerator) / denominator if self.in_exact else numerator / denominator)
        if token == "\\sqrt":
            if self.in_exact:
                raise _Inexact
            index = 2
            if self.peek() == "[":
                self.take("[")
                index = self.expr()
                self.take("]")
                if index != int(index) or not 2 <= index <= 100:
                    raise Refuse
            letters_before = len(self.letters)
            radicand = self.argument()
            if radicand < 0 or len(self.letters) > letters_before:
                raise Refuse
            return radicand ** (mpf(1) / int(index))
        raise Refuse

    def function(self, name: str):
        """`\\sin x`, `\\cot(2x)`: a one-letter argument followed by an operator, a bracket or the end, or a
        bracketed argument; a power of the function or of a one-letter argument is refused (`\\sin^2 x`, `\\sin x^2`
        are read differently by different graders)."""
        if self.in_exact:
            raise _Inexact
        token = self.peek()
        if token in ("(", "{"):
            self.take()
            argument = self.expr()
            self.take(")" if token == "(" else "}")
        elif token is not None and token.isalpha() and len(token) == 1:
            argument = self.atom()
            if self.peek() not in _AFTER_ARGUMENT:
                raise Refuse
        else:
            raise Refuse
        if self.peek() in ("^", "("):
            raise Refuse
        context = _context()
        value = getattr(context, name[1:])(argument)
        return _capped(value)


def _juxtaposition() -> str:
    return getattr(_READING, "juxtaposition", "refuse")


def _capped(value):
    if not abs(value) <= _MAGNITUDE_CAP:
        raise Refuse
    return value


def _real(value):
    """`value` as a 50-digit real, an exact `Fraction` converted (the float infinities stay as they are)."""
    if isinstance(value, Fraction):
        return _context().mpf(value.numerator) / value.denominator
    return value


def _close(a, b) -> bool:
    """Whether math-verify might find the values `a` and `b` equal. Two exact values (`Fraction`s: answers without
    a decimal, which math-verify compares exactly) only when equal; otherwise within 1e-4 relative, at least 1e-4
    absolute (math-verify rounds a float to 6 decimals)."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    a, b = _real(a), _real(b)
    if a == b:  # infinities included
        return True
    if abs(a) == float("inf") or abs(b) == float("inf"):
        return False
    return abs(a - b) <= _TOLERANCE * max(1, abs(a), abs(b))


def _entry_values(tokens: list[str], exact: bool = False) -> list[tuple]:
    r"""The values of one entry at both sample points: one tuple, or two for `a \pm b`, or +-infinity; exact
    (`Fraction`s) where `exact` allows and the entry is rational."""
    if tokens in (["\\infty"], ["+", "\\infty"]):
        return [(float("inf"),) * 2]
    if tokens == ["-", "\\infty"]:
        return [(float("-inf"),) * 2]
    if "\\pm" in tokens:
        at = tokens.index("\\pm")
        left, right = _Expression(tokens[:at], exact), _Expression(tokens[at + 1 :], exact)
        if "\\pm" in tokens[at + 1 :] or not tokens[:at]:
            raise Refuse
        values = [(left.value(p), right.value(p)) for p in (0, 1)]
        if any(isinstance(a, Fraction) != isinstance(b, Fraction) for a, b in values):
            values = [(_real(a), _real(b)) for a, b in values]
        return [tuple(a + sign * b for a, b in values) for sign in (1, -1)]
    expression = _Expression(tokens, exact)
    return [tuple(expression.value(p) for p in (0, 1))]


def _split_top_level(tokens: list[str], separator: str) -> list[list[str]]:
    parts, depth, current = [], 0, []
    for token in tokens:
        if token in ("(", "[", "{", "\\{"):
            depth += 1
        elif token in (")", "]", "}", "\\}"):
            depth -= 1
            if depth < 0:
                raise Refuse
        if token == separator and depth == 0:
            parts.append(current)
            current = []
        else:
            current.append(token)
    if depth != 0:
        raise Refuse
    parts.append(current)
    if any(not part for part in parts):
        raise Refuse
    return parts


def _closing_index(tokens: list[str]) -> int:
    r"""Index of the token that closes the bracket (or the `\begin{...}`) opening `tokens`, or -1."""
    if tokens and tokens[0] == "\\begin":
        for k in range(len(tokens) - 3):
            if tokens[k] == "\\end" and tokens[k + 1] == "{" and tokens[k + 3] == "}":
                return k + 3
        return -1
    if not tokens or tokens[0] not in ("(", "[", "\\{"):
        return -1
    depth = 0
    for k, token in enumerate(tokens):
        if token in ("(", "[", "{", "\\{"):
            depth += 1
        elif token in (")", "]", "}", "\\}"):
            depth -= 1
            if depth == 0:
                return k
    return -1


def _enclosed(tokens: list[str]) -> bool:
    """True when the first token opens a bracket that the last token closes."""
    if len(tokens) < 2 or tokens[0] not in ("(", "[", "\\{") or tokens[-1] not in (")", "]", "\\}"):
        return False
    return _closing_index(tokens) == len(tokens) - 1


def _without_unit_or_base(answer: str) -> str:
    m = _BASE_SUBSCRIPT_RE.fullmatch(answer) or _CHOICE_RE.fullmatch(answer)
    if m:
        return m.group(1).lower()
    m = _UNIT_TEXT_RE.search(answer)
    if m and answer[: m.start()].strip() and not re.search(r"\\(?:text|mbox)", answer[: m.start()]):
        return answer[: m.start()]
    return answer


def _word(match: re.Match) -> str:
    r"""A `\text{...}` inside an answer as math-verify reads it: `\text{(C)}` the letter c, a word the symbol named
    by its letters in lower case (written `\W<letters>` for the tokenizer, `\text{Evelyn}` -> `\Wevelyn`).
    Refuses what math-verify rewrites (`and`/`or` separate a list; `inf`, `percent`, `pct`, `sqrt` are symbols
    there), e and i (Euler's number, the imaginary unit) and anything but letters and spaces."""
    content = match.group(1).strip()
    choice = re.fullmatch(r"\(\s*([A-Za-z])\s*\)", content)
    if choice:
        content = choice.group(1)
    if not re.fullmatch(r"[A-Za-z][A-Za-z ]*", content):
        raise Refuse
    key = content.replace(" ", "").lower()
    if key in _SPECIAL_WORDS or any(part in key for part in _REWRITTEN_WORD_PARTS):
        raise Refuse
    return f" {key} " if len(key) == 1 else f" \\W{key} "


def _tokens(answer: str) -> list[str]:
    answer = _without_unit_or_base(answer).replace("\\$", "").replace("$", "")  # math-verify drops dollar signs
    answer = _BASE_INLINE_RE.sub(r"\1", answer)  # `52_8 + 1` is 52 + 1 to math-verify
    answer = _TEXT_GROUP_RE.sub(_word, answer)
    if re.search(r"\\W[a-z]+\s*$", answer) and not re.fullmatch(r"\s*\\W[a-z]+\s*", answer):
        raise Refuse  # a word at the end after a value: a unit math-verify may strip
    if len(answer) > _MAX_CHARS or not answer.isascii() or _REFUSED_CHARS_RE.search(answer):
        raise Refuse
    if _LETTER_RUN_RE.search(_COMMAND_RE.sub(" ", answer)) or _TRAILING_LETTER_RE.search(answer):
        raise Refuse
    answer = _UPPER_LETTER_RE.sub(lambda m: m.group(0).lower(), answer)  # math-verify lower-cases them
    tokens = [t for t in _TOKEN_RE.findall(answer) if t not in _SPACING]
    if len(tokens) > _MAX_TOKENS or any(
        t.startswith("\\") and t not in _COMMANDS and not t.startswith("\\W") for t in tokens
    ):
        raise Refuse
    return tokens


def _matrix(tokens: list[str], exact: bool) -> tuple:
    env = tokens[1:4]
    if len(env) < 3 or env[0] != "{" or env[1] not in _MATRIX_ENVS or env[2] != "}":
        raise Refuse
    if tokens[-4:] != ["\\end", "{", env[1], "}"]:
        raise Refuse
    body = tokens[4:-4]
    rows = [_split_top_level(row, "&") for row in _split_top_level(body, "\\\\")]
    if len({len(row) for row in rows}) != 1:
        raise Refuse
    entries = [_entry_values(entry, exact) for row in rows for entry in row]
    if any(len(values) != 1 for values in entries):
        raise Refuse
    return ("matrix", (len(rows), len(rows[0])), [values[0] for values in entries])


def _interval(tokens: list[str], exact: bool) -> tuple:
    """(lower, upper, lower closed, upper closed) of a constant interval with lower < upper, written `(a, b)`,
    `[a, b)` and so on; the endpoints as 50-digit reals (intervals are compared within the tolerance)."""
    if not _enclosed(tokens) or tokens[0] == "\\{" or tokens[-1] == "\\}":
        raise Refuse
    ends = _split_top_level(tokens[1:-1], ",")
    if len(ends) != 2:
        raise Refuse
    (low,), (high,) = _entry_values(ends[0], exact), _entry_values(ends[1], exact)
    if not (_close(low[0], low[1]) and _close(high[0], high[1])):
        raise Refuse  # variables in an endpoint
    low, high = _real(low[0]), _real(high[0])
    if not low < high:
        raise Refuse  # an empty or one-point interval
    return (low, high, tokens[0] == "[", tokens[-1] == "]")


def _union(parts: list[list[str]], exact: bool) -> tuple:
    """The union of the intervals written in `parts` (see `_merge`)."""
    return _merge([_interval(part, exact) for part in parts])


def _merge(intervals: list[tuple]) -> tuple:
    """The union as disjoint, non-touching intervals in increasing order (overlapping or touching ones merged,
    as sympy does), so that two equal sets of reals have the same list. Endpoints that are close but not
    equal (rounding) are refused."""
    merged: list[tuple] = []
    for low, high, low_closed, high_closed in sorted(intervals, key=lambda iv: iv[0]):
        if merged:
            last_low, last_high, last_low_closed, last_high_closed = merged[-1]
            if (_close(low, last_high) and low != last_high) or (_close(low, last_low) and low != last_low):
                raise Refuse
            if low < last_high or (low == last_high and (last_high_closed or low_closed)):
                if _close(high, last_high) and high != last_high:
                    raise Refuse
                top = max(high, last_high)
                top_closed = (high == top and high_closed) or (last_high == top and last_high_closed)
                first_closed = last_low_closed or (low_closed and low == last_low)
                merged[-1] = (last_low, top, first_closed, top_closed)
                continue
        merged.append((low, high, low_closed, high_closed))
    return ("union", merged)


def _shape(tokens: list[str], exact: bool, bare_list: bool = True) -> tuple:
    """The shape of a token list (see `answer_shapes`); `bare_list=False` reads top-level commas as nothing
    (refused) rather than as a list."""
    if tokens[0] == "\\begin":
        return _matrix(tokens, exact)
    parts = _split_top_level(tokens, "\\cup")
    if len(parts) > 1:
        return _union(parts, exact)
    if _enclosed(tokens) and (tokens[0] == "\\{" or "," in _depth_one_tokens(tokens)):
        entries = _split_top_level(tokens[1:-1], ",")
        delimiters = tokens[0] + tokens[-1]
    else:
        entries = _split_top_level(tokens, ",")
        if len(entries) > 1 and not bare_list:
            raise Refuse
        delimiters = ""
    values = [value for entry in entries for value in _entry_values(entry, exact)]
    interval = None
    if delimiters in ("()", "[]", "(]", "[)") and len(entries) == 2:
        try:
            interval = _interval(tokens, exact)
        except Refuse:  # variables in an endpoint: a tuple only
            pass
    return ("list", delimiters, values, interval)


def _shifted(shape: tuple, constant: tuple) -> tuple:
    """`shape` with the constant `constant` (its values at the two sample points) added to every entry, every
    interval endpoint, every matrix entry."""
    kind, c = shape[0], _real(constant[0])
    if kind == "matrix":
        return ("matrix", shape[1], [tuple(_add(v, k) for v, k in zip(values, constant)) for values in shape[2]])
    if kind == "union":
        return ("union", [(lo + c, hi + c, a, b) for lo, hi, a, b in shape[1]])
    interval = shape[3]
    if interval is not None:
        lo, hi, a, b = interval
        interval = (lo + c, hi + c, a, b)
    return ("list", shape[1], [tuple(_add(v, k) for v, k in zip(values, constant)) for values in shape[2]], interval)


def _add(a, b):
    """`a + b` for exact and 50-digit values alike (an exact value meeting an inexact one becomes inexact)."""
    return a + b if isinstance(a, Fraction) == isinstance(b, Fraction) else _real(a) + _real(b)


def _opaque(tokens: list[str], exact: bool) -> tuple:
    """A tuple, interval, set, matrix or union followed by `+ c` / `- c` (`(6,31,-1)+1`): math-verify cannot add a
    number to those (sympy raises), keeps the text, and compares it with the gold's text only. The shape keeps the
    readings a grader that did add the number could give (to every entry, endpoint or matrix entry, `M + cI` for
    a square matrix; to every interval of a union, or to its last one), so that the pair is decided only when
    those differ from the gold too."""
    parts = _split_top_level(tokens, "\\cup")
    if len(parts) > 1:  # `(0,9) \cup (9,36)+1`
        *first, last = parts
        _, (shifted_last,), constant = _opaque(last, exact)
        intervals = [_interval(part, exact) for part in first]
        last_interval = _interval(last[: _closing_index(last) + 1], exact)
        readings = [_shifted(_merge(intervals + [last_interval]), constant), _merge(intervals + [shifted_last[3]])]
        return ("opaque", readings, constant)
    close = _closing_index(tokens)
    if close < 0:
        raise Refuse
    head, rest = tokens[: close + 1], tokens[close + 1 :]
    if len(rest) < 2 or rest[0] not in ("+", "-"):
        raise Refuse
    if not (head[0] == "\\begin" or head[0] == "\\{" or "," in _depth_one_tokens(head)):
        raise Refuse  # `(1+2)+1`: parentheses around a number
    structure = _shape(head, exact)
    (constant,) = _entry_values(rest, exact)  # `- 1 + 2` is +1
    if not _close(constant[0], constant[1]):
        raise Refuse  # a variable in the added term
    readings = [_shifted(structure, constant)]
    if structure[0] == "matrix" and structure[1][0] == structure[1][1]:  # M + c may be M + cI
        n = structure[1][0]
        readings.append(("matrix", structure[1], [
            tuple(_add(v, c) for v, c in zip(values, constant)) if k % (n + 1) == 0 else values
            for k, values in enumerate(structure[2])]))
    return ("opaque", readings, constant)


def _joined_thousands(tokens: list[str]) -> list[str] | None:
    """`tokens` with each top-level comma between digits and a group of three digits read as a thousands
    separator (`11,\\! 111,\\! 100` -> 11111100), or None when there is none."""
    out: list[str] = []
    depth, joined = 0, False
    for k, token in enumerate(tokens):
        if token in ("(", "[", "{", "\\{"):
            depth += 1
        elif token in (")", "]", "}", "\\}"):
            depth -= 1
        if (
            depth == 0 and out and k + 1 < len(tokens) and out[-1].isdigit()
            and (token == "," and tokens[k + 1].isdigit() and len(tokens[k + 1]) == 3)
        ):
            joined = True
            continue
        if joined and out and out[-1].isdigit() and token.isdigit() and len(token) == 3 and tokens[k - 1] == ",":
            out[-1] += token
            continue
        out.append(token)
    return out if joined else None


def _juxtaposed(tokens: list[str]) -> bool:
    """Whether a value is written right before `(` (`x(x-1)`, `2(3)`, `(a+5)(b+2)`)."""
    return any(
        token == "(" and k > 0 and (before[0].isalnum() or before in (")", "}", "\\pi") or _is_word(before))
        for k, (before, token) in enumerate(zip([""] + tokens, tokens))
    )


def _readings(answer: str) -> list[tuple]:
    tokens = _tokens(answer)
    if not tokens:
        raise Refuse
    if not _juxtaposed(tokens):
        return _readings_of(answer, tokens)
    shapes = []
    try:
        for mode in ("product", "sum"):
            _READING.juxtaposition = mode
            shapes += _readings_of(answer, tokens)
    finally:
        _READING.juxtaposition = "refuse"
    return shapes


def _readings_of(answer: str, tokens: list[str]) -> list[tuple]:
    exact = not _DECIMAL_RE.search(answer)
    joined = _joined_thousands(tokens)
    if joined is not None:
        # Bare `10,\!080` is 10080 to math-verify, `10,\!080+1` the list {10, 81}: both readings.
        return [_shape(joined, exact, bare_list=False), _shape(tokens, exact)]
    try:
        return [_shape(tokens, exact)]
    except Refuse:
        return [_opaque(tokens, exact)]


@lru_cache(maxsize=8192)
def answer_shapes(answer: str) -> tuple[tuple, ...]:
    """The shapes of `answer` as this module compares it: one, or two when math-verify may read it either way
    (a bare thousands separator); () when it refuses the answer."""
    try:
        return tuple(_readings(answer))
    except (Refuse, ValueError, ZeroDivisionError, OverflowError, RecursionError, TypeError):
        return ()


def answer_shape(answer: str) -> tuple | None:
    """The shape of `answer` when it has one reading, else None."""
    shapes = answer_shapes(answer)
    return shapes[0] if len(shapes) == 1 else None


def _depth_one_tokens(tokens: list[str]) -> list[str]:
    depth, out = 0, []
    for token in tokens:
        if token in (")", "]", "}", "\\}"):
            depth -= 1
        if depth == 1:
            out.append(token)
        if token in ("(", "[", "{", "\\{"):
            depth += 1
    return out


def _some_value_unmatched(values: list[tuple], others: list[tuple]) -> bool:
    return any(not any(all(_close(a, b) for a, b in zip(v, w)) for w in others) for v in values)


def _interval_of(shape: tuple) -> list | None:
    if shape[0] == "union":
        return shape[1]
    if shape[0] == "list" and shape[3] is not None:
        return [shape[3]]
    return None


def _assignment(answer: str) -> tuple[str | None, str]:
    r"""(`x`, `rest`) for `x = rest` or `x \in rest` with a one-letter `x` (math-verify compares `rest` with
    an answer that is not an equation), else (None, `answer`)."""
    m = _ASSIGNMENT_RE.match(answer)
    return (m.group(1), answer[m.end() :]) if m else (None, answer)


def _mentions(answer: str, letter: str) -> bool:
    return re.search(rf"(?<![\\a-zA-Z]){letter}(?![a-zA-Z])", answer) is not None


def _shapes_differ(a: tuple, b: tuple) -> bool:
    """Whether two shapes differ for math-verify (see the module docstring)."""
    if a[0] == "opaque" or b[0] == "opaque":
        if a[0] == b[0]:
            return False  # two texts: math-verify compares the strings; not decided here
        opaque, other = (a, b) if a[0] == "opaque" else (b, a)
        return all(reading is not None and _shapes_differ(reading, other) for reading in opaque[1])
    if a[0] == "matrix" or b[0] == "matrix":
        if a[0] != b[0]:
            return True  # math-verify never equates a matrix with a number, a set, a tuple or an interval
        return a[1] != b[1] or any(not all(_close(x, y) for x, y in zip(u, v)) for u, v in zip(a[2], b[2]))
    if a[0] == "union" or b[0] == "union":
        ia, ib = _interval_of(a), _interval_of(b)
        if ia is None or ib is None:
            return True  # a union of intervals is not a finite set of values
        return len(ia) != len(ib) or any(
            not (_close(x[0], y[0]) and _close(x[1], y[1])) for x, y in zip(ia, ib)
        )
    return _some_value_unmatched(a[2], b[2]) or _some_value_unmatched(b[2], a[2])


def structurally_different(pred: str, gold: str) -> bool:
    r"""True when math-verify cannot find `pred` and `gold` equal (see the module docstring), e.g.
    `(6,31,-2)` vs `(6,31,-1)`, `(3,5]` vs `(3,4]`, `x^3+3x-8` vs `x^3+3x-6`; False when undecided."""
    pred_letter, pred = _assignment(pred)
    gold_letter, gold = _assignment(gold)
    if pred_letter and gold_letter and (
        pred_letter != gold_letter or _mentions(pred, pred_letter) or _mentions(gold, gold_letter)
    ):
        return False  # `x = 2x - 1` equals `x = 1` to math-verify (it compares x - rhs and flips sides)
    if _word_against_product(pred, gold) or _word_against_product(gold, pred):
        return False
    a, b = answer_shapes(pred), answer_shapes(gold)
    if not a or not b:
        return False
    return all(_shapes_differ(x, y) for x in a for y in b)


def _word_against_product(answer: str, other: str) -> bool:
    r"""Whether `answer` is one word (`	ext{ab}`) and `other` a product of variables only (`a b`, `a \cdot b`):
    math-verify equates a symbol with a product of symbols whose names, joined, spell it."""
    try:
        tokens, other_tokens = _tokens(answer), _tokens(other)
    except (Refuse, ValueError):
        return False
    factors = [t for t in other_tokens if _is_word(t) or (t.isalpha() and len(t) == 1)]
    return (
        len(tokens) == 1 and _is_word(tokens[0]) and len(factors) > 1
        and all(t in factors or t in ("*", "\\cdot", "\\times") for t in other_tokens)
    )
