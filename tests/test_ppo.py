"""PPO (`advantage_estimator="gae"`): the value loss by hand, the trainer's advantages against the pure functions,
the critic's training and isolation from the policy, num_generations=1, metrics, errors, checkpoints, 2 processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from grpo_ext_helpers import (
    digit_reward,
    generation_batch,
    make_config,
    make_trainer,
    scripted_rollout,
    single_torch_thread,  # noqa: F401 (autouse fixture)
    tiny_dataset,
)
from transformers import TrainerCallback

from grpo_ext.advantages import gae_advantages, ppo_token_rewards, whiten_advantages
from grpo_ext.kl import per_token_kl
from grpo_ext.value_model import clipped_value_loss, explained_variance, token_values

HERE = Path(__file__).resolve().parent

# Completions of different lengths, so that the batch has padding, and one truncated (no EOS, 8 tokens).
COMPLETIONS = ["7", "x = 14", "1 2 3", list(range(20, 28))]


def ppo_trainer(model_path, output_dir, **options):
    options = {"advantage_estimator": "gae", "num_generations": 1, **options}
    return make_trainer(model_path, output_dir, **options)


# ---------------------------------------------------------------------------------------------- pure functions


def test_clipped_value_loss_hand_worked():
    # cliprange c = 0.2, V_old = 0.5 everywhere:
    #   t0: V = 1.0, R = 0: clip(V) = 0.7; (1.0 - 0)^2 = 1.0  > (0.7 - 0)^2 = 0.49 -> 1.0, unclipped wins
    #   t1: V = 0.0, R = 1: clip(V) = 0.3; (0 - 1)^2 = 1.0    > (0.3 - 1)^2 = 0.49 -> 1.0, unclipped wins
    #   t2: V = 0.9, R = 1: clip(V) = 0.7; (0.9 - 1)^2 = 0.01 < (0.7 - 1)^2 = 0.09 -> 0.09, clipped wins
    #   t3: padding (V = 5, R = -5 must not count)
    # loss = 0.5 * (1.0 + 1.0 + 0.09) / 3 = 0.348333..., clipfrac = 1/3
    # dloss/dV: t0 0.5 * 2 * (1 - 0) / 3 = 1/3; t1 0.5 * 2 * (0 - 1) / 3 = -1/3; t2 0 (clipped at the bound); t3 0
    values = torch.tensor([[1.0, 0.0, 0.9, 5.0]], dtype=torch.float64, requires_grad=True)
    old = torch.full((1, 4), 0.5, dtype=torch.float64)
    returns = torch.tensor([[0.0, 1.0, 1.0, -5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, clipfrac = clipped_value_loss(values, old, returns, mask, cliprange=0.2)
    torch.testing.assert_close(loss, torch.tensor(2.09 / 6, dtype=torch.float64))
    assert clipfrac.item() == pytest.approx(1 / 3)
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[1 / 3, -1 / 3, 0.0, 0.0]], dtype=torch.float64))


def test_explained_variance_hand_worked():
    returns, mask = torch.tensor([[1.0, 2.0, 3.0, 99.0]]), torch.tensor([[1, 1, 1, 0]])
    assert explained_variance(returns.clone(), returns, mask) == pytest.approx(1.0)  # perfect values
    assert explained_variance(torch.full((1, 4), 5.0), returns, mask) == pytest.approx(0.0)  # a constant
    # V = (1, 1, 1): R - V = (0, 1, 2), Var = 1 = Var(R) -> 0; V = (2, 2, 2) likewise; V = (1, 2, 2): R - V =
    # (0, 0, 1), Var = 1/3 -> 1 - (1/3) / 1 = 2/3
    assert explained_variance(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), returns, mask) == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------- the trainer


@pytest.mark.parametrize("options", [{}, {"kl_estimator": "k3", "gamma": 0.9, "lam": 0.5, "num_generations": 2}],
                         ids=["defaults-k1", "k3-groups"])
def test_trainer_advantages_are_gae_of_eq2_rewards(tiny_model_path, tmp_path, options):
    """The advantages, returns and V_old the trainer buffers equal the pure functions applied to the critic's values,
    the scores of the reward function and the sampling policy's KL to the reference (k1 by default), whitened."""
    trainer = ppo_trainer(tiny_model_path, tmp_path, beta=0.1,
                          trainer_kwargs={"rollout_func": scripted_rollout(COMPLETIONS)}, **options)
    trainer.model.train()
    with torch.no_grad():  # move the policy off the reference, so that the KL in the rewards is not 0
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    inputs = generation_batch(trainer)
    mask = inputs["completion_mask"]
    assert mask.sum(1).tolist() == [2, 6, 6, 8]  # "7" + EOS, ..., the truncated one: padding and a full row

    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], mask], dim=1)
    with torch.no_grad():
        values = token_values(trainer.value_model, ids, attention, mask.size(1), 4)
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, mask.size(1))
    kl = per_token_kl(logps, inputs["ref_per_token_logps"], trainer.args.kl_estimator) * mask
    texts = trainer.processing_class.batch_decode(inputs["completion_ids"] * mask, skip_special_tokens=True)
    scores = torch.tensor(digit_reward(texts))
    assert scores.abs().sum() > 0
    rewards = ppo_token_rewards(scores, kl, mask, beta=0.1)
    expected, returns = gae_advantages(rewards, values, mask, gamma=trainer.args.gamma, lam=trainer.args.lam)

    torch.testing.assert_close(inputs["old_values"], values)
    torch.testing.assert_close(inputs["returns"], returns, atol=1e-6, rtol=0)
    torch.testing.assert_close(inputs["advantages"], whiten_advantages(expected, mask), atol=1e-5, rtol=0)
    assert torch.equal(inputs["value_mask"], mask)


