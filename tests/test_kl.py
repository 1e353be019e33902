"""KL estimators: Monte Carlo checks of every value/gradient claim in `grpo_ext.kl`'s docstring, and numerics.

A categorical policy pi = softmax(theta) over K outcomes plays the role of one token position. For each claim we
sample x ~ pi (on-policy) or x ~ pi_old (off-policy), average the estimator (value) and its per-sample gradient in
theta, and compare with the closed form within 5 standard errors (fixed seeds).
"""

import math

import pytest
import torch

from grpo_ext.kl import LOG_RATIO_BOUND, aggregate_per_token_loss, importance_ratio, per_token_kl

K = 6
N = 400_000
Z = 5.0  # standard errors allowed


@pytest.fixture(scope="module")
def dists():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(K, generator=g, dtype=torch.float64)
    ref_logits = theta + 0.8 * torch.randn(K, generator=g, dtype=torch.float64)
    old_logits = theta + 0.6 * torch.randn(K, generator=g, dtype=torch.float64)
    return theta, torch.log_softmax(ref_logits, 0), torch.log_softmax(old_logits, 0)


def closed_form(theta, ref_logp, old_logp):
    """Exact values and theta-gradients of the quantities the docstring names."""

    def value_and_grad(fn):
        t = theta.clone().requires_grad_(True)
        v = fn(t)
        (g,) = torch.autograd.grad(v, t)
        return v.item(), g

    def logp(t):
        return torch.log_softmax(t, 0)

    return {
        "KL(pi||ref)": value_and_grad(lambda t: (logp(t).exp() * (logp(t) - ref_logp)).sum()),
        "KL(ref||pi)": value_and_grad(lambda t: (ref_logp.exp() * (ref_logp - logp(t))).sum()),
        "KL(old||pi)": value_and_grad(lambda t: (old_logp.exp() * (old_logp - logp(t))).sum()),
        "E_pi[l^2/2]": value_and_grad(lambda t: (logp(t).exp() * 0.5 * (logp(t) - ref_logp) ** 2).sum()),
    }


def monte_carlo(theta, ref_logp, old_logp, estimator, off_policy, correction, seed=1, fn=None):
    """Sample mean and standard error of the estimate and of its theta-gradient."""
    g = torch.Generator().manual_seed(seed)
    pi = torch.softmax(theta, 0)
    sampler = old_logp.exp() if off_policy else pi
    x = torch.multinomial(sampler, N, replacement=True, generator=g)
    logp = torch.log_softmax(theta, 0)[x].clone().requires_grad_(True)
    old = (old_logp[x] if off_policy else logp.detach()) if correction else None
    fn = fn or (lambda lp, ref, old: per_token_kl(lp, ref, estimator, old_logps=old))
    values = fn(logp, ref_logp[x], old)
    # each estimate depends on theta only through its own log pi(x): grad_theta = d/dlogp * (onehot(x) - pi)
    (dlogp,) = torch.autograd.grad(values.sum(), logp)
    grads = dlogp[:, None] * (torch.nn.functional.one_hot(x, K).double() - pi[None, :])
    values = values.detach()
    return (values.mean().item(), values.std().item() / math.sqrt(N), grads.mean(0), grads.std(0) / math.sqrt(N))


def assert_close(mean, se, target, what):
    mean, se, target = torch.as_tensor(mean), torch.as_tensor(se), torch.as_tensor(target, dtype=torch.float64)
    err = (mean - target).abs()
    assert bool((err <= Z * se + 1e-9).all()), f"{what}: MC {mean} +- {se} vs claimed {target}"


def assert_far(mean, se, target, what):
    mean, se, target = torch.as_tensor(mean), torch.as_tensor(se), torch.as_tensor(target, dtype=torch.float64)
    z = ((mean - target).abs() / (se + 1e-12)).max().item()
    assert z > 20, f"{what}: expected a clear difference, z = {z:.1f}"


ZERO = torch.zeros(K, dtype=torch.float64)

