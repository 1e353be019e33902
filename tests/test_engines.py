"""Every feature on every engine a config ships for, on real engines: one `accelerate launch` of
tests/engine_checks.py per engine (start-up is most of a launch's cost), 2 CPU processes over gloo. DeepSpeed ZeRO-2
and ZeRO-3 are DeepSpeed's own engines on its CPU accelerator; FSDP2 is accelerate's preparation and torch's
`fully_shard` (tests/engine_harness.py says which two CPU-only obstacles a test switch removes, and that nothing else
is bypassed). Each engine's numbers are held against DDP's, and DDP's against hand computations or the single-process
tests of the same features."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_checks import tiny_value_model, trainable_batches, write_inputs
from engine_harness import ENGINES, engine_launch_args
from launch_helpers import launch

pytest.importorskip("deepspeed", reason="the [deepspeed] extra is not installed")

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow

_runs: dict[str, Path] = {}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from grpo_ext.tiny import save_tiny_causal_lm

    return save_tiny_causal_lm(tmp_path_factory.mktemp("engine-model"))


@pytest.fixture(scope="module")
def engine_output(tiny_model, tmp_path_factory):
    """`engine_output(engine)`: the folder the engine's launch wrote (launched once per module)."""

    def run(engine: str) -> Path:
        if engine not in _runs:
            out = tmp_path_factory.mktemp(f"engine-{engine}")
            write_inputs(str(out))
            launch(engine_launch_args(engine), HERE / "engine_checks.py", engine, tiny_model, str(out), timeout=1200)
            _runs[engine] = out
        return _runs[engine]

    return run


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


# ------------------------------------------------------------------------------------------------ TrainableModel


@pytest.mark.parametrize("engine", ENGINES)
def test_trainable_model_trains_as_one_process_would(engine_output, engine):
    """A second model with its own AdamW: two optimizer steps of two micro-batches, each process its own rows, give
    the weights one process reaches on all the rows (DDP's and ZeRO's gradient average, FSDP2's reduce-scatter); a
    fresh model loading the checkpoint and stepping again equals the original bit for bit."""
    report = torch.load(engine_output(engine) / "trainable.pt", weights_only=True)
    model = tiny_value_model(seed=0)
    assert max_difference(report["initial"], model.state_dict()) == 0.0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    batches = trainable_batches()
    for k in range(2):
        for micro in range(2):
            ids = torch.cat([batches[k][rank][micro] for rank in range(2)])
            (((model(input_ids=ids).logits[..., 0] - 1.0) ** 2).mean() / 2).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
    # Adam's first steps move each weight by about lr whatever the gradient's size: 1e-5 is float rounding
    assert max_difference(report["after_two"], model.state_dict()) < 1e-5
    assert max_difference(report["after_three"], report["after_two"]) > 5e-3
    assert all(torch.equal(report["after_three"][k], report["resumed"][k]) for k in report["after_three"])


# ------------------------------------------------------------------------------------------------ PPO


def advantages_of(report) -> torch.Tensor:
    return torch.tensor([x for rank in report["recorded"] for batch in rank for row in batch["advantages"]
                         for x in row])


@pytest.mark.parametrize("peft", [False, True], ids=["full", "peft"])
@pytest.mark.parametrize("engine", ENGINES)
def test_ppo_critic_on_every_engine(engine_output, engine, peft):
    """PPO's critic on each engine (and beside a LoRA policy): it starts from the policy's full trunk weights (the
    base weights, adapters left out, for PEFT) with the seeded head, trains by its own engine, resumes from
    checkpoint-1 bit for bit, is saved loadable with its full weights, and after two steps equals DDP's (critic,
    policy and every advantage)."""
    from transformers import AutoModelForTokenClassification


    name = "ppo_peft" if peft else "ppo"
    out = engine_output(engine)
    report = torch.load(out / f"{name}.pt", weights_only=False)
    critic0, policy0 = report["critic0"], report["policy0"]
    prefix = "base_model.model.model." if peft else "model."
    policy_trunk = {k.removeprefix(prefix): v for k, v in policy0.items() if k.startswith(prefix)}
    if peft:
        policy_trunk = {k: v for k, v in policy_trunk.items() if "lora_" not in k}
        policy_trunk = {k.replace(".base_layer.", "."): v for k, v in policy_trunk.items()}
    critic_trunk = {k.removeprefix("model."): v for k, v in critic0.items() if k.startswith("model.")}
    assert critic_trunk.keys() == policy_trunk.keys()
    assert all(torch.equal(critic_trunk[k], policy_trunk[k].float()) for k in critic_trunk)
    head = torch.empty(critic0["score.weight"].shape).normal_(0.0, 0.02, generator=torch.Generator().manual_seed(0))
    assert torch.equal(critic0["score.weight"], head)

    critic2 = report["critic2"]
    assert all(not torch.equal(critic2[k], critic0[k]) for k in critic0)  # every weight trained
    assert all(torch.equal(critic2[k], report["critic2_resumed"][k]) for k in critic2)
    saved = AutoModelForTokenClassification.from_pretrained(out / name / "value_model").state_dict()
    assert saved.keys() == critic2.keys() and all(torch.equal(saved[k], critic2[k]) for k in saved)
    marker = (out / name / "checkpoint-1" / "value_model" / "state.json").read_text()
    assert f'"engine": "{engine}"' in marker and '"num_processes": 2' in marker
    if peft:  # the adapters trained, the base stayed
        assert all(torch.equal(report["policy2"][k], policy0[k]) for k in policy0 if "lora_" not in k)
        assert any(not torch.equal(report["policy2"][k], policy0[k]) for k in policy0 if "lora_B" in k)

    ddp = torch.load(engine_output("ddp") / f"{name}.pt", weights_only=False)
    assert max_difference(critic2, ddp["critic2"]) < 1e-5
    assert max_difference(report["policy2"], ddp["policy2"]) < 1e-5
    torch.testing.assert_close(advantages_of(report), advantages_of(ddp), atol=1e-5, rtol=0)
    logged = [h for h in report["logs"] if "value/loss" in h]
    assert len(logged) == 2 and all(h["value/grad_norm"] > 0 for h in logged)


