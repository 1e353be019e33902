"""Our GRPOTrainer against TRL's on the same batch, its advantages against the pure functions, its cost, its errors."""

import logging

import pytest
import torch
from grpo_ext_helpers import (  # noqa: F401 (single_torch_thread is an autouse fixture)
    single_torch_thread,
    completion_id_lists,
    digit_reward,
    expected_process_advantages,
    generation_batch,
    length_parity_reward,
    loss_and_grads,
    make_config,
    make_trainer,
    step_length_prm,
    trl_and_ours,
)

from grpo_ext.advantages import online_rft_advantages, outcome_advantages
from grpo_ext.kl import per_token_kl


def assert_same_loss_and_grads(theirs, ours, inputs, atol=1e-6):
    loss_theirs, grads_theirs = loss_and_grads(theirs, inputs)
    loss_ours, grads_ours = loss_and_grads(ours, inputs)
    torch.testing.assert_close(loss_ours, loss_theirs, atol=atol, rtol=0)
    assert grads_ours.keys() == grads_theirs.keys() and grads_ours
    for name in grads_theirs:
        torch.testing.assert_close(grads_ours[name], grads_theirs[name], atol=atol, rtol=0, msg=name)
    return loss_theirs


def off_policy(inputs, seed=1):
    """Pretend the batch was sampled by an older policy: perturb old (and make sure they exist)."""
    g = torch.Generator().manual_seed(seed)
    inputs = dict(inputs)
    base = inputs.get("old_per_token_logps")
    assert base is not None
    inputs["old_per_token_logps"] = base + 0.3 * torch.randn(base.shape, generator=g)
    return inputs


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"use_bias_correction_kl": False},
        {"num_iterations": 2},
        {"num_iterations": 2, "use_bias_correction_kl": False},
        {"num_iterations": 2, "importance_sampling_level": "sequence"},
    ],
    ids=["defaults", "no-bias-correction", "num_iterations=2", "num_iterations=2-no-correction", "sequence-IS"],
)
def test_defaults_equal_trl(tiny_model_path, tmp_path, overrides):
    theirs, ours = trl_and_ours(tiny_model_path, tmp_path, **overrides)
    inputs = generation_batch(theirs)
    ours_inputs = generation_batch(ours)
    torch.testing.assert_close(ours_inputs["advantages"], inputs["advantages"])
    if overrides.get("num_iterations") == 2:
        inputs = off_policy(inputs)
    assert_same_loss_and_grads(theirs, ours, inputs)
    assert theirs._metrics["train"]["kl"][-1] > 1e-4  # the KL term is really exercised


LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"]


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize(
    "overrides",
    [{"num_iterations": 2}, {"num_iterations": 2, "use_bias_correction_kl": False},
     {"num_iterations": 2, "importance_sampling_level": "sequence"}],
    ids=["correction", "no-correction", "sequence-IS"],
)
def test_our_kl_path_reproduces_trls_k3(tiny_model_path, tmp_path, loss_type, overrides, monkeypatch):
    """k3 through our route (beta set to 0 inside TRL, then beta * aggregate(per_token_kl) added) equals TRL's loss."""
    theirs, ours = trl_and_ours(tiny_model_path, tmp_path, loss_type=loss_type, beta=0.3, **overrides)
    monkeypatch.setattr(ours, "_kl_is_trls", lambda: False)  # force our aggregation for TRL's own estimator
    inputs = off_policy(generation_batch(theirs))
    assert_same_loss_and_grads(theirs, ours, inputs)
    assert ours.beta == 0.3  # restored after the call
    assert "kl/k3" in ours._metrics["train"] and "kl" in ours._metrics["train"]


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3+"])
def test_other_estimators_change_only_the_kl_term(tiny_model_path, tmp_path, estimator):
    """loss = TRL's loss with beta = 0 + beta * grpo_aggregate(our per_token_kl), on an off-policy batch."""
    theirs, ours = trl_and_ours(tiny_model_path, tmp_path, kl_estimator=estimator, beta=0.3, num_iterations=2,
                                 loss_type="grpo")
    inputs = off_policy(generation_batch(theirs))
    theirs.beta = 0.0
    loss_no_kl, _ = loss_and_grads(theirs, inputs)
    loss, _ = loss_and_grads(ours, inputs)
    with torch.no_grad():
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        num_completion_tokens = inputs["completion_ids"].size(1)
        logps, _, _ = ours._get_per_token_logps_and_entropies(ours.model, ids, attention, num_completion_tokens)
        mask = inputs["completion_mask"].float()
        kl = per_token_kl(logps, inputs["ref_per_token_logps"], estimator, old_logps=inputs["old_per_token_logps"])
        expected = loss_no_kl + 0.3 * ((kl * mask).sum(-1) / mask.sum(-1)).mean()
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(loss, loss_no_kl)


