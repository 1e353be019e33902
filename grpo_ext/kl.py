r"""Per-token KL estimators (Schulman's k1/k2/k3, DeepSeekMath's k3, and k3+) and TRL's loss aggregation.

Notation, for one sampled token x: pi = pi_theta(x), pi_ref = pi_ref(x), pi_old = pi_old(x) (the policy that
sampled x; on-policy pi_old == pi numerically, but it is not differentiated), l = log(pi / pi_ref),
r = pi_ref / pi = exp(-l), rho = pi / pi_old (importance ratio). "Gradient" below means the expected gradient
E_{x ~ pi_old}[grad_theta estimate(x)]; the loss descends it.

Value (what E[estimate] equals) and gradient, sampled on-policy (x ~ pi_theta, no `old_logps`):

* k1 = l.           value KL(pi || pi_ref) (unbiased, can be negative per token);
                    gradient 0 (E_pi[grad log pi] = 0): in the loss k1 does not regularise at all.
* k2 = l^2 / 2.     value E_pi[l^2/2] (biased; ~KL to second order near pi_ref), >= 0;
                    gradient grad KL(pi || pi_ref) (unbiased).
* k3 = r - 1 - log r = r - 1 + l.
                    value KL(pi || pi_ref) (unbiased), >= 0 per token (DeepSeekMath eq. 4);
                    gradient grad KL(pi_ref || pi) = -E_pi_ref[grad log pi]: the *forward* KL's gradient, not the
                    reverse KL's (biased for KL(pi || pi_ref)).
* k3+ = value of k3, gradient of k2 (straight-through: k2 + stopgrad(k3 - k2)).
                    value KL(pi || pi_ref) (unbiased), >= 0; gradient grad KL(pi || pi_ref) (unbiased).

Off-policy (x ~ pi_old != pi_theta) without the correction every value above is an expectation under pi_old,
so all are biased for KL(pi_theta || pi_ref); k1's gradient becomes -grad KL(pi_old || pi_theta) (zero only at
pi_theta = pi_old), k2's is E_pi_old[l grad log pi], k3's is E_pi_old[(1 - r) grad log pi].

With `old_logps` (TRL's `use_bias_correction_kl`, DeepSeek-V3.2) the estimate is multiplied by rho, so that
E_{pi_old}[rho f] = E_{pi_theta}[f]: every value becomes its on-policy value above (k1, k3, k3+: KL(pi || pi_ref);
k2: E_pi[l^2/2]). For the gradients rho is differentiated (as TRL does) for k1, k2, k3, which gives
grad E_pi[f] = grad sum_x pi f: k1 -> grad KL(pi || pi_ref) (unbiased), k3 -> grad KL(pi || pi_ref) (unbiased),
k2 -> grad E_pi[l^2/2] (biased). For k3+ rho is a detached weight (k2's gradient is already the score-function
form of grad KL), giving grad KL(pi || pi_ref) (unbiased) for both value and gradient, on- and off-policy. This
holds on-policy too: the ratio's value is 1 there but its gradient is not zero, which is what changes k1's and
k3's on-policy gradients to the reverse-KL gradient. With TRL's `importance_sampling_level="sequence"` rho is the
geometric mean over the sequence (TRL's `coef_1`), broadcast to each token: matched for exactness, but then the
claims above hold only approximately.

Numerics: log-ratios are clamped to [-LOG_RATIO_BOUND, LOG_RATIO_BOUND] = [-20, 20] before exponentiation, so
r and rho stay below exp(20) ~ 4.9e8 (finite in fp32 and bf16) when pi_ref is tiny or -inf; the clamp also
stops the gradient beyond the bound. k3 is evaluated as expm1(-l) + l for accuracy when l ~ 0.
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3", "k3+")
LOG_RATIO_BOUND = 20.0


def importance_ratio(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    mask: torch.Tensor | None = None,
    importance_sampling_level: str = "token",
) -> torch.Tensor:
    """rho = pi_theta / pi_old per token (B, T), or TRL's sequence-level exp(mean_t log rho) of shape (B, 1)."""
    log_ratio = logps - old_logps
    if importance_sampling_level == "token":
        pass
    elif importance_sampling_level == "sequence":
        if mask is None:
            mask = torch.ones_like(log_ratio)
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    else:
        raise ValueError(
            f"unknown importance_sampling_level={importance_sampling_level!r}; expected 'token' or 'sequence'"
        )
    return torch.exp(log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND))


def per_token_kl(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    estimator: str = "k3",
    old_logps: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    importance_sampling_level: str = "token",
) -> torch.Tensor:
    """Per-token estimate (B, T) of KL(pi_theta || pi_ref) from log-probs of the sampled tokens.

    `estimator` is one of `k1`, `k2`, `k3`, `k3+`; the module docstring states what each value and gradient
    estimates, on- and off-policy. With `old_logps` the estimate is multiplied by pi_theta / pi_old (detached for
    `k3+`); `mask` and `importance_sampling_level` only matter for the sequence-level ratio.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {', '.join(KL_ESTIMATORS)}")
    log_ratio = (logps - ref_logps).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)  # l = log(pi / pi_ref)
    if estimator == "k1":
        kl = log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio.square()
    else:
        k3 = torch.expm1(-log_ratio) + log_ratio  # r - 1 - log r, r = pi_ref / pi
        if estimator == "k3":
            kl = k3
        else:  # k3+: value of k3, gradient of k2
            k2 = 0.5 * log_ratio.square()
            kl = k2 + (k3 - k2).detach()
    if old_logps is not None:
        rho = importance_ratio(logps, old_logps, mask, importance_sampling_level)
        kl = kl * (rho.detach() if estimator == "k3+" else rho)
    return kl


def aggregate_per_token_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    *,
    gradient_accumulation_steps: int = 1,
    max_completion_length: int | None = None,
    num_items_in_batch: torch.Tensor | float | None = None,
    num_processes: int = 1,
    steps_per_generation: int = 1,
    training: bool = True,
) -> torch.Tensor:
    """Reduce a per-token term (B, T) to a scalar exactly as TRL 1.16's `GRPOTrainer._compute_loss` reduces its loss.

    TRL's aggregation is linear in the per-token loss, so loss(beta) = loss(beta=0) + beta * this(per_token_kl):
    - grpo, sapo: mean over sequences of the masked per-sequence token mean;
    - bnpo: masked token mean over the batch;        - dr_grpo: masked sum / (B * max_completion_length);
    - luspo: mean over sequences of the masked sum;  - cispo, dapo, vespo: masked sum / the generation batch's
      token count per process and per accumulation window (`num_items_in_batch`).
    All except cispo/dapo/vespo are divided by the gradient accumulation steps in training.
    """
    accumulation = gradient_accumulation_steps if training else 1.0
    if loss_type in ("grpo", "sapo"):
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
    if loss_type == "bnpo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0) / accumulation
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.size(0) * max_completion_length) / accumulation
    if loss_type == "luspo":
        return (per_token * mask).sum(-1).mean() / accumulation
    if loss_type in ("cispo", "dapo", "vespo"):
        normalizer = torch.as_tensor(num_items_in_batch).clamp(min=1.0) / num_processes
        if training:
            normalizer = normalizer * gradient_accumulation_steps / steps_per_generation
        return (per_token * mask).sum() / normalizer
    raise ValueError(f"unknown loss_type {loss_type!r}")
