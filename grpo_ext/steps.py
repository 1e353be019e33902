r"""Reasoning steps of a completion, and where each step ends in token space.

A completion's text is split into steps (by a delimiter, `"\n\n"` by default, or by a user callable
`str -> list[str]`). Each step owns its own text and the delimiter that follows it; the last step also owns any
trailing text and the trailing special tokens (EOS), so that every token up to the end of the completion belongs to
a step. A token belongs to the step in which it starts, where a token starts at its first non-whitespace character
(`token_anchors`): `" Then"` (byte-level BPE's leading space) opens the step of `Then`, a whitespace-only token
such as `"\n\n"` closes the step it follows, and a token that straddles a delimiter belongs to the step it closes.
Step j's last token is the last token starting before step j + 1. A completion with no text has no step.
"""

from __future__ import annotations

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
    otherwise (a non-canonical tokenization was sampled, or a tokenizer without offsets) decodes token by token
    (`_incremental_char_ends`), linear in the number of tokens. Special tokens are zero-width: they end where the
    previous token ends.
    """
    token_ids = list(token_ids)
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    special = set(tokenizer.all_special_ids)
    kept = [k for k, t in enumerate(token_ids) if t not in special]
    encoding = None
    if kept:
        try:
            encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        except NotImplementedError:  # a Python (non-Rust) tokenizer has no offsets
            encoding = None
    if (
        encoding is not None
        and "offset_mapping" in encoding
        and list(encoding["input_ids"]) == [token_ids[k] for k in kept]
    ):
        char_end = {k: offset[1] for k, offset in zip(kept, encoding["offset_mapping"])}
        ends, last = [], 0
        for k in range(len(token_ids)):
            last = max(last, char_end.get(k, last))
            ends.append(last)
        return text, ends
    ends = _incremental_char_ends(token_ids, tokenizer, text)
    if ends is None:  # a decoder whose output is not local to a few tokens: the exact but quadratic way
        ends = _prefix_char_ends(token_ids, tokenizer, text)
    return text, ends


# A window whose decoding still ends in an incomplete character is closed anyway after this many tokens, so that
# invalid byte runs cannot make the windows (and the cost) grow with the completion.
_MAX_PENDING_TOKENS = 8


def _incremental_char_ends(token_ids: list[int], tokenizer, text: str) -> list[int] | None:
    """Character ends by incremental detokenisation (as streaming decoders do): token k's text is
    decode(ids[p:k+1]) minus decode(ids[p:r]), where [p, r) are the last emitted tokens, kept as context so that
    leading-space and merge rules decode as in the full text. A token that leaves an incomplete UTF-8 character
    (U+FFFD at the end) gets width 0 until a later one completes it. Each decode call covers a few tokens, so the cost
    is linear in the completion's length. Returns None when the pieces do not join into `text`, the full decoding."""
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    ends, pieces = [], []
    prefix, read = 0, 0  # emitted context window [prefix, read)
    prefix_text, emitted = "", 0
    for k in range(len(token_ids)):
        window_text = decode(token_ids[prefix : k + 1])
        pending = window_text.endswith("\ufffd") and k + 1 - read < _MAX_PENDING_TOKENS
        if len(window_text) > len(prefix_text) and not pending:
            if not window_text.startswith(prefix_text):
                return None
            pieces.append(window_text[len(prefix_text) :])
            emitted += len(pieces[-1])
            prefix, read = read, k + 1
            prefix_text = decode(token_ids[prefix:read])
        ends.append(emitted)
    if read < len(token_ids):  # trailing tokens that never completed a character
        tail = decode(token_ids[prefix:])
        if not tail.startswith(prefix_text):
            return None
        pieces.append(tail[len(prefix_text) :])
        ends[-1] = emitted + len(pieces[-1])
    if "".join(pieces) != text:
        return None
    return ends


def _prefix_char_ends(token_ids: list[int], tokenizer, text: str) -> list[int]:
    """Character ends by decoding every prefix (exact for any decoder, quadratic): the last resort."""
    ends, n = [], 0
    for k in range(len(token_ids)):
        prefix = tokenizer.decode(token_ids[: k + 1], skip_special_tokens=True)
        # length of the common prefix with the full text (a trailing partial UTF-8 character decodes to U+FFFD);
        # it never shrinks as tokens are added, so the comparison resumes where the previous token's ended
        limit = min(len(prefix), len(text))
        while n < limit and prefix[n] == text[n]:
            n += 1
        ends.append(n)
    return ends


def token_anchors(text: str, ends: Sequence[int]) -> list[int]:
    """Where each token starts, for step membership: the offset of its first non-whitespace character, or of its
    first character when it is all whitespace (or zero-width). Token k spans text[ends[k-1]:ends[k]], so
    `" Then"` is anchored at its `T`: a leading space does not drag a token into the step before."""
    anchors, start = [], 0
    for end in ends:
        anchor = start
        while anchor < end and text[anchor].isspace():
            anchor += 1
        anchors.append(anchor if anchor < end else start)
        start = end
    return anchors


def locate_steps(token_ids: Sequence[int], tokenizer, splitter: StepSplitter) -> tuple[list[str], list[int]]:
    """Steps of a generated completion and the index of each step's last token (see the module docstring)."""
    token_ids = list(token_ids)
    text, ends = token_char_ends(token_ids, tokenizer)
    steps = list(splitter(text)) if text else []
    if not steps:
        return [], []
    starts = step_char_starts(text, steps)
    anchors = token_anchors(text, ends)  # non-decreasing
    # step j ends at the last token anchored before step j + 1's text; the last step takes every remaining token
    step_ends = [max(bisect_left(anchors, boundary) - 1, 0) for boundary in starts[1:]]
    return steps, step_ends + [len(token_ids) - 1]
