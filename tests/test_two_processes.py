"""The suite's 2-process checks, run in one `accelerate launch` of `tests/two_process_checks.py` on 2 CPU processes
(gloo): start-up is most of a launch's cost, so the checks share it. Each check reports in its own folder or line."""

import json
from pathlib import Path

import pytest
import torch
from launch_helpers import launch_two_cpu_processes

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def launched(tiny_model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    result = launch_two_cpu_processes(HERE / "two_process_checks.py", tiny_model_path, str(out), timeout=900)
    return out, result.stdout


def test_group_split_over_two_processes(launched):
    """Group statistics come from the whole group when its completions are spread over two processes."""
    tmp_path, _ = launched
    report = json.loads((tmp_path / "group" / "report.json").read_text())

    process = report["process"]
    assert process["num_processes"] == 2 and len(process["advantages"]) == 4
    for got, expected in zip(process["advantages"], process["expected"]):
        assert got == pytest.approx(expected[: len(got)], abs=1e-5)
        assert all(abs(x) < 1e-6 for x in expected[len(got):])

    # outcome advantages normalised over the 4 completions of the group, not over each process's 2
    advantages = report["kl_in_reward"]["advantages"]
    mean = sum(advantages) / 4
    std = (sum((a - mean) ** 2 for a in advantages) / 3) ** 0.5
    # std 1 (up to TRL's +1e-4 in the denominator); per-process normalisation of pairs would give sqrt(2/3) = 0.82
    assert abs(mean) < 1e-5 and 0.99 < std <= 1.0


def test_refresh_ends_with_identical_weights_alone_and_in_the_trainer(launched):
    """The refresher alone: an ORM and a PRM refresh with different rollouts and initial weights on each rank end
    with the same RM weights, buffer and pending state. The trainer's wiring: it records each rank's rollouts once,
    every rank refreshes at the same steps and ends with the same ORM weights, and each reference equals its policy."""
    _, stdout = launched
    assert stdout.count("refresher IDENTICAL") == 2, stdout
    assert stdout.count("trainer IDENTICAL") == 2, stdout


def test_ppo_critics_are_identical_after_a_step(launched):
    """accelerate launch on 2 CPU processes, each with its own prompts: after a step both ranks' critics are
    bit-identical and differ from the initial one (the gradients were all-reduced), and the advantages were whitened
    over both ranks' tokens (mean 0, Bessel variance 1 over all of them; whitening each rank's own n tokens would
    leave a variance of (N - 2) / (N - 1) over the N = 2n)."""
    tmp_path, _ = launched
    report = json.loads((tmp_path / "ppo" / "report.json").read_text())
    assert report["num_processes"] == 2 and report["prompts_differ"]
    ranks = [torch.load(tmp_path / "ppo" / f"critic_rank{r}.pt") for r in range(2)]
    initial = ranks[0].pop("initial"), ranks[1].pop("initial")
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    assert any(not torch.equal(ranks[0][k], initial[0][k]) for k in ranks[0])
    advantages = torch.tensor([a for rank in report["advantages"] for a in rank], dtype=torch.float64)
    assert all(report["advantages"]) and advantages.numel() >= 8
    assert abs(advantages.mean().item()) < 1e-5 and advantages.var().item() == pytest.approx(1.0, abs=1e-5)