def test_kl_in_reward_advantages_and_no_kl_in_loss(tiny_model_path, tmp_path):
    theirs, ours = trl_and_ours(tiny_model_path, tmp_path, kl_in="reward", kl_estimator="k1", beta=0.5)
    ours.model.train()
    # make the policy differ from the reference so that the KL is not zero
    with torch.no_grad():
        for p in ours.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    inputs = generation_batch(ours)
    with torch.no_grad():
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        num_completion_tokens = inputs["completion_ids"].size(1)
        logps, _, _ = ours._get_per_token_logps_and_entropies(ours.model, ids, attention, num_completion_tokens)
    mask = inputs["completion_mask"].float()
    sequence_kl = (per_token_kl(logps, inputs["ref_per_token_logps"], "k1") * mask).sum(-1)
    texts = ours.processing_class.batch_decode(inputs["completion_ids"], skip_special_tokens=True)
    rewards = torch.tensor(digit_reward(texts))
    expected = outcome_advantages(rewards - 0.5 * sequence_kl, group_size=4)
    torch.testing.assert_close(inputs["advantages"], expected, atol=1e-5, rtol=1e-5)
    assert sequence_kl.abs().max() > 1e-3
    # the loss carries no KL term: equal to TRL's loss with beta = 0 on the same inputs
    theirs.beta = 0.0
    with torch.no_grad():
        for p_theirs, p_ours in zip(theirs.model.parameters(), ours.model.parameters()):
            p_theirs.copy_(p_ours)
    assert_same_loss_and_grads(theirs, ours, inputs)


def test_online_rft_advantages(tiny_model_path, tmp_path):
    trainer = make_trainer(tiny_model_path, tmp_path, reward_funcs=[length_parity_reward],
                           advantage_estimator="online_rft", beta=0.0)
    trainer.model.train()
    inputs = generation_batch(trainer)
    texts = trainer.processing_class.batch_decode(inputs["completion_ids"], skip_special_tokens=True)
    correct = torch.tensor([float(len(t) % 2 == 0) for t in texts])
    torch.testing.assert_close(inputs["advantages"], correct)
    torch.testing.assert_close(online_rft_advantages(torch.tensor(length_parity_reward(texts)), 1.0), correct)
    assert trainer._metrics["train"]["online_rft/frac_correct"][-1] == pytest.approx(correct.mean().item())
    assert list(trainer._logs["advantages"]) == correct.tolist()  # the completions table shows ours


