"""Property tests: extraction and the fast path never raise and stay consistent on arbitrary text."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from rewards import extract_answer, extract_gold
from rewards.equivalence import fast_verdict
from rewards.guards import reject_reason
from rewards.normalize import normalize_answer, parse_number

# Text biased towards what these functions look for: LaTeX commands, braces, markers, digits.
latex_pieces = st.sampled_from(
    ["\\boxed{", "\\fbox{", "{", "}", "\\", "####", "the answer is ", "Answer:", "$", "\\$", "\\frac", "\\dfrac",
     "^", "!", "%", "\\%", ",", ".", "-", "/", " ", "\n", "\\text{", "\\left(", "\\right)", "^\\circ", "0", "1",
     "9", "12", "1,234", "3.5", "x", "\\sqrt{", "<think>", "</think>"]
)
latexish = st.lists(st.one_of(latex_pieces, st.text(max_size=5)), max_size=40).map("".join)
any_text = st.one_of(st.text(max_size=300), latexish)

SETTINGS = settings(max_examples=300, deadline=None)


@SETTINGS
@given(any_text, st.booleans())
def test_extract_answer_never_raises(text, fallback):
    answer = extract_answer(text, last_number_fallback=fallback)
    assert answer is None or (isinstance(answer, str) and answer == answer.strip())


@SETTINGS
@given(any_text)
def test_extract_gold_never_raises(text):
    gold = extract_gold(text)
    assert gold is None or (isinstance(gold, str) and gold)


@SETTINGS
@given(any_text)
def test_boxed_content_is_extracted_back(text):
    # Whatever balanced content is boxed last comes back out (when it has no braces or markers of its own).
    content = re.sub(r"[\s.,;]+$", "", text.replace("{", "").replace("}", "").replace("\\", "")).strip()
    if content:
        assert extract_answer("Reasoning... \\boxed{" + content + "}") == content


@SETTINGS
@given(any_text, any_text)
def test_fast_path_never_raises_and_is_reflexive(a, b):
    normalize_answer(a)
    parse_number(a)
    reject_reason(a)
    assert fast_verdict(a, b) in (True, False, None)
    if a.strip() and len(a) <= 1000:
        assert fast_verdict(a, a) is True


@SETTINGS
@given(st.integers(min_value=-10**12, max_value=10**12), st.integers(min_value=0, max_value=99))
def test_gsm8k_number_forms_agree(n, cents):
    # 1234 == 1,234 == $1,234.00 == 1234.0, and a different number is never equal.
    grouped = f"{n:,}"
    assert fast_verdict(grouped, str(n)) is True
    assert fast_verdict(f"\\${grouped}.00", str(n)) is True
    assert fast_verdict(f"{n}.0", str(n)) is True
    assert fast_verdict(f"{n}.{cents:02d}", str(n)) is (cents == 0)
    assert fast_verdict(str(n + 1), str(n)) is False


@SETTINGS
@given(any_text)
def test_numeric_value_never_raises(text):
    from rewards.numeric import numeric_value

    value = numeric_value(normalize_answer(text))
    assert value is None or isinstance(value, float)
