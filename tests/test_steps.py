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


class _CountingDecodes:
    """Proxy that counts the token ids passed to `decode` (the work of locating steps in a non-canonical sample)."""

    def __init__(self, tok):
        self.tok, self.decoded_ids = tok, 0

    def decode(self, ids, **kwargs):
        self.decoded_ids += len(ids)
        return self.tok.decode(ids, **kwargs)

    def __call__(self, text, **kwargs):
        return self.tok(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tok, name)


def _then_tokenizer():
    # trained so that byte-level BPE has the leading-space token " Then" (as GPT-2, Qwen and SmolLM2 have)
    return build_tiny_tokenizer(corpus=["x = 7.\n\n Then y = 8. Then z = 9."] * 20)


def test_a_token_with_a_leading_space_opens_the_next_step():
    tok = _then_tokenizer()
    ids = tok("x = 7.\n\n Then y = 8.", add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert pieces[4:6] == [".ĊĊ", "ĠThen"]
    steps, ends = locate_steps(ids, tok, SPLIT)
    assert steps == ["x = 7.", "Then y = 8."] and ends == [4, len(ids) - 1]  # ".\n\n" closes step 1, " Then" opens 2

    ids = tok("1+1=2. Then 2+2=4.", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[5:7] == [".", "ĠThen"]
    sentence_splitter = lambda t: [s.strip() for s in re.findall(r"[^.]+\.", t)]  # noqa: E731
    steps, ends = locate_steps(ids, tok, sentence_splitter)
    assert steps == ["1+1=2.", "Then 2+2=4."] and ends == [5, len(ids) - 1]


def test_leading_space_tokens_with_the_smollm2_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    text = "Step 1: 48/2 = 24.\n\n Then 48 + 24 = 72.\n\n    So the answer is 72."
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    pieces = tok.convert_ids_to_tokens(ids)
    then, so = pieces.index("ĠThen"), pieces.index("ĠSo")
    steps, ends = locate_steps(ids, tok, SPLIT)
    assert steps == ["Step 1: 48/2 = 24.", "Then 48 + 24 = 72.", "So the answer is 72."]
    assert ends == [then - 1, so - 1, len(ids) - 1]  # each step's first token is the one holding its first letter
    assert text[: len(tok.decode(ids[: ends[1] + 1]))].rstrip().endswith("72.")


def test_step_location_is_linear_for_a_non_canonical_sample():
    tok = _then_tokenizer()
    text = "x = 7.\n\n Then y = 8. Then z = 9.\n\n" * 60
    canonical = tok(text, add_special_tokens=False)["input_ids"]
    # one word spelled byte by byte, as sampling can produce: re-encoding the text no longer gives these ids
    cut = text.index("Then", len(text) // 2)
    ids = (
        tok(text[:cut], add_special_tokens=False)["input_ids"]
        + [i for ch in "Then" for i in tok(ch, add_special_tokens=False)["input_ids"]]
        + tok(text[cut + 4 :], add_special_tokens=False)["input_ids"]
    )
    assert ids != canonical and tok.decode(ids) == text and len(ids) > 600
    counting = _CountingDecodes(tok)
    decoded, char_ends = token_char_ends(ids, counting)
    assert decoded == text
    assert counting.decoded_ids <= 8 * len(ids)  # decoding every prefix instead costs len(ids)**2 / 2
    # the same ends as the exact, quadratic reference (decode every prefix)
    assert char_ends == [len(tok.decode(ids[: k + 1])) for k in range(len(ids))]
    steps, ends = locate_steps(ids, tok, SPLIT)
    assert len(steps) == 120 and ends[-1] == len(ids) - 1
