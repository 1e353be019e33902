"""Group statistics come from the whole group when its completions are spread over two processes."""

import json
from pathlib import Path

import pytest
from launch_helpers import launch_two_cpu_processes

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_group_split_over_two_processes(tiny_model_path, tmp_path):
    launch_two_cpu_processes(HERE / "grpo_ext_helpers.py", tiny_model_path, str(tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())

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
