"""Advantages on scripted rollouts (TRL's `rollout_func`): truncated completions under `kl_in="reward"`, completions
with no steps, `scale_rewards` under process supervision, the logged advantage statistics, and step location with
SmolLM2's byte-level BPE tokenizer inside the trainer. Every expected value is worked out by hand."""

import logging
import math

import pytest
import torch
from grpo_ext_helpers import single_torch_thread  # noqa: F401 (autouse fixture)
from grpo_ext_helpers import generation_batch, make_trainer, scripted_rollout

from grpo_ext.advantages import EPS, outcome_advantages
from grpo_ext.steps import split_steps


def correct_reward(completions, **kwargs):
    """1 for the completion "x = 7", else 0."""
    return [float(c.strip() == "x = 7") for c in completions]


def zero_prm(prompts, steps):
    """Every step scores 0: process advantages then come from the outcome reward alone."""
    return [[0.0] * len(s) for s in steps]


def scripted_trainer(model_path, tmp_path, completions, trainer_kwargs=None, **options):
    kwargs = {"rollout_func": scripted_rollout(completions), **(trainer_kwargs or {})}
    if options.get("supervision") == "process":
        kwargs.setdefault("process_reward_model", zero_prm)
    trainer = make_trainer(model_path, tmp_path, reward_funcs=[correct_reward], trainer_kwargs=kwargs, **options)
    trainer.model.train()
    return trainer


def sequence_advantages(inputs):
    advantages = inputs["advantages"]
    return advantages[:, 0] if advantages.dim() == 2 else advantages


# ---------------------------------------------------------------------------------------------- truncation (item 7)

# One group of 4: A = "x = 7" (correct) and B = "x = 8" finish with EOS; C and D run out of tokens (no EOS).
# With beta = 0.25 and a k1 KL of 5 nats over each finished completion, A and B pay 0.25 * 5 = 1.25:
#   A: 1 - 1.25 = -0.25,  B: 0 - 1.25 = -1.25.
# TRL's mask_truncated_completions zeroes C's and D's mask, so their KL penalty reads 0 and their values 0, 0:
#   with them in the group, mean -0.375, deviations 0.125, -0.875, 0.375, 0.375, Bessel var 1.0625 / 3,
#   std 0.59512, A's advantage 0.125 / 0.59512 = +0.21: the best finished completion is barely reinforced
#   because two completions whose KL was never measured look cheaper.
# With C and D out of the statistics: mean -0.75, std sqrt(0.5), A = 0.5 / (0.70711 + 1e-4) = +0.70701.
FINISHED_KL = 5.0
BIASED_A = 0.125 / math.sqrt(1.0625 / 3)
FAIR_A = 0.5 / (math.sqrt(0.5) + EPS)


def truncated_group(tok):
    cut = tok("x = 9 and so", add_special_tokens=False)["input_ids"]  # no EOS: truncated
    return ["x = 7", "x = 8", cut, cut[:-1]]


def constant_sequence_kl(trainer):
    """Replace the sampled KL by FINISHED_KL nats spread evenly over each completion's tokens (TRL's mask then
    zeroes the truncated rows, as it does to their real KL)."""

    def sampling_kl(output):
        lengths = (output["completion_ids"] != trainer.processing_class.pad_token_id).sum(1, keepdim=True)
        positions = torch.arange(output["completion_ids"].size(1)).unsqueeze(0)
        return (positions < lengths).float() * FINISHED_KL / lengths

    trainer._sampling_kl = sampling_kl


