"""Pull the final answer out of a completion, and the gold answer out of a dataset column.

Everything here is plain string scanning in linear time (no backtracking-prone regexes over the whole
completion, no sympy), so it is safe to run in the trainer process on any text a model writes.
"""

from __future__ import annotations

import re

__all__ = ["boxed_group", "completion_text", "ends_in_a_loop", "extract_answer", "extract_gold", "last_boxed"]

_BOX_COMMANDS = ("\\boxed", "\\fbox")
# How many `\boxed` occurrences (from the right) are tried when the last ones are unbalanced
# (a truncated completion); bounds the work to a few linear scans.
_MAX_BOX_ATTEMPTS = 8
# A bare gold answer longer than this, or spanning lines, is prose rather than an answer.
_MAX_BARE_GOLD_CHARS = 300

# "the answer is" / "final answer: " / "answer =": the phrase a model concludes with (math-verify and lighteval
# anchor on "answer" too). "final answer" may be followed by a few words before "is" ("The final answer to
# the question is 5").
_ANSWER_IS_RE = re.compile(
    r"(?P<concluding>final answer(?:[^\n.:]{0,60}?\s)?\s*(?:is|:|=)|the answer is)\s*:?\s*|answer\s*(?:is|:|=)\s*:?\s*",
    re.IGNORECASE,
)
# GSM8K-style number: optional sign and currency, thousands groups (commas, or single spaces as in `1 000`) or
# plain digits, optional decimals; or a simple fraction a/b. Used for the last-number fallback. Only ASCII
# letters and digits before it stop a match, so digits glued to CJK text (`有99颗`) are numbers.
_NUMBER_RE = re.compile(
    r"(?<![A-Za-z0-9_.])[-+]?\\?\$?\s?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d{1,3}(?: \d{3})+(?![\d,])|\d+)(?:\.\d+)?"
    r"(?:\s*/\s*\d+)?|(?<![A-Za-z0-9_.])[-+]?\.\d+"
)
# Delimiters of LaTeX math in running text: $$..$$, $..$, \(..\), \[..\] (an escaped \$ is a dollar sign).
_MATH_DELIMITER_RE = re.compile(r"\$\$|(?<!\\)\$|\\\(|\\\)|\\\[|\\\]")
_MATH_CLOSER = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
# Fallbacks look at the end of a completion only (the answer is at the end; keeps the scans cheap on megabytes).
_FALLBACK_TAIL_CHARS = 4000
# Boxes of one answer group (latex2sympy2_extended's `extract_boxed_content`, the rule math-verify uses): boxes
# closer than 10 characters, or closer than 70 with "and"/"or"/","/";" between them and a different content.
_BOX_GROUP_CLOSE = 10
_BOX_GROUP_SEPARATED = 70
_BOX_SEPARATOR_RE = re.compile(r"\b(?:and|or)\b|,|;")
# A fraction of plain numbers written without math delimiters (math-verify's `latexFraction` pattern).
_BARE_FRACTION_RE = re.compile(r"-?\\[dt]?frac\{\s*-?\d+(?:\.\d+)?\s*\}\{\s*-?\d+(?:\.\d+)?\s*\}")
_DIGIT_RE = re.compile(r"\d")
_LETTER_RE = re.compile(r"[A-Za-z]")
_INLINE_CLOSERS = ("$", "\\)")
_QUOTES_RE = re.compile(r"^(?:\\?[\"'`])+|(?:\\?[\"'`])+$")  # "5", \"$5$\" (an escaped quote in a model's text)
# Words that join several values rather than make prose of them ("3 and 4", "x = 1 or x = 2").
_JOINING_WORDS = {"and", "or"}
_WORD_RE = re.compile(r"(?<![A-Za-z])[A-Za-z]{3,}")
_LATEX_COMMAND_RE = re.compile(r"\\[A-Za-z]+")
_BRACE_GROUP_RE = re.compile(r"\{[^{}]*\}")
_BRACE_ROUNDS = 4
# PRM800K's conclusion: a line `# Answer` (a markdown heading; `## Final Answer` too), the value after it on the
# same line or on the next non-empty one.
_ANSWER_HEADING_RE = re.compile(r"^[ \t]*#{1,6}[ \t]*(?:final[ \t]+)?answer[ \t]*:?[ \t]*(?P<rest>[^\n]*)$",
                                re.IGNORECASE | re.MULTILINE)
