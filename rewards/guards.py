r"""Cheap textual pre-checks that keep pathological answers away from sympy.

They are an optimisation, not the safety bound: the bound is the verification worker process, which is
killed at the per-item deadline and runs under a memory limit (see `rewards.pool`). Each rule rejects a
class of input whose evaluation cost grows without bound, never specific strings:

1. Size: an answer longer than `max_chars` characters (default 1000; MATH-500's longest gold answer has
   under 100). This covers 100k-digit numbers and megabytes of text.
2. Nesting: brace/parenthesis nesting deeper than `max_depth` (default 32); the LaTeX parser recurses per level.
3. Magnitude: a numeric power tower or factorial whose value would have more than `max_digits` digits
   (default 10,000), estimated with logarithms from the text alone: `10^{10^{10^{10}}}`, `2^{10^{9}}`,
   `9^{9^{9^9}}!`, `100000!`. Sympy evaluates integer powers and factorials exactly, so their cost is
   their size. Symbolic exponents (`e^{x^2}`) are not numeric and are left alone.
4. Iteration: a `\sum` / `\prod` whose numeric upper limit exceeds `max_terms` (default 10,000), or a
   binomial `\binom{n}{k}` whose value would have more than `max_digits` digits (log10 C(n, k) is bounded
   by min(k, n - k) * log10(n)). Sympy expands both exactly.

Anything else that is expensive (say `\Gamma(10^{6})`) is caught by the worker's deadline.
"""

from __future__ import annotations

import math
import re

__all__ = ["reject_reason", "estimated_log10"]

# Runs of text made only of digits, grouping and the ^ / ! operators: the only places a numeric tower lives.
_NUMERIC_RUN_RE = re.compile(r"[0-9.{}()^!\s]*[\^!][0-9.{}()^!\s]*")
_TOKEN_RE = re.compile(r"\d+(?:\.\d*)?|\.\d+|[\^!{}()]")
_INF = float("inf")
_BIG_OPERATOR_RE = re.compile(r"\\(?:sum|prod)(?![a-zA-Z])\s*(?:_\s*(?:\{[^{}]*\}|\S)\s*)?\^")
_BINOM_RE = re.compile(r"\\[dt]?binom(?![a-zA-Z])|\\choose(?![a-zA-Z])")


def _log10_of_value(log10_value: float) -> float:
    """The value whose log10 is given (inf when it does not fit a float)."""
    return 10.0**log10_value if log10_value < 300 else _INF


def _log10_factorial(n: float) -> float:
    """log10(n!) via lgamma; n! for n in [0, 1] is 1."""
    if n == _INF:
        return _INF
    return math.lgamma(n + 1) / math.log(10) if n > 1 else 0.0


class _TowerParser:
    r"""Recursive descent over the grammar `power := postfix ('^' power)?`, `postfix := primary '!'*`,
    `primary := number | '{' seq '}' | '(' seq ')'`, `seq := power*` (juxtaposition, i.e. product).

    Each rule returns the log10 of the magnitude (an upper estimate). The largest intermediate value seen
    is kept in `worst`, so a huge sub-expression is found wherever it sits.
    """

    def __init__(self, tokens: list[str], limit: float):
        self.tokens = tokens
        self.i = 0
        self.worst = 0.0
        self.limit = limit
        self.steps = 0

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _note(self, log10_value: float) -> float:
        self.worst = max(self.worst, log10_value)
        return log10_value

    def seq(self, closer: str | None) -> float:
        total = 0.0
        while True:
            self.steps += 1
            token = self._peek()
            if token is None or token == closer or token in ")}" or self.steps > 10_000:
                return total
            if token in "^!":  # dangling operator: skip it
                self.i += 1
                continue
            total += self.power()
            self._note(total)

    def power(self) -> float:
        base = self.postfix()
        if self._peek() == "^":
            self.i += 1
            exponent = _log10_of_value(self.power())
            if base <= 0:  # |base| <= 1: the power does not grow
                return self._note(0.0)
            return self._note(exponent * base if exponent != _INF else _INF)
        return base

    def postfix(self) -> float:
        value = self.primary()
        while self._peek() == "!":
            self.i += 1
            value = self._note(_log10_factorial(_log10_of_value(value)))
        return value

    def primary(self) -> float:
        token = self._peek()
        if token in ("{", "("):
            self.i += 1
            value = self.seq("}" if token == "{" else ")")
            if self._peek() in ("}", ")"):
                self.i += 1
            return value
        if token is None or token in ")}^!":
            return 0.0
        self.i += 1
        digits = token.split(".")[0].lstrip("0")
        if len(digits) > 15:
            return self._note(float(len(digits) - 1))
        value = float(token) if token != "." else 0.0
        return self._note(math.log10(value) if value > 1 else 0.0)


