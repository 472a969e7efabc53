"""The losses (paper Eqs. 10-12, LEBM, VLAE) and the anomaly log-joint, checked against
torch.distributions and against each other."""

from __future__ import annotations

import math

import torch
from torch.distributions import Independent, Normal, kl_divergence

from jebm_lite.objectives import (
    ebm_loss,
    gaussian_log_prob,
    joint_inference_loss,
    kl_analytic,
    kl_mc,
    kl_warmup_weight,
    lebm_generator_loss,
    log_joint,
    reconstruction_nll,
    reparameterize,
    standard_normal_log_prob,
    vlae_loss,
)


def _diag_normal(mu, logvar):
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)


def _batch(seed=0, B=8, z_dims=(2, 3, 4), img=(1, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    mus = [torch.randn(B, k, generator=g) for k in z_dims]
    logvars = [0.5 * torch.randn(B, k, generator=g) - 0.5 for k in z_dims]
    zs = [reparameterize(m, lv, generator=g) for m, lv in zip(mus, logvars)]
    x = torch.rand(B, *img, generator=g) * 2 - 1
    x_hat = torch.rand(B, *img, generator=g) * 2 - 1
    return x, x_hat, zs, mus, logvars


def test_log_probs_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    z, mu, logvar = (torch.randn(6, 5, generator=g) for _ in range(3))
    torch.testing.assert_close(gaussian_log_prob(z, mu, logvar), _diag_normal(mu, logvar).log_prob(z))
    torch.testing.assert_close(
        standard_normal_log_prob(z), _diag_normal(torch.zeros(6, 5), torch.zeros(6, 5)).log_prob(z)
    )
    torch.testing.assert_close(
        kl_analytic(mu, logvar),
        kl_divergence(_diag_normal(mu, logvar), _diag_normal(torch.zeros(6, 5), torch.zeros(6, 5))),
    )
    # against a non-standard Gaussian (conditional-Gaussian layers)
    pm, plv = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    torch.testing.assert_close(
        kl_analytic(mu, logvar, pm, plv), kl_divergence(_diag_normal(mu, logvar), _diag_normal(pm, plv))
    )
    torch.testing.assert_close(
        kl_mc(z, mu, logvar, pm, plv),
        _diag_normal(mu, logvar).log_prob(z) - _diag_normal(pm, plv).log_prob(z),
    )


def test_kl_mc_is_unbiased_for_kl_analytic():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(3, 4, generator=g)
    logvar = torch.randn(3, 4, generator=g) * 0.5
    n = 20000
    mu_r, lv_r = mu.repeat(n, 1), logvar.repeat(n, 1)
    z = reparameterize(mu_r, lv_r, generator=g)
    est = kl_mc(z, mu_r, lv_r).view(n, 3)
    exact = kl_analytic(mu, logvar)
    se = est.std(0) / math.sqrt(n)
    assert ((est.mean(0) - exact).abs() < 4 * se).all(), (est.mean(0), exact, se)


def test_reparameterize_moments_and_generator():
    mu = torch.tensor([[1.0, -2.0]]).repeat(20000, 1)
    logvar = torch.log(torch.tensor([[0.25, 4.0]])).repeat(20000, 1)
    z = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0))
    assert (z.mean(0) - torch.tensor([1.0, -2.0])).abs().max() < 0.06
    assert (z.std(0) - torch.tensor([0.5, 2.0])).abs().max() < 0.05
    z2 = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, z2)


def test_reconstruction_nll_is_gaussian_nll_up_to_a_constant():
    x, x_hat, *_ = _batch()
    sigma = 0.3
    D = x[0].numel()
    nll = -Normal(x_hat, sigma).log_prob(x).flatten(1).sum(1)
    const = 0.5 * D * math.log(2 * math.pi * sigma**2)
    torch.testing.assert_close(reconstruction_nll(x, x_hat, sigma), nll - const)
    # Gfactor form of the reference code: Gfactor * sum (x - x_hat)^2 with Gfactor = 1 / (2 sigma^2)
    torch.testing.assert_close(
        reconstruction_nll(x, x_hat, sigma), ((x - x_hat) ** 2).flatten(1).sum(1) / (2 * sigma**2)
    )
    torch.testing.assert_close(lebm_generator_loss(x, x_hat, sigma), reconstruction_nll(x, x_hat, sigma).mean())


def test_joint_inference_loss_value_and_parts():
    x, x_hat, zs, mus, logvars = _batch()
    f_z = torch.randn(8)
    sigma = 0.4
    loss, parts = joint_inference_loss(x, x_hat, zs, mus, logvars, f_z, sigma)
    rec = reconstruction_nll(x, x_hat, sigma)
    kls = [_diag_normal(m, lv).log_prob(z) - standard_normal_log_prob(z) for z, m, lv in zip(zs, mus, logvars)]
    expected = (rec + sum(kls) - f_z).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(parts["rec"], rec.mean())
    assert len(parts["kl"]) == 3
    for got, want in zip(parts["kl"], kls):
        torch.testing.assert_close(got, want.mean())
    torch.testing.assert_close(parts["f_post"], f_z.mean())
    torch.testing.assert_close(parts["loss"], loss.detach())
    # a higher f on the inferred codes lowers the loss one-for-one
    loss2, _ = joint_inference_loss(x, x_hat, zs, mus, logvars, f_z + 1.0, sigma)
    torch.testing.assert_close(loss2, loss - 1.0)


