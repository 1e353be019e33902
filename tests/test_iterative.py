import copy
import os
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from iterative_helpers import last_number_scorer, tiny_orm, tiny_prm, tiny_tokenizer
from transformers import TrainerCallback

import grpo_ext.iterative as iterative
from grpo_ext.engines import TrainableModel
from grpo_ext.iterative import (
    IterativeRLCallback,
    IterativeRLConfig,
    ReplayBuffer,
    RewardModelRefresher,
    attach_iterative_rl,
    describe_refresh,
    move_optimizer_state,
    num_replay_rows,
    refresh_memory_estimate,
    reset_reference,
    training_mix,
)
from grpo_ext.reward_models import ProcessRewardModel, orm_scores

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------------- mix


def test_num_replay_rows_formula():
    assert num_replay_rows(90, 1000, 0.1) == 10  # 10 / (90 + 10) = 0.1
    assert num_replay_rows(20, 1000, 0.1) == 2  # round(2.22)
    assert num_replay_rows(90, 4, 0.1) == 4  # capped by the buffer
    assert num_replay_rows(90, 1000, 0.0) == 0
    assert num_replay_rows(10, 1000, 0.5) == 10
    with pytest.raises(ValueError, match="replay_ratio"):
        num_replay_rows(10, 10, 1.0)


@settings(max_examples=200, deadline=None)
@given(num_new=st.integers(1, 500), ratio=st.floats(0.0, 0.9))
def test_replay_is_within_one_sample_of_the_ratio(num_new, ratio):
    r = num_replay_rows(num_new, 10**6, ratio)
    assert abs(r - ratio * (num_new + r)) <= 1


def test_training_mix_is_new_rows_plus_distinct_buffer_rows():
    buffer = ReplayBuffer([{"id": f"old{i}"} for i in range(50)])
    new = [{"id": f"new{i}"} for i in range(45)]
    mix, n_replay = training_mix(new, buffer, 0.1, random.Random(0))
    ids = [r["id"] for r in mix]
    assert n_replay == 5 and len(mix) == 50 and len(set(ids)) == 50
    assert {i for i in ids if i.startswith("new")} == {r["id"] for r in new}
    assert training_mix(new, buffer, 0.1, random.Random(0))[0] == mix  # same seed, same mix
    assert training_mix(new, ReplayBuffer(), 0.1, random.Random(0))[1] == 0


def test_replay_buffer_round_trip(tmp_path):
    rows = [{"prompt": "Q é", "steps": ["a", "b"], "labels": [1.0, 0.25]}, {"text": "x", "label": 0}]
    buffer = ReplayBuffer(rows)
    buffer.save(str(tmp_path))
    assert ReplayBuffer.load(str(tmp_path)).rows == rows
    other = ReplayBuffer()
    other.load_state_dict(buffer.state_dict())
    assert other.rows == rows and len(other) == 2


# ---------------------------------------------------------------------------------------------------------- config


def test_config_validation_and_grpo_config_mixin(tmp_path):
    with pytest.raises(ValueError, match="replay_ratio"):
        IterativeRLConfig(replay_ratio=1.0)
    with pytest.raises(ValueError, match="rm_label_mode"):
        IterativeRLConfig(rm_label_mode="medium")
    assert IterativeRLConfig().replay_ratio == 0.1 and IterativeRLConfig().reset_ref_on_refresh
    for option, value in [("reward_model_learning_rate", 0.0), ("reward_model_learning_rate", -1e-5),
                          ("reward_model_train_steps", -1), ("reward_model_train_epochs", 0.0),
                          ("rm_label_max_new_tokens", 0), ("reward_model_max_length", 0)]:
        with pytest.raises(ValueError, match=option):
            IterativeRLConfig(**{option: value})
    assert IterativeRLConfig(reward_model_train_epochs=0.0, reward_model_train_steps=3).reward_model_train_steps == 3

    from dataclasses import dataclass

    import trl

    @dataclass
    class Config(IterativeRLConfig, trl.GRPOConfig):
        pass

    cfg = Config(output_dir=str(tmp_path), reward_model_refresh_steps=5, report_to="none", use_cpu=True)
    assert cfg.reward_model_refresh_steps == 5
    assert cfg.num_generations == trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True).num_generations
    with pytest.raises(ValueError, match="replay_ratio"):
        Config(output_dir=str(tmp_path), replay_ratio=-0.1, report_to="none", use_cpu=True)

    parsed = trl.TrlParser(Config).parse_args_and_config(
        ["--output_dir", str(tmp_path), "--reward_model_refresh_steps", "3", "--rm_label_mode", "soft",
         "--report_to", "none", "--use_cpu", "true"]
    )[0]
    assert parsed.reward_model_refresh_steps == 3 and parsed.rm_label_mode == "soft"


# ---------------------------------------------------------------------------------------------------------- refresher


def _orm_refresher(refresh_steps=3, seed=0, model=None, **kw):
    args = IterativeRLConfig(**{"reward_model_refresh_steps": refresh_steps, "reward_model_learning_rate": 1e-3,
                                "reward_model_batch_size": 4, "reward_model_train_epochs": 2, **kw})
    model = model if model is not None else tiny_orm(seed=seed)
    return RewardModelRefresher(model, tiny_tokenizer(), "orm", args, scorer=last_number_scorer, seed=seed)


def _rollouts(step, n=6):
    prompts = [f"Q{step}.{i}: 3+{i}? " for i in range(n)]
    completions = [f"it is {3 + i}" if i % 2 == 0 else f"it is {i}" for i in range(n)]
    golds = [str(3 + i) for i in range(n)]
    return prompts, completions, golds


def _state(step, tmp_path, resume=None):
    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=resume)
    return args, SimpleNamespace(global_step=step), SimpleNamespace()


def test_refresh_fires_every_n_steps_and_labels_the_iteration_rollouts(tmp_path):
    refresher = _orm_refresher(refresh_steps=3)
    callback = IterativeRLCallback(refresher)
    fired, logged = [], []
    for step in range(1, 8):
        refresher.record(*_rollouts(step))
        before = refresher.iteration
        callback.on_step_end(*_state(step, tmp_path), model=torch.nn.Linear(1, 1))
        if refresher.iteration > before:
            fired.append(step)
            logged.append(callback.pending_logs)  # merged into the step's log row by on_log
    assert fired == [3, 6]
    assert [m["rm/num_new_rows"] for m in logged] == [18.0, 18.0]
    assert [m["rm/buffer_size"] for m in logged] == [18.0, 36.0]
    assert [m["rm/num_replay_rows"] for m in logged] == [0.0, 2.0]  # round(0.1 / 0.9 * 18) = 2
    assert len(refresher.pending) == 6  # step 7's rollouts wait for the next refresh
    assert refresher.buffer.rows[0] == {"text": "Q1.0: 3+0? it is 3", "label": 1}
    assert refresher.buffer.rows[1]["label"] == 0
    for key in ("rm/loss_before", "rm/loss_after", "rm/accuracy_before", "rm/accuracy_after",
                "rm/refresh_seconds", "rm/label_seconds", "rm/train_seconds", "rm/reference_reset"):
        assert key in logged[0]
    assert not refresher.should_refresh(6) and not refresher.should_refresh(0)
    assert not _orm_refresher(refresh_steps=0).should_refresh(3)