# ------------------------------------------------------------------------------------------------ reward models


@pytest.mark.parametrize("name", ["iterative_orm", "iterative_prm", "iterative_orm_peft"])
@pytest.mark.parametrize("engine", ENGINES)
def test_iterative_rl_on_every_engine(engine_output, engine, name):
    """Iterative RL with an ORM, a PRM (Math-Shepherd labels from continuations each process generates on its own,
    as many as its prefixes need) and a LoRA policy: the RM changes at each refresh, trained by its engine; after the
    reset the reference equals the policy (the "ref" adapter the trained one, for PEFT); a second trainer resuming
    from checkpoint-1 ends with the same RM, reference and buffer bit for bit; and RM and policy equal DDP's."""
    report = torch.load(engine_output(engine) / f"{name}.pt", weights_only=False)
    refreshes = [h for h in report["logs"] if "rm/iteration" in h]
    assert [h["rm/iteration"] for h in refreshes] == [1.0, 2.0] and report["buffer"] == 8
    assert all(h["rm/reference_reset"] == 1.0 and h["rm/train_steps"] == 2.0 for h in refreshes)
    if name == "iterative_prm":
        assert all(h["rm/label_num_continuations"] > 0 for h in refreshes)
    assert max_difference(report["rm0"], report["rm2"]) > 1e-3
    policy, reference = report["policy2"], report["reference2"]
    if name.endswith("peft"):  # the "ref" adapter, named as the trained one
        policy = {k: v for k, v in policy.items() if ".default." in k}
    assert reference.keys() == policy.keys() and all(torch.equal(reference[k], policy[k]) for k in policy)
    assert all(torch.equal(report["rm2"][k], report["rm2_resumed"][k]) for k in report["rm2"])
    assert all(torch.equal(reference[k], report["reference2_resumed"][k]) for k in reference)
    assert report["buffer_resumed"] == report["buffer"]
    ddp = torch.load(engine_output("ddp") / f"{name}.pt", weights_only=False)
    assert max_difference(report["rm2"], ddp["rm2"]) < 1e-5
    assert max_difference(report["policy2"], ddp["policy2"]) < 1e-5
    if name == "iterative_orm":  # MathEvalCallback at each step: no hang, DDP's figures
        evaluated = [(h["math_eval/accuracy"], h["math_eval/count"]) for h in report["logs"] if "math_eval/count" in h]
        ddp_evaluated = [(h["math_eval/accuracy"], h["math_eval/count"]) for h in ddp["logs"] if "math_eval/count" in h]
        assert len(evaluated) == 2 and evaluated == ddp_evaluated and evaluated[0][1] == 5.0


@pytest.mark.parametrize("engine", ENGINES)
def test_process_supervision_and_offline_sampling_on_every_engine(engine_output, engine):
    """Process supervision with a frozen PRM (placed as TRL places its reward models; under ZeRO-3 and FSDP2 each
    process runs as many PRM forwards as the busiest): DDP's advantages. RFT/DPO sampling of 3 problems on 2
    processes (2 and 1: different numbers of generate calls): DDP's samples."""
    out, ddp = engine_output(engine), engine_output("ddp")
    advantages = advantages_of(torch.load(out / "process.pt", weights_only=False))
    assert advantages.abs().sum() > 0
    torch.testing.assert_close(advantages, advantages_of(torch.load(ddp / "process.pt", weights_only=False)),
                               atol=1e-5, rtol=0)
    samples = torch.load(out / "sampling.pt")["samples"]
    assert len(samples) == 3 and all(len(row) == 2 for row in samples)
    assert samples == torch.load(ddp / "sampling.pt")["samples"]
