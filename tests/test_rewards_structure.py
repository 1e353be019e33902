r"""`rewards.structure`: the in-process proof that two MATH answers differ, held to math-verify's own verdicts."""

import logging
from fractions import Fraction

import pytest

from rewards.equivalence import fast_verdict, match_many
from rewards.structure import answer_shape, answer_shapes, structurally_different

# (pred, gold) pairs the fast path decides as different; math-verify must find every one unequal.
DIFFERENT = [
    ("(6,31,-2)", "(6,31,-1)"),  # tuple
    ("(3,5]", "(3,4]"),  # interval
    (r"\left( 5, \frac{\pi}{2} \right)", r"\left( 3, \frac{\pi}{2} \right)"),  # polar point
    (r"\left[ \frac{\pi^2}{8}, \frac{5 \pi^2}{5} \right]", r"\left[ \frac{\pi^2}{8}, \frac{5 \pi^2}{4} \right]"),
    ("1,-4", "1,-2"),  # bare list: a set of solutions
    (r"\{1\pm\sqrt{5},-3\}", r"\{1\pm\sqrt{5},-2\}"),  # \pm is two values
    (r"1 \pm \sqrt{20}", r"1 \pm \sqrt{19}"),
    (r"(-\infty, 2) \cup (5, \infty)", r"(-\infty, 2) \cup (3, \infty)"),  # union
    (r"(-\infty, 4) \cup (3, \infty)", r"(-\infty, 2) \cup (3, \infty)"),  # overlapping: merged into all reals
    (r"(0,9) \cup (9,36)", "(0,36)"),  # 9 left out
    (r"\begin{pmatrix} 1/5 \\ -18/6 \end{pmatrix}", r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}"),  # matrix entry
    (r"\begin{pmatrix} 1 & 2 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),  # matrix shape
    ("x^3+3x-8", "x^3+3x-6"),  # polynomial
    (r"\frac{11+9a}{21}", r"\frac{11+9a}{20}"),  # rational expression
    ("2k+4", "2k+2"),
    ("6 - 6i", "6 - 5i"),  # i is a symbol to math-verify; different either way
    ("(x, y)", "(x, z)"),
    ("x=7", "x=5"),  # same variable assigned
    ("x=5", "7"),  # assignment against a value
    ("y = 2x + 4", "y = 2x + 3"),
    (r"x \in [-4,7]", r"x \in [-2,7]"),
    (r"x \in [-2,7]", "[-4,7]"),
    (r"17\mbox{ cm}^2", r"15\mbox{ cm}^2"),  # math-verify drops the unit
    ("205_5", "204_5"),  # and reads a base subscript as the digits
    (r"\frac12", r"\frac13"),
    ("(12,102)", "(12,103)"),  # inside brackets a comma separates entries
    # issue 18: exact values, and answers read as math-verify reads them
    ("13535+1", "13535"),  # exact rationals: within 1e-4 relative, still different
    ("x^8 + x^7 + x^6 + x^5 + x^4 + x^3 + x^2 + x + 1+1", "x^8 + x^7 + x^6 + x^5 + x^4 + x^3 + x^2 + x + 1"),
    ("(6,31,-1)+1", "(6,31,-1)"),  # a number added to a tuple: math-verify keeps the text
    (r"(2,\infty)+1", r"(2,\infty)"),
    (r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}+1", r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}"),
    (r"(0,9) \cup (9,36)+1", r"(0,9) \cup (9,36)"),
    (r"x \in [-2,7]+1", r"x \in [-2,7]"),
    ("52_8+1", "52_8"),  # a base subscript inside an expression: the digits
    (r"\text{Evelyn}+1", r"\text{Evelyn}"),  # a word is a symbol
    (r"\text{Navin}", r"\text{Evelyn}"),
    (r"\text{(C)}+1", r"\text{(C)}"),
    ("3R^2+1", "3R^2"),  # upper-case letters are read in lower case
    (r"10,\!080+1", r"10,\!080"),  # a bare thousands separator: different under both readings
    (r"864 \mbox{ inches}^2+1", r"864 \mbox{ inches}^2"),  # a unit word before `+ 1` is a symbol
    (r"11,\! 111,\! 111,\! 100+1", r"11,\! 111,\! 111,\! 100"),
    (r"\$32,\!348+1", r"\$32,\!348"),  # math-verify drops dollar signs
    (r"(2,12) \cup (12,102)+1", r"(2,12) \cup (12,102)"),  # inside brackets a comma is no thousands separator
    (r"\cot x+1", r"\cot x"),  # trigonometric functions of a one-letter or bracketed argument
    ("(a+5)(b+2)+1", "(a+5)(b+2)"),  # a value before `(`: different as a product and as a sum
    ("7x(x-1)(x-3)", "7x(x-1)(x-2)"),
]