def test_refresh_trains_on_scorable_rollouts_only(tmp_path):
    refresher = _orm_refresher(refresh_steps=1)
    prompts, completions, golds = _rollouts(1, n=4)
    golds[1] = ""  # no gold to compare with: last_number_scorer (like accuracy_reward) scores None
    refresher.record(prompts, completions, golds)
    metrics = refresher.refresh()
    assert metrics["rm/num_new_rows"] == 3.0 and metrics["rm/label_num_unscorable"] == 1.0
    assert [row["text"] for row in refresher.buffer.rows] == [p + c for p, c, g in zip(prompts, completions, golds) if g]
    assert "1 unscorable rollouts left unlabelled" in iterative.describe_refresh(metrics, "orm", 1)


def test_training_mix_has_the_replay_fraction(monkeypatch):
    seen = []
    real = iterative.train_reward_model

    def spy(trainable, collate, rows, **kw):
        seen.append(list(rows))
        return real(trainable, collate, rows, **kw)

    monkeypatch.setattr(iterative, "train_reward_model", spy)
    refresher = _orm_refresher(replay_ratio=0.25)
    refresher.record(*_rollouts(1, n=20))
    refresher.refresh()
    old_texts = {r["text"] for r in refresher.buffer.rows}
    refresher.record(*_rollouts(2, n=20))
    refresher.refresh()
    first, second = seen
    assert len(first) == 20  # empty buffer: nothing to replay
    replayed = sum(r["text"] in old_texts for r in second)
    assert replayed == 7  # round(0.25 / 0.75 * 20)
    assert abs(replayed - 0.25 * len(second)) <= 1
    assert len(second) == 27


def test_refresh_updates_the_orm_in_place_and_the_next_rewards_use_it():
    from accelerate import Accelerator

    tok = tiny_tokenizer()
    model = tiny_orm(seed=1)
    # TRL prepares model reward functions with evaluation_mode=True: the object in reward_funcs stays ours
    prepared = Accelerator(cpu=True).prepare_model(model, evaluation_mode=True, device_placement=True)
    assert prepared is model
    model.requires_grad_(False)  # a frozen scorer is trained anyway
    refresher = _orm_refresher(model=prepared)
    prompts, completions = ["Q 3+4? "] * 2, ["it is 7", "it is 9"]
    before_weights = copy.deepcopy(model.state_dict())
    before = orm_scores(prepared, tok, prompts, completions)
    refresher.record(*_rollouts(1, n=8))
    metrics = refresher.refresh()
    after = orm_scores(prepared, tok, prompts, completions)
    assert any(not torch.equal(before_weights[k], v) for k, v in model.state_dict().items())
    assert after != pytest.approx(before, abs=1e-4)
    fresh = tiny_orm(seed=5)
    fresh.load_state_dict(model.state_dict())
    assert after == pytest.approx(orm_scores(fresh, tok, prompts, completions), abs=1e-6)
    assert metrics["rm/loss_after"] < metrics["rm/loss_before"]


class ScriptedSampler:
    def __init__(self):
        self.num_generated_tokens = 0

    def __call__(self, prefixes, k):
        # continuations reach the gold (the prompt's number) only from prefixes whose last step says "good"
        out = []
        for p in prefixes:
            gold = p.split("=")[0].split()[-1]
            out.append([gold if p.rstrip().endswith("good") else "0"] * k)
        self.num_generated_tokens += k * len(prefixes)
        return out


def _prm_refresher(model=None, seed=0, **kw):
    args = IterativeRLConfig(reward_model_refresh_steps=2, reward_model_learning_rate=3e-3, reward_model_batch_size=4,
                             reward_model_train_steps=15, rm_label_num_continuations=2, **kw)
    prm = ProcessRewardModel(model if model is not None else tiny_prm(seed=seed), tiny_tokenizer(), batch_size=4)
    refresher = RewardModelRefresher(prm, tiny_tokenizer(), "prm", args, scorer=last_number_scorer,
                                     continuation_sampler_factory=lambda policy: ScriptedSampler(), seed=seed)
    return prm, refresher


def _prm_rollouts(step, n=4):
    prompts = [f"Task {step}{i} = ? " for i in range(n)]
    golds = [f"{step}{i}" for i in range(n)]
    completions = [f"x good\n\ny {'good' if i % 2 else 'bad'}\n\n{g if i % 2 else 0}" for i, g in enumerate(golds)]
    return prompts, completions, golds


def test_prm_refresh_labels_with_math_shepherd_and_scores_with_new_weights():
    prm, refresher = _prm_refresher()
    probe = (["Task 7 = ? "], [["x good", "y bad", "0"]])
    before = prm(*probe)
    refresher.record(*_prm_rollouts(1))
    metrics = refresher.refresh(policy_model=torch.nn.Linear(1, 1))
    assert refresher.buffer.rows[0] == {"prompt": "Task 10 = ? ", "steps": ["x good", "y bad", "0"],
                                        "labels": [1.0, 0.0, 0.0]}
    assert refresher.buffer.rows[1]["labels"] == [1.0, 1.0, 1.0]
    assert metrics["rm/label_num_continuations"] == 4 * 2 * 2  # 4 rollouts x 2 non-final steps x k=2
    assert metrics["rm/label_num_generated_tokens"] == 16
    after = prm(*probe)
    assert after[0] != pytest.approx(before[0], abs=1e-4)
    assert metrics["rm/accuracy_after"] >= metrics["rm/accuracy_before"]
    with pytest.raises(ValueError, match="policy model"):
        refresher.record(*_prm_rollouts(2))
        refresher.refresh(policy_model=None)


