r"""Advantages of DeepSeekMath's GRPO (outcome and process supervision) and of Online RFT, as pure functions.

Rows are ordered as TRL orders them: the `group_size` completions of one prompt are consecutive. Unscorable rewards
(NaN, TRL's convention for a reward function returning None) are left out of the group statistics and get
advantage 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

EPS = 1e-4  # TRL's epsilon in (r - mean) / (std + eps)
SCALES = ("group", "batch", "none")  # TRL's `scale_rewards`


def _nanstd(x: torch.Tensor, dim=None, keepdim: bool = False) -> torch.Tensor:
    """Bessel-corrected standard deviation ignoring NaNs (TRL's `nanstd`); NaN when fewer than 2 values."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    count = (~torch.isnan(x)).sum(dim=dim, keepdim=True)
    var = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True) * count / (count - 1)
    var = torch.where(count > 1, var, torch.full_like(var, float("nan")))
    std = var.sqrt()
    return std if keepdim or dim is None else std.squeeze(dim)


def outcome_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    r"""GRPO outcome advantages, one per completion (TRL's `sum_then_normalize`).

    A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4) with `scale="group"`; std over the whole batch with
    `scale="batch"`; no division with `scale="none"`. NaN rewards are excluded and get A_i = 0.
    """
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards are not a whole number of groups of size {group_size}")
    grouped = rewards.view(-1, group_size)
    advantages = (grouped - torch.nanmean(grouped, dim=1, keepdim=True)).view(-1)
    if scale == "group":
        std = _nanstd(grouped, dim=1, keepdim=True).expand_as(grouped).reshape(-1) if group_size > 1 else None
    elif scale == "batch":
        std = _nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else None
    elif scale == "none":
        std = None
    else:
        raise ValueError(f"unknown scale {scale!r}; expected 'group', 'batch' or 'none'")
    if std is not None:
        advantages = advantages / (std + EPS)
    elif scale != "none":
        advantages = advantages / EPS  # a single value: its deviation from its own mean is 0
    return torch.nan_to_num(advantages, nan=0.0)


def online_rft_advantages(rewards: torch.Tensor, threshold: float) -> torch.Tensor:
    r"""Online RFT gradient coefficient (DeepSeekMath section 5.2.1): GC(o) = 1[r(o) >= threshold], NaN -> 0."""
    rewards = torch.as_tensor(rewards, dtype=torch.float32)
    return (rewards >= threshold).float()  # NaN >= t is False