@pytest.mark.parametrize("outcome_mode", ["last_step", "none"])
def test_process_supervision_advantages(tiny_model_path, tmp_path, outcome_mode):
    calls = []

    def prm(prompts, steps):
        calls.append(len(steps))
        return step_length_prm(prompts, steps)

    # a delimiter the tiny random model emits often enough to give several steps per completion
    trainer = make_trainer(tiny_model_path, tmp_path, supervision="process", step_delimiter=" ",
                           process_outcome_reward=outcome_mode, max_completion_length=12,
                           trainer_kwargs={"process_reward_model": prm})
    trainer.model.train()
    inputs = generation_batch(trainer)
    assert calls == [4]  # one PRM call per generation batch (of 4 completions)
    tok = trainer.processing_class
    outcomes = None
    if outcome_mode == "last_step":
        outcomes = digit_reward(tok.batch_decode(inputs["completion_ids"], skip_special_tokens=True))
    expected, steps = expected_process_advantages(tok, completion_id_lists(inputs), step_length_prm, outcomes, " ",
                                                  group_size=4, num_tokens=inputs["completion_ids"].size(1))
    assert inputs["advantages"].shape == inputs["completion_ids"].shape
    torch.testing.assert_close(inputs["advantages"], expected)
    assert list(trainer._logs["advantages"]) == pytest.approx(expected[:, 0].tolist(), abs=1e-5)
    assert sum(len(s) for s in steps) > len(steps)  # the test exercises several steps per completion
    metrics = trainer._metrics["train"]
    assert metrics["process/steps_per_completion"][-1] == pytest.approx(sum(map(len, steps)) / len(steps))
    assert "process/frac_no_steps" in metrics and "process/advantage_mean" in metrics
    # the (B, T) advantages go through TRL's loss
    loss, grads = loss_and_grads(trainer, inputs)
    assert torch.isfinite(loss) and grads


def test_process_reward_model_is_replaceable(tiny_model_path, tmp_path):
    trainer = make_trainer(tiny_model_path, tmp_path, supervision="process",
                           trainer_kwargs={"process_reward_model": step_length_prm})
    trainer.model.train()
    seen = []
    trainer.process_reward_model = lambda prompts, steps: seen.append(1) or [[0.5] * len(s) for s in steps]
    generation_batch(trainer)
    assert seen == [1]


def count_logp_forwards(trainer):
    counts = {"policy": 0, "ref": 0}
    original = trainer._get_per_token_logps_and_entropies

    def counting(model, *args, **kwargs):
        counts["ref" if model is trainer.ref_model and model is not None else "policy"] += 1
        return original(model, *args, **kwargs)

    trainer._get_per_token_logps_and_entropies = counting
    return counts


@pytest.mark.parametrize(
    "overrides,extra_policy_per_generation",
    [
        ({"kl_estimator": "k2"}, 0),
        ({"kl_estimator": "k3+", "supervision": "process"}, 0),
        ({"advantage_estimator": "online_rft"}, 0),
        ({"kl_in": "reward"}, 1),  # the one documented extra (no-grad) forward of kl_in="reward"
        ({"kl_in": "reward", "gradient_accumulation_steps": 1, "num_iterations": 2}, 0),  # reuses TRL's old logps
    ],
)
def test_no_extra_forward_passes(tiny_model_path, tmp_path, overrides, extra_policy_per_generation):
    import trl

    from grpo_ext_helpers import NEW_OPTIONS

    common = dict(max_steps=4)
    common.update({k: v for k, v in overrides.items() if k not in NEW_OPTIONS})
    theirs = make_trainer(tiny_model_path, tmp_path / "trl", trainer_cls=trl.GRPOTrainer,
                          config_cls=trl.GRPOConfig, **common)
    kwargs = {"process_reward_model": step_length_prm} if overrides.get("supervision") == "process" else {}
    ours = make_trainer(tiny_model_path, tmp_path / "ours", trainer_kwargs=kwargs, **{**common, **overrides})
    counts_theirs, counts_ours = count_logp_forwards(theirs), count_logp_forwards(ours)
    theirs.train()
    ours.train()
    generations = 4 // overrides.get("num_iterations", 1)
    assert counts_theirs["policy"] >= 4 and counts_theirs["ref"] == generations
    assert counts_ours["ref"] == counts_theirs["ref"]
    assert counts_ours["policy"] == counts_theirs["policy"] + extra_policy_per_generation * generations