def test_two_prm_iterations_with_a_real_tiny_policy(tiny_model_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    args = IterativeRLConfig(reward_model_refresh_steps=1, reward_model_train_steps=2, rm_label_num_continuations=2,
                             rm_label_max_new_tokens=3, rm_label_mode="soft")
    prm = ProcessRewardModel(tiny_prm(), tok)
    refresher = RewardModelRefresher(prm, tok, "prm", args, scorer=last_number_scorer)
    for step in (1, 2):
        refresher.record(*_prm_rollouts(step, n=2))
        metrics = refresher.refresh(policy_model=policy, global_step=step)
        assert metrics["rm/label_num_continuations"] == 2 * 2 * 2
        assert 0 < metrics["rm/label_num_generated_tokens"] <= 8 * 3
    assert refresher.iteration == 2 and len(refresher.buffer) == 4
    assert all(set(r["labels"]) <= {0.0, 0.5, 1.0} for r in refresher.buffer.rows)
    err = capsys.readouterr().err  # progress bars: the labelling sampler's, then the RM's training steps
    assert "labelling: 2 continuations per step" in err and "reward model training" in err


# ---------------------------------------------------------------------------------------------------------- reference


def test_reference_equals_policy_after_reset_then_diverges():
    policy, ref = tiny_orm(seed=1), tiny_orm(seed=2)
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), ref.parameters()))
    assert reset_reference(ref, policy)
    assert all(torch.equal(a, b) for a, b in zip(policy.parameters(), ref.parameters()))
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    policy(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), ref.parameters()))
    assert reset_reference(None, policy) is False


def test_reference_reset_refuses_a_peft_policy_with_a_separate_reference():
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(tiny_orm(seed=1), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="PEFT"):
        reset_reference(tiny_orm(seed=2), policy)
    assert reset_reference(None, policy) is False  # the adapter-disabled base stays the reference


def test_callback_resets_the_reference_at_refresh(tmp_path):
    policy, ref = tiny_orm(seed=1), tiny_orm(seed=2)
    refresher = _orm_refresher(refresh_steps=2)
    callback = IterativeRLCallback(refresher, ref_model=ref)
    refresher.record(*_rollouts(1))
    callback.on_step_end(*_state(1, tmp_path), model=policy)
    assert any(not torch.equal(a, b) for a, b in zip(policy.parameters(), ref.parameters()))
    callback.on_step_end(*_state(2, tmp_path), model=policy)
    assert all(torch.equal(a, b) for a, b in zip(policy.parameters(), ref.parameters()))
    assert callback.pending_logs["rm/reference_reset"] == 1.0


def test_policy_optimizer_state_is_offloaded_during_the_refresh(tmp_path, monkeypatch):
    policy = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam(policy.parameters())
    policy(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    moves = []
    monkeypatch.setattr(iterative, "move_optimizer_state", lambda opt, device: moves.append(str(device)))
    refresher = _orm_refresher(refresh_steps=1, rm_offload_policy_optimizer=True)
    refresher.record(*_rollouts(1))
    IterativeRLCallback(refresher).on_step_end(*_state(1, tmp_path), model=policy, optimizer=optimizer)
    assert moves == ["cpu", "cpu"]  # to CPU, then back to the policy's device (CPU here)
    state = {k: v.clone() for k, v in optimizer.state[policy.weight].items()}
    move_optimizer_state(optimizer, "cpu")
    assert all(torch.equal(state[k], v) for k, v in optimizer.state[policy.weight].items())


# ---------------------------------------------------------------------------------------------------------- resume


def test_resume_restores_buffer_counters_and_makes_the_same_next_refresh(tmp_path):
    a = _orm_refresher(refresh_steps=2)
    cb_a = IterativeRLCallback(a)
    for step in (1, 2, 3):
        a.record(*_rollouts(step))
        cb_a.on_step_end(*_state(step, tmp_path), model=torch.nn.Linear(1, 1))
    cb_a.on_save(*_state(3, tmp_path))  # checkpoint-3: one refresh done, step 3's rollouts pending
    saved = tmp_path / "checkpoint-3" / "iterative_rl"
    assert sorted(os.listdir(saved)) == ["pending_rank0.jsonl", "replay_buffer.jsonl", "reward_model", "state.json"]

    b = _orm_refresher(refresh_steps=2, model=tiny_orm(seed=9))
    IterativeRLCallback(b).on_train_begin(*_state(3, tmp_path, resume=str(tmp_path / "checkpoint-3")))
    assert b.buffer.rows == a.buffer.rows and b.pending == a.pending
    assert (b.iteration, b.last_refresh_step) == (a.iteration, a.last_refresh_step) == (1, 2)
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    sa, sb = a.trainable.optimizer.state_dict(), b.trainable.optimizer.state_dict()
    assert all(torch.equal(sa["state"][i]["exp_avg_sq"], sb["state"][i]["exp_avg_sq"]) for i in sa["state"])

    # the resumed run and the uninterrupted one make the same refresh at step 4
    for refresher in (a, b):
        refresher.record(*_rollouts(4))
        IterativeRLCallback(refresher).on_step_end(*_state(4, tmp_path), model=torch.nn.Linear(1, 1))
    assert a.iteration == b.iteration == 2 and a.buffer.rows == b.buffer.rows
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())

    # resuming through trainer.train(resume_from_checkpoint=...) leaves args.resume_from_checkpoint unset
    c = _orm_refresher(refresh_steps=2, model=tiny_orm(seed=9))
    IterativeRLCallback(c).on_train_begin(*_state(3, tmp_path, resume=None))
    assert c.buffer.rows[: len(c.buffer)] == a.buffer.rows[: len(c.buffer)] and c.iteration == 1
    with pytest.raises(ValueError, match="orm refresher state"):
        _prm_refresher()[1].load(str(saved))


def test_resume_with_fewer_processes_gives_rank0_every_pending_rollout(tmp_path):
    refresher = _orm_refresher()
    refresher.record(*_rollouts(1, n=2))
    refresher.save(str(tmp_path))
    (tmp_path / "pending_rank1.jsonl").write_text((tmp_path / "pending_rank0.jsonl").read_text())
    state = tmp_path / "state.json"
    state.write_text(state.read_text().replace('"num_processes": 1', '"num_processes": 2'))
    other = _orm_refresher()
    other.load(str(tmp_path))
    assert len(other.pending) == 4


# ------------------------------------------------------------------------------------------------- multi-process


# -------------------------------------------------------------------------------------------------- real Trainer


class _RecordRollouts(TrainerCallback):
    """Stands in for the GRPO trainer's generation: records rollouts that depend only on the step."""

    def __init__(self, refresher):
        self.refresher = refresher

    def on_step_begin(self, args, state, control, **kwargs):
        self.refresher.record(*_rollouts(state.global_step + 1, n=4))


