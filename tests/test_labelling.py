import pytest

from grpo_ext.labelling import (
    LabellingCost,
    TransformersContinuationSampler,
    math_shepherd_labels,
    math_shepherd_labels_batch,
    orm_labels,
    step_prefix,
)
from iterative_helpers import last_number_scorer

PROMPT = "Q: (3 + 4) * 2 = ?\n"
STEPS = ["3 + 4 = 8", "8 * 2 = 16", "The answer is 16"]  # step 1 is wrong, so everything after is wrong


class ScriptedPolicy:
    """Continuations looked up by prefix; counts calls and pretends each continuation is 5 tokens long."""

    def __init__(self, script):
        self.script = script
        self.calls = []
        self.num_generated_tokens = 0

    def __call__(self, prefixes, k):
        self.calls.append((list(prefixes), k))
        out = [self.script[p][:k] for p in prefixes]
        self.num_generated_tokens += 5 * k * len(prefixes)
        return out


def _script():
    after_1 = step_prefix(PROMPT, STEPS, 1)
    after_2 = step_prefix(PROMPT, STEPS, 2)
    # from a wrong first step, the policy still recovers once in 4 tries; after step 2 it never does
    return {
        after_1: ["8 * 2 = 16", "so 14", "16", "16"],
        after_2: ["16", "16", "answer 16", "16"],
    }


def test_step_prefix():
    assert step_prefix("P ", ["a", "b"], 1, "\n\n") == "P a\n\n"
    assert step_prefix("P ", ["a", "b"], 2, "\n\n") == "P a\n\nb\n\n"


def test_math_shepherd_hard_and_soft_labels_with_a_scripted_policy():
    policy = ScriptedPolicy(_script())
    hard, cost = math_shepherd_labels(PROMPT, STEPS, "14", policy, k=4, mode="hard", scorer=last_number_scorer)
    # step 1: 1 of 4 continuations ends in 14 -> good (hard); step 2: 0 of 4 -> bad; step 3: final answer 16 != 14
    assert hard == [1.0, 0.0, 0.0]
    assert policy.calls == [([step_prefix(PROMPT, STEPS, 1), step_prefix(PROMPT, STEPS, 2)], 4)]
    assert cost.num_continuations == 8 and cost.num_generated_tokens == 40 and cost.num_scored == 9
    assert cost.seconds >= 0
    soft, _ = math_shepherd_labels(PROMPT, STEPS, "14", ScriptedPolicy(_script()), k=4, mode="soft",
                                   scorer=last_number_scorer)
    assert soft == [0.25, 0.0, 0.0]
    # with gold 16 every continuation but "so 14" is right, and the whole solution is right
    soft16, _ = math_shepherd_labels(PROMPT, STEPS, "16", ScriptedPolicy(_script()), k=4, mode="soft",
                                     scorer=last_number_scorer)
    assert soft16 == [0.75, 1.0, 1.0]


def test_math_shepherd_scores_the_steps_so_far_plus_the_continuation():
    seen = []

    def scorer(completions, golds):
        seen.extend(completions)
        return [0.0] * len(completions)

    policy = ScriptedPolicy({step_prefix("P ", ["a", "b"], 1): ["c"]})
    math_shepherd_labels("P ", ["a", "b"], "1", policy, k=1, scorer=scorer)
    assert seen == ["a\n\nc", "a\n\nb"]  # continuation after step 1; the whole solution for the last step


def test_math_shepherd_batch_and_single_step_need_no_sampling():
    policy = ScriptedPolicy(_script())
    labels, cost = math_shepherd_labels_batch(
        [(PROMPT, STEPS, "14"), ("Q ", ["7"], "7"), ("Q ", ["8"], "7")], policy, k=4, scorer=last_number_scorer
    )
    assert labels == [[1.0, 0.0, 0.0], [1.0], [0.0]]
    assert len(policy.calls) == 1 and cost.num_continuations == 8
    labels, cost = math_shepherd_labels_batch([("Q ", ["7"], "7")], None, k=4, scorer=last_number_scorer)
    assert labels == [[1.0]] and cost.num_continuations == 0


def test_math_shepherd_rejects_bad_options_and_bad_samplers():
    with pytest.raises(ValueError, match="'hard' or 'soft'"):
        math_shepherd_labels(PROMPT, STEPS, "14", ScriptedPolicy(_script()), mode="medium", scorer=last_number_scorer)
    with pytest.raises(ValueError, match="k must be"):
        math_shepherd_labels(PROMPT, STEPS, "14", ScriptedPolicy(_script()), k=0, scorer=last_number_scorer)
    with pytest.raises(ValueError, match="4 continuations"):
        math_shepherd_labels(PROMPT, STEPS, "14", lambda p, k: [["x"]] * len(p), k=4, scorer=last_number_scorer)


