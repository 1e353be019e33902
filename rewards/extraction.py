"""Pull the final answer out of a completion, and the gold answer out of a dataset column.

Everything here is plain string scanning in linear time (no backtracking-prone regexes over the whole
completion, no sympy), so it is safe to run in the trainer process on any text a model writes.
"""

from __future__ import annotations

import re

__all__ = ["completion_text", "extract_answer", "extract_gold", "last_boxed"]

_BOX_COMMANDS = ("\\boxed", "\\fbox")
# How many `\boxed` occurrences (from the right) are tried when the last ones are unbalanced
# (a truncated completion); bounds the work to a few linear scans.
_MAX_BOX_ATTEMPTS = 8
# A bare gold answer longer than this, or spanning lines, is prose rather than an answer.
_MAX_BARE_GOLD_CHARS = 300

_ANSWER_IS_RE = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*", re.IGNORECASE)
# GSM8K-style number: optional sign and currency, thousands groups or plain digits, optional decimals;
# or a simple fraction a/b.  Used for the last-number fallback.
_NUMBER_RE = re.compile(
    r"(?<![\w.])[-+]?\\?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|(?<![\w.])[-+]?\.\d+"
)


def completion_text(completion) -> str:
    """Text of a TRL completion: a string, or a conversation whose last message is the assistant's."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        if not completion:
            return ""
        message = completion[-1]
        if isinstance(message, dict):
            content = message.get("content", "")
            if isinstance(content, list):  # multimodal content parts
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
        return str(message)
    raise TypeError(f"completion must be a string or a list of messages, got {type(completion).__name__}")


def _match_brace(text: str, open_index: int) -> int:
    """Index of the `}` closing the `{` at `open_index` (escaped `\\{`/`\\}` ignored), or -1."""
    depth = 0
    i = open_index
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _box_content_at(text: str, start: int, command: str) -> str | None:
    """Content of `\\boxed{...}` / `\\boxed x` starting at `start`, or None when it is unbalanced."""
    i = start + len(command)
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        end = _match_brace(text, i)
        return None if end < 0 else text[i + 1 : end]
    if command == "\\boxed" and i > start + len(command):
        # `\boxed 5`: the argument is the next token.
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last balanced `\\boxed{...}` or `\\fbox{...}` in `text` (nested braces handled)."""
    candidates = []
    for command in _BOX_COMMANDS:
        pos = len(text)
        for _ in range(_MAX_BOX_ATTEMPTS):
            pos = text.rfind(command, 0, pos)
            if pos < 0:
                break
            candidates.append((pos, command))
    for pos, command in sorted(candidates, reverse=True)[:_MAX_BOX_ATTEMPTS]:
        content = _box_content_at(text, pos, command)
        if content is not None:
            return content
    return None


def _after_hashes(text: str) -> str | None:
    """Rest of the line after the last `####` (GSM8K's final-answer marker)."""
    pos = text.rfind("####")
    if pos < 0:
        return None
    line = text[pos + 4 :].split("\n", 1)[0]
    return line.strip() or None


def _after_answer_is(text: str) -> str | None:
    """The phrase after the last "the answer is" / "answer:" up to the end of its sentence or line."""
    last = None
    for last in _ANSWER_IS_RE.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end() :].split("\n", 1)[0]
    # A sentence ends at ". " (not inside a decimal such as 3.5); math spans may hold dots.
    m = re.search(r"\.(?:\s|$)", rest)
    if m:
        rest = rest[: m.start()]
    rest = rest.strip().rstrip(".").strip()
    if rest.startswith("\\(") and rest.endswith("\\)"):
        rest = rest[2:-2]
    if len(rest) >= 2 and rest[0] == "$" and rest[-1] == "$" and rest.count("$") in (2, 4):
        rest = rest.strip("$")
    return rest.strip() or None


# After "the answer is": a number that opens the phrase and is followed by prose, not by more mathematics.
_LEADING_NUMBER_END_RE = re.compile(r"\$?(?:\s*[,;(]|\s+[A-Za-z]|\s*$)")


def _leading_number(phrase: str) -> str | None:
    """The number opening `phrase` when prose follows it ("18 because ...", "5, since ...", "**18**",
    "$18$ dollars"), else None ("2 + 3 = 5" stays whole)."""
    phrase = phrase.strip("*_ ")
    m = _NUMBER_RE.match(phrase)
    if m is None or not _LEADING_NUMBER_END_RE.match(phrase, m.end()):
        return None
    return m.group(0).strip()


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    return None if last is None else last.group(0).strip()


def _clean(answer: str) -> str:
    """Strip whitespace and sentence punctuation (`18.` is the sentence's end, not a decimal point)."""
    answer = answer.strip()
    while answer and answer[-1] in ".,;":
        answer = answer[:-1].rstrip()
    return answer


def extract_answer(text: str, last_number_fallback: bool = True) -> str | None:
    r"""The model's final answer in `text`, as a string, or None.

    Tried in order: the last `\boxed{}` / `\fbox{}` (nested braces handled), then `#### x`, then
    "the answer is x" / "answer: x", then (if `last_number_fallback`) the last number in the text
    (GSM8K style: `$1,234.50`, `1,234`, `18.0`, `3/4`).
    """
    if not isinstance(text, str) or not text:
        return None
    for extractor in (last_boxed, _after_hashes, _after_answer_is):
        found = extractor(text)
        if found is not None and _clean(found):
            if extractor is _after_answer_is and last_number_fallback:  # a numeric gold: the number said first
                found = _leading_number(found) or found
            return _clean(found)
    if last_number_fallback:
        found = _last_number(text)
        if found and _clean(found):
            return _clean(found)
    return None


def extract_gold(text: str) -> str | None:
    r"""The gold answer held by a dataset column, or None when there is none to be found.

    Accepts a bare answer (`18`, `\frac{14}{3}`, `$\frac{14}{3}$`), a GSM8K rationale ending in `#### 18`,
    or a MATH solution whose last `\boxed{...}` holds the answer. A marker-less text that spans lines or is
    longer than 300 characters is a rationale without an answer, not an answer: None.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)  # numeric dataset columns
    for extractor in (_after_hashes, last_boxed):
        found = extractor(text)
        if found is not None:
            found = _clean(found)
            return found or None
    bare = text.strip()
    if not bare or "\n" in bare or len(bare) > _MAX_BARE_GOLD_CHARS:
        return None
    if len(bare) >= 2 and bare[0] == "$" and bare[-1] == "$" and not bare[1:-1].lstrip().startswith("\\"):
        pass  # `$18` / `$1,234$`-like currency stays as it is; the number parser strips it
    elif len(bare) >= 2 and bare[0] == "$" and bare[-1] == "$":
        bare = bare.strip("$").strip()
    return _clean(bare) or None