def _run_trainer(tmp_path, model_path, max_steps, resume=None, track_resume=False):
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    policy = AutoModelForCausalLM.from_pretrained(model_path)
    ref = AutoModelForCausalLM.from_pretrained(model_path)
    refresher = _orm_refresher(refresh_steps=2, model=tiny_orm(seed=4))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=max_steps, save_steps=2, per_device_train_batch_size=2,
                             learning_rate=1e-2, report_to="none", use_cpu=True, logging_steps=1, seed=0,
                             save_only_model=False)
    data = [{"input_ids": torch.tensor([5, 6, 7, 8]), "labels": torch.tensor([5, 6, 7, 8])}] * 8
    trainer = Trainer(model=policy, args=args, train_dataset=data)
    trainer.add_callback(_RecordRollouts(refresher))
    callback = IterativeRLCallback(refresher, ref_model=ref)
    if track_resume:  # as attach_iterative_rl does
        callback.track_resume(trainer)
    trainer.callback_handler.callbacks.insert(0, callback)
    trainer.train(resume_from_checkpoint=resume)
    return trainer, refresher, ref


def test_with_a_real_trainer_checkpoint_and_resume_reproduce_the_run(tmp_path, tiny_model_path):
    full_trainer, full, full_ref = _run_trainer(tmp_path / "full", tiny_model_path, max_steps=4)
    assert full.iteration == 2 and full.last_refresh_step == 4 and len(full.buffer) == 16
    logged = [h for h in full_trainer.state.log_history if "rm/buffer_size" in h]
    assert [h["rm/buffer_size"] for h in logged] == [8.0, 16.0] and [h["step"] for h in logged] == [2, 4]
    assert os.path.isfile(tmp_path / "full" / "checkpoint-2" / "iterative_rl" / "replay_buffer.jsonl")
    # reset at step 4, the last step: the reference equals the final policy
    assert all(torch.equal(a, b) for a, b in zip(full_trainer.model.parameters(), full_ref.parameters()))

    # a second run stopped after step 3 and resumed from checkpoint-2 (step 3's rollouts were never saved, so the
    # resumed run regenerates them, as GRPO would) makes the same refresh at step 4
    _run_trainer(tmp_path / "cut", tiny_model_path, max_steps=3)
    _, resumed, _ = _run_trainer(tmp_path / "cut", tiny_model_path, max_steps=4,
                                 resume=str(tmp_path / "cut" / "checkpoint-2"))
    assert resumed.iteration == 2 and resumed.buffer.rows == full.buffer.rows
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in full.model.state_dict().items())

    # the checkpoint moved elsewhere and resumed into a new output_dir: found where transformers loads it from
    moved = tmp_path / "moved" / "checkpoint-2"
    shutil.copytree(tmp_path / "cut" / "checkpoint-2", moved)
    _, elsewhere, _ = _run_trainer(tmp_path / "new", tiny_model_path, max_steps=4, resume=str(moved),
                                   track_resume=True)
    assert elsewhere.iteration == 2 and elsewhere.buffer.rows == full.buffer.rows
    assert all(torch.equal(v, elsewhere.model.state_dict()[k]) for k, v in full.model.state_dict().items())


def test_stock_trl_grpo_trainer_with_a_refreshed_orm(tmp_path, tiny_model_path):
    """Two iterations of GRPO with TRL's own trainer: the ORM in `reward_funcs` is refreshed in place, the reference
    is reset. The only wiring is `record_from_inputs` after TRL's reward computation and the callback."""
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer

    class Trainer(trl.GRPOTrainer):
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            if self.model.training:
                self.refresher.record_from_inputs(inputs, prompts, completions)
            return rewards

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    orm = tiny_orm(seed=2)
    initial = copy.deepcopy(orm.state_dict())
    config = trl.GRPOConfig(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=6, beta=0.1, learning_rate=1e-2, report_to="none", use_cpu=True, bf16=False,
        logging_steps=1, save_strategy="no", seed=0,
    )
    data = Dataset.from_list([{"prompt": f"Q{i}: 3+{i}=", "answer": str(3 + i)} for i in range(8)])
    trainer = Trainer(model=tiny_model_path, reward_funcs=[orm], args=config, train_dataset=data,
                      processing_class=tok, reward_processing_classes=[tok])
    args = IterativeRLConfig(reward_model_refresh_steps=2, reward_model_learning_rate=1e-3, reward_model_train_steps=2)
    # stock TRL config: build by hand what `attach_iterative_rl` builds from a config with the iterative options
    trainer.refresher = RewardModelRefresher(trainer.reward_funcs[0], tok, "orm", args, scorer=last_number_scorer)
    trainer.callback_handler.callbacks.insert(0, IterativeRLCallback(trainer.refresher, ref_model=trainer.ref_model))
    trainer.train()

    assert trainer.refresher.iteration == 2 and len(trainer.refresher.buffer) == 2 * 2 * 4  # 2 steps x 4 rollouts
    logged = [h for h in trainer.state.log_history if "rm/buffer_size" in h]
    assert [h["step"] for h in logged] == [2, 4] and logged[1]["rm/num_replay_rows"] == 1.0  # round(0.1/0.9*8)
    assert trainer.reward_funcs[0] is orm  # scored in place: the trainer's object carries the new weights
    assert any(not torch.equal(initial[k], v) for k, v in orm.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.parameters(), trainer.ref_model.parameters()))


