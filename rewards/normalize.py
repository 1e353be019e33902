r"""The fast path of the equivalence check: string normalization and exact rational numbers.

Most GSM8K and many MATH items are decided here, without sympy:

* `normalize_answer` removes pure presentation (`$`, `\left`/`\right`, spacing commands, `\dfrac`,
  `\text{}` wrappers, degree signs, trailing punctuation, whitespace). Two answers whose normal forms are
  equal are equal.
* `parse_number` reads a plain number exactly as a `fractions.Fraction`: integers, decimals, GSM8K thousands
  separators (`1,234.50`), currency (`\$18.00`), a trailing unit word (`18 apples`), fractions (`3/4`,
  `\frac{3}{4}`, `\dfrac34`) and percentages (`25\%`). Two plain numbers are compared exactly.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["normalize_answer", "parse_number", "numbers_equal", "PlainNumber", "percent_as_division", "tidy_latex"]

# Presentation-only LaTeX removed before comparing strings.
_SPACING_RE = re.compile(r"(?<!\\)\\[,;:! ]|\\q?quad\b|~")  # not the 2nd backslash of a row break `\\ `
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")
_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_FRAC_CMD_RE = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_DISPLAY_WRAPPERS = (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"))
# Spacing between a digit and a group of exactly three digits is a thousands separator (`1\,000`, `12 345`).
_THOUSANDS_SPACE_RE = re.compile(r"(?<=\d)(?:\s|\\[,;:! ]|~)+(?=\d{3}(?!\d))")
_WHITESPACE_RE = re.compile(r"\s+")
# `11,\! 111,\! 100`: a comma with a negative thin space (and any space after it) is a thousands separator.
_THOUSANDS_NEGSPACE_RE = re.compile(r"(?<=\d),\\!\s*(?=\d{3}(?!\d))")


# A text command written with a space before its argument, `\text {square inches}`: math-verify's unit removal
# only knows `\text{...}`, so the unit stayed and the right value never matched.
_SPACED_TEXT_COMMAND_RE = re.compile(
    r"(\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf|mathit|operatorname))\s+\{"
)


# A percent sign after a number, `28\%`: latex2sympy2_extended reads it as 28/100 under antlr4 4.13, but under 4.11
# (the pin, for sympy's parse_latex) its parser fails on it and the answer stays unread.
_PERCENT_AFTER_NUMBER_RE = re.compile(r"(?<=[\d}])\s*\\%")


def tidy_latex(text: str) -> str:
    """`text` with the space between a text command and its argument removed (`\text {cm}` -> `\text{cm}`): the same
    LaTeX, in the spelling math-verify's normalisation recognises."""
    return _SPACED_TEXT_COMMAND_RE.sub(r"\1{", text) if "\\" in text else text


def percent_as_division(text: str) -> str:
    r"""`text` for math-verify's parser under any antlr4 runtime: a percent sign after a number written as the division
    latex2sympy2_extended reads it as where its parser knows the sign (`28\%` -> `28/100`, as under 4.13). Only for
    what is sent to math-verify: the fast path compares percentages itself (`p%` equals `p` and `p/100`)."""
    return _PERCENT_AFTER_NUMBER_RE.sub("/100", text) if "%" in text else text


def _drop_whitespace(s: str) -> str:
    """Remove whitespace, except one space between two digits: `1 2` is not 12 and `2 1/2` is not 21/2."""
    return _WHITESPACE_RE.sub(
        lambda m: " " if 0 < m.start() and m.end() < len(s) and s[m.start() - 1].isdigit() and s[m.end()].isdigit()
        else "",
        s,
    )