# (estimator, off_policy, correction, value claim, gradient claim); "0" = zero gradient
CLAIMS = [
    # on-policy, no importance ratio
    ("k1", False, False, "KL(pi||ref)", "0"),
    ("k2", False, False, "E_pi[l^2/2]", "KL(pi||ref)"),
    ("k3", False, False, "KL(pi||ref)", "KL(ref||pi)"),
    ("k3+", False, False, "KL(pi||ref)", "KL(pi||ref)"),
    # on-policy, with the (differentiated) importance ratio pi / pi_old, pi_old = stopgrad(pi)
    ("k1", False, True, "KL(pi||ref)", "KL(pi||ref)"),
    ("k2", False, True, "E_pi[l^2/2]", "E_pi[l^2/2]"),
    ("k3", False, True, "KL(pi||ref)", "KL(pi||ref)"),
    ("k3+", False, True, "KL(pi||ref)", "KL(pi||ref)"),
    # off-policy (x ~ pi_old) with the ratio: unbiased again
    ("k1", True, True, "KL(pi||ref)", "KL(pi||ref)"),
    ("k2", True, True, "E_pi[l^2/2]", "E_pi[l^2/2]"),
    ("k3", True, True, "KL(pi||ref)", "KL(pi||ref)"),
    ("k3+", True, True, "KL(pi||ref)", "KL(pi||ref)"),
    # off-policy without the ratio: k1's gradient is -grad KL(pi_old || pi)
    ("k1", True, False, None, "-KL(old||pi)"),
]


@pytest.mark.parametrize("estimator,off_policy,correction,value_claim,grad_claim", CLAIMS)
def test_docstring_claims_monte_carlo(dists, estimator, off_policy, correction, value_claim, grad_claim):
    theta, ref_logp, old_logp = dists
    exact = closed_form(theta, ref_logp, old_logp)
    v, v_se, g, g_se = monte_carlo(theta, ref_logp, old_logp, estimator, off_policy, correction)
    if value_claim is not None:
        assert_close(v, v_se, exact[value_claim][0], f"{estimator} value")
    if grad_claim == "0":
        target = ZERO
    elif grad_claim.startswith("-"):
        target = -exact[grad_claim[1:]][1]
    else:
        target = exact[grad_claim][1]
    assert_close(g, g_se, target, f"{estimator} gradient")


def test_the_claims_discriminate(dists):
    """The Monte Carlo check can fail: the biased cases differ clearly from the reverse-KL targets."""
    theta, ref_logp, old_logp = dists
    exact = closed_form(theta, ref_logp, old_logp)
    # k3 on-policy without the ratio does not descend KL(pi || ref)
    _, _, g, g_se = monte_carlo(theta, ref_logp, old_logp, "k3", False, False)
    assert_far(g, g_se, exact["KL(pi||ref)"][1], "k3 on-policy gradient vs reverse KL")
    # k2's value is not the KL
    v, v_se, _, _ = monte_carlo(theta, ref_logp, old_logp, "k2", False, False)
    assert_far(v, v_se, exact["KL(pi||ref)"][0], "k2 value vs KL")
    # off-policy without the ratio, k3's value is biased
    v, v_se, _, _ = monte_carlo(theta, ref_logp, old_logp, "k3", True, False)
    assert_far(v, v_se, exact["KL(pi||ref)"][0], "off-policy k3 value vs KL")
    # k3+ with a differentiated ratio would be biased: that is why the ratio is detached for k3+
    def k3_plus_differentiated_ratio(lp, ref, old):
        return per_token_kl(lp, ref, "k3+") * importance_ratio(lp, old)

    _, _, g, g_se = monte_carlo(theta, ref_logp, old_logp, None, True, True, fn=k3_plus_differentiated_ratio)
    assert_far(g, g_se, exact["KL(pi||ref)"][1], "k3+ with a differentiated ratio")
    # off-policy without the ratio, k1's gradient is not the KL gradient
    _, _, g, g_se = monte_carlo(theta, ref_logp, old_logp, "k1", True, False)
    assert_far(g, g_se, exact["KL(pi||ref)"][1], "off-policy k1 gradient without ratio")


def test_values_by_hand():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.4)]])
    l = torch.tensor([[math.log(2.0), math.log(0.5)]])
    torch.testing.assert_close(per_token_kl(logp, ref, "k1"), l)
    torch.testing.assert_close(per_token_kl(logp, ref, "k2"), 0.5 * l**2)
    k3 = torch.tensor([[0.5 - math.log(0.5) - 1, 2.0 - math.log(2.0) - 1]])  # r - log r - 1, r = ref / pi
    torch.testing.assert_close(per_token_kl(logp, ref, "k3"), k3)
    torch.testing.assert_close(per_token_kl(logp, ref, "k3+"), k3)
    # TRL's inline formula
    torch.testing.assert_close(per_token_kl(logp, ref, "k3"), torch.exp(ref - logp) - (ref - logp) - 1)
    old = torch.tensor([[math.log(0.25), math.log(0.4)]])
    torch.testing.assert_close(per_token_kl(logp, ref, "k3", old_logps=old), k3 * torch.tensor([[2.0, 0.5]]))