def test_one_step_trains_the_critic_not_the_policy_through_the_value_loss(tiny_model_path, tmp_path):
    """The value loss is back-propagated through the critic alone: `_compute_loss` returns TRL's policy loss, whose
    gradients are the policy's only, and leaves vf_coef times the value loss's gradient on the critic; a training
    step (num_generations=1) changes every critic weight and logs the value metrics."""
    trainer = ppo_trainer(tiny_model_path, tmp_path, max_steps=1, vf_coef=0.5)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = generation_batch(trainer)
    critic = trainer.value_model.model

    def grads(loss_fn):
        trainer.model.zero_grad(set_to_none=True)
        critic.zero_grad(set_to_none=True)
        loss = loss_fn(trainer.model, inputs)
        loss.backward()
        policy = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        return loss.detach(), policy, {n: p.grad.clone() for n, p in critic.named_parameters() if p.grad is not None}

    loss, with_value, critic_grads = grads(trainer._compute_loss)
    policy_loss, policy_only, no_critic_grads = grads(trainer._policy_loss)
    assert torch.equal(loss, policy_loss) and with_value.keys() == policy_only.keys() and with_value
    for name in with_value:
        assert torch.equal(with_value[name], policy_only[name]), name
    assert not no_critic_grads and critic_grads.keys() == dict(critic.named_parameters()).keys()
    # the critic's gradient is vf_coef times the value loss's
    critic.zero_grad(set_to_none=True)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    values = token_values(critic, ids, attention, inputs["completion_ids"].size(1), ids.size(0))
    value_loss, _ = clipped_value_loss(values, inputs["old_values"], inputs["returns"], inputs["value_mask"], 0.2)
    (0.5 * value_loss).backward()
    for name, p in critic.named_parameters():
        torch.testing.assert_close(critic_grads[name], p.grad, atol=1e-7, rtol=1e-5)

    critic.zero_grad(set_to_none=True)
    before = {n: p.detach().clone() for n, p in critic.named_parameters()}
    trainer.train()
    changed = [n for n, p in critic.named_parameters() if not torch.equal(p, before[n])]
    assert "score.weight" in changed and len(changed) == len(before)
    logged = trainer.state.log_history[0]
    for key in ("value/loss", "value/clipfrac", "value/mean", "value/returns_mean", "value/explained_variance",
                "value/grad_norm"):
        assert key in logged, key
    assert logged["value/loss"] > 0 and 0.0 <= logged["value/clipfrac"] <= 1.0
    # a group of one completion has no reward spread to report
    assert "frac_reward_zero_std" not in logged
    # the final critic is a loadable model
    from transformers import AutoModelForTokenClassification

    saved = AutoModelForTokenClassification.from_pretrained(tmp_path / "value_model")
    assert torch.equal(saved.score.weight, critic.score.weight)