@pytest.mark.parametrize(
    "options,expected",
    [
        ({}, [FAIR_A, -FAIR_A, 0.0, 0.0]),
        ({"supervision": "process"}, [FAIR_A, -FAIR_A, 0.0, 0.0]),  # one step each: the same numbers
        ({"advantage_estimator": "online_rft"}, [1 - 1.25, 0 - 1.25, 0.0, 0.0]),  # no group statistics to bias
    ],
    ids=["outcome", "process", "online_rft"],
)
def test_truncated_completions_leave_the_group_statistics_under_kl_in_reward(
    tiny_model_path, tmp_path, options, expected
):
    from transformers import AutoTokenizer

    completions = truncated_group(AutoTokenizer.from_pretrained(tiny_model_path))
    trainer = scripted_trainer(tiny_model_path, tmp_path, completions, kl_in="reward", kl_estimator="k1",
                               beta=0.25, mask_truncated_completions=True, **options)
    constant_sequence_kl(trainer)
    inputs = generation_batch(trainer)
    assert inputs["completion_mask"][2:].sum() == 0 and inputs["completion_mask"][:2].sum(1).min() > 0
    torch.testing.assert_close(sequence_advantages(inputs), torch.tensor(expected), atol=1e-5, rtol=0)
    assert BIASED_A == pytest.approx(0.2100, abs=1e-4) and FAIR_A == pytest.approx(0.7070, abs=1e-4)


def test_truncated_completions_stay_in_the_statistics_without_masking(tiny_model_path, tmp_path):
    """Without mask_truncated_completions the truncated rows pay their KL like the others and stay (TRL's rule)."""
    from transformers import AutoTokenizer

    completions = truncated_group(AutoTokenizer.from_pretrained(tiny_model_path))
    trainer = scripted_trainer(tiny_model_path, tmp_path, completions, kl_in="reward", kl_estimator="k1",
                               beta=0.25, mask_truncated_completions=False)
    constant_sequence_kl(trainer)
    inputs = generation_batch(trainer)
    expected = outcome_advantages(torch.tensor([-0.25, -1.25, -1.25, -1.25]), group_size=4)
    torch.testing.assert_close(inputs["advantages"], expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- no steps (item 8)


@pytest.mark.parametrize("degenerate", ["eos_only", "whitespace_only", "splitter_finds_none"])
def test_a_completion_without_steps_keeps_its_outcome_reward(tiny_model_path, tmp_path, degenerate):
    # Completion 0 has no step; the others are "x = 7", one step each. Every PRM score is 0, so the process
    # advantages are the outcome rewards 0, 1, 1, 1 normalised over the group's four (last) steps, which is TRL's
    # outcome advantage: mean 0.75, std 0.5, completion 0 gets -0.75 / 0.5001 = -1.4997 (it used to get 0).
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    first = {"eos_only": [tok.eos_token_id], "whitespace_only": "  \n\n  ", "splitter_finds_none": "x = 9"}[degenerate]
    kwargs = {}
    if degenerate == "splitter_finds_none":
        kwargs["step_splitter"] = lambda text: [] if "9" in text else split_steps(text)
    trainer = scripted_trainer(tiny_model_path, tmp_path, [first, "x = 7", "x = 7", "x = 7"], trainer_kwargs=kwargs,
                               supervision="process")
    inputs = generation_batch(trainer)
    expected = outcome_advantages(torch.tensor([0.0, 1.0, 1.0, 1.0]), group_size=4)
    assert expected[0].item() == pytest.approx(-0.75 / (0.5 + EPS))
    lengths = inputs["completion_mask"].sum(1)
    for i in range(4):  # every token of a completion, up to its last (EOS), carries its outcome advantage
        torch.testing.assert_close(inputs["advantages"][i, : lengths[i]], expected[i].expand(int(lengths[i])))
    assert trainer._metrics["train"]["process/frac_no_steps"][-1] == 0.25


def test_no_steps_anywhere_falls_back_to_the_outcome_advantages(tiny_model_path, tmp_path, caplog):
    trainer = scripted_trainer(tiny_model_path, tmp_path, ["x = 7", "x = 8", "x = 7", "x = 9"],
                               trainer_kwargs={"step_splitter": lambda text: []}, supervision="process")
    with caplog.at_level(logging.WARNING, logger="grpo_ext.trainer"):
        inputs = generation_batch(trainer)
    assert "returned no steps for any completion" in caplog.text
    expected = outcome_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), group_size=4)
    torch.testing.assert_close(inputs["advantages"][:, 0], expected)
    assert trainer._metrics["train"]["process/frac_no_steps"][-1] == 1.0


