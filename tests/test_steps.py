"""Step splitting and step ends in token space (tokens straddling delimiters, no trailing delimiter, empty)."""

import re

import pytest

from grpo_ext.steps import delimiter_splitter, locate_steps, split_steps, token_char_ends
from grpo_ext.tiny import build_tiny_tokenizer

SPLIT = delimiter_splitter("\n\n")


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def check_boundaries(tok, ids, steps, ends):
    """Step j's last token is the first token whose decoded prefix reaches the start of step j + 1."""
    text = tok.decode(ids, skip_special_tokens=True)
    for j in range(len(steps) - 1):
        start_next = text.index(steps[j + 1], text.index(steps[j]) + len(steps[j]))
        assert len(tok.decode(ids[: ends[j] + 1], skip_special_tokens=True)) >= start_next
        assert len(tok.decode(ids[: ends[j]], skip_special_tokens=True)) < start_next
    assert ends[-1] == len(ids) - 1


def test_split_steps():
    assert split_steps("a\n\nb\n\n\n\n c \n\n") == ["a", "b", "c"]
    assert split_steps("") == [] and split_steps("  \n\n ") == []
    assert split_steps("x; y", "; ") == ["x", "y"]


def test_steps_with_trailing_eos(tok):
    text = "Step 1: compute 3 + 4 = 7.\n\nStep 2: multiply 7 * 2 = 14.\n\nSo the answer is 14."
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    steps, ends = locate_steps(ids, tok, SPLIT)
    assert steps == ["Step 1: compute 3 + 4 = 7.", "Step 2: multiply 7 * 2 = 14.", "So the answer is 14."]
    check_boundaries(tok, ids, steps, ends)
    assert ends[-1] == len(ids) - 1  # the EOS token belongs to the last step


def test_step_without_trailing_delimiter_and_with_one(tok):
    for text in ("A = 1.\n\nB = 2.", "A = 1.\n\nB = 2.\n\n"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        steps, ends = locate_steps(ids, tok, SPLIT)
        assert steps == ["A = 1.", "B = 2."]
        check_boundaries(tok, ids, steps, ends)


def test_token_straddling_the_delimiter(tok):
    tok = build_tiny_tokenizer()
    tok.add_tokens([".\n\nS"])  # one token holding the end of step 1, the delimiter and the start of step 2
    straddler = tok.convert_tokens_to_ids(".\n\nS")
    ids = tok("x = 7.\n\nStep two.", add_special_tokens=False)["input_ids"]
    assert straddler in ids
    steps, ends = locate_steps(ids, tok, SPLIT)
    assert steps == ["x = 7.", "Step two."]
    assert ends[0] == ids.index(straddler)  # the straddling token closes step 1
    assert ends == sorted(ends) and ends[1] == len(ids) - 1


def test_empty_completion(tok):
    assert locate_steps([], tok, SPLIT) == ([], [])
    assert locate_steps([tok.eos_token_id], tok, SPLIT) == ([], [])
    ws = tok("\n\n  \n\n", add_special_tokens=False)["input_ids"]
    assert locate_steps(ws, tok, SPLIT) == ([], [])


def test_non_canonical_tokenization_falls_back_to_prefix_decoding(tok):
    # a sampled completion need not be the canonical encoding of its text: build one byte-token at a time
    text = "ab = 1.\n\ncd = 2."
    ids = [i for ch in text for i in tok(ch, add_special_tokens=False)["input_ids"]]
    assert ids != tok(text, add_special_tokens=False)["input_ids"]
    decoded, char_ends = token_char_ends(ids, tok)
    assert decoded == text and char_ends == list(range(1, len(text) + 1))
    steps, ends = locate_steps(ids, tok, SPLIT)
    assert steps == ["ab = 1.", "cd = 2."]
    assert ends[0] == text.index("cd") - 1  # the second "\n" closes step 1


def test_multibyte_characters(tok):
    text = "é = 1.\n\nπ = 2."  # characters the tiny vocabulary spells with several byte tokens
    ids = tok(text, add_special_tokens=False)["input_ids"]
    decoded, char_ends = token_char_ends(ids, tok)
    assert decoded == text and char_ends[-1] == len(text)
    steps, ends = locate_steps(ids, tok, SPLIT)
    assert steps == ["é = 1.", "π = 2."]
    check_boundaries(tok, ids, steps, ends)


def test_callable_splitter_and_bad_splitter(tok):
    ids = tok("1+1=2. 2+2=4.", add_special_tokens=False)["input_ids"]
    sentence_splitter = lambda t: [s.strip() for s in re.findall(r"[^.]+\.", t)]  # noqa: E731
    steps, ends = locate_steps(ids, tok, sentence_splitter)
    assert steps == ["1+1=2.", "2+2=4."]
    check_boundaries(tok, ids, steps, ends)
    with pytest.raises(ValueError, match="not a substring"):
        locate_steps(ids, tok, lambda t: ["nonsense"])


def test_fallback_with_multibyte_characters_split_over_tokens(tok):
    text = "é = 1.\n\nπ = 2."
    # encoded character by character (non-canonical, so the prefix-decoding fallback runs); the two byte tokens of
    # "é" and of "π" each decode to a partial character (U+FFFD) on their own
    ids = [i for ch in text for i in tok(ch, add_special_tokens=False)["input_ids"]]
    assert ids != tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text)  # é and π take two byte tokens each
    decoded, char_ends = token_char_ends(ids, tok)
    assert decoded == text and char_ends[-1] == len(text)
    assert char_ends == sorted(char_ends)
    steps, ends = locate_steps(ids, tok, SPLIT)
    assert steps == ["é = 1.", "π = 2."]
    check_boundaries(tok, ids, steps, ends)


class _NoOffsets:
    """A tokenizer without character offsets (as Python tokenizers): drops or refuses `return_offsets_mapping`."""

    def __init__(self, tok, refuse):
        self.tok, self.refuse = tok, refuse

    def __call__(self, text, **kwargs):
        if kwargs.pop("return_offsets_mapping", False) and self.refuse:
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        return self.tok(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


@pytest.mark.parametrize("refuse", [False, True], ids=["ignores", "raises"])
def test_tokenizer_without_offsets_falls_back_to_prefix_decoding(tok, refuse):
    text = "Step 1: 3 + 4 = 7.\n\nStep 2: 7 * 2 = 14."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    expected = locate_steps(ids, tok, SPLIT)
    assert locate_steps(ids, _NoOffsets(tok, refuse), SPLIT) == expected
    assert token_char_ends(ids, _NoOffsets(tok, refuse)) == token_char_ends(ids, tok)
