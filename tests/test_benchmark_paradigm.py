"""The paradigm benchmark: its budget, metrics, memory count and table by hand, and a shortened `--tiny` run end to
end (every method; a method that raises is reported, not fatal)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import paradigm
from benchmarks.common import held_training_bytes
from benchmarks.learning import accuracy_metrics

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_held_training_bytes_by_hand():
    """nn.Linear(3, 2): 6 weights + 2 biases = 8 float32 = 32 bytes; the same again in gradients; Adam holds two
    moments of 32 bytes and one float32 step counter per parameter tensor (2 x 4 bytes)."""
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(layer.parameters())
    assert held_training_bytes([layer], [optimizer]) == {
        "parameters": 32, "gradients": 0, "optimizer_state": 0, "total": 32}
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    assert held_training_bytes([layer], [optimizer]) == {
        "parameters": 32, "gradients": 32, "optimizer_state": 32 + 32 + 8, "total": 136}
    # a module listed twice, or sharing a parameter with another, counts once
    shared = torch.nn.Sequential(layer)
    assert held_training_bytes([layer, shared, layer], [optimizer])["total"] == 136
    # a second, distinct model (a reference) adds its parameters only
    reference = torch.nn.Linear(3, 2)
    assert held_training_bytes([layer, reference], [optimizer])["parameters"] == 64


def test_method_budget_by_hand():
    size = paradigm.SIZES["tiny"]  # 30 steps x 16 prompts x 8 samples
    sampled = {"prompts": 480, "samples": 3840, "optimizer_steps": 30, "sequences_per_step": 128, "batch_rows": 128}
    for method in ("rft", "online_rft", "grpo_outcome", "grpo_process", "ppo"):
        assert paradigm.method_budget(method, size) == sampled
    assert paradigm.method_budget("sft", size) == {**sampled, "samples": 0}
    assert paradigm.method_budget("dpo", size) == {**sampled, "batch_rows": 64}  # 64 pairs = 128 completions
    with pytest.raises(ValueError, match="unknown method 'ipo'"):
        paradigm.method_budget("ipo", size)


def test_accuracy_metrics_by_hand():
    """Two problems of 16 samples: one with 2 correct, one with none. pass@4 of the first is
    1 - C(14, 4) / C(16, 4) = 1 - 1001 / 1820 = 0.45; pass@16 is 1 (all 16 drawn)."""
    ks = ("1", "4", "8", "16")
    sampled = [
        {"corrects": [True, True] + [False] * 14, "maj": {k: k == "8" for k in ks}},
        {"corrects": [False] * 16, "maj": {k: False for k in ks}},
    ]
    greedy = [{"corrects": [True]}, {"corrects": [False]}]
    assert accuracy_metrics(greedy, sampled, maj_k=8, pass_ks=(1, 4, 16)) == pytest.approx(
        {"greedy": 0.5, "maj@8": 0.5, "sampled": 1 / 16, "pass@1": 1 / 16, "pass@4": 0.45 / 2, "pass@16": 0.5})
    # without pass_ks: the learning benchmark's three figures
    assert accuracy_metrics(greedy, sampled, maj_k=8) == pytest.approx({"greedy": 0.5, "maj@8": 0.5, "sampled": 1 / 16})


def _results():
    accuracy = {"greedy": 0.3, "maj@8": 0.4, "pass@1": 0.3, "pass@4": 0.6, "pass@16": 0.9}

    def run(seed, greedy, maj, pass16, held):
        return {"seed": seed, "accuracy": {**accuracy, "greedy": greedy, "maj@8": maj, "pass@16": pass16},
                "curve": [0.1] * 5 + [0.5] * 5, "curve_kind": "train accuracy reward", "seconds_per_step": 1.0 + seed,
                "held_bytes": {"total": held}}

    return {
        "warm_start": {"accuracy": accuracy},
        "methods": {
            "grpo_outcome": [run(0, 0.6, 0.5, 0.9, 3 * 2**20), run(1, 0.8, 0.7, 0.8, 3 * 2**20)],
            "ppo": [{"seed": 0, "failed": "ValueError: GRPOConfig: unknown advantage_estimator='gae'"}],
        },
    }


def test_markdown_table_by_hand():
    table = paradigm.markdown_table(_results(), maj_k=8)
    lines = table.split("\n")
    assert lines[0] == ("| method | greedy | maj@8 | pass@1 | pass@4 | pass@16 | train curve, first -> last 5 steps "
                        "| s / step | held MiB |")
    assert "| warm start | 0.300 | 0.400 | 0.300 | 0.600 | 0.900 | - | - | - |" in lines
    # two seeds: mean ± sample standard deviation (0.6, 0.8 -> 0.700 ± 0.141; 1 s and 2 s per step -> 1.50 ± 0.71)
    assert ("| grpo_outcome (2 seeds) | 0.700 ±0.141 | 0.600 ±0.141 | 0.300 ±0.000 | 0.600 ±0.000 | 0.850 ±0.071 "
            "| 0.100 -> 0.500 | 1.50 ±0.71 | 3.00 |") in lines
    results = _results()
    results["methods"]["grpo_outcome"][0]["learning_rate"] = 2e-5  # a rate of its own is shown
    assert "| grpo_outcome (2 seeds), lr 2e-05 | 0.700 ±0.141 |" in paradigm.markdown_table(results, maj_k=8)
    failed = next(line for line in lines if line.startswith("| ppo |"))
    assert "failed: ValueError: GRPOConfig: unknown advantage_estimator='gae'" in failed
    assert failed.count("|") == lines[0].count("|")  # as many cells as the header


def test_figure7_deltas_by_hand():
    assert paradigm.figure7_deltas(_results(), maj_k=8, pass_k=16) == {
        "grpo_outcome": pytest.approx({"maj@8": 0.2, "pass@16": -0.05})}  # the failed method is left out


def test_offline_datasets_by_hand():
    """sft: each RL problem's correct solution; rft: distinct correct samples; dpo: at most 8 // 2 pairs a prompt."""
    from benchmarks.arithmetic_task import Problem, rl_rows

    problem = Problem("Ann has 27 marbles. She finds 45 more. How many marbles does Ann have now?", 27, (("+", 45),))
    size = paradigm.SIZES["tiny"]
    prompt_rows = rl_rows([problem])
    sft = paradigm.offline_dataset("sft", [problem], prompt_rows, None, size, seed=0)
    assert sft.to_list() == [{"prompt": prompt_rows[0]["prompt"], "completion": "27 + 45 = 72\n\\boxed{72}"}]
    right, wrong = "27 + 45 = 72\n\\boxed{72}", [f"27 + 45 = {v}\n\\boxed{{{v}}}" for v in (62, 71, 73, 82, 92)]
    samples = [[right, right, *wrong, "no answer"]]  # 1 distinct correct, 6 distinct incorrect
    rft = paradigm.offline_dataset("rft", [problem], prompt_rows, samples, size, seed=0)
    assert rft["completion"] == [right]
    dpo = paradigm.offline_dataset("dpo", [problem], prompt_rows, samples, size, seed=0)
    assert len(dpo) == 4 and set(dpo["chosen"]) == {right} and len(set(dpo["rejected"])) == 4
    with pytest.raises(ValueError, match="rft: no training row from 2 samples"):
        paradigm.offline_dataset("rft", [problem], prompt_rows, [wrong[:2]], size, seed=0)