# ---------------------------------------------------------------------------------------------- scale_rewards (item 9)

# Steps (delimiter "\n\n"): completion 0 "x = 7" | completion 1 "a\n\nb" | 2 and 3 "x = 8". PRM scores 0 except step
# "b", which scores 2; outcomes 1, 0, 0, 0 join the last steps. Pooled step rewards R = {1 | 0, 2 | 0 | 0}:
# mean 0.6, deviations 0.4 | -0.6, 1.4 | -0.6 | -0.6, Bessel variance (0.16 + 0.36 * 3 + 1.96) / 4 = 0.8.
SCALE_COMPLETIONS = ["x = 7", "a\n\nb", "x = 8", "x = 8"]


def b_scores_two(prompts, steps):
    return [[2.0 if s == "b" else 0.0 for s in completion_steps] for completion_steps in steps]


@pytest.mark.parametrize(
    "scale,divisor",
    [("group", math.sqrt(0.8) + EPS), ("none", 1.0), ("batch", math.sqrt(0.8) + EPS)],  # one group: batch = group
)
def test_scale_rewards_is_honoured_under_process_supervision(tiny_model_path, tmp_path, scale, divisor):
    trainer = scripted_trainer(tiny_model_path, tmp_path, SCALE_COMPLETIONS, supervision="process",
                               scale_rewards=scale, trainer_kwargs={"process_reward_model": b_scores_two})
    inputs = generation_batch(trainer)
    # token 0 of each completion carries the sum of its normalised step rewards
    expected = torch.tensor([0.4, -0.6 + 1.4, -0.6, -0.6]) / divisor
    torch.testing.assert_close(inputs["advantages"][:, 0], expected, atol=1e-5, rtol=0)