def test_k3_plus_has_k3_value_and_k2_gradient():
    logp = torch.randn(3, 5, dtype=torch.float64).requires_grad_(True)
    ref = torch.randn(3, 5, dtype=torch.float64)
    plus = per_token_kl(logp, ref, "k3+")
    torch.testing.assert_close(plus, per_token_kl(logp, ref, "k3"))
    (g_plus,) = torch.autograd.grad(plus.sum(), logp)
    (g_k2,) = torch.autograd.grad(per_token_kl(logp, ref, "k2").sum(), logp)
    torch.testing.assert_close(g_plus, g_k2)


def test_k3_non_negative_and_finite_when_ref_is_tiny():
    logp = torch.tensor([[-0.1, -3.0, -50.0, -1e-3, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1e4, -float("inf"), -0.01, -1e4, -2.0]])
    old = torch.tensor([[-60.0, -3.0, -0.1, -1e3, -2.0]])
    for estimator in ("k1", "k2", "k3", "k3+"):
        for old_logps in (None, old):
            kl = per_token_kl(logp, ref, estimator, old_logps=old_logps)
            assert torch.isfinite(kl).all(), estimator
            (grad,) = torch.autograd.grad(kl.sum(), logp)
            assert torch.isfinite(grad).all(), estimator
            if estimator in ("k2", "k3", "k3+"):
                assert (kl >= 0).all()
    # the clamp bound is what the docstring says
    kl = per_token_kl(torch.zeros(1, 1), torch.full((1, 1), -1e4), "k1")
    assert kl.item() == LOG_RATIO_BOUND
    assert math.isfinite(math.exp(LOG_RATIO_BOUND)) and torch.tensor(math.exp(LOG_RATIO_BOUND)).bfloat16().isfinite()


def test_unknown_estimator_is_rejected():
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        per_token_kl(torch.zeros(1, 1), torch.zeros(1, 1), "k4")


def test_sequence_level_ratio_is_trls_coef_1():
    logp, old = torch.randn(2, 4), torch.randn(2, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    expected = torch.exp(((logp - old) * mask).sum(-1) / mask.sum(-1)).unsqueeze(-1)
    torch.testing.assert_close(importance_ratio(logp, old, mask, "sequence"), expected)
    torch.testing.assert_close(importance_ratio(logp, old), torch.exp(logp - old))


def test_aggregation_by_hand():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert aggregate_per_token_loss(per_token, mask, "grpo").item() == pytest.approx((1.5 + 4.0) / 2)
    assert aggregate_per_token_loss(per_token, mask, "bnpo").item() == pytest.approx(7.0 / 3)
    assert aggregate_per_token_loss(per_token, mask, "dr_grpo", max_completion_length=4).item() == pytest.approx(7 / 8)
    assert aggregate_per_token_loss(per_token, mask, "luspo").item() == pytest.approx(3.5)
    # dapo: tokens of the generation batch per process and per accumulation window
    value = aggregate_per_token_loss(
        per_token, mask, "dapo", num_items_in_batch=torch.tensor(12.0), num_processes=2,
        gradient_accumulation_steps=2, steps_per_generation=4,
    )
    assert value.item() == pytest.approx(7.0 / (12 / 2 * 2 / 4))
    assert aggregate_per_token_loss(per_token, mask, "grpo", gradient_accumulation_steps=4).item() == pytest.approx(
        (1.5 + 4.0) / 2 / 4
    )


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3", "k3+"])
def test_off_policy_without_the_ratio_monte_carlo(dists, estimator):
    """The docstring's off-policy claims without the ratio (x ~ pi_old): each value is its expectation under pi_old,
    and the gradients are E_old[w(x) grad log pi(x)] with w = 1 (k1), l (k2, k3+: k2's gradient), 1 - r (k3)."""
    theta, ref_logp, old_logp = dists
    l = torch.log_softmax(theta, 0) - ref_logp
    r = torch.exp(-l)
    value = {"k1": l, "k2": 0.5 * l**2, "k3": r - 1 + l, "k3+": r - 1 + l}[estimator]
    weight = {"k1": torch.ones_like(l), "k2": l, "k3": 1 - r, "k3+": l}[estimator]
    grad_log_pi = torch.eye(K, dtype=torch.float64) - torch.softmax(theta, 0)[None, :]  # row x: grad_theta log pi(x)
    old = old_logp.exp()
    v, v_se, g, g_se = monte_carlo(theta, ref_logp, old_logp, estimator, True, False)
    assert_close(v, v_se, (old * value).sum().item(), f"{estimator} off-policy value")
    assert_close(g, g_se, (old[:, None] * weight[:, None] * grad_log_pi).sum(0), f"{estimator} off-policy gradient")
    if estimator == "k3":  # and it differs from the gradient of the reverse KL it is meant to regularise
        assert_far(g, g_se, closed_form(theta, ref_logp, old_logp)["KL(pi||ref)"][1], "off-policy k3 gradient")
