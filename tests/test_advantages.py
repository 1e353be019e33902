"""Outcome, Online RFT and process-supervision advantages against hand-worked examples and TRL's formulas."""

import math

import pytest
import torch

from grpo_ext.advantages import (
    add_outcome_to_last_step,
    normalize_group_step_rewards,
    online_rft_advantages,
    outcome_advantages,
    process_advantages,
    step_sums,
)


def test_process_advantages_hand_worked_from_the_paper_formula():
    # One group of G = 2 outputs, T = 6 tokens.
    #   output 0: three steps, rewards 1, 0, 1, ending at tokens 1, 3, 4 (token 5 is after the last step end)
    #   output 1: two steps, rewards 0, 0, ending at tokens 0, 2
    # Pooled rewards R = {1, 0, 1, 0, 0}: mean 0.4, Bessel variance (3 * 0.36 + 2 * 0.16)... by hand:
    #   deviations 0.6, -0.4, 0.6, -0.4, -0.4 -> squares 0.36, 0.16, 0.36, 0.16, 0.16 -> sum 1.2 -> var 1.2 / 4 = 0.3
    std = math.sqrt(0.3)
    hi, lo = 0.6 / (std + 1e-4), -0.4 / (std + 1e-4)  # normalised rewards of a 1 and of a 0
    # A_{i,t} = sum of the normalised rewards of the steps of output i ending at or after t
    expected = torch.tensor(
        [
            [hi + lo + hi, hi + lo + hi, lo + hi, lo + hi, hi, 0.0],
            [lo + lo, lo, lo, 0.0, 0.0, 0.0],
        ]
    )
    got = process_advantages([[1.0, 0.0, 1.0], [0.0, 0.0]], [[1, 3, 4], [0, 2]], group_size=2, num_tokens=6)
    torch.testing.assert_close(got, expected)
    assert got[0, 0].item() == pytest.approx(0.8 / (std + 1e-4), rel=1e-6)


def test_groups_are_normalised_separately_and_nan_steps_count_zero():
    rewards = [[1.0], [3.0], [10.0, float("nan")], [20.0]]
    ends = [[0], [1], [0, 1], [1]]
    got = process_advantages(rewards, ends, group_size=2, num_tokens=2)
    s1 = math.sqrt(2.0)  # std of {1, 3}
    s2 = math.sqrt(50.0)  # std of {10, 20} (the NaN step is left out)
    expected = torch.tensor(
        [[-1 / (s1 + 1e-4), 0.0], [1 / (s1 + 1e-4), 1 / (s1 + 1e-4)], [-5 / (s2 + 1e-4), 0.0], [5 / (s2 + 1e-4)] * 2]
    )
    torch.testing.assert_close(got, expected)


def test_process_edge_cases():
    # a group with a single scored step: nothing to compare against, advantage 0; a completion with no step: 0
    got = process_advantages([[5.0], []], [[2], []], group_size=2, num_tokens=3)
    assert torch.equal(got, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="completion 0: step_ends must be non-decreasing"):
        process_advantages([[1.0, 2.0], [0.0]], [[2, 1], [0]], group_size=2, num_tokens=3)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        process_advantages([[1.0], [0.0]], [[3], [0]], group_size=2, num_tokens=3)
    with pytest.raises(ValueError, match="completion 1: 2 step rewards but 1 step ends"):
        process_advantages([[1.0], [0.0, 1.0]], [[0], [0]], group_size=2, num_tokens=3)
    with pytest.raises(ValueError, match="whole number of groups"):
        normalize_group_step_rewards([[1.0]] * 3, group_size=2)


def _trl_outcome(rewards, group_size, scale):
    """TRL 1.16's sum_then_normalize advantages, written with TRL's own nanstd."""
    from trl.trainer.utils import nanstd

    grouped = rewards.view(-1, group_size)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(group_size)
    if scale == "group":
        std = nanstd(grouped, dim=1).repeat_interleave(group_size)
    else:
        std = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean
    if scale != "none":
        advantages = advantages / (std + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_outcome_advantages_match_trl(scale):
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(12, generator=g)
    rewards[3] = float("nan")  # an unscorable completion
    got = outcome_advantages(rewards, group_size=4, scale=scale)
    torch.testing.assert_close(got, _trl_outcome(rewards, 4, scale))
    assert got[3].item() == 0.0


def test_outcome_advantages_by_hand():
    got = outcome_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=2)
    a = 0.5 / (math.sqrt(0.5) + 1e-4)
    torch.testing.assert_close(got, torch.tensor([a, -a, -a, a]))


def test_online_rft_is_an_indicator_of_correctness():
    rewards = torch.tensor([1.0, 0.0, 2.0, 0.99, float("nan")])
    torch.testing.assert_close(online_rft_advantages(rewards, 1.0), torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]))


def test_step_sums():
    per_token = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert step_sums(per_token, [1, 1, 4]) == [3.0, 0.0, 12.0]
    assert step_sums(per_token, []) == []


def test_outcome_joins_the_last_step_even_when_it_is_unscored():
    nan = float("nan")
    combined = add_outcome_to_last_step([[0.5, 1.0], [1.0, nan], [], [0.25]], [1.0, 1.0, 1.0, nan])
    assert combined[0] == [0.5, 2.0]
    assert combined[1][0] == 1.0 and combined[1][1] == 1.0  # the unscored last step carries the outcome, not NaN
    assert combined[2] == []  # no step to carry it
    assert combined[3] == [0.25]  # a NaN outcome changes nothing


def test_step_reward_scaling_follows_scale_rewards():
    # group 1: steps {1 | 0, 2}, mean 1, deviations 0 | -1, 1, Bessel std 1
    # group 2: steps {4 | 6},    mean 5, deviations -1 | 1,     Bessel std sqrt(2)
    # batch: {1, 0, 2, 4, 6}, mean 2.6, squared deviations 2.56 + 6.76 + 0.36 + 1.96 + 11.56 = 23.2, std sqrt(5.8)
    rewards = [[1.0], [0.0, 2.0], [4.0], [6.0]]
    assert normalize_group_step_rewards(rewards, 2, "none") == [[0.0], [-1.0, 1.0], [-1.0], [1.0]]
    flat = lambda rows: [r for row in rows for r in row]  # noqa: E731
    group = flat(normalize_group_step_rewards(rewards, 2, "group"))
    assert group == pytest.approx([0.0, -1 / (1 + 1e-4), 1 / (1 + 1e-4), -1 / (2**0.5 + 1e-4), 1 / (2**0.5 + 1e-4)])
    batch = flat(normalize_group_step_rewards(rewards, 2, "batch"))
    s = 5.8**0.5 + 1e-4
    assert batch == pytest.approx([0.0, -1 / s, 1 / s, -1 / s, 1 / s])
    with pytest.raises(ValueError, match="unknown scale 'std'"):
        normalize_group_step_rewards(rewards, 2, "std")


def test_advantage_statistics():
    from grpo_ext.advantages import advantage_statistics

    std, frac_zero = advantage_statistics(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([True, False, True, False]))
    assert std == pytest.approx((1 / 3) ** 0.5) and frac_zero == 0.5
    assert advantage_statistics(torch.tensor([2.0]), torch.tensor([True])) == (0.0, 0.0)
