r"""Is a predicted answer mathematically equal to the gold? Fast path in-process, sympy in bounded workers.

Order of checks for one (pred, gold) pair of already-extracted answer strings (each first spelled as math-verify's
normalisation expects, `normalize.tidy_latex`: `\text {cm}` is `\text{cm}`):

1. cache: an LRU of earlier verdicts keyed on the raw (pred, gold) strings;
2. normalized string equality (`normalize.normalize_answer`): equal -> True;
3. both plain numbers (`normalize.parse_number`): exact `Fraction` comparison decides, True or False;
   a plain number never equals a tuple/interval (top-level comma), a set, a matrix or a `\text{}` word: False;
   two closed-form real constants (`numeric.numeric_value`: numbers, \frac, \sqrt, \pi, + - * / ^) whose
   values differ by more than 1e-4 relative are not equal: False (equal values still go to math-verify);
4. pre-checks (`guards.reject_reason`) on the prediction: a pathological answer -> False;
5. otherwise math-verify `parse` + `verify` in a worker process (`pool.VerifierPool`), bounded by `timeout`, a
   percent sign after a number written as math-verify's parser reads it under any antlr4 runtime
   (`normalize.percent_as_division`).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

from .guards import reject_reason
from .normalize import normalize_answer, numbers_equal, parse_number, percent_as_division, tidy_latex
from .numeric import clearly_different
from .structure import structurally_different
from .pool import VerifierPool, get_default_pool

__all__ = ["answers_match", "list_parts", "match_many", "match_texts", "fast_verdict", "clear_cache"]

_CACHE_SIZE = 100_000


class _LRUCache:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_cache = _LRUCache(_CACHE_SIZE)


def clear_cache() -> None:
    """Forget cached verdicts (tests and benchmarks use this to measure cold work)."""
    _cache.clear()


_MATRIX_ENVS = ("\\begin{pmatrix}", "\\begin{bmatrix}", "\\begin{matrix}")  # vmatrix is a determinant: a number


def _has_top_level_comma(s: str) -> bool:
    depth = 0
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 1:
            return True
    return False


def _never_a_number(answer: str, normalized: str) -> bool:
    """True for shapes that cannot equal a single number: a matrix, a tuple or interval with two or more
    entries, a set with two or more elements, or a word in `\text{}`."""
    if "=" in normalized or "\\cup" in normalized or "\\pm" in normalized:
        return False
    if any(env in answer for env in _MATRIX_ENVS):
        return True
    if normalized[:1] in "([" and normalized[-1:] in ")]" and _has_top_level_comma(normalized):
        return True
    if normalized.startswith("\\{") and normalized.endswith("\\}") and _has_top_level_comma(normalized[1:-1]):
        return True
    return "\\text" in answer and normalized.isalpha() and len(normalized) > 1


_LIST_SEPARATOR_RE = re.compile(r"\\text\s*\{\s*(?:and|or)\s*\}|\b(?:and|or)\b")
_MAX_LIST_PARTS = 32


def list_parts(answer: str) -> list[str]:
    r"""The answers of a list written at the top level (outside brackets and braces), split at commas,
    semicolons and the words "and" / "or": `2, 3, 5` -> ['2', '3', '5'], `-2 	ext{ and } 1` -> ['-2', '1'];
    a tuple `(3, 2)`, a set `\{1, 2\}` or a single answer is one part."""
    answer = _LIST_SEPARATOR_RE.sub(",", answer)
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(answer):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch in ",;" and depth == 0 and not (i > 0 and answer[i - 1] == "\\"):
            parts.append(answer[start:i])
            start = i + 1
        if len(parts) > _MAX_LIST_PARTS:
            return [answer]
    parts.append(answer[start:])
    return [part.strip() for part in parts if part.strip()]


def _numbers_as_sets(pred: str, gold: str) -> bool | None:
    """Lists of plain numbers compared as sets with multiplicity (the multi-answer rule: order-free);
    None unless one side is a list and every answer of both sides is a plain number."""
    pred_parts, gold_parts = list_parts(pred), list_parts(gold)
    if len(pred_parts) < 2 and len(gold_parts) < 2:
        return None
    pred_numbers = [parse_number(part) for part in pred_parts]
    gold_numbers = [parse_number(part) for part in gold_parts]
    if any(n is None or n.percent for n in pred_numbers + gold_numbers):
        return None
    return sorted(n.value for n in pred_numbers) == sorted(n.value for n in gold_numbers)


def fast_verdict(pred: str, gold: str, max_chars: int = 1000) -> bool | None:
    """The verdict when it needs no sympy (string/number fast path or a rejected prediction), else None."""
    if len(pred) > max_chars:
        return False
    pred_normal, gold_normal = normalize_answer(pred), normalize_answer(gold)
    if pred_normal == gold_normal:
        return True
    pred_number = parse_number(pred)
    gold_number = parse_number(gold)
    if pred_number is not None and gold_number is not None:
        return numbers_equal(pred_number, gold_number)
    as_sets = _numbers_as_sets(pred, gold)
    if as_sets is not None:
        return as_sets
    if (pred_number is not None and _never_a_number(gold, gold_normal)) or (
        gold_number is not None and _never_a_number(pred, pred_normal)
    ):
        return False
    if clearly_different(pred_normal, gold_normal) or structurally_different(pred, gold):
        return False
    if reject_reason(pred, max_chars=max_chars) or reject_reason(gold, max_chars=max_chars):
        return False
    return None


def match_many(
    pairs: list[tuple[str, str]], timeout: float = 5.0, pool: VerifierPool | None = None, use_cache: bool = True
) -> list[bool]:
    """`answers_match` over many pairs at once: fast path here, the rest spread over the worker pool."""
    results: list[bool | None] = [None] * len(pairs)
    todo: dict[tuple[str, str], list[int]] = {}
    for i, (pred, gold) in enumerate(pairs):
        cached = _cache.get((pred, gold)) if use_cache else None
        if cached is not None:
            results[i] = cached
            continue
        checked = (tidy_latex(pred), tidy_latex(gold))
        verdict = fast_verdict(*checked)
        if verdict is not None:
            results[i] = verdict
            if use_cache:
                _cache.put((pred, gold), verdict)
        else:
            todo.setdefault(checked, []).append(i)  # repeated pairs are verified once
    if todo:
        unique = list(todo)
        sent = [(percent_as_division(pred), percent_as_division(gold)) for pred, gold in unique]
        verdicts = (pool or get_default_pool()).run(sent, timeout)
        for pair, verdict in zip(unique, verdicts):
            for i in todo[pair]:
                results[i] = verdict
                if use_cache:
                    _cache.put(pairs[i], verdict)
    return results  # type: ignore[return-value]


# Raw texts sent to math-verify's own extraction keep their last this many characters (it prefers the rightmost
# answer), so a megabyte completion costs the worker no more than a long solution.
MAX_RAW_CHARS = 8000


def match_texts(
    pairs: list[tuple[str, str]], timeout: float = 5.0, pool: VerifierPool | None = None, use_cache: bool = True
) -> list[bool]:
    """math-verify's own reading of whole texts: for each (completion, gold column) pair, `verify(parse(gold),
    parse(completion))` with math-verify's default extraction configs, in a worker bounded by `timeout`.

    The fall-through of `accuracy_reward` for the items its own extraction cannot decide."""
    pairs = [(tidy_latex(pred[-MAX_RAW_CHARS:]), tidy_latex(gold[-MAX_RAW_CHARS:])) for pred, gold in pairs]
    results: list[bool | None] = [_cache.get((*pair, "raw")) if use_cache else None for pair in pairs]
    todo: dict[tuple[str, str], list[int]] = {}
    for i, pair in enumerate(pairs):
        if results[i] is None:
            todo.setdefault(pair, []).append(i)
    if todo:
        unique = list(todo)
        sent = [(percent_as_division(pred), percent_as_division(gold), True) for pred, gold in unique]
        verdicts = (pool or get_default_pool()).run(sent, timeout)
        for pair, verdict in zip(unique, verdicts):
            if use_cache:
                _cache.put((*pair, "raw"), verdict)
            for i in todo[pair]:
                results[i] = verdict
    return results  # type: ignore[return-value]


def answers_match(pred: str, gold: str, timeout: float = 5.0) -> bool:
    r"""True when the answer strings `pred` and `gold` are mathematically equal.

    `0.5` vs `\frac12`, `10,080` vs `10080` and `\text{Evelyn}` vs `Evelyn` are decided without sympy;
    `3\sqrt{13}` vs `\sqrt{117}` or intervals, sets and matrices go to math-verify in a worker process, which
    is killed if it takes longer than `timeout` seconds (the pair is then not equal). Safe to call from any
    thread; nothing in the strings is ever executed.
    """
    if not isinstance(pred, str) or not isinstance(gold, str):
        raise TypeError("answers_match takes two strings (use extract_answer / extract_gold first)")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    return match_many([(pred, gold)], timeout)[0]
