"""The batching structure of `accuracy_reward` on a GRPO batch: golds extracted once per group."""

import rewards.accuracy as accuracy
from rewards import AccuracyReward, clear_cache


def test_each_distinct_gold_is_extracted_once_per_call(monkeypatch):
    calls = []

    def counting_extract_gold(text):
        calls.append(text)
        return original(text)

    original = accuracy.extract_gold
    monkeypatch.setattr(accuracy, "extract_gold", counting_extract_gold)
    solutions = ["Natalia sold 48/2 = 24 clips.\n#### 72"] * 8 + [r"So the answer is $\boxed{\frac{14}{3}}$."] * 8
    completions = ["#### 72", "#### 71"] * 4 + [r"\boxed{\dfrac{14}{3}}", r"\boxed{4.67}"] * 4
    clear_cache()
    rewards = AccuracyReward()(completions, solution=solutions)
    assert rewards == [1.0, 0.0] * 8
    assert sorted(set(calls)) == sorted(set(solutions)) and len(calls) == 2


def test_non_string_golds_are_still_read():
    assert AccuracyReward()(["#### 5", "#### 6"], answer=[5, 5]) == [1.0, 0.0]
