"""Shared helpers for the grpo_ext trainer tests: one place that builds a tiny, cheap trainer."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from grpo_ext.config import DEEPSEEKMATH_OPTIONS as NEW_OPTIONS


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Tiny models run fastest on one thread; with several, thread spin-waits dominate on a shared 2-core box.

    Import this fixture into a test module to apply it there; the previous setting is restored afterwards.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

PROMPTS = ["What is 3 + 4?", "Compute 7 * 2.", "Natalia sold 48 clips.", "What is 1 + 1?"]


def digit_reward(completions, **kwargs):
    """Deterministic outcome reward: the fraction of digits in the completion text, in [0, 1]."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def length_parity_reward(completions, **kwargs):
    """Deterministic 0/1 reward: 1 when the completion has an even number of characters (a 'correct' mark)."""
    return [float(len(c) % 2 == 0) for c in completions]


def step_length_prm(prompts, steps):
    """A deterministic process reward model: each step scores its length modulo 7, divided by 7."""
    return [[(len(s) % 7) / 7.0 for s in completion_steps] for completion_steps in steps]


def tiny_dataset(n: int = 8) -> Dataset:
    return Dataset.from_dict({"prompt": [PROMPTS[i % len(PROMPTS)] for i in range(n)]})


def make_config(output_dir, config_cls=None, **overrides):
    if config_cls is None:
        from grpo_ext import GRPOConfig as config_cls
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
        temperature=1.0,
        beta=0.04,
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return config_cls(**kwargs)


def make_trainer(model_path, output_dir, trainer_cls=None, config_cls=None, reward_funcs=None, dataset=None,
                 trainer_kwargs=None, **config_overrides):
    if trainer_cls is None:
        from grpo_ext import GRPOTrainer as trainer_cls
    torch.manual_seed(0)
    args = make_config(output_dir, config_cls=config_cls, **config_overrides)
    return trainer_cls(
        model=model_path,
        reward_funcs=[digit_reward] if reward_funcs is None else reward_funcs,
        args=args,
        train_dataset=tiny_dataset() if dataset is None else dataset,
        **(trainer_kwargs or {}),
    )


def trl_and_ours(model_path, tmp_path, **overrides):
    """TRL's trainer and ours on the same tiny model (identical weights), in train mode, ready for `_compute_loss`."""
    import trl

    trl_overrides = {k: v for k, v in overrides.items() if k not in NEW_OPTIONS}
    theirs = make_trainer(model_path, tmp_path / "trl", trainer_cls=trl.GRPOTrainer, config_cls=trl.GRPOConfig,
                          **trl_overrides)
    ours = make_trainer(model_path, tmp_path / "ours", **overrides)
    g = torch.Generator().manual_seed(123)
    noise = [0.05 * torch.randn(p.shape, generator=g) for p in theirs.model.parameters()]
    for trainer in (theirs, ours):
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
        with torch.no_grad():  # move both policies (identically) away from the reference, so that KL != 0
            for p, n in zip(trainer.model.parameters(), noise):
                p.add_(n)
    return theirs, ours


def scripted_rollout(completions):
    """A TRL `rollout_func` that "generates" the given completions (token id lists, or texts to which EOS is appended)
    in order, one generation batch's worth: completions whose ending the test must control (truncated, EOS only,
    whitespace only, steps with leading spaces)."""

    def rollout(prompts, trainer):
        tok = trainer.processing_class
        ids = [c if isinstance(c, list) else tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
               for c in completions]
        assert len(prompts) == len(ids), f"{len(prompts)} prompts for {len(ids)} scripted completions"
        return {
            "prompt_ids": [tok(p, add_special_tokens=False)["input_ids"] for p in prompts],
            "completion_ids": ids,
            "logprobs": [[0.0] * len(c) for c in ids],
        }

    return rollout


def expected_process_advantages(tok, id_lists, prm, outcomes, delimiter, group_size, num_tokens):
    """Process advantages recomputed from the pure functions: steps located in the completions, scored by `prm`, the
    outcome (None: ignored) joining the last step, and a completion with no step one unscored step at its last token.
    Returns (advantages, steps)."""
    from grpo_ext.advantages import process_advantages
    from grpo_ext.steps import delimiter_splitter, locate_steps

    located = [locate_steps(ids, tok, delimiter_splitter(delimiter)) for ids in id_lists]
    steps = [s for s, _ in located]
    rewards = [list(r) or [float("nan")] for r in prm(None, steps)]
    ends = [e or [len(ids) - 1] for (_, e), ids in zip(located, id_lists)]
    for row, outcome in zip(rewards, outcomes if outcomes is not None else []):
        row[-1] = outcome if row[-1] != row[-1] else row[-1] + outcome
    return process_advantages(rewards, ends, group_size, num_tokens), steps