def estimated_log10(text: str) -> float:
    """Upper estimate of log10 of the largest number a numeric power/factorial run in `text` evaluates to."""
    worst = 0.0
    for run in _NUMERIC_RUN_RE.findall(text):
        parser = _TowerParser(_TOKEN_RE.findall(run), limit=_INF)
        while parser.i < len(parser.tokens):
            before = parser.i
            parser.seq(None)
            if parser.i == before:
                parser.i += 1  # stray closer
        worst = max(worst, parser.worst)
    return worst


def _braced_or_token(text: str, i: int) -> str:
    """The `{...}` group (outer braces dropped) or the single token starting at `text[i]`."""
    while i < len(text) and text[i].isspace():
        i += 1
    if i < len(text) and text[i] == "{":
        depth = 0
        for j in range(i, len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                return text[i + 1 : j]
        return text[i + 1 :]
    return text[i : i + 1]


def _numeric_log10(text: str) -> float:
    """log10 of the largest number written in `text` (integers, powers, factorials); 0 if there is none."""
    plain = 0.0
    for digits in re.findall(r"\d+", text):
        digits = digits.lstrip("0") or "0"
        head = int(digits[:15])
        plain = max(plain, (len(digits) - min(len(digits), 15)) + (math.log10(head) if head > 0 else 0.0))
    return max(plain, estimated_log10(text))


def _too_much_iteration(answer: str, max_terms: int, max_digits: int) -> bool:
    for m in _BIG_OPERATOR_RE.finditer(answer):
        upper = _braced_or_token(answer, m.end())
        if _numeric_log10(upper) > math.log10(max_terms):
            return True
    for m in _BINOM_RE.finditer(answer):
        if m.group(0).endswith("choose"):  # {n \choose k}: n and k are the words around it
            n_text, k_text = answer[max(0, m.start() - 50) : m.start()], answer[m.end() : m.end() + 50]
        else:
            n_text = _braced_or_token(answer, m.end())
            k_start = answer.find(n_text, m.end()) + len(n_text) + 1
            k_text = _braced_or_token(answer, k_start)
        log_n, log_k = _numeric_log10(n_text), _numeric_log10(k_text)
        n, k = _log10_of_value(log_n), _log10_of_value(log_k)
        smaller = min(k, max(n - k, 0.0)) if n != _INF else k
        if smaller == _INF or smaller * log_n > max_digits:
            return True
    return False


def reject_reason(
    answer: str, max_chars: int = 1000, max_depth: int = 32, max_digits: int = 10_000, max_terms: int = 10_000
) -> str | None:
    """Why `answer` must not reach sympy (a short reason), or None when it may."""
    if len(answer) > max_chars:
        return f"longer than {max_chars} characters"
    depth = deepest = 0
    for ch in answer:
        if ch in "{(":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > max_depth:
                    return f"nested deeper than {max_depth}"
        elif ch in "})":
            depth = max(depth - 1, 0)
    if ("^" in answer or "!" in answer) and estimated_log10(answer) > max_digits:
        return f"a numeric power or factorial with more than {max_digits} digits"
    if ("sum" in answer or "prod" in answer or "binom" in answer or "choose" in answer) and _too_much_iteration(
        answer, max_terms, max_digits
    ):
        return f"a sum/product over more than {max_terms} terms or a binomial with more than {max_digits} digits"
    return None
