r"""Rewards on real model-written MATH solutions (issue 18): the failure classes, worked by hand, and the labelled
corpus of real solutions with other people's correctness labels held against its labels and against math-verify.
The corpus is data from other repositories and is not committed: `tests/data/build_math_solution_cases.py` builds
it, `rewards.agreement.math_solution_cases_path` finds it; its tests skip where it is not built.
"""

import json
from pathlib import Path

import pytest

from rewards import AccuracyReward, extract_answer, extract_gold, get_default_pool
from rewards.accuracy import extract_prediction
from rewards.agreement import agreement, load_cases, math_solution_cases_path, math_verify_verdicts, our_verdicts
from rewards.equivalence import match_many
from rewards.extraction import ends_in_a_loop



@pytest.fixture(scope="module")
def corpus() -> Path:
    path = math_solution_cases_path()
    if path is None:
        pytest.skip("the MATH-solution corpus is not built here (tests/data/build_math_solution_cases.py)")
    return path

# Correctness, not speed, is measured here: a deadline no loaded CI machine reaches on these small answers.
TIMEOUT = 30.0


@pytest.fixture(scope="module", autouse=True)
def warm_pool():
    get_default_pool().wait_ready()


def _score(completion: str, gold: str) -> float | None:
    return AccuracyReward(timeout=TIMEOUT)([completion], solution=[gold])[0]


# 1. PRM800K's format: the solution ends with a line `# Answer` and the value after it.
PRM800K_README = (  # openai/prm800k README.md, the annotated sample (MIT): "We can see this solution is incorrect."
    "I want to find the largest positive integer that divides both $20 !$ and $200,\\!000$ evenly.\n"
    "So, the greatest common factor is $2^9\\cdot 5^4 = 512\\cdot 625 = 320,\\!000$.\n\n# Answer\n\n320,000"
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The fifth term is $x/y - 2y^2/y = (x - 2y^2)/y$.\n\n# Answer\n\n(x - 2y^2)/y", "(x - 2y^2)/y"),
        ("So $a = 3$ and $b = 7$, and the sum is 10.\n\n# Answer\n\n10", "10"),
        ("We get $\\frac{0.02}{7}$.\n\n# Answer\n\n\\frac{0.02}{7}", "\\frac{0.02}{7}"),
        ("The answer step comes last.\n# Answer: $12$", "12"),
        (PRM800K_README, "320,000"),
    ],
)
def test_answer_heading_is_the_conclusion(text, expected):
    assert extract_answer(text, last_number_fallback=False) == expected


def test_answer_heading_scores_the_stated_value():
    body = "The fifth term is $x/y - 2y^2/y = (x - 2y^2)/y$.\n\n# Answer\n\n(x - 2y^2)/y"
    assert extract_prediction(body, "\\frac{123}{40}") == "(x - 2y^2)/y"  # not the exponent 2 of the body
    assert _score(body, "\\frac{123}{40}") == 0.0
    assert _score("Adding, $3 + 4 = 7$ so $x = 2$.\n\n# Answer\n\n7", "7") == 1.0
    assert _score(PRM800K_README, "40,\\!000") == 0.0
    # A box after the heading still wins (it comes later); a heading after a box wins over it.
    assert extract_answer("# Answer\n\nsee below: \\boxed{5}") == "5"
    assert extract_answer("\\boxed{4}, checking again...\n\n# Answer\n\n5") == "5"


# 2. "The final answer is" followed by a display: the display is the value.
MINERVA_DISPLAY = (
    "Therefore, the desired matrix is\n\\[\n\\boxed{\\begin{pmatrix}0&1\\\\1&0\\end{pmatrix}}.\n\\]\n\n"
    "Final Answer: The final answer is\n\\[\n\\begin{pmatrix}0&1\\\\1&0\\end{pmatrix}.\n\\]\nI hope it is correct."
)


def test_final_answer_followed_by_a_display():
    assert extract_answer(MINERVA_DISPLAY) == "\\begin{pmatrix}0&1\\\\1&0\\end{pmatrix}"
    assert _score(MINERVA_DISPLAY, "\\begin{pmatrix} 0 & 1 \\\\ 1 & 0 \\end{pmatrix}") == 1.0
    assert _score(MINERVA_DISPLAY, "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}") == 0.0
    assert extract_answer("The final answer is:\n$$\n\\frac{3}{4}\n$$") == "\\frac{3}{4}"
    assert extract_answer("So the final answer is \\[ 12 \\]") == "12"
    # A lone delimiter is never an answer: with no closing `\]` the phrase states no value.
    assert extract_answer("The final answer is\n\\[", last_number_fallback=False) is None


# 3. A \boxed{} mentioned in prose holds no answer.
@pytest.mark.parametrize(
    "text, expected",
    [
        ("Therefore, $\\log_2 64 = 6$. Putting the final answer within \\boxed{}, we get: \\[\\boxed{6}\\]", "6"),
        ("The answer goes in \\boxed{} as asked: \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{3} and \\boxed{}", "3"),
    ],
)
def test_empty_box_in_prose_is_no_answer(text, expected):
    assert extract_answer(text) == expected


def test_empty_box_in_prose_scores_the_boxed_value():
    text = "Therefore, $\\log_2 64 = 6$. Putting the final answer within \\boxed{}, we get: \\[\\boxed{6}\\]"
    assert _score(text, "6") == 1.0
    assert extract_gold("so \\boxed{} holds \\boxed{7}") == "7"