def test_critic_warmup_trains_the_critic_and_leaves_the_policy(tiny_model_path, tmp_path):
    """value_warmup_steps=1: the first step changes the critic and not one bit of the policy (nor its optimizer
    state); the second trains both."""
    trainer = ppo_trainer(tiny_model_path, tmp_path, max_steps=2, value_warmup_steps=1, value_learning_rate=1e-2)
    policy0 = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots.append(({n: p.detach().clone() for n, p in trainer.model.named_parameters()},
                              {n: p.detach().clone() for n, p in trainer.value_model.model.named_parameters()},
                              len(trainer.optimizer.state)))

    trainer.add_callback(Snapshot())
    critic0 = {n: p.detach().clone() for n, p in trainer.value_model.model.named_parameters()}
    trainer.train()
    (policy1, critic1, states1), (policy2, critic2, states2) = snapshots
    assert all(torch.equal(policy0[n], policy1[n]) for n in policy0) and states1 == 0
    assert all(not torch.equal(critic0[n], critic1[n]) for n in critic0)
    assert any(not torch.equal(policy1[n], policy2[n]) for n in policy1) and states2 > 0
    assert all(not torch.equal(critic1[n], critic2[n]) for n in critic1)


def test_the_critic_all_reduces_on_the_last_micro_batch_only(tiny_model_path, tmp_path):
    """With gradient accumulation the critic's backward is told to sync (all-reduce, DeepSpeed boundary) on the
    accumulation's last micro-batch only, as the Trainer treats the policy."""
    trainer = ppo_trainer(tiny_model_path, tmp_path, max_steps=2, gradient_accumulation_steps=2,
                          per_device_train_batch_size=2, dataset=tiny_dataset(16))
    syncs = []
    backward = trainer.value_model.backward
    trainer.value_model.backward = lambda loss, sync=True: (syncs.append(sync), backward(loss, sync))[1]
    trainer.train()
    assert syncs == [False, True, False, True]


@pytest.mark.parametrize("kl_estimator, kl_in", [("k2", "reward"), ("k3+", "loss"), ("k3", "loss")])
def test_other_kl_estimators_and_placements_train(tiny_model_path, tmp_path, kl_estimator, kl_in):
    """Any of our estimators, in the per-token reward or in the loss (then the reward is the score alone)."""
    trainer = ppo_trainer(tiny_model_path, tmp_path, max_steps=2, beta=0.1, kl_estimator=kl_estimator, kl_in=kl_in)
    trainer.train()
    logged = trainer.state.log_history[1]
    assert torch.isfinite(torch.tensor(logged["loss"]))
    assert logged["kl"] == pytest.approx(logged[f"kl/{kl_estimator[:2]}"], rel=1e-3)  # the estimator in use


def test_critic_starts_as_the_policy_trunk(tiny_model_path, tmp_path):
    trainer = ppo_trainer(tiny_model_path, tmp_path)
    critic = trainer.value_model.model.model.state_dict()
    policy = trainer.model.model.state_dict()
    assert critic.keys() == policy.keys() and all(torch.equal(critic[k], policy[k]) for k in critic)
    assert trainer.value_model.model.score.out_features == 1
    assert trainer.args.gradient_checkpointing and trainer.value_model.model.is_gradient_checkpointing  # TRL's
    assert trainer.value_model.optimizer.param_groups[0]["lr"] == 1e-5  # verl's default, not the policy's
    trainer = ppo_trainer(tiny_model_path, tmp_path / "lr", value_learning_rate=3e-4,
                          value_model_name_or_path=tiny_model_path)
    assert trainer.value_model.optimizer.param_groups[0]["lr"] == 3e-4