def normalize_answer(answer: str) -> str:
    r"""Canonical text of an answer for string comparison (presentation removed, whitespace dropped).

    Only transformations that cannot change the mathematical value are applied; e.g.
    `\left( 3, \dfrac{\pi}{2} \right)` -> `(3,\frac{\pi}{2})`, `\text{Evelyn}` -> `Evelyn`, `30^\circ` -> `30`.
    """
    s = answer.strip()
    for left, right in _DISPLAY_WRAPPERS:
        if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
            s = s[len(left) : len(s) - len(right)]
    s = _THOUSANDS_SPACE_RE.sub("", s)
    s = _SPACING_RE.sub(" ", s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _FRAC_CMD_RE.sub(r"\\frac", s)
    s = _DEGREE_RE.sub("", s)
    # \text{...} is unwrapped from the inside out; a bounded number of rounds keeps this linear in practice.
    for _ in range(4):
        unwrapped = _TEXT_WRAPPER_RE.sub(r"\1", s)
        if unwrapped == s:
            break
        s = unwrapped
    s = s.replace("\\$", "").replace("$", "")
    s = _drop_whitespace(s.strip())
    while s and s[-1] in ".,;":
        s = s[:-1]
    return s


class PlainNumber:
    """An exact number read from text, remembering whether it was written as a percentage."""

    __slots__ = ("value", "percent")

    def __init__(self, value: Fraction, percent: bool = False):
        self.value = value
        self.percent = percent

    def __repr__(self) -> str:
        return f"PlainNumber({self.value}{'%' if self.percent else ''})"


_DECIMAL = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+"
_DECIMAL_RE = re.compile(rf"[-+]?(?:{_DECIMAL})")
_SIMPLE_FRACTION_RE = re.compile(rf"([-+]?(?:{_DECIMAL}))/([-+]?(?:{_DECIMAL}))")
_LATEX_FRACTION_RE = re.compile(
    rf"([-+]?)\\frac(?:\{{\s*([-+]?(?:{_DECIMAL}))\s*\}}|(\d))(?:\{{\s*([-+]?(?:{_DECIMAL}))\s*\}}|(\d))"
)
# A trailing unit: \text{...}/\mbox{...} or plain words such as "apples", "cm", "dollars per hour".
_UNIT_SUFFIX_RE = re.compile(r"(?:\s*\\(?:text|mbox|mathrm)\s*\{[^{}]*\}|\s+[A-Za-z]{2,}(?:\s+[A-Za-z]+)*)\s*$")
_PERCENT_SUFFIX_RE = re.compile(r"\s*(?:\\%|%|\\text\{\s*\\?%\s*\}|\s+percent)\s*$")
_CURRENCY_PREFIX_RE = re.compile(r"^([-+]?)\s*(?:\\\$|\$|€|£|¥|\\text\{\s*\\?\$\s*\})\s*")
_FRACTION_SPACE_RE = re.compile(r"\s*([/{}]|\\frac)\s*|(?<=^[-+])\s+")
# Plain numbers beyond this length are not read (Python also caps int() at 4300 digits).
_MAX_NUMBER_CHARS = 200


def _decimal(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def parse_number(answer: str) -> PlainNumber | None:
    r"""Read `answer` as a plain number exactly, or return None when it is anything else.

    Examples: `1,234.50` -> 2469/2, `\$18.00` -> 18, `18 apples` -> 18, `\frac{14}{3}` -> 14/3,
    `-\dfrac34` -> -3/4, `7/2` -> 7/2, `25\%` -> 25 (percent), `30^\circ` -> 30. A comma is a thousands
    separator only in groups of three (`10,080`); `1,2` is a list, not a number.
    """
    s = answer.strip()
    if not s or len(s) > _MAX_NUMBER_CHARS:
        return None
    if s.startswith("$") and s.endswith("$") and len(s) > 2 and s.count("$") == 2:
        s = s[1:-1].strip()
    # `10,\!080` and `10{,}080` are LaTeX spellings of the thousands separator.
    s = _THOUSANDS_NEGSPACE_RE.sub(",", s).replace("\\!", "").replace("{,}", ",")
    s = _SPACING_RE.sub(" ", s).strip()
    s = _FRAC_CMD_RE.sub(r"\\frac", s)
    s = _DEGREE_RE.sub("", s).strip()
    while s and s[-1] in ".,;" and not s[:-1].endswith("\\"):
        s = s[:-1].rstrip()
    percent = False
    m = _PERCENT_SUFFIX_RE.search(s)
    if m:
        percent, s = True, s[: m.start()]
    m = _CURRENCY_PREFIX_RE.match(s)
    if m:
        s = m.group(1) + s[m.end() :]
    m = _UNIT_SUFFIX_RE.search(s)
    if m and m.start() > 0:
        s = s[: m.start()]
        m = _PERCENT_SUFFIX_RE.search(s)
        if m:
            percent, s = True, s[: m.start()]
    s = s.strip()
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1].strip()
    try:
        if _DECIMAL_RE.fullmatch(s):
            return PlainNumber(_decimal(s), percent)
        compact = _FRACTION_SPACE_RE.sub(r"\1", s)  # spaces around / { } only: `2 1/2` is not 21/2
        m = _SIMPLE_FRACTION_RE.fullmatch(compact)
        if m:
            den = _decimal(m.group(2))
            return None if den == 0 else PlainNumber(_decimal(m.group(1)) / den, percent)
        m = _LATEX_FRACTION_RE.fullmatch(compact)
        if m:
            num = _decimal(m.group(2) or m.group(3))
            den = _decimal(m.group(4) or m.group(5))
            if den == 0:
                return None
            value = num / den
            return PlainNumber(-value if m.group(1) == "-" else value, percent)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def numbers_equal(pred: PlainNumber, gold: PlainNumber) -> bool:
    """Exact equality; a percentage p% also matches p/100 (and p itself), as math-verify does."""
    if pred.percent == gold.percent:
        return pred.value == gold.value
    plain, pct = (gold, pred) if pred.percent else (pred, gold)
    return plain.value == pct.value or plain.value == pct.value / 100
