"""The learning benchmark: its arithmetic task by hand, and its `--tiny` run (the README quickstart) end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.arithmetic_task import (
    TASK_SIZES,
    Problem,
    add_without_carry,
    make_problems,
    needs_carry_or_borrow,
    rl_rows,
    solve,
    subtract_smaller_from_larger,
    warm_start_rows,
)
from benchmarks.learning import SIZES, completion_batch, markdown_table, parse_args, tokenize_rows
from rewards import ArithmeticStepChecker, accuracy_reward

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "a, b, without_carry", [(27, 45, 62), (23, 45, 68), (95, 7, 92), (999, 1, 990), (5, 5, 0), (0, 0, 0)]
)
def test_add_without_carry(a, b, without_carry):
    assert add_without_carry(a, b) == without_carry


@pytest.mark.parametrize("a, b, buggy", [(52, 17, 45), (68, 12, 56), (12, 9, 17), (100, 1, 101), (7, 7, 0)])
def test_subtract_smaller_from_larger(a, b, buggy):
    assert subtract_smaller_from_larger(a, b) == buggy


def test_solutions_by_hand():
    problem = Problem("Ann has 27 marbles. She finds 45 more. She gives away 11. How many ...?", 27, (("+", 45), ("-", 11)))
    correct, value = solve(problem, buggy=False)
    assert correct == "27 + 45 = 72\n72 - 11 = 61\n\\boxed{61}" and value == problem.answer == 61
    buggy, buggy_value = solve(problem, buggy=True)
    assert buggy == "27 + 45 = 62\n62 - 11 = 51\n\\boxed{51}" and buggy_value == 51
    assert needs_carry_or_borrow(problem)
    # the process reward pinpoints the wrong step (the second is right given the first); the outcome reward sees
    # only the answer
    checker = ArithmeticStepChecker()
    assert checker(None, [correct.split("\n"), buggy.split("\n")]) == [[1.0, 1.0, None], [0.0, 1.0, None]]
    gold = rl_rows([problem])[0]["solution"]
    assert accuracy_reward([correct, buggy], solution=[gold, gold]) == [1.0, 0.0]


def test_problems_are_distinct_and_exclude_the_test_set():
    size = TASK_SIZES["tiny"]
    test = make_problems(size, 200, seed=1)
    train = make_problems(size, 500, seed=0, exclude={p.question for p in test})
    assert len({p.question for p in train}) == 500
    assert not {p.question for p in train} & {p.question for p in test}
    for problem in train[:50]:
        lines = solve(problem, buggy=False)[0].split("\n")
        assert len(lines) == len(problem.operations) + 1  # one equation per line, then the box
        assert all(ArithmeticStepChecker().score_step(line) == 1.0 for line in lines[:-1])
        assert problem.answer > 0


def test_warm_start_rows_are_buggy_at_the_given_rate():
    problems = make_problems(TASK_SIZES["full"], 2000, seed=0)
    rows = warm_start_rows(problems, buggy_fraction=0.6, seed=0)
    buggy = Counter(row["completion"] != solve(p, buggy=False)[0] for row, p in zip(rows, problems))
    affected = sum(needs_carry_or_borrow(p) for p in problems)  # a buggy solution is visible only on these
    assert buggy[True] == pytest.approx(0.6 * affected, rel=0.1)


def test_completion_batch_masks_the_prompt():
    from grpo_ext.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(corpus=["Question: 1 + 2?\nAnswer:\n1 + 2 = 3"] * 10)
    rows = [{"prompt": "Question: 1 + 2?\nAnswer:\n", "completion": "1 + 2 = 3"}, {"prompt": "Q\n", "completion": "3"}]
    examples = tokenize_rows(tokenizer, rows)
    batch = completion_batch(examples, tokenizer.pad_token_id)
    for i, (ids, start) in enumerate(examples):
        labels = batch["labels"][i].tolist()
        assert labels[:start] == [-100] * start
        assert labels[start : len(ids)] == ids[start:] and ids[-1] == tokenizer.eos_token_id
        assert labels[len(ids):] == [-100] * (len(labels) - len(ids))
        assert batch["attention_mask"][i].sum() == len(ids)
    assert tokenizer.decode(examples[0][0][examples[0][1]:-1]) == "1 + 2 = 3"


@pytest.mark.parametrize("name", sorted(SIZES))
def test_completion_budget_fits_every_solution(name):
    """A truncated solution would lose its closing brace and EOS: the budget must hold the longest one, buggy or not."""
    from benchmarks.learning import build_splits
    from grpo_ext.tiny import build_tiny_tokenizer

    size = SIZES[name]
    splits = build_splits(size, rl_prompts=10)
    rows = warm_start_rows(splits["train"][:3000], size.buggy_fraction, seed=0)
    tokenizer = build_tiny_tokenizer(size.vocab_size, corpus=[r["prompt"] + r["completion"] for r in rows])
    longest = max(len(tokenizer(solve(p, buggy)[0])["input_ids"]) + 1  # + EOS
                  for p in splits["test"] for buggy in (False, True))
    assert longest <= size.max_completion_length


@pytest.mark.parametrize("argv", [["--sft_steps", "0"], ["--methods", "ppo"], ["--grpo_steps", "-3"]])
def test_bad_options_fail_clearly(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "--" in capsys.readouterr().err


def test_markdown_table_by_hand():
    results = {
        "warm_start": {"accuracy": {"greedy": 0.3, "maj@8": 0.4, "sampled": 0.35}},
        "methods": {"grpo_outcome": [
            {"accuracy": {"greedy": 0.8, "maj@8": 0.7, "sampled": 0.6}, "rewards": [0.1] * 5 + [0.5] * 5,
             "seconds": 120},
        ]},
    }
    table = markdown_table(results, k=8)
    assert "| warm start (SFT) | 0.300 | 0.400 | 0.350 | - | - |" in table
    assert "| grpo_outcome | 0.800 (+0.500) | 0.700 | 0.600 | 0.100 -> 0.500 | 2.0 |" in table


# The test's size: the quickstart's settings with GRPO alone and 200 held-out problems, from the warm start that
# the same command trains (saved in tests/fixtures/learning_warm_start: the 1,000 SFT steps would take 2.5 of the
# test's 3.5 minutes).
WARM_START_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "learning_warm_start"
LEARNING_TEST_ARGS = ["--tiny", "--methods", "grpo_outcome", "--test_problems", "200"]


def test_warm_start_fixture_matches_the_task():
    """The saved warm start belongs to today's task: its tokenizer is the one the run would train on the warm-start
    split of LEARNING_TEST_ARGS, and its shape is the tiny size's (else: remake it, see the fixture's README)."""
    import dataclasses

    from transformers import AutoConfig, AutoTokenizer

    from benchmarks.learning import build_splits
    from grpo_ext.tiny import build_tiny_tokenizer

    size = dataclasses.replace(SIZES["tiny"], test_problems=200)
    splits = build_splits(size, rl_prompts=size.grpo_steps * size.prompts_per_step)
    rows = warm_start_rows(splits["train"], size.buggy_fraction, seed=0)
    fresh = build_tiny_tokenizer(size.vocab_size, corpus=[row["prompt"] + row["completion"] for row in rows])
    saved = AutoTokenizer.from_pretrained(WARM_START_FIXTURE)
    assert saved.get_vocab() == fresh.get_vocab()
    sample = rows[0]["prompt"] + rows[0]["completion"]
    assert saved(sample)["input_ids"] == fresh(sample)["input_ids"]
    config = AutoConfig.from_pretrained(WARM_START_FIXTURE)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (
        size.model["hidden_size"], size.model["num_layers"], size.model["intermediate_size"])


def test_warm_start_lowers_the_loss_and_saves_a_loadable_model(tmp_path):
    """The SFT that the quickstart runs (and the fixture came from), shortened: the loss falls and the saved model
    and tokenizer load back with equal weights."""
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM

    from benchmarks.learning import build_splits, train_warm_start, warm_start

    size = dataclasses.replace(SIZES["tiny"], sft_steps=40, sft_batch_size=16)
    torch.set_num_threads(1)
    problems = build_splits(size, rl_prompts=8)["train"][:500]
    path, tokenizer, model, final_loss = train_warm_start(size, problems, tmp_path, "cpu", seed=0)
    reloaded = AutoModelForCausalLM.from_pretrained(path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    assert tokenizer.eos_token_id is not None
    # the initial model's loss on the same rows, from the same code path, is much higher
    initial = AutoModelForCausalLM.from_pretrained(tmp_path / "init")
    first = warm_start(initial, tokenizer, warm_start_rows(problems, size.buggy_fraction, seed=0),
                       dataclasses.replace(size, sft_steps=1), seed=0)[0]
    assert final_loss < 0.8 * first


def test_bad_warm_start_path_fails_clearly(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--tiny", "--warm_start_from", str(tmp_path)])
    assert f"--warm_start_from {tmp_path}: no saved model there" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_run_learns(tmp_path):
    """GRPO at the quickstart's settings on 200 held-out problems, from the quickstart's warm start, beats it by the
    issue's 15 greedy points (RL seeds 0, 1, 2 gained 39, 34 and 38, docs/benchmarks.md), on one torch thread
    whatever the default."""
    out = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}  # the benchmark chooses
    subprocess.run(
        [sys.executable, "-m", "benchmarks.learning", *LEARNING_TEST_ARGS, "--warm_start_from", str(WARM_START_FIXTURE),
         "--output_dir", str(out), "--work_dir", str(tmp_path / "work")],
        cwd=REPO_ROOT, env={**env, "HF_HUB_OFFLINE": "1"}, check=True,
        timeout=3600,  # a hang guard only: about 1 minute on 2 idle cores (measured), a few on a loaded machine
    )
    data = json.loads((out / "learning.json").read_text())
    assert data["environment"]["torch_threads"] == 1
    assert data["warm_start"]["from"] == str(WARM_START_FIXTURE)
    size = SIZES["tiny"]
    before = data["warm_start"]["accuracy"]
    assert 0.2 <= before["sampled"] <= 0.6  # the noisy warm start is right only part of the time
    (run,) = data["methods"]["grpo_outcome"]
    assert len(run["rewards"]) == size.grpo_steps
    assert all(0.0 <= r <= 1.0 for r in run["rewards"])
    assert run["accuracy"]["greedy"] >= before["greedy"] + 0.15
    assert run["accuracy"]["maj@8"] > before["maj@8"]
    assert (out / "learning_rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| warm start (SFT) |" in (out / "learning.md").read_text()