def test_construction_errors(tiny_model_path, tmp_path, caplog):
    with pytest.raises(ValueError, match="supervision='process' needs process_reward_model="):
        make_trainer(tiny_model_path, tmp_path, supervision="process")
    with pytest.raises(ValueError, match="unknown kl_estimator='k4'"):
        make_config(tmp_path, kl_estimator="k4")
    with pytest.raises(ValueError, match="kl_in='reward' needs a KL coefficient, but beta=0.0"):
        make_config(tmp_path, kl_in="reward", beta=0.0)
    with pytest.raises(ValueError, match="unknown supervision='steps'"):
        make_config(tmp_path, supervision="steps")
    with pytest.raises(ValueError, match="unknown advantage_estimator='rft'"):
        make_config(tmp_path, advantage_estimator="rft")
    # options set after construction of the config are checked again by the trainer
    args = make_config(tmp_path)
    args.kl_estimator = "k5"
    with pytest.raises(ValueError, match="unknown kl_estimator='k5'"):
        _trainer_with_args(tiny_model_path, args)
    with pytest.raises(ValueError, match="process_reward_tokenizer"):
        from transformers import AutoModelForTokenClassification

        prm_model = AutoModelForTokenClassification.from_pretrained(tiny_model_path, num_labels=2)
        make_trainer(tiny_model_path, tmp_path, supervision="process",
                     trainer_kwargs={"process_reward_model": prm_model})
    with caplog.at_level(logging.WARNING, logger="grpo_ext.trainer"):
        make_trainer(tiny_model_path, tmp_path, supervision="process",
                     trainer_kwargs={"process_reward_model": step_length_prm, "step_splitter": lambda text: []})
    assert "step_splitter returned no steps" in caplog.text


def _trainer_with_args(model_path, args):
    from grpo_ext import GRPOTrainer
    from grpo_ext_helpers import tiny_dataset

    return GRPOTrainer(model=model_path, reward_funcs=[digit_reward], args=args, train_dataset=tiny_dataset())


def test_process_supervision_without_outcome_rewards(tiny_model_path, tmp_path):
    trainer = make_trainer(tiny_model_path, tmp_path, reward_funcs=[], supervision="process", step_delimiter=" ",
                           trainer_kwargs={"process_reward_model": step_length_prm})
    assert trainer.reward_func_names == ["no_outcome_reward"]
    trainer.model.train()
    inputs = generation_batch(trainer)
    # no_outcome_reward's 0 is the outcome: it joins the last step (and is a completion's only step if it has none)
    expected, _ = expected_process_advantages(trainer.processing_class, completion_id_lists(inputs), step_length_prm,
                                              [0.0] * 4, " ", group_size=4, num_tokens=inputs["completion_ids"].size(1))
    torch.testing.assert_close(inputs["advantages"], expected)


def test_a_plain_trl_config_gives_trls_behaviour(tiny_model_path, tmp_path):
    import trl

    trainer = make_trainer(tiny_model_path, tmp_path, config_cls=trl.GRPOConfig)
    assert trainer.ext == {"kl_estimator": "k3", "kl_in": "loss", "supervision": "outcome", "step_delimiter": "\n\n",
                           "step_splitter": "delimiter", "process_outcome_reward": "last_step", "advantage_estimator": "grpo",
                           "rft_correct_threshold": 1.0, "compile_generation": False, "value_model_name_or_path": None,
                           "value_head_on_policy": False, "vf_coef": 0.1, "cliprange_value": 0.2, "gamma": 1.0,
                           "lam": 0.95, "whiten_advantages": True, "value_learning_rate": 1e-5,
                           "value_warmup_steps": 0}
    assert trainer.value_model is None
    assert trainer._uses_trl_advantages and trainer._kl_is_trls()
    assert trainer.generation_config.disable_compile is True  # TRL's generation config, untouched


def test_process_reward_model_output_is_checked():
    from grpo_ext.trainer import _check_step_rewards

    steps = [["a", "b"], []]
    checked = _check_step_rewards([[0.5, None], []], steps)
    assert checked[0][0] == 0.5 and checked[0][1] != checked[0][1] and checked[1] == []  # None -> NaN (unscored)
    with pytest.raises(ValueError, match="scores for 1 completions, expected 2"):
        _check_step_rewards([[0.5, 1.0]], steps)
    with pytest.raises(ValueError, match="returned 1 scores for completion 0, which has 2 steps"):
        _check_step_rewards([[0.5], []], steps)
    with pytest.raises(ValueError, match="returned 'good' for step 1 of completion 0; expected a number or None"):
        _check_step_rewards([[0.5, "good"], []], steps)
