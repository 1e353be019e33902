r"""Prove two MATH answers *different* without sympy: tuples, intervals, unions, sets, matrices, `\pm` and
polynomial or rational expressions in one-letter variables.

`structurally_different(pred, gold)` is True only when math-verify (as the verification workers call it) is
certain to find the pair unequal, so that the pair need not travel to a worker:

* each answer is read into a *shape*: a matrix (`pmatrix`/`bmatrix`, entries by position), a union of
  intervals (`\cup`), a list (`(a, b)`, `[a, b)`, `\{a, b\}` or bare `a, b`; a two-entry list with round or
  square brackets may be an interval or a tuple, math-verify compares both by their entries), or a scalar;
  `a \pm b` is the two values `a + b`, `a - b`, as math-verify reads it;
* each entry is evaluated at two fixed sample points of its variables, with 50-digit `mpmath` arithmetic
  (magnitudes capped at 1e15, so no cancellation can reach the tolerance);
* two answers differ when some value of one is farther than 1e-4 (relative, at least 1e-4 absolute) from
  every value of the other (math-verify rounds to 6 decimals, so such values never compare equal), when two
  matrices differ in shape or in one entry, when two unions (merged into disjoint, non-touching intervals)
  differ in their number of intervals or in an endpoint, or when only one of them is a matrix, or a union
  against a finite set of values. Equal values prove nothing: those pairs still go to math-verify.

Read as math-verify reads them: `x = a` and `x \in S` (one-letter `x`) are compared through `a` / `S`, and
two such answers only when they name the same letter and `a` does not mention it (math-verify compares
`x - a` with sides flipped and solves); a trailing `\text{unit}` / `\mbox{unit}` with an optional one-digit
power is dropped; `204_5` is 204; a multiple-choice `\text{(C)}` is the symbol c.

The reader refuses (returns no shape) whatever math-verify could read differently: `e`/`E` (Euler's number
there), upper-case letters (math-verify lower-cases some), runs of two or more letters (words, `and`/`or`,
unit names, concatenated symbols), a one-letter unit name (`o t h c l s g m d`) at the end after a digit,
brace or space (math-verify strips a trailing unit: `2t` is 2, `5 m` is 5), `=` elsewhere, `<`, `_`, `%`, `!`,
`|`, `$`, any other `\text{}` and every command but `\frac \dfrac \tfrac \sqrt \pi \cdot \times \infty \pm
\cup \left \right \begin \end` and spacing, an implicit product with `(` (math-verify reads `2(3)` as 5), an
implicit product after `/` (`1/2x` is `1/(2x)` there), a number followed by a fraction (the mixed number
`3\frac{1}{2}`), a bare `12,102` (a thousands separator there), chained or letter exponents, variables under a
root or with a fractional exponent, and more than 300 characters. It is a recursive-descent parser over a
token list: nothing is executed.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .numeric import Refuse, TokenCursor

__all__ = ["answer_shape", "structurally_different"]

_MAX_CHARS = 300
_MAX_TOKENS = 200
_MAGNITUDE_CAP = 1e15
_TOLERANCE = 1e-4
_PRECISION_DIGITS = 50

_TOKEN_RE = re.compile(r"\d+(?:\.\d+)?|\.\d+|\\\\|\\[a-zA-Z]+|\\[{}]|\\[,;:! ]|[-+*/^(){}\[\],&]|[a-zA-Z]+|\S")
_SPACING = {"\\,", "\\;", "\\:", "\\!", "\\ ", "\\quad", "\\qquad", "\\left", "\\right"}
_COMMANDS = {"\\frac", "\\dfrac", "\\tfrac", "\\sqrt", "\\pi", "\\cdot", "\\times", "\\infty", "\\pm", "\\cup",
             "\\begin", "\\end", "\\\\", "\\{", "\\}"} | _SPACING
_MATRIX_ENVS = ("pmatrix", "bmatrix")
# Characters math-verify reads in ways this reader does not follow (relations, subscripts, percent, ...).
_REFUSED_CHARS_RE = re.compile(r"[=<>_%!|$'\";:~?@#]|[A-Z]|(?<![\\a-zA-Z])e(?![a-zA-Z])")
_LETTER_RUN_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")
_COMMAND_RE = re.compile(r"\\(?:begin|end)\{[a-z]+\}|\\[a-zA-Z]+")
# Outside brackets, `10,\!080` and `1,000` are numbers with a thousands separator to math-verify.
_THOUSANDS_RE = re.compile(r"\d\s*,(?:\\!|\s)*\d{3}(?!\d)")
# math-verify's unit normalization strips a trailing word after a digit, brace or space (`2t` -> `2`).
# Its unit names include the single letters o t h c l s g m d (`5i` and `2k` keep their letter); a test holds
# this list to the installed latex2sympy2_extended.
_UNIT_LETTERS = "othclsgmd"
_TRAILING_LETTER_RE = re.compile(rf"(?:\d|\}}|\s)\s*(?:[a-zA-Z]{{2,}}|[{_UNIT_LETTERS}])\s*$")


_ASSIGNMENT_RE = re.compile(r"\s*([a-df-z])\s*(?:=|\\in(?![a-zA-Z]))\s*(?=\S)")
# math-verify drops a trailing `\text{unit}` / `\mbox{unit}` with a one-digit power (`15\mbox{ cm}^2` is 15)
# and reads a base subscript as the digits (`204_5` is 204).
_UNIT_TEXT_RE = re.compile(r"\\(?:text|mbox)\s*\{[^{}]*\}\s*(?:\^\s*\d|\^\s*\{\s*\d\s*\})?\s*$")
# A multiple-choice answer `\text{(C)}` is the symbol c to math-verify (E excepted: e is Euler's number).
_CHOICE_RE = re.compile(r"\s*\\text(?:bf)?\s*\{\s*\(?\s*([A-DF-Za-df-z])\s*\)?\s*\}\s*")
_BASE_SUBSCRIPT_RE = re.compile(r"\s*(\d+)\s*_\s*(?:\d+|\{\s*\d+\s*\})\s*")


@lru_cache(maxsize=1)
def _context():
    """A private mpmath context at 50 digits: mpmath's global `mp` is never touched (its precision is process
    state that another thread or sympy may be using)."""
    from mpmath.ctx_mp import MPContext

    context = MPContext()
    context.dps = _PRECISION_DIGITS
    return context


def _sample_values(letter: str, point: int):
    mpf = _context().mpf
    # Distinct, unremarkable values in (1, 5): a nonzero polynomial of small degree vanishes at neither point.
    return 1 + mpf(ord(letter) - 96) / 7 + mpf(point + 1) / mpf(13) * mpf(2).sqrt()


class _Expression(TokenCursor):
    """Recursive-descent reader of one scalar entry; `value(point)` evaluates it at a sample point."""

    def __init__(self, tokens: list[str]):
        self.tokens = tokens

    def value(self, point: int):
        self.toks, self.i, self.point, self.letters = list(self.tokens), 0, point, set()
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
                    if abs(right) < 1 / _MAGNITUDE_CAP:
                        raise Refuse
                    value, divided = value / right, True
                else:
                    value = value * right
            elif token is not None and (token in ("\\frac", "\\sqrt", "\\pi") or token.isalpha()):
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
        return int(token[0])

    def atom(self):
        context = _context()
        mpf = context.mpf
        token = self.take()
        if token[0].isdigit() or token[0] == ".":
            return _capped(mpf(token))
        if token.isalpha() and len(token) == 1:
            self.letters.add(token)
            return _sample_values(token, self.point)
        if token == "\\pi":
            return +context.pi
        if token in ("(", "{"):
            value = self.expr()
            self.take(")" if token == "(" else "}")
            if self.peek() == "(":
                raise Refuse  # `(3)(4)` is 7 in math-verify
            return value
        if token in ("\\frac", "\\dfrac", "\\tfrac"):
            numerator = self.argument()
            denominator = self.argument()
            if abs(denominator) < 1 / _MAGNITUDE_CAP:
                raise Refuse
            return _capped(numerator / denominator)
        if token == "\\sqrt":
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


def _capped(value):
    if not abs(value) <= _MAGNITUDE_CAP:
        raise Refuse
    return value


def _close(a, b) -> bool:
    if a == b:  # infinities included
        return True
    if abs(a) == float("inf") or abs(b) == float("inf"):
        return False
    return abs(a - b) <= _TOLERANCE * max(1, abs(a), abs(b))


def _entry_values(tokens: list[str]) -> list[tuple]:
    """The values of one entry at both sample points: one tuple, or two for `a \\pm b`, or +-infinity."""
    if tokens in (["\\infty"], ["+", "\\infty"]):
        return [(float("inf"),) * 2]
    if tokens == ["-", "\\infty"]:
        return [(float("-inf"),) * 2]
    if "\\pm" in tokens:
        at = tokens.index("\\pm")
        left, right = _Expression(tokens[:at]), _Expression(tokens[at + 1 :])
        if "\\pm" in tokens[at + 1 :] or not tokens[:at]:
            raise Refuse
        return [tuple(left.value(p) + sign * right.value(p) for p in (0, 1)) for sign in (1, -1)]
    expression = _Expression(tokens)
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


def _enclosed(tokens: list[str]) -> bool:
    """True when the first token opens a bracket that the last token closes."""
    if len(tokens) < 2 or tokens[0] not in ("(", "[", "\\{") or tokens[-1] not in (")", "]", "\\}"):
        return False
    depth = 0
    for k, token in enumerate(tokens):
        if token in ("(", "[", "{", "\\{"):
            depth += 1
        elif token in (")", "]", "}", "\\}"):
            depth -= 1
            if depth == 0 and k != len(tokens) - 1:
                return False
    return True


def _without_unit_or_base(answer: str) -> str:
    m = _BASE_SUBSCRIPT_RE.fullmatch(answer) or _CHOICE_RE.fullmatch(answer)
    if m:
        return m.group(1).lower()
    m = _UNIT_TEXT_RE.search(answer)
    if m and answer[: m.start()].strip() and not re.search(r"\\(?:text|mbox)", answer[: m.start()]):
        return answer[: m.start()]
    return answer


def _tokens(answer: str) -> list[str]:
    answer = _without_unit_or_base(answer)
    if len(answer) > _MAX_CHARS or not answer.isascii() or _REFUSED_CHARS_RE.search(answer):
        raise Refuse
    if _LETTER_RUN_RE.search(_COMMAND_RE.sub(" ", answer)) or _TRAILING_LETTER_RE.search(answer):
        raise Refuse
    tokens = [t for t in _TOKEN_RE.findall(answer) if t not in _SPACING]
    if len(tokens) > _MAX_TOKENS or any(t.startswith("\\") and t not in _COMMANDS for t in tokens):
        raise Refuse
    return tokens


def _matrix(tokens: list[str]) -> tuple:
    env = tokens[1:4]
    if len(env) < 3 or env[0] != "{" or env[1] not in _MATRIX_ENVS or env[2] != "}":
        raise Refuse
    if tokens[-4:] != ["\\end", "{", env[1], "}"]:
        raise Refuse
    body = tokens[4:-4]
    rows = [_split_top_level(row, "&") for row in _split_top_level(body, "\\\\")]
    if len({len(row) for row in rows}) != 1:
        raise Refuse
    entries = [_entry_values(entry) for row in rows for entry in row]
    if any(len(values) != 1 for values in entries):
        raise Refuse
    return ("matrix", (len(rows), len(rows[0])), [values[0] for values in entries])


def _interval(tokens: list[str]) -> tuple:
    """(lower, upper) of a constant interval with lower < upper, written `(a, b)`, `[a, b)` and so on."""
    if not _enclosed(tokens) or tokens[0] == "\\{" or tokens[-1] == "\\}":
        raise Refuse
    ends = _split_top_level(tokens[1:-1], ",")
    if len(ends) != 2:
        raise Refuse
    (low,), (high,) = _entry_values(ends[0]), _entry_values(ends[1])
    if not (_close(low[0], low[1]) and _close(high[0], high[1])) or not low[0] < high[0]:
        raise Refuse  # variables in an endpoint, or an empty or one-point interval
    return (low[0], high[0], tokens[0] == "[", tokens[-1] == "]")


def _union(parts: list[list[str]]) -> tuple:
    """The union as disjoint, non-touching intervals in increasing order (overlapping or touching ones merged,
    as sympy does), so that two equal sets of reals have the same list. Endpoints that are close but not
    equal (rounding) are refused."""
    merged: list[tuple] = []
    for low, high, low_closed, high_closed in sorted((_interval(part) for part in parts), key=lambda iv: iv[0]):
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


@lru_cache(maxsize=8192)
def answer_shape(answer: str) -> tuple | None:
    """The shape of `answer` as this module compares it, or None when it refuses the answer."""
    try:
        tokens = _tokens(answer)
        if not tokens:
            return None
        if tokens[0] == "\\begin":
            return _matrix(tokens)
        parts = _split_top_level(tokens, "\\cup")
        if len(parts) > 1:
            return _union(parts)
        if _enclosed(tokens) and (tokens[0] == "\\{" or "," in _depth_one_tokens(tokens)):
            entries = _split_top_level(tokens[1:-1], ",")
            delimiters = tokens[0] + tokens[-1]
        else:
            if _THOUSANDS_RE.search(answer):  # bare `12,102` is 12102 to math-verify; `(12,102)` an interval
                return None
            entries = _split_top_level(tokens, ",")
            delimiters = ""
        values = [value for entry in entries for value in _entry_values(entry)]
        interval = None
        if delimiters in ("()", "[]", "(]", "[)") and len(entries) == 2:
            try:
                interval = _interval(tokens)
            except Refuse:  # variables in an endpoint: a tuple only
                pass
        return ("list", delimiters, values, interval)
    except (Refuse, ValueError, ZeroDivisionError, OverflowError, RecursionError, TypeError):
        return None


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
    """(`x`, `rest`) for `x = rest` or `x \\in rest` with a one-letter `x` (math-verify compares `rest` with
    an answer that is not an equation), else (None, `answer`)."""
    m = _ASSIGNMENT_RE.match(answer)
    return (m.group(1), answer[m.end() :]) if m else (None, answer)


def _mentions(answer: str, letter: str) -> bool:
    return re.search(rf"(?<![\\a-zA-Z]){letter}(?![a-zA-Z])", answer) is not None


def structurally_different(pred: str, gold: str) -> bool:
    r"""True when math-verify cannot find `pred` and `gold` equal (see the module docstring), e.g.
    `(6,31,-2)` vs `(6,31,-1)`, `(3,5]` vs `(3,4]`, `x^3+3x-8` vs `x^3+3x-6`; False when undecided."""
    pred_letter, pred = _assignment(pred)
    gold_letter, gold = _assignment(gold)
    if pred_letter and gold_letter and (
        pred_letter != gold_letter or _mentions(pred, pred_letter) or _mentions(gold, gold_letter)
    ):
        return False  # `x = 2x - 1` equals `x = 1` to math-verify (it compares x - rhs and flips sides)
    a, b = answer_shape(pred), answer_shape(gold)
    if a is None or b is None:
        return False
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