# Pairs math-verify finds EQUAL although a naive reading says different: the fast path must leave them
# undecided (each is one of the refusals listed in the module docstring).
EQUAL_TO_MATH_VERIFY = [
    ("x+2t", "x+2"),  # a trailing one-letter unit is stripped
    ("5 m", "5"),
    (r"17\mbox{ cm}^2", "17"),
    (r"[0,5] \cup [5,9]", "[0,9]"),  # touching closed intervals merge
    ("2(3)", "5"),  # math-verify's reading of a parenthesised factor
    ("1/2x", r"\frac{1}{2x}"),  # `/` binds looser than an implicit product
    ("52_8", "52_{10}"),  # the base is dropped
    ("x=2x-1", "x=1"),  # relations are compared with sides flipped
    ("y=2x+3", "2y=4x+6"),  # and solved
    ("12,102", "12102"),  # a bare thousands separator
    ("3R^2", "3r^2"),  # some upper-case letters are lower-cased
    ("e^2", r"\exp(2)"),  # e is Euler's number
    (r"3\frac{1}{2}", "3.5"),  # a mixed number
    ("52_8+1", "53"),
    (r"\text{(C)}+1", "c+1"),
    (r"\text{ab}", "a b"),  # a symbol equals a product of symbols whose names spell it
    (r"\text{oo}", r"\infty"),  # compared by printed name
    (r"\text{pi}", r"\pi"),
    (r"\text{Evelyn}", r"\text{evelyn}"),
    ("13535+1", "13536"),
    (r"10,\!080", "10080"),
    ("N+1", "n+1"),
    ("1,000", "1000"),
    (r"\$32,\!348", "32348"),
    ("2(3)+1", "6"),  # 2(3) is 5 to math-verify
    ("(3)(4)", "7"),
    ("(1+2)(3)", "9"),  # but (1+2)(3) is 9
    (r"\cot x", r"\frac{1}{\tan x}"),
]


@pytest.fixture(scope="module")
def math_verify_equal():
    """math-verify's verdict, called as the verification workers call it."""
    logging.disable(logging.CRITICAL)
    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]

    def equal(pred: str, gold: str) -> bool:
        parsed = [parse("\\boxed{" + answer + "}", extraction_config=config) for answer in (gold, pred)]
        return verify(*parsed)

    yield equal
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("pred,gold", DIFFERENT)
def test_decided_different_and_math_verify_agrees(pred, gold, math_verify_equal):
    assert structurally_different(pred, gold)
    assert structurally_different(gold, pred)
    assert not math_verify_equal(pred, gold)


@pytest.mark.parametrize("pred,gold", EQUAL_TO_MATH_VERIFY)
def test_left_undecided_where_math_verify_finds_equal(pred, gold, math_verify_equal):
    assert not structurally_different(pred, gold)
    assert math_verify_equal(pred, gold)


@pytest.mark.parametrize("pred,gold", EQUAL_TO_MATH_VERIFY)
def test_fast_path_never_calls_them_different(pred, gold):
    """Neither fast negative (the numeric one and the structure reader) decides a pair math-verify finds equal."""
    assert fast_verdict(pred, gold) is not False


