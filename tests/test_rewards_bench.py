"""`python -m rewards.bench`'s warm GRPO batch: the workload builder and the measured path on a handful of items."""

import re

import pytest

from rewards.bench import build_warm_batch, main


def test_warm_batch_groups_prompts_and_labels(shared_data):
    batches = build_warm_batch(shared_data, steps=2, batch_size=32, group_size=8, seed=0)
    assert [len(batch) for batch in batches] == [32, 32, 32]  # the warm-up call, then two steps
    solutions_seen = []
    for batch in batches:
        groups = [batch[k : k + 8] for k in range(0, 32, 8)]
        for group in groups:
            assert len({item["solution"] for item in group}) == 1  # one prompt per group
            assert len({item["kind"] for item in group}) == 1
            # Answers repeat inside a group: at most 1 right value + 2 wrong ones, in two surface forms.
            assert len({item["completion"] for item in group}) < 8
            solutions_seen.append(group[0]["solution"])
        assert [item["kind"] for item in batch].count("gsm8k") == 16  # half GSM8K, half MATH-500
        assert {item["label"] for item in batch} <= {0.0, 1.0}
    assert len(set(solutions_seen)) == len(solutions_seen)  # every prompt used once: fresh steps
    assert build_warm_batch(shared_data, steps=2, batch_size=32, group_size=8, seed=0) == batches  # deterministic


def test_warm_batch_completions_state_the_labelled_answer(shared_data):
    """A GSM8K completion labelled right ends with the gold number; one labelled wrong with another number."""
    batches = build_warm_batch(shared_data, steps=1, batch_size=32, group_size=8, seed=1)
    for item in (item for batch in batches for item in batch if item["kind"] == "gsm8k"):
        final = re.findall(r"-?\d[\d,]*", item["completion"].rsplit("\n", 1)[1])[-1].replace(",", "")
        assert (final == item["solution"]) == (item["label"] == 1.0), item["completion"][-80:]
    for item in (item for batch in batches for item in batch if item["kind"] == "math"):
        assert item["completion"].startswith(item["solution"][:20])  # the reference reasoning, then an answer


def test_warm_batch_rejects_a_batch_that_splits_groups(shared_data):
    with pytest.raises(ValueError, match="multiple of 2 \\* group_size"):
        build_warm_batch(shared_data, steps=1, batch_size=24, group_size=8)


def test_bench_warm_only_reports_both_sides(shared_data, capsys):
    main(["--warm-only", "--warm-steps", "1", "--warm-batch", "16", "--data", str(shared_data), "--timeout", "5"])
    out = capsys.readouterr().out
    rates = {side: float(rate) for side, rate in re.findall(r"(ours|trl)\s*:\s*([\d.]+) items/s", out)}
    assert set(rates) == {"ours", "trl"} and all(rate > 0 for rate in rates.values())
    agreements = [float(a) for a in re.findall(r"agreement (\d\.\d+)", out)]
    assert len(agreements) == 2 and all(0.0 <= a <= 1.0 for a in agreements)
    ours_agreement = agreements[0]
    assert ours_agreement == 1.0  # every label of the built batch is what a grader says
    ratio = float(re.search(r"ratio: ([\d.]+)x", out).group(1))
    assert ratio == pytest.approx(rates["ours"] / rates["trl"], rel=0.05)


def test_warm_batch_without_reasoning_and_with_bare_golds(shared_data):
    full = build_warm_batch(shared_data, steps=1, batch_size=32, group_size=8, seed=2)
    short = build_warm_batch(shared_data, steps=1, batch_size=32, group_size=8, seed=2, reasoning=False,
                             bare_golds=True)
    for long_item, item in zip((i for b in full for i in b), (i for b in short for i in b)):
        assert item["label"] == long_item["label"] and item["kind"] == long_item["kind"]
        assert "\n" not in item["completion"] and len(item["completion"]) < len(long_item["completion"])
        if item["kind"] == "math":
            assert f"\\boxed{{{item['solution']}}}" in long_item["solution"]  # the bare answer of that solution


def test_warm_batch_wrong_math_answers_include_symbolic_ones(shared_data):
    """Issue 18: wrong MATH answers include the gold with `+1` written after it (an expression, not a changed
    integer); `symbolic_wrong=False` is the earlier workload, whose wrong answers only change an integer."""
    symbolic = build_warm_batch(shared_data, steps=4, batch_size=64, group_size=8, seed=0)
    numeric = build_warm_batch(shared_data, steps=4, batch_size=64, group_size=8, seed=0, symbolic_wrong=False)
    wrong = lambda batches: [i for b in batches for i in b if i["kind"] == "math" and i["label"] == 0.0]
    assert sum("+1}" in i["completion"] or "+1$" in i["completion"] for i in wrong(symbolic)) >= 5
    assert not any("+1}" in i["completion"] or "+1$" in i["completion"] for i in wrong(numeric))
    assert len(wrong(symbolic)) >= 20 and len(wrong(numeric)) >= 20