# Display math that may follow "the final answer is" on the next lines: `\[ ... \]`, `$$ ... $$`.
_DISPLAY_OPENERS = (("\\[", "\\]"), ("$$", "$$"))
_LONE_DELIMITERS = {"\\[", "\\]", "\\(", "\\)", "$", "$$"}
# A completion that ends inside a loop: its last line, numbers masked, repeats at least this many earlier lines
# and is at least this long (shorter repeated lines are tables and columns of equations).
_LOOP_REPEATS = 2
_LOOP_MIN_CHARS = 20
_NUMBER_MASK_RE = re.compile(r"\d+(?:\.\d+)?")


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


def _box_at(text: str, start: int, command: str) -> tuple[str, int] | None:
    """(content, end) of `\\boxed{...}` / `\\boxed x` starting at `start`, or None when it is unbalanced."""
    i = start + len(command)
    while i < len(text) and text[i] in " \t":
        i += 1
    if i < len(text) and text[i] == "{":
        end = _match_brace(text, i)
        return None if end < 0 else (text[i + 1 : end], end + 1)
    if command == "\\boxed" and i > start + len(command):
        # `\boxed 5`: the argument is the next token.
        m = re.compile(r"[^\s$]+").match(text, i)
        return (m.group(0), m.end()) if m else None
    return None


def _boxes_from_right(text: str):
    """(start, end, content) of the balanced `\\boxed{}` / `\\fbox{}` of `text`, last first; at most
    `_MAX_BOX_ATTEMPTS` unbalanced ones (a truncated completion) are skipped, which bounds the work."""
    pos, skipped = len(text), 0
    while skipped < _MAX_BOX_ATTEMPTS:
        start, command = max((text.rfind(command, 0, pos), command) for command in _BOX_COMMANDS)
        if start < 0:
            return
        box = _box_at(text, start, command)
        if box is None:
            skipped += 1
        else:
            yield start, box[1], box[0]
        pos = start


def last_boxed(text: str) -> str | None:
    """Content of the last balanced `\\boxed{...}` or `\\fbox{...}` in `text` (nested braces handled)."""
    return next((content for _, _, content in _boxes_from_right(text)), None)


def boxed_group(text: str) -> tuple[list[str], int] | None:
    r"""The contents of the last group of boxed answers and where the group ends, or None when nothing is boxed.

    A group is the last balanced box and the boxes just before it that belong to the same answer, by the rule of
    latex2sympy2_extended's `extract_boxed_content` (which math-verify uses): boxes closer than 10 characters,
    or closer than 70 characters with "and", "or", "," or ";" between them and a different content. Repeated
    consecutive contents count once. `The solutions are $\boxed{2}$ and $\boxed{3}$.` -> (['2', '3'], ...);
    `\boxed{1} no no no no no \boxed{2}` -> (['2'], ...). An empty box (`within \boxed{}, we get \boxed{6}`)
    is a mention in prose and is skipped.
    """
    parts: list[str] = []
    group_end = -1
    previous_start = -1
    for start, end, content in _boxes_from_right(text):
        content = content.strip()
        if not content:  # `put it within \boxed{}`: a box mentioned in prose holds no answer
            continue
        if not parts:
            group_end = end
        else:
            between = text[end:previous_start]
            close = len(between) < _BOX_GROUP_CLOSE
            separated = (
                len(between) < _BOX_GROUP_SEPARATED and content != parts[-1] and _BOX_SEPARATOR_RE.search(between)
            )
            if not (close or separated):
                break
        if not parts or content != parts[-1]:
            parts.append(content)
        previous_start = start
    if not parts:
        return None
    return parts[::-1], group_end


def _after_hashes(text: str) -> tuple[str, int] | None:
    """Rest of the line after the last `####` (GSM8K's final-answer marker), and where the marker starts."""
    pos = text.rfind("####")
    if pos < 0:
        return None
    line = text[pos + 4 :].split("\n", 1)[0].strip()
    return (line, pos) if line else None