# 4. `\text {unit}` with a space after `\text` is a unit like `\text{unit}`.
@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("8\\sqrt{3}", "8\\sqrt{3} \\text { square inches}", True),
        ("8\\sqrt{3} \\text{ square inches}", "8\\sqrt{3} \\text { square inches}", True),
        ("4\\sqrt{3}", "8\\sqrt{3} \\text { square inches}", False),
        ("12", "12 \\mbox {cm}", True),
    ],
)
def test_unit_after_spaced_text_command(pred, gold, expected):
    assert match_many([(pred, gold)], timeout=TIMEOUT, use_cache=False) == [expected]


# 5. A solution that never concludes: a search loop cut off is no answer; a final statement still is.
LOOP = (
    "We need $6x - 2y = -12$ with $y = x + 1$.\n"
    "If we let \\( x = 12 \\), then \\( y = 13 \\). Substituting these values into the equation gives:\n"
    "\\[ 6(12) - 2(13) = 72 - 26 = 46, \\]\n"
    "which is still not equal to \\(-12\\). So, \\( x = 12 \\) and \\( y = 13 \\) is not a solution.\n"
    "If we let \\( x = 13 \\), then \\( y = 14 \\). Substituting these values into the equation gives:\n"
    "\\[ 6(13) - 2(14) = 78 - 28 = 50, \\]\n"
    "which is still not equal to \\(-12\\). So, \\( x = 13 \\) and \\( y = 14 \\) is not a solution.\n"
    "If we let \\( x = 14 \\), then \\( y = 15 \\). Substituting these values into the equation gives:\n"
    "\\[ 6(14) - 2(15) = 84 - 30 = 54, \\]\n"
    "which is still not equal to \\(-12\\). So, \\( x = 14 \\) and \\( y = 15 \\) is not a solution."
)


def test_a_search_loop_cut_off_is_not_an_answer():
    assert ends_in_a_loop(LOOP)
    assert extract_prediction(LOOP, "15") is None
    assert extract_prediction(LOOP, "x^2") is None
    assert _score(LOOP, "15") == 0.0  # the last span, y = 15, happens to be the gold: no reward for not answering
    assert _score(LOOP, "\\boxed{15}") == 0.0


def test_a_final_statement_is_still_read():
    text = "Try $n = 5$: too small.\nTry $n = 6$: it works.\nTherefore, the least value is $6$."
    assert not ends_in_a_loop(text)
    assert _score(text, "6") == 1.0
    gsm = "She sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18 every day.\nA: 18"
    assert not ends_in_a_loop(gsm) and _score(gsm, "18") == 1.0
    # Repeated short lines (a table, a column of equations) are no loop.
    table = "\\[x = 1\\]\n\\[x = 2\\]\n\\[x = 3\\]"
    assert not ends_in_a_loop(table)


def test_a_search_loop_is_not_read_again_by_math_verify():
    """math-verify's own extraction would take the last span, `y = 15`, as the answer: a loop is not sent to it."""
    loop = "\n".join(f"Trying \\( y = {y} \\) does not satisfy the second equation." for y in (12, 13, 14, 15))
    assert ends_in_a_loop(loop)
    assert _score(loop, "15") == 0.0
    assert _score(loop.rsplit("\n", 1)[0] + "\nTherefore \\( y = 15 \\).", "15") == 1.0


# The labelled corpus of real solutions.
def test_corpus_rows_name_their_source_and_label(corpus):
    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    assert 200 <= len(rows) <= 400
    for row in rows:
        assert row["prediction"] and row["gold"] and isinstance(row["expected"], bool)
        assert "@" in row["source"] and row["label_source"] and row["gold_source"] and row["problem_id"]
    by_class = {}
    for row in rows:
        for name in row["classes"] or ["ordinary"]:
            by_class.setdefault(name, []).append(row)
    sizes = {name: len(members) for name, members in by_class.items()}
    assert sizes["final-answer-display"] >= 40 and sizes["no-conclusion"] >= 80 and sizes["ordinary"] >= 100, sizes
    assert {"answer-heading", "box-in-prose", "spaced-text-unit"} <= set(sizes), sizes
    ordinary = by_class["ordinary"]
    assert sum(r["expected"] for r in ordinary) == len(ordinary) // 2  # drawn half right, half wrong
    assert len({r["generator"] for r in rows}) >= 8


def test_corpus_agrees_with_its_labels_at_least_as_often_as_math_verify(corpus):
    cases = load_cases(corpus)
    ours, ours_false_positives = agreement(cases, our_verdicts(cases, timeout=TIMEOUT))
    theirs, their_false_positives = agreement(cases, math_verify_verdicts(cases))
    assert ours >= 0.98, ours
    assert ours >= theirs, (ours, theirs)
    assert len(ours_false_positives) <= len(their_false_positives), [c.source for c in ours_false_positives]


@pytest.mark.parametrize(
    "record, expected",
    [
        ("#math-644", True),  # "Final Answer: The final answer is\n\\[ matrix \\]"
        ("#math-767", True),  # "Putting the final answer within \\boxed{}, we get: \\[\\boxed{6}\\]"
        ("#math-744", True),  # gold 8\\sqrt{3} \\text { square inches}
        ("#math-381", False),  # a search loop cut off, its last span y = 15 equal to the gold
        ("#annotated-sample", False),  # PRM800K: "# Answer\n\n320,000" against 40,\\!000
    ],
)
def test_corpus_rows_of_each_failure_class(corpus, record, expected):
    (case,) = [c for c in load_cases(corpus) if c.source.endswith(record)]
    assert case.expected is expected
    assert _score(case.prediction, case.gold) == (1.0 if expected else 0.0)


def test_a_markdown_answer_section_with_prose_is_not_a_value():
    """`## Answer` opening a section of prose (as chat models write) states no value; the text is read as usual."""
    text = "## Answer\n\nTo find it, note that $x = 3$ first.\nThen $y = 4$, so the total is $12$."
    assert extract_prediction(text, "12") == "12"
    assert _score(text, "12") == 1.0