def normalize_group_step_rewards(
    step_rewards: Sequence[Sequence[float]], group_size: int, scale: str = "group"
) -> list[list[float]]:
    r"""r~_{i,j} = (r_{i,j} - mean(R_g)) / (std + 1e-4), R_g = all step rewards of the group's G outputs.

    Pooled over the group's steps (DeepSeekMath eq. for process supervision). `scale` is TRL's `scale_rewards`:
    `"group"` divides by std(R_g), `"batch"` by the std of every step reward of the batch, `"none"` does not divide
    (Dr. GRPO). std is Bessel-corrected as in TRL. A group with fewer than two scored steps has nothing to compare,
    so its normalised rewards are 0. NaN step rewards stay NaN and are left out of every statistic.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected 'group', 'batch' or 'none'")
    if len(step_rewards) % group_size:
        raise ValueError(f"{len(step_rewards)} completions are not a whole number of groups of size {group_size}")
    rows = [torch.tensor([float(r) for r in row], dtype=torch.float64) for row in step_rewards]
    scored_in_batch = torch.cat([row[~torch.isnan(row)] for row in rows] + [torch.zeros(0, dtype=torch.float64)])
    batch_std = scored_in_batch.std() if scored_in_batch.numel() >= 2 else None
    normalized: list[list[float]] = []
    for start in range(0, len(rows), group_size):
        group = rows[start : start + group_size]
        scored = torch.cat([row[~torch.isnan(row)] for row in group])
        std = {"group": scored.std() if scored.numel() >= 2 else None, "batch": batch_std, "none": None}[scale]
        for values in group:
            if scored.numel() < 2:  # nothing to compare against: 0 (NaN stays NaN)
                values = torch.where(torch.isnan(values), values, torch.zeros_like(values))
            else:
                values = values - scored.mean()
                values = values / (std + EPS) if std is not None else values
            normalized.append(values.tolist())
    return normalized


def add_outcome_to_last_step(step_rewards: Sequence[Sequence[float]], outcomes: Sequence[float]) -> list[list[float]]:
    r"""r_{i,last} <- r_{i,last} + o_i: the outcome reward joins each completion's last step.

    An unscored (NaN) last step takes the outcome alone, so an outcome is never lost to NaN; a NaN outcome and a
    completion with no steps leave the rewards as they are.
    """
    combined = [list(rows) for rows in step_rewards]
    for rows, outcome in zip(combined, outcomes):
        if rows and outcome == outcome:  # not NaN
            rows[-1] = outcome if rows[-1] != rows[-1] else rows[-1] + outcome
    return combined


def process_advantages(
    step_rewards: Sequence[Sequence[float]],
    step_ends: Sequence[Sequence[int]],
    group_size: int,
    num_tokens: int,
    scale: str = "group",
) -> torch.Tensor:
    r"""Process-supervision advantages (DeepSeekMath section 4.1.3), shape (B, num_tokens).

    `step_rewards[i][j]` is the reward of step j of completion i and `step_ends[i][j]` the index of that step's
    last completion token (non-decreasing in j, in [0, num_tokens)). With r~ the rewards normalised over all steps
    of the group (`normalize_group_step_rewards`, with `scale` as TRL's `scale_rewards`):

        A_{i,t} = sum_{j : step_ends[i][j] >= t} r~_{i,j}

    Tokens after the last step end get 0; NaN (unscored) steps count as 0.
    """
    if len(step_rewards) != len(step_ends):
        raise ValueError(f"step_rewards has {len(step_rewards)} completions but step_ends has {len(step_ends)}")
    normalized = normalize_group_step_rewards(step_rewards, group_size, scale)
    return steps_to_token_advantages(normalized, step_ends, num_tokens)


def steps_to_token_advantages(
    normalized_rewards: Sequence[Sequence[float]], step_ends: Sequence[Sequence[int]], num_tokens: int
) -> torch.Tensor:
    """A_{i,t} = sum of the (already normalised) rewards of the steps of completion i ending at or after t."""
    advantages = torch.zeros(len(normalized_rewards), num_tokens, dtype=torch.float64)
    for i, (rewards, ends) in enumerate(zip(normalized_rewards, step_ends)):
        if len(rewards) != len(ends):
            raise ValueError(f"completion {i}: {len(rewards)} step rewards but {len(ends)} step ends")
        previous = -1
        for end in ends:
            if not (0 <= end < num_tokens) or end < previous:
                raise ValueError(
                    f"completion {i}: step_ends must be non-decreasing token indices in [0, {num_tokens}); "
                    f"got {list(ends)}"
                )
            previous = end
        # reward at each step's last token, then a reverse cumulative sum (reward-to-go over steps)
        at_end = torch.zeros(num_tokens, dtype=torch.float64)
        for reward, end in zip(rewards, ends):
            if reward == reward:  # skip NaN
                at_end[end] += reward
        advantages[i] = at_end.flip(0).cumsum(0).flip(0)
    return advantages.float()


def step_sums(per_token: torch.Tensor, step_ends: Sequence[int]) -> list[float]:
    """Sum of `per_token` (T,) over each step's tokens: step j covers (step_ends[j-1], step_ends[j]]."""
    if len(step_ends) == 0:
        return []
    cumulative = per_token.detach().double().cumsum(0)
    ends = torch.as_tensor(list(step_ends), dtype=torch.long, device=per_token.device)
    totals = cumulative[ends]
    return (totals - torch.cat([totals.new_zeros(1), totals[:-1]])).tolist()


def advantage_statistics(sequence_advantages: torch.Tensor, carries_gradient: torch.Tensor) -> tuple[float, float]:
    r"""Statistics of the advantages actually used, the counterparts of TRL's `reward_std` and `frac_reward_zero_std`.

    `sequence_advantages` (N,) is each completion's advantage at its first token (its whole-sequence advantage; under
    process supervision the sum of its normalised step rewards), `carries_gradient` (N,) whether any of its unmasked
    tokens has a non-zero advantage. Returns (Bessel std of `sequence_advantages` over the batch, as TRL's
    `reward_std` is of the rewards, 0 for a single completion; fraction of completions that give no policy gradient).
    """
    values = torch.as_tensor(sequence_advantages, dtype=torch.float64)
    std = values.std().item() if values.numel() > 1 else 0.0
    frac_zero = 1.0 - torch.as_tensor(carries_gradient, dtype=torch.float64).mean().item()
    return std, frac_zero


# --------------------------------------------------------------------------------------------------------------------
# PPO (DeepSeekMath equation 2 and GAE), for `advantage_estimator="gae"`
# --------------------------------------------------------------------------------------------------------------------


def _check_token_tensors(mask: torch.Tensor, right_padded: bool = True, **tensors: torch.Tensor) -> None:
    """Every tensor (B, T) like `mask`; with `right_padded`, `mask` ones for the completion, then zeros."""
    if mask.dim() != 2:
        raise ValueError(f"mask must be (B, T), got shape {tuple(mask.shape)}")
    for name, tensor in tensors.items():
        if tensor.shape != mask.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)} but mask has {tuple(mask.shape)}")
    if not right_padded:
        return
    mask = mask.bool()
    holes = (mask[:, 1:] & ~mask[:, :-1]).any(dim=1)  # a valid token after a padded one
    if holes.any():
        rows = holes.nonzero().flatten().tolist()
        raise ValueError(f"mask must be right-padded (ones then zeros); row(s) {rows} are not")