def _math_spans(text: str, broken: list | None = None) -> list[tuple[int, int, str]]:
    """(start, end, content) of the LaTeX math spans of `text` ($..$, $$..$$, \\(..\\), \\[..\\]), left to right.
    One linear pass pairing delimiters. Inline math (`$..$`, `\\(..\\)`) does not cross a line, as in math-verify:
    such a pair around bare mathematics (`$ \\n 9 \\n $`) is not an answer and goes to `broken` when given."""
    spans = []
    opener = None
    for m in _MATH_DELIMITER_RE.finditer(text):
        token = m.group(0)
        if opener is None:
            if token in _MATH_CLOSER:
                opener = m
        elif token == _MATH_CLOSER[opener.group(0)]:
            content = text[opener.end() : m.start()]
            if token in _INLINE_CLOSERS and "\n" in content:
                if not _LETTER_RE.search(content):  # math on its own lines inside inline delimiters
                    if broken is not None:
                        broken.append((opener.start(), m.end(), content))
                    opener = None
                else:  # `$5.\nThen $10`: dollar signs, not math
                    opener = m if token == "$" else None
            else:
                spans.append((opener.start(), m.end(), content.strip()))
                opener = None
        elif opener.group(0) == "$" and token == "$$":
            opener = m
    return [span for span in spans if span[2]]


def has_math(text: str) -> bool:
    """Whether `text` has a box or a well-formed LaTeX math span in its last characters: something for
    math-verify's own extraction to read (inline delimiters around lines of bare mathematics are not one)."""
    return any(command in text for command in _BOX_COMMANDS) or bool(_math_spans(text[-_FALLBACK_TAIL_CHARS:]))


def _prose_words(text: str) -> set[str]:
    """Words of three or more letters outside LaTeX commands and their `{...}` arguments (`pmatrix` in
    `\\begin{pmatrix}` and `meters` in `\\text{meters}` are not prose), less "and" / "or"."""
    text = _LATEX_COMMAND_RE.sub(" ", text)
    for _ in range(_BRACE_ROUNDS):
        stripped = _BRACE_GROUP_RE.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    return {word.lower() for word in _WORD_RE.findall(text)} - _JOINING_WORDS


def _value_in_phrase(phrase: str) -> str | None:
    """The value a phrase after "the answer is" states.

    A phrase that is itself the answer (`$1,234.50`, `\\frac{1}{2}`, `2 + 3 = 5`, `3 and 4`) is kept whole. A phrase
    with prose is reduced as math-verify does: of its first math span and its number (the one after its last
    `=`, else the first), whichever ends later ("The largest $n$ is 34" -> `34`; "there are 34 of them" -> `34`;
    "18 because she sells 9 eggs" -> `18`); None when it states no value.
    """
    phrase = _QUOTES_RE.sub("", phrase.strip().strip("*_ ")).strip()
    if phrase.startswith("\\(") and phrase.endswith("\\)"):
        phrase = phrase[2:-2].strip()
    if len(phrase) >= 2 and phrase[0] == "$" and phrase[-1] == "$" and phrase.count("$") in (2, 4):
        phrase = phrase.strip("$").strip()
    spans = _math_spans(phrase)
    outside = _blank(phrase, spans)
    words = _prose_words(outside)
    if not words:
        if len(spans) > 1 and not _DIGIT_RE.search(outside):  # `$12$ and $13$`: several answers
            return ", ".join(content for _, _, content in spans)
        return phrase or None
    candidates = []
    if spans:
        candidates.append((spans[0][1], spans[0][2]))
    numbers_from = outside.rfind("=") + 1
    number = _NUMBER_RE.search(outside, numbers_from)
    if number:
        candidates.append((number.end(), number.group(0).strip()))
    return max(candidates)[1] if candidates else None


