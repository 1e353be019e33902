r"""Reasoning steps of a completion, and where each step ends in token space.

A completion's text is split into steps (by a delimiter, `"\n\n"` by default, or by a user callable
`str -> list[str]`). Each step owns its own text and the delimiter that follows it; the last step also owns any
trailing text and the trailing special tokens (EOS), so that every token up to the end of the completion belongs to
a step. The end of step j in token space is the first token whose character span reaches the start of step j + 1,
so a token that straddles a delimiter belongs to the step it closes. An empty completion has no step.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Sequence

StepSplitter = Callable[[str], list[str]]


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """Non-empty steps of `text` split on `delimiter`, stripped of surrounding whitespace."""
    return [piece.strip() for piece in text.split(delimiter) if piece.strip()]


def delimiter_splitter(delimiter: str = "\n\n") -> StepSplitter:
    """A step splitter that splits on `delimiter` (see `split_steps`)."""

    def splitter(text: str) -> list[str]:
        return split_steps(text, delimiter)

    return splitter


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Non-empty sentences and lines of `text`, stripped: a cut after `.`, `!` or `?` followed by whitespace, and at
    every line break (so `3.5` and `$1.50` stay whole; an abbreviation such as `e.g. ` does cut)."""
    return [piece.strip() for piece in _SENTENCE_END.split(text) if piece.strip()]


def named_step_splitter(name: str, delimiter: str = "\n\n") -> StepSplitter:
    """A step splitter chosen by name (the `step_splitter` option); a name is looked up, never evaluated:

    * `"delimiter"`: split on `delimiter` (`step_delimiter`), see `split_steps`;
    * `"sentences"`: `split_sentences`, for solutions written as prose.
    """
    if name == "delimiter":
        return delimiter_splitter(delimiter)
    if name == "sentences":
        return split_sentences
    raise ValueError(f"step_splitter: unknown splitter {name!r}; expected one of {', '.join(STEP_SPLITTERS)}")


STEP_SPLITTERS = ("delimiter", "sentences")


def step_char_starts(text: str, steps: Sequence[str]) -> list[int]:
    """Character offset of each step in `text`, searching left to right; steps must appear in order."""
    starts, cursor = [], 0
    for j, step in enumerate(steps):
        start = text.find(step, cursor)
        if start < 0:
            raise ValueError(
                f"step {j} ({step[:40]!r}) returned by the step splitter is not a substring of the completion "
                f"after offset {cursor}; a splitter must return pieces of the text, in order"
            )
        starts.append(start)
        cursor = start + len(step)
    return starts


def token_char_ends(token_ids: Sequence[int], tokenizer) -> tuple[str, list[int]]:
    """Decoded text (special tokens skipped, as TRL decodes completions) and each token's character end in it.

    Uses the fast tokenizer's offsets when re-encoding the text reproduces the generated ids (the usual case);
    otherwise (a non-canonical tokenization was sampled) falls back to decoding prefixes. Special tokens are
    zero-width: they end where the previous token ends.
    """
    token_ids = list(token_ids)
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    special = set(tokenizer.all_special_ids)
    kept = [k for k, t in enumerate(token_ids) if t not in special]
    ends = [0] * len(token_ids)
    encoding = None
    if kept:
        try:
            encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:  # a Python (non-Rust) tokenizer has no offsets: decode prefixes instead
            encoding = None
    if (
        encoding is not None
        and "offset_mapping" in encoding
        and list(encoding["input_ids"]) == [token_ids[k] for k in kept]
    ):
        char_end = {k: offset[1] for k, offset in zip(kept, encoding["offset_mapping"])}
    else:
        char_end, n = {}, 0
        for k in kept:
            prefix = tokenizer.decode(token_ids[: k + 1], skip_special_tokens=True)
            # length of the common prefix with the full text (a trailing partial UTF-8 character decodes to U+FFFD);
            # it never shrinks as tokens are added, so the comparison resumes where the previous token's ended
            limit = min(len(prefix), len(text))
            while n < limit and prefix[n] == text[n]:
                n += 1
            char_end[k] = n
    last = 0
    for k in range(len(token_ids)):
        last = max(last, char_end.get(k, last))
        ends[k] = last
    return text, ends


def locate_steps(token_ids: Sequence[int], tokenizer, splitter: StepSplitter) -> tuple[list[str], list[int]]:
    """Steps of a generated completion and the index of each step's last token (see the module docstring)."""
    token_ids = list(token_ids)
    text, ends = token_char_ends(token_ids, tokenizer)
    steps = list(splitter(text)) if text else []
    if not steps:
        return [], []
    starts = step_char_starts(text, steps)
    step_ends = []
    for j in range(len(steps)):
        if j == len(steps) - 1:
            step_ends.append(len(token_ids) - 1)
            break
        boundary = starts[j + 1]  # step j owns the characters [starts[j], boundary)
        step_ends.append(bisect_left(ends, boundary))  # first token reaching the boundary (ends is non-decreasing)
    return steps, step_ends