def ppo_token_rewards(score: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    r"""Per-token rewards of DeepSeekMath's PPO (its equation 2), shape (B, T).

        r_t = r_phi(q, o) * 1[t = last valid token] - beta * KL_t      at valid tokens (mask 1)
        r_t = 0                                                         elsewhere (mask 0)

    `score` (B,) is each completion's outcome reward r_phi(q, o), `kl` (B, T) the per-token KL estimate (any of
    `grpo_ext.kl`'s estimators, detached; the paper writes k1 = log pi/pi_ref), `mask` (B, T): 1 at the tokens the
    policy wrote, 0 at padding and at tokens it did not write (a tool's output inside a multi-turn rollout, TRL's
    `tool_mask`). A completion with no valid token has nowhere to put its score, so it is an error.
    """
    score = torch.as_tensor(score, dtype=kl.dtype, device=kl.device)
    _check_token_tensors(mask, right_padded=False, kl=kl)
    if score.shape != (mask.shape[0],):
        raise ValueError(f"score must be (B,) = ({mask.shape[0]},), got shape {tuple(score.shape)}")
    valid = mask.bool()
    if not valid.any(dim=1).all():
        rows = (~valid.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"row(s) {rows} have no valid token for the score")
    rewards = -beta * kl.detach() * mask.to(kl.dtype)
    rows = torch.arange(mask.shape[0], device=mask.device)
    last = mask.shape[1] - 1 - valid.flip(dims=[1]).to(torch.uint8).argmax(dim=1)  # the last 1 of each row
    rewards[rows, last] += score
    return rewards


def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Generalized Advantage Estimation (Schulman et al., 2016) over each completion's tokens; returns (A, returns).

    With m_t the mask (1 at the tokens the policy wrote, 0 at padding and at tokens it did not write, such as a
    tool's output inside a multi-turn rollout) and, for the valid tokens t from the last down, t' the next valid
    token after t,

        delta_t = r_t + gamma * V_{t'} - V_t
        A_t     = delta_t + gamma * lam * A_{t'}
        returns_t = A_t + V_t

    where V and A after the last valid token are 0, and A_t = returns_t = 0 where m_t = 0. Masked tokens are skipped
    as verl's `compute_gae_advantage_return` skips them: the recursion carries V and A across them unchanged. With a
    right-padded mask t' = t + 1. Closed forms: lam = 0 gives the one-step TD error A_t = delta_t; gamma = lam = 1
    gives A_t = sum_{s >= t} r_s - V_t (Monte Carlo).

    Truncated completions (cut at `max_completion_length` without EOS) are not bootstrapped: their last generated
    token is terminal, as for a finished one. The episode is what the reward function scored: the outcome reward
    was given for the text as written (a truncated answer scores what it says, usually 0), and no continuation will
    ever be scored, so V of the unseen next state would estimate a return that never comes. TRL's former
    PPOTrainer did the same (next value 0 after the last token).

    `rewards`, `values` and `mask` are (B, T); values are detached (the advantages and returns are targets).
    """
    _check_token_tensors(mask, right_padded=False, rewards=rewards, values=values)
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}")
    dtype = torch.promote_types(rewards.dtype, values.dtype)
    valid = mask.to(dtype)
    rewards = rewards.detach().to(dtype) * valid
    values = values.detach().to(dtype) * valid
    advantages = torch.zeros_like(values)
    next_value = values.new_zeros(values.shape[0])  # V_{t'}
    next_advantage = values.new_zeros(values.shape[0])  # A_{t'}
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = advantage * valid[:, t]
        next_value = torch.where(valid[:, t] > 0, values[:, t], next_value)
        next_advantage = torch.where(valid[:, t] > 0, advantage, next_advantage)
    return advantages, (advantages + values) * valid


def whiten_advantages(advantages: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    r"""(A - mean) / sqrt(var + eps) over the valid tokens of the whole batch; padding stays 0.

    mean and var (Bessel-corrected) are taken over every token with mask 1, as TRL's former `masked_whiten`.
    With fewer than two valid tokens there is no spread to divide by: an error.
    """
    _check_token_tensors(mask, advantages=advantages)
    valid = mask.bool()
    count = int(valid.sum())
    if count < 2:
        raise ValueError(f"whitening needs at least 2 valid tokens, the mask has {count}")
    selected = advantages[valid]
    whitened = (advantages - selected.mean()) * torch.rsqrt(selected.var() + eps)
    return whitened * valid.to(whitened.dtype)