def generation_batch(trainer, seed: int = 0):
    """One scored generation batch, as `_prepare_inputs` would buffer it."""
    torch.manual_seed(seed)
    batch = next(iter(trainer.get_train_dataloader()))
    return trainer._generate_and_score_completions(batch)


def loss_and_grads(trainer, inputs):
    if not hasattr(trainer, "current_gradient_accumulation_steps"):  # set by the training loop
        trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def completion_id_lists(inputs):
    return [ids[mask.bool()].tolist() for ids, mask in zip(inputs["completion_ids"], inputs["completion_mask"])]


def two_process_worker(model_path: str, output_dir: str, end: bool = True) -> None:
    """Run on 2 processes (see tests/test_trainer_multiprocess.py): one group of 4 completions is split 2 + 2
    over the processes; rank 0 writes what each configuration's advantages should be and what they are."""
    import json

    from accelerate.utils import gather_object

    torch.set_num_threads(1)
    report = {}
    for name, options in {
        "process": {"supervision": "process", "step_delimiter": " "},
        "kl_in_reward": {"kl_in": "reward", "kl_estimator": "k1"},
    }.items():
        kwargs = {"process_reward_model": step_length_prm} if name == "process" else {}
        trainer = make_trainer(model_path, f"{output_dir}/{name}", per_device_train_batch_size=2, num_generations=4,
                               trainer_kwargs=kwargs, **options)
        trainer.model.train()
        if name == "kl_in_reward":  # move the policy off the reference so that the KL differs between completions
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
        inputs = generation_batch(trainer)
        ids = gather_object(completion_id_lists(inputs))
        advantages = gather_object(inputs["advantages"].tolist())
        if trainer.accelerator.is_main_process:
            entry = {"num_processes": trainer.accelerator.num_processes, "advantages": advantages}
            if name == "process":
                tok = trainer.processing_class
                outcomes = digit_reward(tok.batch_decode(ids, skip_special_tokens=True))
                width = max(len(row) for row in advantages)
                expected, _ = expected_process_advantages(tok, ids, step_length_prm, outcomes, " ", 4, width)
                entry["expected"] = expected.tolist()
            report[name] = entry
    if report:
        with open(f"{output_dir}/report.json", "w") as handle:
            json.dump(report, handle)
    # destroy the gloo group before exit: left alive, its threads can abort the process at interpreter teardown
    if end:
        trainer.accelerator.end_training()


def benchmark(steps: int = 20) -> None:
    """Print, per configuration, log-prob forwards (policy/reference) and seconds per step, TRL vs ours.

    python tests/grpo_ext_helpers.py --bench
    """
    import tempfile
    import time

    import trl

    from grpo_ext.tiny import save_tiny_causal_lm

    torch.set_num_threads(1)
    work = tempfile.mkdtemp()
    model_path = save_tiny_causal_lm(f"{work}/model")
    configs = [
        ("trl.GRPOTrainer", {}),
        ("ours, defaults", {}),
        ("kl_estimator=k2", {"kl_estimator": "k2"}),
        ("kl_estimator=k3+", {"kl_estimator": "k3+"}),
        ("kl_in=reward", {"kl_in": "reward"}),
        ("supervision=process", {"supervision": "process"}),
        ("online_rft", {"advantage_estimator": "online_rft"}),
    ]
    print(f"{'configuration':24s} {'policy fwd':>10s} {'ref fwd':>8s} {'PRM calls':>9s} {'s/step':>8s}")
    for name, options in configs:
        prm_calls = []

        def prm(prompts, steps):
            prm_calls.append(1)
            return step_length_prm(prompts, steps)

        common = dict(max_steps=steps, max_completion_length=16, step_delimiter=" ")
        if name.startswith("trl"):
            common.pop("step_delimiter")
            trainer = make_trainer(model_path, f"{work}/{len(prm_calls)}", trainer_cls=trl.GRPOTrainer,
                                   config_cls=trl.GRPOConfig, **common)
        else:
            kwargs = {"process_reward_model": prm} if options.get("supervision") == "process" else {}
            trainer = make_trainer(model_path, f"{work}/ours", trainer_kwargs=kwargs, **common, **options)
        counts = {"policy": 0, "ref": 0}
        original = trainer._get_per_token_logps_and_entropies

        def counting(model, *args, _original=original, _trainer=trainer, **kwargs):
            counts["ref" if model is _trainer.ref_model else "policy"] += 1
            return _original(model, *args, **kwargs)

        trainer._get_per_token_logps_and_entropies = counting
        start = time.perf_counter()
        trainer.train()
        per_step = (time.perf_counter() - start) / steps
        print(f"{name:24s} {counts['policy']:10d} {counts['ref']:8d} {len(prm_calls):9d} {per_step:8.3f}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--bench"]:
        benchmark()
    else:
        two_process_worker(sys.argv[1], sys.argv[2])
