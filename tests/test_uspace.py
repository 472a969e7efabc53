"""Tests of jebm_lite.uspace: the whitening map of a conditional hierarchy and the u-space forward diffusion
(Cui & Han, ICML 2024)."""

from __future__ import annotations

import pytest
import torch

from jebm_lite.models.conditional import ConditionalHierarchy
from jebm_lite.uspace import (
    diffusion_pair,
    diffusion_schedule,
    flatten_u,
    forward_diffusion,
    forward_step,
    from_u,
    split_u,
    to_u,
)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ConditionalHierarchy((1, 8, 8), z_dims=(6, 4, 2), hidden=32).eval()
    with torch.no_grad():  # make the conditional means / scales far from trivial
        for head in m.p_heads:
            head.weight.mul_(4.0)
            head.bias.normal_()
    return m


@torch.no_grad()
def test_to_u_and_from_u_are_inverse(model):
    g = torch.Generator().manual_seed(1)
    zs = [torch.randn(256, d, generator=g) * 2 for d in model.z_dims]
    u = to_u(model, zs)
    assert [t.shape for t in u] == [t.shape for t in zs]
    back = from_u(model, u)
    for a, b in zip(back, zs):
        assert (a - b).abs().max() < 1e-4
    u2 = [torch.randn(256, d, generator=g) for d in model.z_dims]
    for a, b in zip(to_u(model, from_u(model, u2)), u2):
        assert (a - b).abs().max() < 1e-4
    assert torch.equal(u[-1], zs[-1])  # the top layer is its own noise
    zs_x, x = from_u(model, u2, return_x=True)
    assert x.shape == (256, 1, 8, 8)

    class Holder:  # a learner holding the model works too
        pass

    h = Holder()
    h.model = model
    assert torch.equal(to_u(h, zs)[0], u[0])
    with pytest.raises(TypeError):
        to_u(object(), zs)


@torch.no_grad()
def test_u_of_prior_samples_is_standard_normal(model):
    g = torch.Generator().manual_seed(2)
    zs, _ = model.sample(model.sample_eps(20000, generator=g))
    z_flat = flatten_u(zs)
    assert (z_flat.var(0) - 1).abs().max() > 0.3  # z itself is not white
    u = flatten_u(to_u(model, zs))
    assert u.mean(0).abs().max() < 0.05
    assert (u.var(0) - 1).abs().max() < 0.06
    assert torch.corrcoef(u.T).fill_diagonal_(0).abs().max() < 0.05
    assert [t.shape[1] for t in split_u(u, model.z_dims)] == list(model.z_dims)


def test_schedule_matches_the_reference_numbers():
    s = diffusion_schedule(3)
    assert s.indices == (0, 250, 500, 999) and s.T == 3
    assert torch.allclose(s.a, torch.tensor([0.99995, 0.7221, 0.3863, 0.0228], dtype=torch.float64), atol=6e-5)
    assert torch.allclose(s.sigma, torch.tensor([0.0100, 0.6918, 0.9224, 0.9997], dtype=torch.float64), atol=6e-5)
    assert torch.allclose(s.a**2 + s.sigma**2, torch.ones(4, dtype=torch.float64))
    assert torch.allclose(s.a_cum**2 + s.sigma_cum**2, torch.ones(4, dtype=torch.float64))
    assert torch.allclose(s.a_cum, torch.cumprod(s.a, 0))
    assert (s.a_cum.diff() < 0).all() and s.a_cum[-1] < 0.01
    assert diffusion_schedule(6).indices == (0, 100, 200, 300, 400, 500, 999)
    assert diffusion_schedule(1).indices == (0, 999)
    with pytest.raises(ValueError):
        diffusion_schedule(0)


def test_forward_diffusion_marginal_moments():
    s = diffusion_schedule(3)
    g = torch.Generator().manual_seed(3)
    n = 100_000
    c = torch.tensor([[2.0, -1.0]]).expand(n, 2)
    for t in range(4):
        ut = forward_diffusion(c, t, schedule=s, generator=g)
        assert torch.allclose(ut.mean(0), s.a_cum[t].float() * c[0], atol=0.02)
        assert torch.allclose(ut.std(0), s.sigma_cum[t].float().expand(2), rtol=0.02, atol=2e-3)
    # variance preserving: N(0, I) data stays N(0, I) at every level
    u0 = torch.randn(n, 3, generator=g)
    for t in range(4):
        ut = forward_diffusion(u0, t, schedule=s, generator=g)
        assert ut.mean(0).abs().max() < 0.02 and (ut.var(0) - 1).abs().max() < 0.03
    # one kernel step from level t has the marginal of level t + 1
    for t in range(3):
        ut, ut1 = diffusion_pair(c, t, s, generator=g)
        assert torch.allclose(ut1.mean(0), s.a_cum[t + 1].float() * c[0], atol=0.02)
        assert torch.allclose(ut1.std(0), s.sigma_cum[t + 1].float().expand(2), rtol=0.02, atol=2e-3)
        resid = ut1 - s.a[t + 1].float() * ut  # the kernel noise: N(0, sigma_{t+1}^2), independent of u_t
        assert torch.allclose(resid.std(0), s.sigma[t + 1].float().expand(2), rtol=0.02)
        assert torch.corrcoef(torch.stack([resid[:, 0], ut[:, 0]]))[0, 1].abs() < 0.02


def test_forward_diffusion_per_example_levels_lists_and_given_noise():
    s = diffusion_schedule(3)
    u = [torch.ones(4, 2), torch.ones(4, 3)]
    t = torch.tensor([0, 1, 2, 3])
    zero = [torch.zeros(4, 2), torch.zeros(4, 3)]
    out = forward_diffusion(u, t, schedule=s, noise=zero)
    for o in out:
        assert torch.allclose(o[:, 0], s.a_cum.float())
    assert torch.allclose(forward_diffusion(u[0], 2, T=3, noise=zero[0]), s.a_cum[2].float() * u[0])
    step = forward_step(u[1], torch.tensor([0, 0, 1, 2]), s, noise=zero[1])
    assert torch.allclose(step[:, 0], s.a[torch.tensor([1, 1, 2, 3])].float())