def test_orm_labels_leave_unscorable_rollouts_unlabelled():
    """An unscorable rollout says nothing about correctness: no label, rather than a 0 that teaches the RM that a
    possibly right solution is wrong."""
    labels, cost = orm_labels(["q"] * 4, ["7", "8", "7", "no number"], ["7", "7", "", "7"], last_number_scorer)
    assert labels == [1, 0, None, 0] and cost.num_scored == 4 and cost.num_unscorable == 1
    nan_scorer = lambda completions, golds: [float("nan"), 1.0]  # noqa: E731
    assert orm_labels(["q"] * 2, ["a", "b"], ["1", "1"], nan_scorer)[0] == [None, 1]


def test_orm_labels_with_the_default_scorer_leave_an_unreadable_gold_unlabelled():
    """`rewards.accuracy_reward` scores None when it finds no gold answer: a right-looking solution then gets no
    label, while a readable gold still labels a wrong one 0."""
    labels, cost = orm_labels(["q"] * 3, [r"\boxed{7}", r"\boxed{7}", r"\boxed{8}"], ["", "7", "7"])
    assert labels == [None, 1, 0] and cost.num_unscorable == 1


def test_math_shepherd_leaves_an_unscorable_solution_unlabelled():
    steps = ["3 + 4 = 7", "so 7"]
    policy = ScriptedPolicy({step_prefix("P ", steps, 1): ["7", "7"]})
    labels, cost = math_shepherd_labels_batch(  # the first has no gold to compare with: last_number_scorer's None
        [("P ", steps, ""), ("P ", ["7"], "7")], policy, k=2, scorer=last_number_scorer
    )
    assert labels == [None, [1.0]] and cost.num_unscorable == 1
    with pytest.raises(ValueError, match="lengths differ"):
        orm_labels(["q"], ["7", "8"], ["7"], last_number_scorer)


def test_labelling_cost_adds_up():
    total = LabellingCost()
    total += LabellingCost(2, 10, 3, 0.5)
    total += LabellingCost(1, 5, 1, 0.25)
    assert total == LabellingCost(3, 15, 4, 0.75)
    assert total.as_metrics()["rm/label_num_generated_tokens"] == 15.0


def test_transformers_sampler_returns_k_continuations_and_counts_tokens(tiny_model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    sampler = TransformersContinuationSampler(model, tok, max_new_tokens=4, batch_size=2)
    out = sampler(["Step 1: 3 + 4 = 7\n\n", "Q", "48/2 = 24."], 3)
    assert [len(c) for c in out] == [3, 3, 3] and all(isinstance(t, str) for c in out for t in c)
    assert 9 <= sampler.num_generated_tokens <= 9 * 4  # each continuation makes 1 to 4 tokens


def _gsm8k_model_solutions(shared_data, n_questions):
    import json

    prompts, completions, golds, verdicts = [], [], [], []
    with open(shared_data / "gsm8k" / "example_model_solutions.jsonl") as f:
        for line in list(f)[:n_questions]:
            row = json.loads(line)
            gold = row["ground_truth"].split("A:")[-1].strip()
            for key in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
                prompts.append(row["question"])
                completions.append(row[key]["solution"])
                golds.append(gold)
                verdicts.append(int(row[key]["is_correct"]))
    return prompts, completions, golds, verdicts


def test_default_scorer_reproduces_the_human_verdicts_on_real_gsm8k_solutions(shared_data):
    """ORM labels from `rewards.accuracy_reward` against the `is_correct` verdicts shipped with real model solutions
    (200 questions x 4 models; all 1,319 x 4 agree too, see docs/iterative_rl.md)."""
    prompts, completions, golds, verdicts = _gsm8k_model_solutions(shared_data, 200)
    labels, cost = orm_labels(prompts, completions, golds)  # default scorer: rewards.accuracy_reward
    assert cost.num_scored == 800 and 0 < sum(verdicts) < 800
    assert labels == verdicts


def test_math_shepherd_continues_the_policys_own_text_when_given_the_completion():
    completion = "3 + 4 = 7;  7 * 2 = 14; so 14"
    steps = ["3 + 4 = 7;", "7 * 2 = 14;", "so 14"]  # what a ';'-splitter that keeps the ';' returns
    seen = []

    def scorer(completions, golds):
        seen.extend(completions)
        return last_number_scorer(completions, golds)

    policy = ScriptedPolicy({"P " + "3 + 4 = 7;": ["x 14"], "P " + "3 + 4 = 7;  7 * 2 = 14;": ["0"]})
    labels, _ = math_shepherd_labels_batch([("P ", steps, "14", completion)], policy, k=1, scorer=scorer)
    assert labels == [[1.0, 0.0, 1.0]]
    assert seen == ["3 + 4 = 7;x 14", "3 + 4 = 7;  7 * 2 = 14;0", completion]
    with pytest.raises(ValueError, match="not a substring"):
        math_shepherd_labels_batch([("P ", ["nope"], "1", completion)], policy, k=1, scorer=scorer)