@pytest.mark.parametrize(
    "pred,gold",
    [("1,2", "2,1"), ("(1,2)", "1,2"), (r"3\sqrt{13}", r"\sqrt{117}"), ("x^2-1", "(x-1)(x+1)"),
     (r"\frac{20001}{\pi}", r"\frac{20000}{\pi}"),  # equal, or values within the tolerance
     ("(6,31,-1)+1", "(7,32,0)"), (r"(2,\infty)+1", r"(3,\infty)"),  # equal to a grader that adds elementwise
     (r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}+1", r"\begin{pmatrix} 2 & 0 \\ 0 & 2 \end{pmatrix}")],
)
def test_equal_or_close_values_are_not_proof(pred, gold):
    assert not structurally_different(pred, gold)


def test_shapes_read_by_hand():
    kind, delimiters, values, interval = answer_shape(r"\left[ 1, \frac{3}{2} \right)")
    assert (kind, delimiters) == ("list", "[)")
    assert [float(v[0]) for v in values] == [1.0, 1.5]
    assert interval[:2] == (1, 1.5) and interval[2:] == (True, False)
    kind, merged = answer_shape(r"[0,5] \cup (5,9] \cup (10, \infty)")
    assert kind == "union" and [(float(lo), float(hi)) for lo, hi, _, _ in merged] == [(0, 9), (10, float("inf"))]
    kind, shape, entries = answer_shape(r"\begin{bmatrix} 1 & \sqrt{4} \\ 3 & 4 \end{bmatrix}")
    assert kind == "matrix" and shape == (2, 2) and [float(e[0]) for e in entries] == [1, 2, 3, 4]
    # A variable takes a different value at each of the two sample points.
    (x,) = answer_shape("x")[2]
    assert x[0] != x[1]
    for refused in [r"\sin^2 x", r"\sin x^2", r"\sin 2x", r"\log x", "ab", "2x^y", r"\sqrt{x}", "10!", "50%",
                    r"\Gamma(3)", r"\text{E}", r"\text{I}", r"\text{infinite}", "E+1", "I^2"]:
        assert answer_shape(refused) is None, refused
    # Exact values where the answer has no decimal and no radical or pi; a word is a variable.
    ((value, _),) = answer_shape("2/3 + 1")[2]
    assert value == Fraction(5, 3)
    ((even, _),) = answer_shape(r"\text{even}")[2]
    assert even != answer_shape(r"\text{odd}")[2][0][0]
    assert answer_shape(r"\text{Even}") == answer_shape(r"\text{even}")
    # A bare thousands separator has two readings: the number, and the list.
    joined, listed = answer_shapes(r"10,\!080")
    assert joined[2] == [(10080, 10080)] and listed[2] == [(10, 10), (80, 80)]


def test_unit_letters_follow_the_installed_math_verify():
    """The one-letter unit names that math-verify strips are the ones refused at the end of an answer."""
    from latex2sympy2_extended.math_normalization import units

    from rewards.structure import _UNIT_LETTERS

    one_letter = {unit for unit in units if len(unit) == 1}
    assert one_letter == set(_UNIT_LETTERS)


class _NoPool:
    def run(self, pairs, timeout):
        raise AssertionError(f"pairs sent to the pool: {pairs}")


def test_decided_pairs_never_reach_the_pool():
    pairs = [(pred, gold) for pred, gold in DIFFERENT]
    assert match_many(pairs, pool=_NoPool(), use_cache=False) == [False] * len(pairs)


def test_matrix_rows_with_spaces_normalize_equal():
    """`\\\\ ` (a row break then a space) is not the spacing command `\\ `: the compact and spaced matrices
    are equal on the fast path."""
    assert fast_verdict(r"\begin{pmatrix}1/5\\-18/5\end{pmatrix}", r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}")


@pytest.mark.parametrize(
    "answer",
    [r"10^{10^{10^{10}}}", "(" * 140 + "1" + ")" * 140, "9" * 400, r"2^{99}^{99}", r"\sqrt[100]{10^{99}}" * 20,
     r"(1,2) \cup " * 30 + "(3,4)"],
)
def test_pathological_answers_are_refused(answer):
    """Magnitudes are capped at 1e15, length at 300 characters, nesting by Python's recursion limit."""
    assert answer_shape(answer) is None


@pytest.mark.parametrize(
    "pred,gold",
    [(r"\text{(C)}", "3"), (r"\text{(C)}", r"\text{(B)}"), (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", "(1,2)"),
     (r"\begin{pmatrix} 5 \end{pmatrix}", "5"), (r"(0,9) \cup (9,36)", "8"), (r"(0,9) \cup (9,36)", "8, 10")],
)
def test_different_kinds_decided_and_math_verify_agrees(pred, gold, math_verify_equal):
    """A matrix against anything else, a union against a finite set, one choice letter against another."""
    assert structurally_different(pred, gold) and structurally_different(gold, pred)
    assert not math_verify_equal(pred, gold) and not math_verify_equal(gold, pred)


def test_choice_letter_against_itself_is_not_decided(math_verify_equal):
    for pred in ("c", r"\text{C}", r"\text{(C)}"):
        assert not structurally_different(pred, r"\text{(C)}") and math_verify_equal(pred, r"\text{(C)}")
    assert answer_shape(r"\text{(E)}") is None  # e would be Euler's number to math-verify