def _after_answer_is(text: str, concluding_only: bool = False) -> tuple[str, int] | None:
    """The value stated after the last "the answer is" / "answer:" (up to the end of its sentence or line) that
    states one, and where its phrase starts. With `concluding_only`, only "final answer ..." and "the answer is"
    count (a mere "answer:" as in "we may check our answer: ..." does not outrank a box, as in math-verify)."""
    matches = list(_ANSWER_IS_RE.finditer(text[-_FALLBACK_TAIL_CHARS * 4 :]))
    offset = max(len(text) - _FALLBACK_TAIL_CHARS * 4, 0)
    if concluding_only:
        matches = [match for match in matches if match.group("concluding")]
    for match in reversed(matches[-_MAX_BOX_ATTEMPTS:]):
        display = _display_at(text, offset + match.end())
        if display is not None:  # "The final answer is\n\\[\n...\n\\]": the display is the value
            value = _value_in_phrase(display)
            if value and value not in _LONE_DELIMITERS:
                return value, offset + match.start()
            continue
        rest = text[offset + match.end() :].split("\n", 1)[0]
        # A sentence ends at ". " (not inside a decimal such as 3.5); math spans may hold dots.
        m = re.search(r"\.(?:\s|$)", rest)
        if m:
            rest = rest[: m.start()]
        value = _value_in_phrase(rest.strip().rstrip(".").strip())
        if value and value not in _LONE_DELIMITERS:
            return value, offset + match.start()
    return None


def _display_at(text: str, pos: int) -> str | None:
    """The content of the display math (`\\[...\\]`, `$$...$$`) that starts at `pos` after whitespace, "" when
    it is not closed, or None when no display starts there."""
    while pos < len(text) and text[pos] in " \t\r\n:":
        pos += 1
    for opener, closer in _DISPLAY_OPENERS:
        if text.startswith(opener, pos):
            end = text.find(closer, pos + len(opener))
            return "" if end < 0 else text[pos + len(opener) : end].strip()
    return None


def _after_answer_heading(text: str) -> tuple[str, int] | None:
    """The value under the last `# Answer` heading (PRM800K's format: the heading line, then the value on the
    same line or the next non-empty one), and where the heading starts; None when that line is prose."""
    offset = max(len(text) - _FALLBACK_TAIL_CHARS * 4, 0)
    last = None
    for last in _ANSWER_HEADING_RE.finditer(text, offset):
        pass
    if last is None:
        return None
    value = last.group("rest").strip()
    if not value:
        following = text[last.end() :].lstrip("\n")
        value = following.split("\n", 1)[0].strip()
    value = value.rstrip(".").strip()
    if not value or _prose_words(_blank(value, _math_spans(value))):
        return None  # `## Answer` opening a section of prose (a chat model's markdown) states no value
    value = _value_in_phrase(value)
    return (value, last.start()) if value and value not in _LONE_DELIMITERS else None


def ends_in_a_loop(text: str) -> bool:
    """Whether `text` ends inside a loop, a search cut off rather than a conclusion: its last line, numbers
    masked, repeats at least two earlier lines of its tail and has at least 20 characters ("If we let x = 14, then
    y = 15 ... is not a solution." after the same line for 12 and 13). Such a completion states no answer."""
    lines = [" ".join(line.split()) for line in text[-_FALLBACK_TAIL_CHARS:].split("\n")]
    lines = [_NUMBER_MASK_RE.sub("#", line) for line in lines if line]
    if len(lines) <= _LOOP_REPEATS or len(lines[-1]) < _LOOP_MIN_CHARS:
        return False
    return lines[:-1].count(lines[-1]) >= _LOOP_REPEATS


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    return None if last is None else last.group(0).strip()


def _blank(text: str, spans) -> str:
    """`text` with the given (start, end, ...) spans replaced by spaces (positions kept)."""
    for start, end, *_ in reversed(spans):
        text = text[:start] + " " * (end - start) + text[end:]
    return text


def _last_math_or_number(text: str, numbers: bool) -> str | None:
    """The last LaTeX math span of the text's tail (a bare `\\frac{2}{5}` counts as one), or (with `numbers`)
    its last number outside math when that ends later: math-verify's unanchored fallback, where the rightmost
    match wins. A span with prose in it (`$? just about 1$`) is reduced to the value it states."""
    tail = text[-_FALLBACK_TAIL_CHARS:]
    broken: list = []
    spans = _math_spans(tail, broken)
    outside = _blank(tail, spans + broken)
    fractions = [(m.start(), m.end(), m.group(0)) for m in _BARE_FRACTION_RE.finditer(outside)]
    outside = _blank(outside, fractions)
    last_span = max(spans + fractions, default=None, key=lambda span: span[1])
    best = None
    if last_span is not None:  # prose inside `$...$` without LaTeX (`$? just about 1$`) is reduced to its value
        content = last_span[2]
        best = (last_span[1], content if "\\" in content else _value_in_phrase(content))
    if numbers:
        last = None
        for last in _NUMBER_RE.finditer(outside):
            pass
        if last is not None and (best is None or last.end() > best[0]):
            best = (last.end(), last.group(0).strip())
    return None if best is None else best[1]


