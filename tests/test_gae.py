"""PPO's per-token rewards (DeepSeekMath eq. 2), GAE and whitening against hand-worked numbers and a reference loop."""

import pytest
import torch

from grpo_ext.advantages import gae_advantages, ppo_token_rewards, whiten_advantages


def reference_gae(rewards, values, mask, gamma, lam):
    """The recursion written out with Python floats, one completion at a time (the test's reference)."""
    advantages = [[0.0] * len(row) for row in rewards]
    for i, (r, v, m) in enumerate(zip(rewards, values, mask)):
        length = int(sum(m))
        for t in reversed(range(length)):
            next_value = v[t + 1] if t + 1 < length else 0.0
            next_advantage = advantages[i][t + 1] if t + 1 < length else 0.0
            delta = r[t] + gamma * next_value - v[t]
            advantages[i][t] = delta + gamma * lam * next_advantage
    returns = [
        [(a + v) if m_t else 0.0 for a, v, m_t in zip(ra, rv, rm)] for ra, rv, rm in zip(advantages, values, mask)
    ]
    return torch.tensor(advantages, dtype=torch.float64), torch.tensor(returns, dtype=torch.float64)


def random_batch(batch, tokens, seed):
    """Random rewards and values, right-padded masks of random lengths 1..T (some rows full: truncated)."""
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randn(batch, tokens, generator=generator, dtype=torch.float64)
    values = torch.randn(batch, tokens, generator=generator, dtype=torch.float64)
    lengths = torch.randint(1, tokens + 1, (batch,), generator=generator)
    lengths[0] = tokens
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).long()
    return rewards, values, mask


