"""Labelled equivalence suite (GSM8K and MATH style) and MATH-500 gold self-consistency."""

import json

import pytest

from rewards import answers_match, extract_gold, match_many
from rewards.equivalence import fast_verdict
from rewards.normalize import parse_number
from rewards.pool import get_default_pool

from rewards_cases import ALL_CASES, GSM8K_CASES, MATH_CASES


def test_suite_is_large_and_balanced():
    assert len(ALL_CASES) >= 150
    assert sum(label for *_, label in ALL_CASES) >= 50
    assert sum(not label for *_, label in ALL_CASES) >= 50
    assert len(GSM8K_CASES) >= 40 and len(MATH_CASES) >= 100


@pytest.mark.parametrize("pred, gold, label", ALL_CASES, ids=[f"{p}|{g}" for p, g, _ in ALL_CASES])
def test_labelled_equivalence(pred, gold, label):
    assert answers_match(pred, gold) is label


def test_batched_matches_single_calls():
    pairs = [(p, g) for p, g, _ in ALL_CASES]
    assert match_many(pairs, use_cache=False) == [label for *_, label in ALL_CASES]


def test_fast_path_decides_plain_numbers_without_sympy():
    # Pairs of plain numbers never need the worker pool: their verdict is exact and immediate.
    plain = [(p, g, label) for p, g, label in GSM8K_CASES if parse_number(p) and parse_number(g)]
    assert len(plain) >= 35
    for pred, gold, label in plain:
        assert fast_verdict(pred, gold) is label, (pred, gold)


@pytest.fixture(scope="module")
def math500(shared_data):
    return [json.loads(line) for line in (shared_data / "math500" / "test.jsonl").open()]


def test_math500_gold_equals_itself_and_its_boxed_solution(math500):
    pairs = []
    for row in math500:
        gold = extract_gold(row["answer"])
        from_solution = extract_gold(row["solution"])
        assert gold is not None and from_solution is not None, row["answer"]
        pairs += [(gold, gold), (from_solution, gold)]
    assert all(match_many(pairs))
    # The same pairs through math-verify itself (not the string fast path): every gold parses and verifies.
    assert all(get_default_pool().run(pairs, timeout=5.0))