def test_kl_warmup_weights_only_the_prior_term():
    x, x_hat, zs, mus, logvars = _batch(seed=5)
    f_z = torch.randn(8)
    full, parts = joint_inference_loss(x, x_hat, zs, mus, logvars, f_z, 0.4)
    half, _ = joint_inference_loss(x, x_hat, zs, mus, logvars, f_z, 0.4, prior_weight=0.5)
    rec = parts["rec"]
    torch.testing.assert_close(half - rec, 0.5 * (full - rec))  # rec. unchanged, KL - f halved
    # VLAE's schedule 1 - exp(-t / T): about 0.39 at T / 2, 0.63 at T, 0.95 at 3T; 0 turns it off
    assert abs(kl_warmup_weight(1000, 2000) - (1 - math.exp(-0.5))) < 1e-12
    assert 0 < kl_warmup_weight(1, 2000) < 1e-3 and kl_warmup_weight(6000, 2000) > 0.95
    assert kl_warmup_weight(1, 0) == 1.0
    weights = [kl_warmup_weight(t, 500) for t in range(1, 3000, 100)]
    assert all(b > a for a, b in zip(weights, weights[1:]))


def test_joint_with_zero_energy_equals_vlae():
    x, x_hat, zs, mus, logvars = _batch(seed=3)
    lj, pj = joint_inference_loss(x, x_hat, zs, mus, logvars, torch.zeros(8), 0.5)
    lv, pv = vlae_loss(x, x_hat, zs, mus, logvars, 0.5)
    torch.testing.assert_close(lj, lv)
    torch.testing.assert_close(pj["rec"], pv["rec"])
    assert "f_post" not in pv
    ln, _ = joint_inference_loss(x, x_hat, zs, mus, logvars, None, 0.5)
    torch.testing.assert_close(ln, lv)


def test_gradients_reach_inference_outputs_and_generator_output():
    x, x_hat, _, mus, logvars = _batch(seed=4)
    mus = [m.requires_grad_(True) for m in mus]
    logvars = [lv.requires_grad_(True) for lv in logvars]
    x_hat = x_hat.requires_grad_(True)
    zs = [reparameterize(m, lv) for m, lv in zip(mus, logvars)]
    w = torch.randn(9, requires_grad=True)  # stands for EBM parameters: f(z) = w . z
    f_z = torch.cat(zs, 1) @ w
    loss, parts = joint_inference_loss(x, x_hat, zs, mus, logvars, f_z, 0.3)
    loss.backward()
    for t in [x_hat, *mus, *logvars]:
        assert t.grad is not None and t.grad.abs().sum() > 0
    assert w.grad is not None  # the caller decides: here f_z was built with grads on w
    assert all(not p.requires_grad for p in [parts["rec"], parts["f_post"], parts["loss"], *parts["kl"]])
    # d loss / d f_z = -1 / B per example
    f_leaf = torch.randn(8, requires_grad=True)
    loss, _ = joint_inference_loss(x, x_hat.detach(), [z.detach() for z in zs], [m.detach() for m in mus],
                                   [lv.detach() for lv in logvars], f_leaf, 0.3)
    loss.backward()
    torch.testing.assert_close(f_leaf.grad, torch.full((8,), -1 / 8))


def test_ebm_loss_sign_and_gradients():
    f_prior = torch.tensor([0.5, 1.0, 1.5], requires_grad=True)
    f_post = torch.tensor([2.0, 3.0], requires_grad=True)
    loss = ebm_loss(f_prior, f_post)
    torch.testing.assert_close(loss, torch.tensor(1.0 - 2.5))
    # higher f on posterior samples lowers the loss; higher f on prior samples raises it
    assert ebm_loss(f_prior, f_post + 1) < loss < ebm_loss(f_prior + 1, f_post)
    loss.backward()
    torch.testing.assert_close(f_prior.grad, torch.full((3,), 1 / 3))
    torch.testing.assert_close(f_post.grad, torch.full((2,), -1 / 2))


def test_log_joint_matches_torch_distributions():
    x, x_hat, zs, *_ = _batch(seed=5)
    sigma = 0.35
    z = torch.cat(zs, 1)
    f_z = torch.randn(8)
    want = (
        Normal(x_hat, sigma).log_prob(x).flatten(1).sum(1)
        + f_z
        + Normal(torch.zeros_like(z), 1.0).log_prob(z).sum(1)
    )
    torch.testing.assert_close(log_joint(x, x_hat, z, f_z, sigma), want)
    torch.testing.assert_close(log_joint(x, x_hat, zs, f_z, sigma), want)  # per-layer list accepted
    torch.testing.assert_close(log_joint(x, x_hat, z, None, sigma), want - f_z)
    # a worse reconstruction lowers the log-joint (raises the anomaly score)
    assert (log_joint(x, x_hat + 0.5, z, f_z, sigma) < log_joint(x, x, z, f_z, sigma)).all()