def test_refresh_memory_estimate_matches_hand_worked_bytes():
    gib = 2**30
    est = refresh_memory_estimate(policy_params=gib, rm_params=gib, weight_bytes=2)
    # policy 2 + AdamW 4, reference 2, RM 2 + 2 + 4 (bytes per parameter, 2**30 parameters each)
    assert est == {"policy_weights": 2.0, "policy_optimizer": 4.0, "reference": 2.0, "rm_weights_and_grads": 4.0,
                   "rm_optimizer": 4.0, "total": 16.0}
    off = refresh_memory_estimate(gib, gib, weight_bytes=4, offload_policy_optimizer=True, has_reference=False)
    assert off["total"] == 4 + 0 + 0 + 8 + 8
    peft = refresh_memory_estimate(gib, gib // 2, weight_bytes=2, optimizer_state_bytes=4, policy_trainable_params=0)
    assert peft["policy_optimizer"] == 0.0 and peft["rm_optimizer"] == 4.0 and peft["rm_weights_and_grads"] == 2.0


def test_grpo_ext_trainer_process_supervision_two_prm_iterations(tmp_path, tiny_model_path):
    """End to end on CPU: grpo_ext's GRPOTrainer with a tiny policy and a tiny PRM, two iterations (Math-Shepherd
    labels sampled from the live policy, PRM refreshed in place, reference reset), wired by the trainer itself."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    import grpo_ext

    def words(text):  # every word is a step: random tiny policies rarely write "\n\n"
        return text.split()

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    prm_model = tiny_prm(seed=3)
    initial = copy.deepcopy(prm_model.state_dict())
    config = grpo_ext.GRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=4, beta=0.1, learning_rate=1e-2, report_to="none", use_cpu=True, bf16=False,
        logging_steps=1, save_strategy="no", seed=0, supervision="process",
        reward_model_refresh_steps=1, reward_model_train_steps=2, rm_label_num_continuations=2,
        rm_label_max_new_tokens=2, reward_model_learning_rate=1e-3,
    )
    data = Dataset.from_list([{"prompt": f"Q{i}: 3+{i}=", "answer": str(3 + i)} for i in range(8)])
    trainer = grpo_ext.GRPOTrainer(model=tiny_model_path, args=config, train_dataset=data, processing_class=tok,
                                   process_reward_model=prm_model, process_reward_tokenizer=tok, step_splitter=words)
    assert trainer.refresher.kind == "prm" and trainer.refresher.step_splitter is words
    assert trainer.refresher.model is prm_model
    assert sum(isinstance(cb, IterativeRLCallback) for cb in trainer.callback_handler.callbacks) == 1
    trainer.refresher.scorer = last_number_scorer  # the tiny policy's answers are scored by their last number
    trainer.train()

    logged = [h for h in trainer.state.log_history if "rm/buffer_size" in h]
    assert [h["step"] for h in logged] == [1, 2] and trainer.refresher.iteration == 2
    assert all(h["rm/num_new_rows"] > 0 for h in logged)
    # every rollout of the iteration was recorded once: 4 completions per step (one process)
    assert [h["rm/num_new_rows"] for h in logged] == [4.0, 4.0]
    assert sum(h["rm/label_num_continuations"] for h in logged) > 0  # multi-word completions were sampled from
    assert trainer.process_reward_model.model is prm_model
    assert any(not torch.equal(initial[k], v) for k, v in prm_model.state_dict().items())
    from transformers import AutoModelForTokenClassification

    saved = AutoModelForTokenClassification.from_pretrained(tmp_path / "reward_model")  # loadable, save_strategy "no"
    assert saved.config.step_separator == "\n\n" and saved.config.num_labels == 2
    assert all(torch.equal(v, prm_model.state_dict()[k]) for k, v in saved.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.parameters(), trainer.ref_model.parameters()))


def test_attach_iterative_rl_finds_the_one_orm_and_refuses_ambiguity(tmp_path, tiny_model_path):
    from datasets import Dataset
    from transformers import AutoTokenizer

    import grpo_ext

    Config = grpo_ext.GRPOConfig  # carries the iterative-RL options

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    data = Dataset.from_list([{"prompt": "Q: 3+4=", "answer": "7"}] * 4)

    def make(refresh_steps, reward_funcs):
        config = Config(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, num_generations=2,
                        max_completion_length=4, report_to="none", use_cpu=True, bf16=False,
                        reward_model_refresh_steps=refresh_steps)
        return grpo_ext.GRPOTrainer(model=tiny_model_path, reward_funcs=reward_funcs, args=config, train_dataset=data,
                                    processing_class=tok, reward_processing_classes=[tok] * len(reward_funcs))

    orm = tiny_orm()
    trainer = make(2, [last_number_scorer_reward, orm])  # the trainer attaches the refresher itself
    refresher = trainer.refresher
    assert refresher.kind == "orm" and refresher.model is orm and refresher.tokenizer is tok
    assert sum(isinstance(cb, IterativeRLCallback) for cb in trainer.callback_handler.callbacks) == 1
    assert make(0, [orm]).refresher is None and attach_iterative_rl(make(0, [orm])) is None
    with pytest.raises(ValueError, match="one outcome reward model; reward_funcs holds 2"):
        make(2, [orm, tiny_orm(seed=1)])


def last_number_scorer_reward(completions, answer, **kwargs):
    return last_number_scorer(completions, answer)


@pytest.mark.parametrize(
    "options,misaligned",
    [
        ({}, False),  # one generation per optimizer step
        ({"gradient_accumulation_steps": 2}, False),  # steps_per_generation defaults to the accumulation: aligned
        ({"num_iterations": 2}, True),  # a generation serves 2 optimizer steps; refreshing after 1 splits it
        ({"num_iterations": 2, "reward_model_refresh_steps": 2}, False),
    ],
)
def test_attach_warns_when_a_refresh_splits_a_generation(tmp_path, tiny_model_path, caplog, options, misaligned):
    import logging

    from datasets import Dataset
    from transformers import AutoTokenizer

    import grpo_ext

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    config = grpo_ext.GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2,
                                 num_generations=2, max_completion_length=4, report_to="none", use_cpu=True,
                                 bf16=False, **{"reward_model_refresh_steps": 1, **options})
    with caplog.at_level(logging.WARNING, logger="grpo_ext.iterative"):
        grpo_ext.GRPOTrainer(model=tiny_model_path, reward_funcs=[tiny_orm()], args=config, processing_class=tok,
                             train_dataset=Dataset.from_list([{"prompt": "Q: 3+4=", "answer": "7"}] * 4),
                             reward_processing_classes=[tok])
    assert ("generation period" in caplog.text) == misaligned, caplog.text


def _grpo_run(output_dir, model_path, max_steps, resume=None):
    from datasets import Dataset
    from transformers import AutoTokenizer

    import grpo_ext

    tok = AutoTokenizer.from_pretrained(model_path)
    config = grpo_ext.GRPOConfig(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=4, beta=0.1, learning_rate=1e-2, report_to="none", use_cpu=True, bf16=False,
        logging_steps=1, save_strategy="steps", save_steps=1, seed=0, reward_model_refresh_steps=1,
        reward_model_train_steps=2, reward_model_batch_size=4, reward_model_learning_rate=1e-3,
    )
    data = Dataset.from_list([{"prompt": f"Q{i}: 3+{i}=", "answer": str(3 + i)} for i in range(8)])
    trainer = grpo_ext.GRPOTrainer(model=model_path, reward_funcs=[tiny_orm(seed=2)], args=config, train_dataset=data,
                                   processing_class=tok, reward_processing_classes=[tok])
    trainer.refresher.scorer = last_number_scorer
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_grpo_ext_trainer_resume_restores_the_refresher_and_makes_the_same_next_refresh(tmp_path, tiny_model_path):
    """Through grpo_ext.GRPOTrainer and TRL's own checkpoints: a run resumed from checkpoint-1 ends step 2 with the
    replay buffer, iteration counter and ORM weights of the uninterrupted run."""
    full = _grpo_run(tmp_path / "full", tiny_model_path, max_steps=2)
    assert full.refresher.iteration == 2 and len(full.refresher.buffer) == 8
    assert (tmp_path / "full" / "checkpoint-1" / "iterative_rl" / "reward_model" / "trainable.pt").is_file()
    resumed = _grpo_run(tmp_path / "full", tiny_model_path, max_steps=2,
                        resume=str(tmp_path / "full" / "checkpoint-1"))
    assert resumed.refresher.iteration == 2 and resumed.refresher.last_refresh_step == 2
    assert resumed.refresher.buffer.rows == full.refresher.buffer.rows
    full_orm, resumed_orm = full.refresher.model.state_dict(), resumed.refresher.model.state_dict()
    assert all(torch.allclose(v, resumed_orm[k], atol=1e-6) for k, v in full_orm.items())


@pytest.mark.parametrize("engine", ["zero2", "fsdp2"])
def test_offloading_the_policy_optimizer_is_refused_where_the_engine_owns_it(engine):
    """DeepSpeed and FSDP2 keep the policy's optimizer state in their own structures; moving it is their config's
    job (offload_optimizer, fsdp_offload_params), so the option is refused at construction, saying so."""
    from accelerate.utils import DistributedType

    from grpo_ext import GRPOConfig

    args = GRPOConfig(output_dir="unused", use_cpu=True, bf16=False, supervision="process",
                      reward_model_refresh_steps=1, rm_offload_policy_optimizer=True)
    kind = DistributedType.DEEPSPEED if engine == "zero2" else DistributedType.FSDP
    accelerator = SimpleNamespace(distributed_type=kind, is_fsdp2=True, num_processes=2,
                                  state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=2)))
    trainer = SimpleNamespace(args=args, process_reward_model=ProcessRewardModel(tiny_prm(), tiny_tokenizer()),
                              accelerator=accelerator)
    with pytest.raises(ValueError, match=f"under {engine} the engine owns the policy's optimizer state"):
        attach_iterative_rl(trainer)


# ------------------------------------------------------------------------------------------- kill and resume


def _worker(tiny_model_path, work_dir, mode):
    """tests/iterative_resume_worker.py in a fresh process (one thread, as its runs are compared bit for bit)."""
    import subprocess
    import sys

    root = HERE.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join([str(root), str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(HERE / "iterative_resume_worker.py"), tiny_model_path, str(work_dir),
                           mode], cwd=root, env=env, capture_output=True, text=True, timeout=1800)


def test_a_run_killed_after_a_refresh_resumes_with_the_reference_rm_and_buffer_of_the_uninterrupted_run(
    tmp_path, tiny_model_path
):
    """GRPO with an ORM refreshed at steps 2 and 4 and a checkpoint every step. Run A goes to step 4; run B is
    killed with SIGKILL at the start of step 4 (after checkpoint-3, one step after the refresh that reset the
    reference) and resumed from checkpoint-3 in a new process. The reference before step 4 (the policy of step 2,
    restored from the checkpoint), the final reference, the ORM weights and the replay buffer equal run A's bit for
    bit, and so does the KL logged at step 4."""
    first = _worker(tiny_model_path, tmp_path, "full-then-kill")
    assert first.returncode == -9, first.stdout[-2000:] + first.stderr[-3000:]  # SIGKILL
    assert not (tmp_path / "cut.pt").exists() and (tmp_path / "cut" / "checkpoint-3").is_dir()
    second = _worker(tiny_model_path, tmp_path, "resume")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    full, resumed = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "cut.pt")

    def equal(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert equal(full["ref_before_step_4"], resumed["ref_before_step_4"])
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model_path).state_dict()
    assert not equal(initial, full["ref_before_step_4"])  # the reference was reset at step 2: not the initial model
    assert equal(full["ref"], resumed["ref"]) and equal(full["rm"], resumed["rm"])
    assert full["buffer"] == resumed["buffer"] and len(full["buffer"]) == 16
    kl = {run: [h["kl"] for h in logs["log_history"] if h.get("step") == 4 and "kl" in h]
          for run, logs in (("full", full), ("resumed", resumed))}
    assert kl["full"] == kl["resumed"] and len(kl["full"]) == 1


# ------------------------------------------------------------------------------------------- incomplete checkpoints


def _checkpoint_after_one_refresh(tmp_path):
    """An ORM refresher and reference reset at step 2, saved as checkpoint-3 (the reference is written)."""
    refresher, ref = _orm_refresher(refresh_steps=2), tiny_orm(seed=5)
    callback = IterativeRLCallback(refresher, ref_model=ref)
    for step in (1, 2, 3):
        refresher.record(*_rollouts(step))
        callback.on_step_end(*_state(step, tmp_path), model=tiny_orm(seed=6))
    callback.on_save(*_state(3, tmp_path))
    return tmp_path / "checkpoint-3", ref


def _resume(tmp_path, checkpoint):
    callback = IterativeRLCallback(_orm_refresher(refresh_steps=2), ref_model=tiny_orm(seed=7))
    callback.on_train_begin(*_state(3, tmp_path, resume=str(checkpoint)), model=tiny_orm(seed=8))
    return callback


def test_a_checkpoint_is_complete_or_refused_with_what_is_missing(tmp_path, monkeypatch):
    checkpoint, ref = _checkpoint_after_one_refresh(tmp_path)
    saved = checkpoint / "iterative_rl"
    assert sorted(os.listdir(saved)) == ["pending_rank0.jsonl", "reference_model.pt", "replay_buffer.jsonl",
                                         "reward_model", "state.json"]
    restored = _resume(tmp_path, checkpoint).ref_model  # complete: the reference of step 2 comes back exactly
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), restored.state_dict().values()))

    (saved / "reference_model.pt").unlink()
    with pytest.raises(iterative.IncompleteCheckpointError,
                       match=rf"from {checkpoint}: {saved} is incomplete, missing reference_model\.pt"):
        _resume(tmp_path, checkpoint)
    (saved / "state.json").unlink()
    with pytest.raises(iterative.IncompleteCheckpointError, match=r"state\.json is missing, so its iterative-RL state"):
        _resume(tmp_path, checkpoint)
    import shutil

    shutil.rmtree(saved)  # what a kill between the trainer's checkpoint and ours leaves
    with pytest.raises(iterative.IncompleteCheckpointError, match=rf"from {checkpoint}: it has no iterative_rl/"):
        _resume(tmp_path, checkpoint)

    # a save killed part-way (here: while writing the pending rollouts) leaves no state.json, so it is refused
    def killed(path, rows):
        raise KeyboardInterrupt

    monkeypatch.setattr(iterative, "write_jsonl", killed)
    refresher = _orm_refresher()
    with pytest.raises(KeyboardInterrupt):
        refresher.save(str(tmp_path / "checkpoint-9" / "iterative_rl"))
    with pytest.raises(iterative.IncompleteCheckpointError, match="state.json is missing"):
        refresher.load(str(tmp_path / "checkpoint-9" / "iterative_rl"))


def test_a_checkpoint_at_a_refresh_step_restores_the_reference_from_its_own_policy(tmp_path):
    """At the refresh step the reference is the policy the checkpoint holds: no second copy is written, and the
    resumed reference is copied from the loaded policy."""
    refresher, ref, policy = _orm_refresher(refresh_steps=2), tiny_orm(seed=5), tiny_orm(seed=6)
    callback = IterativeRLCallback(refresher, ref_model=ref)
    for step in (1, 2):
        refresher.record(*_rollouts(step))
        callback.on_step_end(*_state(step, tmp_path), model=policy)
    callback.on_save(*_state(2, tmp_path))
    assert not (tmp_path / "checkpoint-2" / "iterative_rl" / "reference_model.pt").exists()
    resumed = IterativeRLCallback(_orm_refresher(refresh_steps=2), ref_model=tiny_orm(seed=7))
    resumed.on_train_begin(*_state(2, tmp_path, resume=str(tmp_path / "checkpoint-2")), model=policy)
    assert all(torch.equal(a, b) for a, b in zip(policy.parameters(), resumed.ref_model.parameters()))
    assert resumed.reference_step == 2


# ------------------------------------------------------------------------------------------- logs, saved RM, progress


def test_refresh_steps_log_their_loss_with_the_refresh_metrics_and_the_rm_is_saved_loadable(
    tmp_path, tiny_model_path, capsys
):
    """grpo_ext.GRPOTrainer with launch/train_grpo.py's metrics.jsonl writer, an ORM refreshed at steps 2 and 4,
    save_strategy "no": every step's row has loss, grad_norm and learning_rate, the refresh steps' rows also the
    rewards and the rm/ metrics; output_dir/reward_model loads as the refreshed ORM; one line per refresh."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import grpo_ext
    from launch.train_grpo import MetricsLogCallback

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    config = grpo_ext.GRPOConfig(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=4, beta=0.1, learning_rate=1e-2, report_to="none", use_cpu=True, bf16=False,
        logging_steps=1, save_strategy="no", seed=0, reward_model_refresh_steps=2, reward_model_train_steps=2,
        reward_model_batch_size=4, reward_model_learning_rate=1e-3, step_splitter="sentences",
    )
    data = Dataset.from_list([{"prompt": f"Q{i}: 3+{i}=", "answer": str(3 + i)} for i in range(8)])
    trainer = grpo_ext.GRPOTrainer(model=tiny_model_path, reward_funcs=[tiny_orm(seed=2)], args=config,
                                   train_dataset=data, processing_class=tok, reward_processing_classes=[tok],
                                   callbacks=[MetricsLogCallback(str(tmp_path / "metrics.jsonl"))])
    assert trainer.step_splitter("It is 3.5. So 7.") == ["It is 3.5.", "So 7."]  # the named splitter
    trainer.refresher.scorer = last_number_scorer
    trainer.train()

    import json

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all("grad_norm" in r and "learning_rate" in r and "reward" in r for r in steps)
    assert [r["step"] for r in rows if "rm/iteration" in r] == [2, 4]
    assert all("rm/iteration" in r for r in steps if r["step"] in (2, 4))
    history = [h for h in trainer.state.log_history if "rm/iteration" in h]
    assert [(h["step"], "loss" in h) for h in history] == [(2, True), (4, True)]

    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "reward_model")
    assert AutoTokenizer.from_pretrained(tmp_path / "reward_model").pad_token_id == tok.pad_token_id
    rm = trainer.refresher.model.state_dict()
    assert all(torch.equal(v, rm[k]) for k, v in saved.state_dict().items())

    printed = capsys.readouterr().out
    assert printed.count("iterative RL: refresh ") == 2
    assert "iterative RL: refresh 2 at step 4: labelled 8 new rows (0 continuations" in printed