def test_critic_has_float32_weights_and_no_dropout(tmp_path):
    """A bfloat16 policy or critic checkpoint gives float32 critic weights (AdamW's 1e-6 steps survive), and a
    policy with attention and hidden dropout gives a critic whose values are the same on every call in train mode
    (V_old is not a noisy sample)."""
    from transformers import AutoModelForCausalLM

    from grpo_ext.tiny import save_tiny_causal_lm
    from grpo_ext.value_model import build_value_model

    path = save_tiny_causal_lm(tmp_path / "policy")
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attention_dropout=0.5)
    policy.config.classifier_dropout = 0.5
    policy.save_pretrained(tmp_path / "bf16")
    ids = torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    for critic in (build_value_model(policy), build_value_model(None, str(tmp_path / "bf16"))):
        assert {p.dtype for p in critic.parameters()} == {torch.float32}
        critic.train()
        first, second = critic(input_ids=ids).logits, critic(input_ids=ids).logits
        assert torch.equal(first, second)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"value_head_on_policy": True}, "value_head_on_policy=True .* not implemented"),
        ({"supervision": "process"}, "supervision='process' is not supported"),
        ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
        ({"lam": -0.1}, r"lam must be in \[0, 1\]"),
        ({"vf_coef": 0.0}, "vf_coef must be > 0"),
        ({"cliprange_value": 0.0}, "cliprange_value must be > 0"),
        ({"value_learning_rate": -1.0}, "value_learning_rate must be > 0"),
        ({"advantage_estimator": "ppo"}, "unknown advantage_estimator='ppo'"),
    ],
)
def test_bad_options_are_clear_errors(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        make_config(tmp_path, **{"advantage_estimator": "gae", **options})


def test_defaults_and_num_generations():
    ppo = make_config("/tmp/unused", advantage_estimator="gae", num_generations=1, per_device_train_batch_size=3)
    assert (ppo.kl_estimator, ppo.kl_in, ppo.num_generations, ppo.generation_batch_size) == ("k1", "reward", 1, 3)
    grpo = make_config("/tmp/unused")
    assert (grpo.kl_estimator, grpo.kl_in) == ("k3", "loss")
    assert make_config("/tmp/unused", advantage_estimator="gae", kl_in="loss").kl_in == "loss"
    with pytest.raises(ValueError, match="at least 2 generations"):  # GRPO still needs a group
        make_config("/tmp/unused", num_generations=1)


# ---------------------------------------------------------------------------------------------- checkpoints


def _resume_worker(tiny_model_path, work_dir, mode):
    """tests/ppo_resume_worker.py in a fresh process (one thread, as its runs are compared bit for bit)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(HERE / "ppo_resume_worker.py"), tiny_model_path, str(work_dir), mode],
                          check=False, cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
def test_a_killed_run_resumes_with_the_critic_of_the_uninterrupted_run(tiny_model_path, tmp_path):
    """Run A: 3 steps, a checkpoint every step. Run B: the same, SIGKILLed at the start of step 3 (after checkpoint-2),
    then resumed from checkpoint-2 in a new process. The critic, its AdamW state and the policy after step 3 equal
    A's bit for bit (a critic left at its initial weights, or one that missed its optimizer state, would not)."""
    first = _resume_worker(tiny_model_path, tmp_path, "full-then-kill")
    assert first.returncode == -9, first.stdout[-2000:] + first.stderr[-3000:]  # SIGKILL
    assert not (tmp_path / "cut.pt").exists()
    assert (tmp_path / "cut" / "checkpoint-2" / "value_model" / "state.json").is_file()
    second = _resume_worker(tiny_model_path, tmp_path, "resume")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    full, resumed = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "cut.pt")
    for name in ("critic", "policy"):
        assert full[name].keys() == resumed[name].keys()
        assert all(torch.equal(full[name][k], resumed[name][k]) for k in full[name]), name
    for i, state in full["critic_optimizer"].items():
        assert all(torch.equal(state[k], resumed["critic_optimizer"][i][k]) for k in state)
    assert resumed["critic_optimizer"][0]["step"].item() == 3


