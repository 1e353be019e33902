"""Public API of `rewards`: extraction, fast-path equivalence, accuracy_reward and the shaping rewards."""

import math

import pytest

import rewards
from rewards import (
    accuracy_reward,
    answers_match,
    combine_rewards,
    extract_answer,
    extract_gold,
    format_reward,
    length_penalty_reward,
    reasoning_steps_reward,
    soft_overlong_punishment,
)
from rewards.normalize import parse_number


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so \boxed{\frac{1}{2}} and done", r"\frac{1}{2}"),
        (r"first \boxed{1} is wrong. Finally \boxed{\frac{a}{\sqrt{b^{2}}}}.", r"\frac{a}{\sqrt{b^{2}}}"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5 is it", "5"),
        (r"last box unbalanced \boxed{3} then \boxed{4", "3"),
        ("She earns 9 * 2 = 18 dollars.\n#### 18", "18"),
        ("Therefore, the answer is $1,234.50.", "$1,234.50"),
        ("The final answer is: 42. I hope it is correct.", "42"),
        # a numeric phrase after "the answer is" followed by prose: the number said first
        ("The answer is 5, since 2+3=5.", "5"),
        ("The answer is 18 because she sells 9 eggs at $2.", "18"),
        ("The answer is: **18**", "18"),
        ("**Answer:** 42", "42"),
        ("The answer is 18 (dollars).", "18"),
        ("The answer is 2 + 3 = 5", "2 + 3 = 5"),  # more mathematics follows: the phrase stays whole
        ("The answer is 5%", "5%"),
        ("She has 3 apples, then buys 15 more, so 18 apples.", "18"),
        ("It costs $1,234.50 in total.", "$1,234.50"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_without_last_number_fallback():
    assert extract_answer("so 18 apples", last_number_fallback=False) is None
    assert extract_answer(r"so \boxed{18}", last_number_fallback=False) == "18"
    assert extract_answer("The answer is 3 and 4", last_number_fallback=False) == "3 and 4"  # non-numeric gold


@pytest.mark.parametrize(
    "text, expected",
    [
        ("18", "18"),
        (r"\frac{14}{3}", r"\frac{14}{3}"),
        (r"$\frac{14}{3}$", r"\frac{14}{3}"),
        ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18", "18"),
        (r"We get $r = 3$, so the answer is $\boxed{\left( 3, \frac{\pi}{2} \right)}.$", r"\left( 3, \frac{\pi}{2} \right)"),
        ("A long rationale\nwithout any final answer marker", None),
        ("", None),
        (None, None),
        (18, "18"),
    ],
)
def test_extract_gold(text, expected):
    assert extract_gold(text) == expected


@pytest.mark.parametrize(
    "text, value, percent",
    [
        ("1,234.50", "2469/2", False),
        (r"\$18.00", "18", False),
        ("18 apples", "18", False),
        (r"-\dfrac34", "-3/4", False),
        (r"\frac{14}{3}", "14/3", False),
        ("7/2", "7/2", False),
        (r"25\%", "25", True),
        (r"30^\circ", "30", False),
        ("10,080", "10080", False),
        (r"10,\!080", "10080", False),
        ("10{,}080", "10080", False),
        ("18.", "18", False),
    ],
)
def test_parse_number_exact(text, value, percent):
    from fractions import Fraction

    number = parse_number(text)
    assert number is not None and number.value == Fraction(value) and number.percent == percent


@pytest.mark.parametrize("text", ["1,2", "5x", r"2\pi", r"\sqrt{2}", "1/0", "", "1" * 300])
def test_parse_number_rejects_non_plain(text):
    assert parse_number(text) is None


def test_accuracy_reward_conversational_and_string_and_columns():
    completions = [
        [{"role": "assistant", "content": r"Thus \boxed{\dfrac12}."}],
        [{"role": "assistant", "content": "So she makes 18 dollars."}],
        "#### 72",
        r"\boxed{3}",
    ]
    rewards_ = accuracy_reward(
        completions,
        answer=["0.5", "18", "Natalia sold 48/2 = 24 clips.\n#### 72", None],
        solution=[None, None, None, r"Hence $\boxed{4}$."],
    )
    assert rewards_ == [1.0, 1.0, 1.0, 0.0]


def test_accuracy_reward_none_when_gold_unparseable():
    out = accuracy_reward(["#### 5", "#### 5"], solution=["long\nrationale without marker", "#### 5"])
    assert out == [None, 1.0]


def test_accuracy_reward_errors_are_clear():
    with pytest.raises(ValueError, match="answer"):
        accuracy_reward(["1"])
    with pytest.raises(ValueError, match="column 'answer'"):
        accuracy_reward(["1", "2"], answer=["1"])


def test_grade_completions_is_accuracy_rewards_verdict_with_what_it_read():
    texts = ["So she makes 18 dollars.", "$odd$", r"\boxed{3}", "#### 5", "#### 5"]
    golds = ["18", r"\text{odd}", r"$\boxed{2}$ and $\boxed{3}$", "long\nrationale without marker", None]
    grades = rewards.grade_completions(texts, golds)
    # the fast path read both sides; math-verify's own extraction read "$odd$"; one of two boxed golds is not
    # enough; no gold in a column, or no column, gives no verdict
    assert grades == [
        rewards.Grade("18", "18", True),
        rewards.Grade(r"\text{odd}", None, True),
        rewards.Grade("2, 3", "3", False),
        rewards.Grade(None, "5", None),
        rewards.Grade(None, "5", None),
    ]
    assert accuracy_reward(texts, answer=golds) == [1.0, 1.0, 0.0, None, None]
    with pytest.raises(ValueError, match="2 completions but 1 gold"):
        rewards.grade_completions(["1", "2"], ["1"])


def test_last_number_fallback_default_only_for_numeric_gold():
    # The gold is symbolic, so a stray last number is not taken as the answer.
    assert extract_answer("x = 2 so 3") == "3"
    assert accuracy_reward(["I think it is pi/2 roughly 1"], answer=[r"\frac{\pi}{2}"]) == [0.0]
    assert accuracy_reward(["The total is 18 dollars"], answer=["18"]) == [1.0]
    strict = rewards.AccuracyReward(last_number_fallback=False)
    assert strict(["The total is 18 dollars"], answer=["18"]) == [0.0]


def test_answers_match_symbolic_goes_to_sympy():
    assert answers_match(r"3\sqrt{13}", r"\sqrt{117}")
    assert not answers_match(r"3\sqrt{13}", r"\sqrt{118}")


def test_format_reward():
    assert format_reward([r"so \boxed{3}.", "so 3", r"\boxed{3} " + "x" * 500]) == [1.0, 0.0, 0.0]
    assert format_reward([r"so \boxed{}", r"so \boxed{ }."]) == [0.0, 0.0]
    think = rewards.FormatReward(require_think=True)
    assert think([r"<think>add</think> \boxed{3}", r"\boxed{3}", r"<think></think>\boxed{3}",
                  r"<think>a \boxed{3}</think> 3"]) == [1.0, 0.0, 0.0, 0.0]
    prefilled = rewards.FormatReward(require_think=True, think_prefilled=True)
    assert prefilled([r"add</think> \boxed{3}"]) == [1.0]


def test_soft_overlong_punishment_matches_dapo_formula():
    # L_max = 10, L_cache = 4: 0 up to 6 tokens, then linear down to -1 at 10, -1 beyond.
    fn = soft_overlong_punishment(max_completion_len=10, soft_punish_cache=4)
    ids = [[0] * n for n in (3, 6, 7, 8, 10, 11)]
    assert fn(["x"] * 6, completion_ids=ids) == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    with pytest.raises(ValueError, match="completion_ids"):
        fn(["x"])
    with pytest.raises(ValueError):
        soft_overlong_punishment(10, 0)


def test_length_penalty_reward_kimi_formula():
    fn = length_penalty_reward()
    # One group, lengths 2, 4, 6: lambda = 0.5, 0, -0.5. Wrong answers keep min(0, lambda).
    completions = [r"\boxed{1}", r"\boxed{1}", r"\boxed{2}"]
    ids = [[0] * 2, [0] * 4, [0] * 6]
    out = fn(completions, completion_ids=ids, answer=["1"] * 3, prompts=["p"] * 3)
    assert out == [0.5, 0.0, -0.5]
    # Two prompts are separate groups; equal lengths give 0.
    out = fn(completions[:2], completion_ids=[[0], [0]], answer=["1", "1"], prompts=["a", "b"])
    assert out == [0.0, 0.0]


def test_reasoning_steps_reward():
    fn = reasoning_steps_reward(target_steps=3)
    text = "Step 1: add.\nStep 2: multiply.\nStep 3: done."
    assert fn([text, "First, add. Then, done.", "just 3"]) == [1.0, pytest.approx(2 / 3), 0.0]


def test_combine_rewards_weighted_sum_skips_none():
    def a(completions, **kw):
        return [1.0, None, None]

    def b(completions, **kw):
        return [0.5, 2.0, None]

    combined = combine_rewards([a, b], weights=[2.0, -1.0])
    assert combined(["x", "y", "z"]) == [1.5, -2.0, None]
    assert combined.__name__ == "a+b"
    with pytest.raises(ValueError, match="weights"):
        combine_rewards([a, b], weights=[1.0])
    total = combine_rewards([accuracy_reward, format_reward], weights=[1.0, 0.1])
    assert total([r"\boxed{18}"], answer=["18"]) == [pytest.approx(1.1)]
    assert not math.isnan(total(["18"], answer=["18"])[0])


@pytest.mark.parametrize(
    "answer, rejected",
    [
        ("1" * 1001, True),  # size
        ("(" * 40 + "1" + ")" * 40, True),  # nesting
        (r"10^{10^{10^{10}}}", True),  # magnitude: towers, big powers, factorials
        (r"2^{10^{9}}", True),
        (r"9^{9^{9^9}}!", True),
        ("100000!", True),
        (r"\sum_{k=1}^{10^{7}} \frac{1}{k}", True),  # iteration: big operators and binomials
        (r"\prod^{20000}_{k=1} k", True),
        (r"\binom{10^{9}}{10^{5}}", True),
        (r"{10^9 \choose 10^5}", True),
        # ordinary answers, including symbolic towers and moderate numbers, pass
        (r"2^{100}", False),
        (r"10^{5000}", False),
        ("10!", False),
        (r"e^{x^2}", False),
        (r"\sum_{k=1}^{100} k", False),
        (r"\sum_{k=1}^{\infty} \frac{1}{k^2}", False),
        (r"\binom{10^{9}}{2}", False),
        (r"\binom{10^{9}}{10^9 - 1}", False),
        (r"\left( 3, \frac{\pi}{2} \right)", False),
    ],
)
def test_prechecks_reject_classes_not_strings(answer, rejected):
    from rewards.guards import reject_reason

    assert (reject_reason(answer) is not None) is rejected


@pytest.mark.parametrize(
    "pred, gold",
    [("9", r"\left[ \frac{\pi^2}{8}, \frac{5 \pi^2}{4} \right]"), ("58,500", "(2,4)"), ("3", r"\{1, 3\}"),
     ("2", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"), (r"\text{even}", "9")],
)
def test_fast_path_number_never_equals_a_structure(pred, gold):
    from rewards.equivalence import fast_verdict

    assert fast_verdict(pred, gold) is False
    assert fast_verdict(gold, pred) is False


def test_reward_functions_accept_grpo_trainer_keywords():
    # GRPOTrainer._calculate_rewards calls fn(prompts=, completions=, completion_ids=, <dataset columns>,
    # trainer_state=, log_extra=, log_metric=); every reward here must take that call and name itself.
    logged = {}
    prompts = [[{"role": "user", "content": "q1"}]] * 2 + [[{"role": "user", "content": "q2"}]] * 2
    completions = [[{"role": "assistant", "content": c}] for c in
                   [r"<think>a</think> \boxed{18}", "#### 17", r"\boxed{\dfrac{14}{3}}", "I give up"]]
    kwargs = dict(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1] * 5, [1] * 9, [1] * 7, [1] * 3],
        answer=["#### 18", "#### 18", None, None],
        solution=[None, None, r"so $\boxed{\frac{14}{3}}$", r"so $\boxed{\frac{14}{3}}$"],
        question=["q1", "q1", "q2", "q2"],
        trainer_state=None,
        log_extra=lambda column, values: logged.__setitem__(column, values),
        log_metric=lambda name, value: None,
    )
    funcs = [accuracy_reward, format_reward, soft_overlong_punishment(8, 4), length_penalty_reward(),
             reasoning_steps_reward(), combine_rewards([accuracy_reward, format_reward], [1.0, 0.5])]
    outputs = {getattr(f, "__name__"): f(**kwargs) for f in funcs}
    assert outputs["accuracy_reward"] == [1.0, 0.0, 1.0, 0.0]
    assert outputs["format_reward"] == [1.0, 0.0, 1.0, 0.0]
    assert outputs["soft_overlong_punishment"] == [-0.25, -1.0, -0.75, 0.0]
    # Kimi lambda per prompt group: q1 lengths (5, 9) -> (0.5, -0.5); q2 lengths (7, 3) -> (-0.5, 0.5),
    # and a wrong answer keeps min(0, lambda).
    assert outputs["length_penalty_reward"] == [0.5, -0.5, -0.5, 0.0]
    assert outputs["accuracy_reward+format_reward"] == [1.5, 0.0, 1.5, 0.0]
    assert logged["gold_answer"] == ["18", "18", r"\frac{14}{3}", r"\frac{14}{3}"]
    assert logged["pred_answer"] == ["18", "17", r"\dfrac{14}{3}", "[none]"]


def test_default_pool_size_shares_cores_among_local_processes(monkeypatch):
    from rewards.pool import default_pool_size

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_pool_size() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_pool_size() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert default_pool_size() == 1