def test_describe_refresh_says_what_the_refresh_did():
    metrics = {"rm/iteration": 3.0, "rm/num_new_rows": 90.0, "rm/num_replay_rows": 10.0, "rm/buffer_size": 270.0,
               "rm/train_steps": 13.0, "rm/loss_before": 0.69314, "rm/loss_after": 0.5, "rm/accuracy_before": 0.5,
               "rm/accuracy_after": 0.75, "rm/label_num_continuations": 2048.0, "rm/label_seconds": 61.25,
               "rm/refresh_seconds": 75.04, "rm/reference_reset": 1.0}
    assert describe_refresh(metrics, "prm", 300, "out/reward_model") == (
        "iterative RL: refresh 3 at step 300: labelled 90 new rows (2048 continuations, 61.2s); trained the PRM 13 "
        "steps on 100 rows (10 replayed, buffer now 270): loss 0.6931 -> 0.5000, accuracy 0.500 -> 0.750; "
        "reference reset to the policy; saved to out/reward_model (75.0s)"
    )


def test_refresh_progress_bars_on_the_main_process_only(capsys, monkeypatch):
    from functools import partial

    import tqdm.auto

    from grpo_ext.reward_models import make_collate, train_reward_model

    # every update drawn: with tqdm's 0.1 s default a fast last step may be cleared (leave=False) before it is drawn
    monkeypatch.setattr(tqdm.auto, "tqdm", partial(tqdm.auto.tqdm, mininterval=0))

    refresher = _orm_refresher()
    assert refresher.show_progress
    refresher.accelerator = SimpleNamespace(is_main_process=False)
    assert not refresher.show_progress
    refresher.accelerator = None
    refresher.args.disable_tqdm = True  # the trainer's option
    assert not refresher.show_progress
    rows = [{"text": f"it is {i}", "label": i % 2} for i in range(8)]
    trainable = TrainableModel(tiny_orm(), None, learning_rate=1e-3)
    train_reward_model(trainable, make_collate("orm", tiny_tokenizer()), rows, batch_size=4, num_epochs=2,
                       show_progress=True)
    err = capsys.readouterr().err
    assert "reward model training" in err and "4/4" in err and "epoch=2.00" in err