def test_resume_from_another_runs_checkpoint_restores_the_critic(tiny_model_path, tmp_path):
    """`train(resume_from_checkpoint=...)` in one process with a checkpoint outside the new run's output_dir: after
    step 3 the critic and its AdamW state equal the uninterrupted run's bit for bit."""

    def run(output_dir, resume=None):
        trainer = ppo_trainer(tiny_model_path, output_dir, max_steps=3, save_strategy="steps", save_steps=1,
                              value_learning_rate=1e-2, dataset=tiny_dataset(16))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "a")
    resumed = run(tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint-2"))
    a, b = full.value_model.model.state_dict(), resumed.value_model.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state_a, state_b = (t.value_model.optimizer.state_dict()["state"] for t in (full, resumed))
    assert all(torch.equal(state_a[i]["exp_avg_sq"], state_b[i]["exp_avg_sq"]) for i in state_a)
    assert state_b[0]["step"].item() == 3


def test_resume_without_the_critic_state_is_a_clear_error(tiny_model_path, tmp_path):
    trainer = ppo_trainer(tiny_model_path, tmp_path / "a", max_steps=1, save_strategy="steps", save_steps=1)
    trainer.train()
    (tmp_path / "a" / "checkpoint-1" / "value_model" / "state.json").unlink()
    trainer = ppo_trainer(tiny_model_path, tmp_path / "b", max_steps=2)
    with pytest.raises(ValueError, match="cannot resume PPO from .*checkpoint-1.*state.json is missing"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-1"))


# ---------------------------------------------------------------------------------------------- 2 processes


@pytest.mark.slow
def test_cost_benchmark_counts_the_critic_as_the_whole_difference(tmp_path):
    """`python -m benchmarks.ppo_cost --tiny`: policy and reference hold the same bytes under GRPO and PPO, and the
    critic (a policy-shaped trunk with a 1-wide head instead of the LM head) holds parameters, gradients of the same
    size and AdamW's two moments of each (plus a step counter per tensor)."""
    from benchmarks.ppo_cost import main

    results = main(["--tiny", "--rounds", "1", "--steps", "3", "--output_dir", str(tmp_path)])
    grpo, ppo = results["bytes"]["grpo"], results["bytes"]["ppo"]
    assert set(grpo) == {"policy", "reference"} and ppo["policy"] == grpo["policy"]
    assert ppo["reference"] == grpo["reference"]
    critic = ppo["critic"]
    assert critic["gradients"] > 0 and critic["optimizer_state"] > 2 * critic["gradients"]
    assert critic["parameters"] - critic["gradients"] < 1024  # buffers only (rotary frequencies)
    assert (tmp_path / "ppo_cost_tiny.md").read_text().count("| ppo | critic |") == 1


def test_the_critic_under_fp16_has_its_own_scaler_and_clips_unscaled_gradients():
    """Under fp16 (without DeepSpeed) a TrainableModel gets a GradScaler of its own, never the policy's (which the
    policy's step updates once per step). Its step unscales before clipping: the norm it reports and clips is the
    true one, and the weights end where an unscaled step puts them (the scale, a power of two, divides exactly)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from grpo_ext.engines import TrainableModel
    from iterative_helpers import tiny_orm

    AcceleratorState._reset_state(reset_partial_state=True)  # earlier tests' trainers fixed the precision
    try:
        fp16 = Accelerator(cpu=True, mixed_precision="fp16")
        assert TrainableModel(tiny_orm(seed=1), fp16, learning_rate=1e-3).scaler is not None
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    ends, norms = [], []
    for scaled in (False, True):
        trainable = TrainableModel(tiny_orm(seed=1), None, learning_rate=1e-3, max_grad_norm=0.5)
        if scaled:
            trainable.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
        trainable.backward(trainable(input_ids=ids).logits.pow(2).sum())
        norms.append(trainable.step())
        ends.append(trainable.model.state_dict())
    assert norms[0] == pytest.approx(norms[1], rel=1e-6) and norms[0] > 0.5  # clipped, at the true norm
    assert all(torch.equal(ends[0][k], ends[1][k]) for k in ends[0])