def test_ppo_is_a_few_lines_of_config(tmp_path):
    """PPO's method is `advantage_estimator="gae"` with k1's KL in the reward at the others' budget."""
    from benchmarks.learning import grpo_config

    size = paradigm.SIZES["tiny"]
    config = grpo_config("ppo", size, str(tmp_path), 0, paradigm.ONLINE_OPTIONS["ppo"])
    assert (config.advantage_estimator, config.kl_in, config.kl_estimator) == ("gae", "reward", "k1")
    assert config.num_generations == size.num_generations and config.max_steps == size.grpo_steps


@pytest.mark.parametrize("argv", [["--tiny", "--test_problems", "201"], ["--tiny", "--grpo_steps", "0"],
                                  ["--methods", "ipo"], ["--tiny", "--test_problems", "0"],
                                  ["--tiny", "--dpo_learning_rate", "0"]])
def test_bad_options_fail_clearly(argv, capsys):
    with pytest.raises(SystemExit):
        paradigm.parse_args(argv)
    assert "--" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    """Every method for 3 steps from the saved tiny warm start, 20 held-out problems. The memory figures equal the
    live models' bytes counted by hand: one policy (+ a reference for DPO and the KL of GRPO, Online RFT and PPO),
    its gradients, Adam's two moments and one step counter per parameter tensor; PPO adds its critic's."""
    from transformers import AutoModelForCausalLM

    from grpo_ext.value_model import build_value_model

    out = tmp_path / "out"
    results = paradigm.main(["--tiny", "--grpo_steps", "3", "--test_problems", "20", "--output_dir", str(out),
                             "--work_dir", str(tmp_path / "work")])
    assert list(results["methods"]) == list(paradigm.METHODS)

    model = AutoModelForCausalLM.from_pretrained(paradigm.TINY_WARM_START)
    params = list(model.parameters())
    param_bytes = sum(p.numel() * 4 for p in params)
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    def held(params, buffers):  # parameters and buffers, gradients, AdamW's two moments and step counters
        param_bytes = sum(p.numel() * 4 for p in params)
        return {"parameters": param_bytes + sum(b.numel() * b.element_size() for b in buffers),
                "gradients": param_bytes, "optimizer_state": 2 * param_bytes + 4 * len(params)}

    critic = build_value_model(model)
    critic_held = held(list(critic.parameters()), list(critic.buffers()))
    for method in paradigm.METHODS:
        (run,) = results["methods"][method]
        assert "failed" not in run, run.get("failed")
        assert run["optimizer_steps"] == 3 and len(run["curve"]) == 3
        accuracy = run["accuracy"]
        assert 0 <= accuracy["pass@1"] <= accuracy["pass@4"] <= accuracy["pass@16"] <= 1
        assert accuracy["pass@1"] == accuracy["sampled"]
        models = 1 if method in ("sft", "rft") else 2
        expected = {
            "parameters": models * (param_bytes + buffer_bytes), "gradients": param_bytes,
            "optimizer_state": 2 * param_bytes + 4 * len(params)}
        if method == "ppo":
            expected = {key: value + critic_held[key] for key, value in expected.items()}
        assert run["held_bytes"] == {**expected, "total": sum(expected.values())}
    assert results["offline_samples"]["0"]["count"] == 3 * 16 * 8  # one draw, shared by RFT and DPO
    assert results["methods"]["sft"][0]["train_rows"] == 48  # the 48 RL prompts' solutions

    data = json.loads((out / "paradigm.json").read_text())
    assert data["environment"]["torch_threads"] == 1
    assert data["warm_start"]["from"] == str(paradigm.TINY_WARM_START)
    assert set(data["figure7"]) == set(paradigm.METHODS)
    assert (out / "paradigm_rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "paradigm.md").read_text()
    assert "| warm start |" in markdown and "| ppo |" in markdown and "failed" not in markdown