def test_named_scorer_and_step_splitter(tiny_model_path):
    from grpo_ext import GRPOConfig
    from grpo_ext.labelling import get_label_scorer, strict_accuracy_scorer
    from grpo_ext.steps import named_step_splitter

    assert _orm_refresher().scorer is last_number_scorer
    args = IterativeRLConfig(reward_model_refresh_steps=1, rm_label_scorer="strict_accuracy")
    assert RewardModelRefresher(tiny_orm(), tiny_tokenizer(), "orm", args).scorer is strict_accuracy_scorer
    assert get_label_scorer("accuracy")(["so it is 7"], ["7"]) == [1.0]  # last-number fallback
    assert strict_accuracy_scorer(["so it is 7", r"\boxed{7}"], ["7", "7"]) == [0.0, 1.0]
    with pytest.raises(ValueError, match="rm_label_scorer: unknown scorer 'eval'; expected one of accuracy, "
                                         "strict_accuracy"):
        IterativeRLConfig(rm_label_scorer="eval")
    text = "She has 3.5 kg. Then 2 * 3.5 = 7!\nThe answer is 7."
    assert named_step_splitter("sentences")(text) == ["She has 3.5 kg.", "Then 2 * 3.5 = 7!", "The answer is 7."]
    assert named_step_splitter("delimiter", "\n")(text) == ["She has 3.5 kg. Then 2 * 3.5 = 7!", "The answer is 7."]
    with pytest.raises(ValueError, match="unknown step_splitter='__import__'"):
        GRPOConfig(output_dir="unused", use_cpu=True, bf16=False, step_splitter="__import__")
    from launch.train_grpo import make_parser, parse_training_args

    _, args, _ = parse_training_args(make_parser(), ["--model_name_or_path", str(tiny_model_path), "--output_dir", "unused",
                                                     "--use_cpu", "true", "--bf16", "false", "--rm_label_scorer",
                                                     "strict_accuracy", "--step_splitter", "sentences"])
    assert (args.rm_label_scorer, args.step_splitter) == ("strict_accuracy", "sentences")  # from the command line


