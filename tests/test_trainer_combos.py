"""10-step CPU runs of a tiny model for every combination of the new options (the full product, 32 runs)."""

import itertools
import math

import pytest
import torch
from grpo_ext_helpers import single_torch_thread  # noqa: F401 (autouse fixture)
from grpo_ext_helpers import digit_reward, length_parity_reward, make_trainer, step_length_prm

COMBOS = list(
    itertools.product(["k1", "k2", "k3", "k3+"], ["loss", "reward"], ["outcome", "process"], ["grpo", "online_rft"])
)


@pytest.mark.slow
@pytest.mark.parametrize("estimator,kl_in,supervision,advantage_estimator", COMBOS)
def test_ten_steps(tiny_model_path, tmp_path, estimator, kl_in, supervision, advantage_estimator):
    kwargs = {"process_reward_model": step_length_prm} if supervision == "process" else {}
    trainer = make_trainer(
        tiny_model_path, tmp_path, reward_funcs=[digit_reward, length_parity_reward], trainer_kwargs=kwargs,
        kl_estimator=estimator, kl_in=kl_in, supervision=supervision, advantage_estimator=advantage_estimator,
        step_delimiter=" ", max_steps=10, max_completion_length=6, learning_rate=1e-2, loss_type="grpo",
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 10 and all(math.isfinite(entry["loss"]) for entry in logs)
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.model.parameters()))
    last = logs[-1]
    assert math.isfinite(last["kl"]) and all(f"kl/{k}" in last for k in ("k1", "k2", "k3"))
    if supervision == "process" and advantage_estimator == "grpo":
        assert last["process/steps_per_completion"] > 0 and "process/frac_no_steps" in last
        assert "process/advantage_mean" in last
    if advantage_estimator == "online_rft":
        assert 0.0 <= last["online_rft/frac_correct"] <= 1.0