def test_gae_hand_worked_three_tokens():
    # gamma = 0.9, lam = 0.5, so gamma * lam = 0.45.
    # row 0, 3 valid tokens (truncated: no bootstrap after the last one), r = (0.1, -0.2, 1.0), V = (0.5, 0.6, 0.8):
    #   delta_2 = 1.0 + 0              - 0.8 =  0.2     A_2 = 0.2
    #   delta_1 = -0.2 + 0.9 * 0.8     - 0.6 = -0.08    A_1 = -0.08 + 0.45 * 0.2  = 0.01
    #   delta_0 = 0.1 + 0.9 * 0.6      - 0.5 =  0.14    A_0 = 0.14  + 0.45 * 0.01 = 0.1445
    #   returns = A + V = (0.6445, 0.61, 1.0)
    # row 1, 2 valid tokens then padding (its reward 9 and value 7 must be ignored), r = (0.3, 0.5), V = (0.2, 0.4):
    #   delta_1 = 0.5 - 0.4 = 0.1                        A_1 = 0.1
    #   delta_0 = 0.3 + 0.9 * 0.4 - 0.2 = 0.46           A_0 = 0.46 + 0.45 * 0.1 = 0.505
    #   returns = (0.705, 0.5, 0)
    rewards = torch.tensor([[0.1, -0.2, 1.0], [0.3, 0.5, 9.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.6, 0.8], [0.2, 0.4, 7.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[0.1445, 0.01, 0.2], [0.505, 0.1, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(returns, torch.tensor([[0.6445, 0.61, 1.0], [0.705, 0.5, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("batch, tokens", [(1, 1), (4, 7), (16, 33)])
@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0), (0.7, 0.0), (1.0, 0.0), (0.5, 1.0)])
def test_gae_matches_reference_loop(batch, tokens, gamma, lam):
    rewards, values, mask = random_batch(batch, tokens, seed=batch * 100 + tokens)
    advantages, returns = gae_advantages(rewards, values, mask, gamma=gamma, lam=lam)
    expected_advantages, expected_returns = reference_gae(rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam)
    torch.testing.assert_close(advantages, expected_advantages)
    torch.testing.assert_close(returns, expected_returns)


def test_gae_closed_forms():
    rewards, values, mask = random_batch(8, 12, seed=3)
    valid = mask.double()
    # gamma = lam = 1: A_t = sum of the rewards from t to the end of the completion - V_t (Monte Carlo)
    reward_to_go = (rewards * valid).flip(1).cumsum(1).flip(1)
    advantages, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, (reward_to_go - values) * valid)
    torch.testing.assert_close(returns, reward_to_go * valid)
    # lam = 0: the one-step TD error delta_t = r_t + gamma V_{t+1} m_{t+1} - V_t
    next_values = torch.cat([values[:, 1:] * valid[:, 1:], torch.zeros(8, 1, dtype=torch.float64)], dim=1)
    advantages, _ = gae_advantages(rewards, values, mask, gamma=0.8, lam=0.0)
    torch.testing.assert_close(advantages, (rewards + 0.8 * next_values - values) * valid)


def test_gae_float32_inputs_and_no_gradient():
    values = torch.tensor([[0.5, 0.25]], requires_grad=True)
    advantages, returns = gae_advantages(torch.tensor([[0.0, 1.0]]), values, torch.ones(1, 2), gamma=1.0, lam=1.0)
    assert advantages.dtype == torch.float32 and not advantages.requires_grad and not returns.requires_grad
    torch.testing.assert_close(advantages, torch.tensor([[0.5, 0.75]]))


def test_gae_rejects_bad_input():
    ones = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"values has shape \(2, 2\) but mask has \(2, 3\)"):
        gae_advantages(ones, torch.ones(2, 2), ones)
    with pytest.raises(ValueError, match="gamma and lam must be in"):
        gae_advantages(ones, ones, ones, gamma=1.5)


def test_gae_skips_tokens_the_policy_did_not_write():
    """A multi-turn rollout: t1 is a tool's output (mask 0 inside the completion, TRL's `tool_mask`). verl's recursion
    skips it: V and A are carried across, so t0 bootstraps from V(t2). gamma = 1, rewards (0, -, 1), V (0.5, -, 0.8):
      lam = 1:   A2 = 1 - 0.8 = 0.2;  A0 = (0 + 0.8 - 0.5) + 0.2 = 0.5  (= the return 1 minus V0);  returns (1.0, 0, 1.0)
      lam = 0.5: A0 = 0.3 + 0.5 * 0.2 = 0.4;  returns (0.9, 0, 1.0)
    The reward and value written at the tool token (7, 9) are ignored; the trailing padding stays 0."""
    rewards = torch.tensor([[0.0, 7.0, 1.0, 0.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 9.0, 0.8, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 0, 1, 0]])
    advantages, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(advantages, torch.tensor([[0.5, 0.0, 0.2, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(returns, torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64))
    advantages, returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[0.4, 0.0, 0.2, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(returns, torch.tensor([[0.9, 0.0, 1.0, 0.0]], dtype=torch.float64))
    # the score lands on the last token the policy wrote, not on a tool token after it
    kl = torch.tensor([[0.2, 5.0, 0.4, 0.0, 3.0]], dtype=torch.float64)
    rewards = ppo_token_rewards(torch.tensor([1.0]), kl, torch.tensor([[1, 0, 1, 0, 0]]), beta=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.1, 0.0, 0.8, 0.0, 0.0]], dtype=torch.float64))


def test_ppo_token_rewards_hand_worked():
    # beta = 0.5: r_t = -0.5 * kl_t at every valid token, plus the score at the last valid token
    #   row 0 (3 tokens, score 1): (-0.05, -0.1, -0.15 + 1) = (-0.05, -0.1, 0.85)
    #   row 1 (2 tokens, score 0; the padded KL 9 is ignored): (-0.2, -0.25, 0)
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards = ppo_token_rewards(torch.tensor([1.0, 0.0]), kl, mask, beta=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.1, 0.85], [-0.2, -0.25, 0.0]], dtype=torch.float64))
    # beta = 0 leaves the score alone at the last valid token
    torch.testing.assert_close(
        ppo_token_rewards([2.0, 3.0], kl, mask, beta=0.0),
        torch.tensor([[0.0, 0.0, 2.0], [0.0, 3.0, 0.0]], dtype=torch.float64),
    )
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] have no valid token"):
        ppo_token_rewards([1.0, 1.0], kl, torch.tensor([[1, 0, 0], [0, 0, 0]]), beta=0.1)
    with pytest.raises(ValueError, match=r"score must be \(B,\) = \(2,\)"):
        ppo_token_rewards([1.0], kl, mask, beta=0.1)


def test_whiten_advantages_over_valid_tokens_of_the_batch():
    # valid values 1, 2, 3, 4: mean 2.5, Bessel variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5 / 3
    advantages = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    scale = (5.0 / 3.0 + 1e-8) ** -0.5
    expected = torch.tensor([[-1.5 * scale, -0.5 * scale, 0.5 * scale], [1.5 * scale, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(whiten_advantages(advantages, mask), expected)
    with pytest.raises(ValueError, match="at least 2 valid tokens"):
        whiten_advantages(advantages, torch.tensor([[1, 0, 0], [0, 0, 0]]))