def test_scale_rewards_batch_under_process_supervision_uses_the_batch_std(tiny_model_path, tmp_path):
    # Two groups (8 completions). Group 1 as above. Group 2: "y" | "y\n\nb" | "y" | "y", step "y" scores 10 and
    # "b" 2, outcome 1 for the first: R2 = {11 | 10, 2 | 10 | 10}, mean 8.6, deviations 2.4 | 1.4, -6.6 | 1.4 | 1.4.
    # Each group subtracts its own mean; "batch" divides both by the std of all ten step rewards.
    def prm(prompts, steps):
        return [[{"b": 2.0, "y": 10.0}.get(s, 0.0) for s in completion_steps] for completion_steps in steps]

    def first_of_each_group_is_correct(completions, **kwargs):
        return [float(i % 4 == 0) for i in range(len(completions))]

    trainer = make_trainer(tiny_model_path, tmp_path, reward_funcs=[first_of_each_group_is_correct],
                           supervision="process", scale_rewards="batch", per_device_train_batch_size=8,
                           trainer_kwargs={"rollout_func": scripted_rollout(SCALE_COMPLETIONS + ["y", "y\n\nb", "y", "y"]),
                                           "process_reward_model": prm})
    trainer.model.train()
    inputs = generation_batch(trainer)
    batch_std = torch.tensor([1.0, 0, 2, 0, 0, 11, 10, 2, 10, 10]).std().item()  # Bessel, as TRL's nanstd
    expected = torch.tensor([0.4, -0.6 + 1.4, -0.6, -0.6, 2.4, 1.4 - 6.6, 1.4, 1.4]) / (batch_std + EPS)
    torch.testing.assert_close(inputs["advantages"][:, 0], expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------- statistics (item 13)


def test_advantage_statistics_are_logged_beside_trls(tiny_model_path, tmp_path):
    trainer = scripted_trainer(tiny_model_path, tmp_path, ["x = 7", "x = 8", "x = 7", "x = 9"],
                               advantage_estimator="online_rft", beta=0.0)
    generation_batch(trainer)
    metrics = trainer._metrics["train"]
    # Online RFT: advantages 1, 0, 1, 0 -> the two incorrect completions give no gradient; group std of
    # {1, 0, 1, 0} (Bessel) = sqrt(1/3). TRL's reward statistics describe the same rewards here.
    assert metrics["frac_advantage_zero"][-1] == pytest.approx(0.5)
    assert metrics["advantage_std"][-1] == pytest.approx(math.sqrt(1 / 3))
    assert metrics["frac_reward_zero_std"][-1] == 0.0 and "reward_std" in metrics

    trainer = scripted_trainer(tiny_model_path, tmp_path, ["x = 8", "x = 8", "x = 8", "x = 8"],
                               supervision="process", trainer_kwargs={"process_reward_model": b_scores_two})
    generation_batch(trainer)
    metrics = trainer._metrics["train"]
    assert metrics["frac_reward_zero_std"][-1] == 1.0  # TRL's outcome view: no signal
    assert metrics["frac_advantage_zero"][-1] == 1.0 and metrics["advantage_std"][-1] == 0.0


# ---------------------------------------------------------------------------------------------- SmolLM2's tokenizer


@pytest.fixture(scope="module")
def smollm2_shaped_tiny_model(smollm2_dir, tmp_path_factory):
    """A tiny random Qwen2 model with SmolLM2's vocabulary, and SmolLM2's tokenizer (passed as processing_class)."""
    from transformers import AutoTokenizer

    from grpo_ext.tiny import build_tiny_model

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    path = tmp_path_factory.mktemp("tiny-smollm2-vocab")
    model = build_tiny_model(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    return str(path), tok


def test_process_supervision_with_the_smollm2_tokenizer(smollm2_shaped_tiny_model, tmp_path):
    # " Then" and "    So" open their steps: the tokens before them ("\n\n") close the previous step.
    model_path, tok = smollm2_shaped_tiny_model
    text = "Step 1: 48/2 = 24.\n\n Then 48 + 24 = 72.\n\n    So the answer is 72."

    def prm(prompts, steps):  # step j of every completion scores j (0, 1, 2)
        return [list(map(float, range(len(s)))) for s in steps]

    trainer = scripted_trainer(model_path, tmp_path, [text, "x = 7", "x = 7", "x = 7"], supervision="process",
                               trainer_kwargs={"process_reward_model": prm, "processing_class": tok})
    inputs = generation_batch(trainer)
    ids = inputs["completion_ids"][0][inputs["completion_mask"][0].bool()].tolist()
    pieces = tok.convert_ids_to_tokens(ids)
    then, so = pieces.index("ĠThen"), pieces.index("ĠSo")
    # R = {0, 1, 2 | 0 + 1 | 0 + 1 | 0 + 1}: mean 1, Bessel variance (1 + 0 + 1) / 5 = 0.4
    s = math.sqrt(0.4) + EPS
    row = inputs["advantages"][0]
    torch.testing.assert_close(row[: then], torch.full((then,), (-1 + 0 + 1) / s))  # step 1's tokens: all three
    torch.testing.assert_close(row[then:so], torch.full((so - then,), (0 + 1) / s))  # " Then" on: steps 2 and 3
    torch.testing.assert_close(row[so : len(ids)], torch.full((len(ids) - so,), 1 / s))  # " So" to EOS: step 3


# ---------------------------------------------------------------------------------------------- construction (10, 15)


def test_online_rft_without_an_outcome_reward_is_refused(tiny_model_path, tmp_path):
    with pytest.raises(ValueError, match="advantage_estimator='online_rft' .* no reward_funcs were given"):
        make_trainer(tiny_model_path, tmp_path, reward_funcs=[], supervision="process",
                     advantage_estimator="online_rft", trainer_kwargs={"process_reward_model": zero_prm})


def test_online_rft_with_a_kl_term_warns(tiny_model_path, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="grpo_ext.trainer"):
        make_trainer(tiny_model_path, tmp_path / "quiet", advantage_estimator="online_rft", beta=0.0)
    assert "keeps the KL term" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="grpo_ext.trainer"):
        make_trainer(tiny_model_path, tmp_path / "kl", advantage_estimator="online_rft", beta=0.04)
    assert "online_rft' with beta=0.04 keeps the KL term" in caplog.text and "loss_type='grpo'" in caplog.text