def _clean(answer: str) -> str:
    """Strip whitespace, sentence punctuation (`18.` is the sentence's end, not a decimal point) and a stray
    trailing backslash (`185\\` escapes nothing)."""
    answer = answer.strip()
    while answer and answer[-1] in ".,;\\":
        answer = answer[:-1].rstrip()
    return answer


def extract_answer(text: str, last_number_fallback: bool = True, last_math_fallback: bool = False) -> str | None:
    r"""The model's final answer in `text`, as a string, or None.

    In the order graders use (math-verify's `parse`, lighteval's extractive match, lm-eval's GSM8K regexes):

    1. a conclusion: the last group of boxed answers (`\boxed{}` / `\fbox{}`, nested braces handled; several
       boxes of one answer are joined with ", "; an empty box is a mention in prose), the last `#### x`, the
       value under the last `# Answer` line (PRM800K), or the last "the answer is x" / "final answer: x" that
       states a value (the display math after it when one follows: "The final answer is\n\\[...\\]"),
       whichever comes last (a phrase inside or before the boxes, or a mere "answer: x", does not override them;
       without boxes "answer: x" counts too); a phrase with prose is reduced to the value it states;
    2. then, if `last_number_fallback` (a numeric gold), the last number or LaTeX math span, whichever ends later
       (GSM8K style: `$1,234.50`, `1,234`, `1 000`, `18.0`, `3/4`, `$\frac{2}{5}$`);
       or, if `last_math_fallback` (a symbolic gold), the last LaTeX math span; neither when the text ends
       inside a loop (`ends_in_a_loop`: a search cut off states no answer).
    """
    if not isinstance(text, str) or not text:
        return None
    conclusions = []
    group = boxed_group(text)
    if group is not None and _clean(", ".join(group[0])):
        conclusions.append((group[1], ", ".join(group[0])))
    phrase = _after_answer_is(text, concluding_only=group is not None)
    for found in (_after_hashes(text), _after_answer_heading(text), phrase):
        if found is not None and _clean(found[0]) and (group is None or found[1] >= group[1]):
            conclusions.append((found[1], found[0]))
    if conclusions:
        return _clean(max(conclusions, key=lambda c: c[0])[1])
    if (last_number_fallback or last_math_fallback) and not ends_in_a_loop(text):
        found = _last_math_or_number(text, numbers=last_number_fallback)
        if found and _clean(found):
            return _clean(found)
    return None


def _bare_gold(text: str) -> str | None:
    """A column that holds just the answer: `18`, `$18`, `\\frac{14}{3}`, `$\\frac{14}{3}$`, `$$x > 5$$`; None for
    prose (several lines, over 300 characters, or math spans inside words: `$21,16$ or $11$`)."""
    bare = text.strip()
    if not bare or "\n" in bare or len(bare) > _MAX_BARE_GOLD_CHARS:
        return None
    spans = _math_spans(bare)
    if len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == len(bare):
        return spans[0][2]
    if spans:
        return None
    return bare


def extract_gold(text: str) -> str | None:
    r"""The gold answer held by a dataset column, or None when there is none to be found.

    Accepts a GSM8K rationale ending in `#### 18`, a MATH solution whose last group of `\boxed{...}` holds the
    answer (several boxes of one answer are joined with ", ", see `boxed_group`), or a bare answer (`18`,
    `\frac{14}{3}`, `$\frac{14}{3}$`). A stray trailing backslash (`185\`) is dropped. A marker-less text that
    spans lines, is longer than 300 characters or mixes prose and math is not a bare answer: None (then
    `accuracy_reward` lets math-verify read the column).
    """
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)  # numeric dataset columns
    hashes = _after_hashes(text)
    if hashes is not None:
        return _clean(hashes[0]) or None
    group = boxed_group(text)
    if group is not None:
        return _clean(", ".join(group[0])) or None
    bare = _bare_gold(text)
    return (_clean(bare) or None) if bare is not None else None