# ------------------------------------------------------------------------------------------- precision and PEFT


def test_a_bfloat16_reward_model_trains_as_its_float32_copy_does():
    """A refresh at the recipe's learning rate (2e-6) on a bfloat16 ORM: the model trains with float32 weights (the
    refresher's TrainableModel), so it ends exactly where a float32 copy of the same weights ends, every weight
    moved. (In bfloat16 an update of 2e-6 rounds away on weights of order 1e-2: most never changed.)"""
    bf16 = tiny_orm(seed=3).to(torch.bfloat16)
    fp32 = copy.deepcopy(bf16).float()
    initial = {k: v.float().clone() for k, v in bf16.state_dict().items()}
    ends = []
    for model in (bf16, fp32):
        refresher = _orm_refresher(model=model, reward_model_learning_rate=2e-6)
        refresher.record(*_rollouts(1, n=8))
        refresher.refresh()
        ends.append(refresher.model.state_dict())
    assert bf16 is refresher.model or refresher.model is fp32  # trained in place, the scorer's own object
    assert {v.dtype for v in ends[0].values()} == {torch.float32}
    assert all(torch.equal(ends[0][k], ends[1][k]) for k in ends[1])
    # rows of tokens absent from the rows trained on get no gradient: the weights every batch reaches
    weights = [k for k in initial if "layers" in k and "norm" not in k]
    changed = sum(int((ends[0][k] != initial[k]).sum()) for k in weights)
    assert changed / sum(initial[k].numel() for k in weights) > 0.9


def test_a_peft_policy_has_a_reference_adapter_that_the_refresh_resets(tmp_path, tiny_model_path):
    """With a LoRA policy, TRL's reference is the adapter-disabled base unless the policy has a "ref" adapter.
    Iterative RL gives it one (a frozen copy of the trained adapter: the base, while LoRA's B is 0); after the
    refresh the "ref" adapter equals the trained one, which has moved, and is saved and restored on resume."""
    from datasets import Dataset
    from grpo_ext_helpers import make_trainer
    from peft import LoraConfig
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)

    def run(output_dir, max_steps, resume=None):
        trainer = make_trainer(
            tiny_model_path, output_dir, reward_funcs=[tiny_orm(seed=2)], beta=0.1, max_steps=max_steps,
            reward_model_refresh_steps=2, reward_model_train_steps=1, save_strategy="steps", save_steps=1,
            learning_rate=1e-2, per_device_train_batch_size=4, num_generations=4,
            dataset=Dataset.from_list([{"prompt": f"Q{i}: 3+{i}=", "answer": str(3 + i)} for i in range(12)]),
            trainer_kwargs={"peft_config": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
                            "reward_processing_classes": [tok]},
        )  # fmt: skip
        trainer.refresher.scorer = last_number_scorer
        trainer.add_callback(snapshot)  # after the iterative-RL callback, which restores the reference
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    def adapters(model):
        named = dict(model.named_parameters())
        return {n: p.detach().clone() for n, p in named.items() if ".default." in n}, \
            {n.replace(".ref.", ".default."): p.detach().clone() for n, p in named.items() if ".ref." in n}

    class Snapshot(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.reference = adapters(model)[1]

    snapshot = Snapshot()
    trainer = run(tmp_path / "a", max_steps=3)
    assert all(not p.requires_grad for n, p in trainer.model.named_parameters() if ".ref." in n)
    assert all(p.requires_grad for n, p in trainer.model.named_parameters() if ".default." in n)
    initial_reference = snapshot.reference
    trained, reference = adapters(trainer.model)
    assert trained.keys() == reference.keys() == initial_reference.keys() and trained
    assert any(not torch.equal(reference[n], initial_reference[n]) for n in reference)  # reset at step 2
    assert any(not torch.equal(trained[n], reference[n]) for n in trained)  # step 3 moved the policy on
    assert trainer.state.log_history[1]["rm/reference_reset"] == 1.0
    # checkpoint-3 holds the reference of the reset at step 2 as full weights: the "ref" adapter's
    saved = torch.load(tmp_path / "a" / "checkpoint-3" / "iterative_rl" / "reference_model.pt")
    named = dict(trainer.model.named_parameters())
    assert saved.keys() == {n for n in named if ".ref." in n}
    assert all(torch.equal(saved[n], named[n]) for n in saved)
    run(tmp_path / "b", max_steps=4, resume=str(tmp_path / "a" / "checkpoint-3"))
    assert all(torch.equal(reference[n], snapshot.reference[n]) for n in reference)  # restored before step 4
