"""Tests for jebm_lite.models: hierarchical generator / ladder inference presets, LEBM, conditional hierarchy."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from jebm_lite.config import ModelConfig, get_config
from jebm_lite.models import (
    LEBM,
    PRESETS,
    ConditionalHierarchy,
    HierarchicalGenerator,
    JointEBMPrior,
    LadderInference,
    build_hierarchical,
    count_params,
    resolve_preset,
)
from jebm_lite.models.blocks import Reshape
from jebm_lite.models.hierarchical import LOGVAR_RANGE
from jebm_lite.runtime import ConfigError


def _cfg(preset: str, **kw) -> ModelConfig:
    return dataclasses.replace(ModelConfig(preset=preset), **kw)


def _randn_z(z_dims, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g) for d in z_dims]


# ----------------------------------------------------------------------------------------------
# Hierarchical generator + ladder inference
# ----------------------------------------------------------------------------------------------


def _build_meta(cfg):
    """Build on the meta device: shapes and parameter counts without allocating (svhn5 has 74 M)."""
    with torch.device("meta"):
        return build_hierarchical(cfg)


def test_every_preset_builds():
    for preset in PRESETS:
        gen, inf = _build_meta(_cfg(preset))
        assert gen.z_dims == inf.z_dims == PRESETS[preset]["z_dims"]
        assert gen.image_shape == inf.image_shape == PRESETS[preset]["image_shape"]
    # cifar10 is the svhn5 layout (inferred), so its forward/backward is covered by svhn5 below
    a, b = resolve_preset(_cfg("cifar10")), resolve_preset(_cfg("svhn5"))
    assert {k: v for k, v in a.items() if k not in ("preset", "source")} == {
        k: v for k, v in b.items() if k not in ("preset", "source")
    }


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "cifar10"])
def test_preset_forward_backward_gives_finite_grads_everywhere(preset):
    torch.manual_seed(0)
    gen, inf = build_hierarchical(_cfg(preset))
    assert isinstance(gen, HierarchicalGenerator) and isinstance(inf, LadderInference)
    assert gen.z_dims == inf.z_dims == PRESETS[preset]["z_dims"]
    C, H, W = gen.image_shape
    x = torch.rand(2, C, H, W) * 2 - 1
    params = inf(x)
    assert len(params) == len(gen.z_dims)
    for (mu, lv), d in zip(params, gen.z_dims):
        assert mu.shape == lv.shape == (2, d)
        assert lv.min() >= LOGVAR_RANGE[0] and lv.max() <= LOGVAR_RANGE[1]
    zs = [mu + torch.exp(0.5 * lv) * torch.randn_like(mu) for mu, lv in params]
    x_hat = gen(zs)
    assert x_hat.shape == x.shape
    assert x_hat.abs().max() <= 1.0  # tanh output, images in [-1, 1]
    kl = sum((0.5 * (mu.pow(2) + lv.exp() - 1 - lv)).sum() for mu, lv in params)
    loss = (x_hat - x).pow(2).sum() + kl
    loss.backward()
    for name, p in list(gen.named_parameters()) + list(inf.named_parameters()):
        assert p.grad is not None, f"{preset}: no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"{preset}: non-finite gradient for {name}"
    assert sum(p.grad.abs().sum() for p in gen.parameters()) > 0
    assert sum(p.grad.abs().sum() for p in inf.parameters()) > 0


def test_reference_parameter_counts():
    # report section 1.4 / 1.5: svhn4 G ~ 0.39 M, I ~ 0.75 M; svhn5 G ~ 55.3 M, I ~ 19.0 M
    for preset, g_ref, i_ref, g_exact, i_exact in [
        ("svhn4", 0.39e6, 0.75e6, 392_288, 752_160),
        ("svhn5", 55.3e6, 19.0e6, 55_348_608, 18_999_396),
    ]:
        gen, inf = _build_meta(_cfg(preset))
        ng, ni = count_params(gen), count_params(inf)
        assert abs(ng - g_ref) / g_ref < 0.02, (preset, ng)
        assert abs(ni - i_ref) / i_ref < 0.02, (preset, ni)
        assert (ng, ni) == (g_exact, i_exact)
    gen, inf = _build_meta(_cfg("mnist_small"))
    total = count_params(gen) + count_params(inf)
    assert abs(total - 3.2e6) / 3.2e6 < 0.03  # paper Tab. 7: 3.2 M (joint prior, Fashion-MNIST)


def test_svhn4_layout_matches_reference():
    gen, inf = build_hierarchical(_cfg("svhn4"))
    convs = [m for m in list(gen.modules()) + list(inf.modules()) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs and all(m.bias is None for m in convs)  # no conv bias anywhere
    lrelu_g = {m.negative_slope for m in gen.modules() if isinstance(m, nn.LeakyReLU)}
    lrelu_i = {m.negative_slope for m in inf.modules() if isinstance(m, nn.LeakyReLU)}
    assert lrelu_g == {0.2} and lrelu_i == {0.01}
    # additive merge: z_i goes through a bare Linear (no activation); z2 -> 64, z1 -> 64x8x8, z0 -> 32x16x16
    outs = []
    for p in gen.projections:
        lins = [m for m in p.modules() if isinstance(m, nn.Linear)]
        assert len(lins) == 1 and not any(isinstance(m, nn.LeakyReLU) for m in p.modules())
        outs.append(lins[0].out_features)
    assert outs == [8192, 4096, 64]
    assert isinstance(list(gen.bodies[0].modules())[-1], nn.Tanh)


@pytest.mark.parametrize("preset", ["svhn4", "celeba64", "mnist_small", "toy012"])
def test_every_layer_is_used_and_only_affects_layers_below(preset):
    torch.manual_seed(0)
    gen, _ = build_hierarchical(_cfg(preset))
    gen.eval()
    zs = _randn_z(gen.z_dims)
    with torch.no_grad():
        base = gen.features(zs)
        for i in range(gen.n_layers):
            zs2 = [z.clone() for z in zs]
            zs2[i] = zs2[i] + 2.0
            feats = gen.features(zs2)
            # x_hat (= h_1) changes: every layer is used
            assert (feats[0] - base[0]).abs().max() > 1e-4, f"{preset}: z_{i + 1} does not change x_hat"
            # h_j for j above layer i is untouched (Eq. 5: z_i enters at g_i only)
            for j in range(i + 1, gen.n_layers):
                torch.testing.assert_close(feats[j], base[j])


def test_toy_presets_are_cheap_and_logvar_is_clamped():
    from torch.utils.flop_counter import FlopCounterMode

    # CPU budget of the toy / LEBM runs: G + I forward + backward at batch 100 (deterministic FLOP count)
    for preset, budget in [("toy012", 2.0e9), ("lebm_mnist", 1.0e9)]:
        gen, inf = build_hierarchical(_cfg(preset))
        x = torch.rand(100, 1, 28, 28) * 2 - 1
        with FlopCounterMode(display=False) as fc:
            zs, _ = inf.rsample(x)
            (gen(zs) - x).pow(2).sum().backward()
        assert fc.get_total_flops() < budget, (preset, fc.get_total_flops())
    # the ladder heads clamp log-variances to LOGVAR_RANGE
    with torch.no_grad():
        inf.heads[0].logvar.bias.fill_(100.0)
        assert inf(x[:2])[0][1].max() == LOGVAR_RANGE[1]


def test_generator_accepts_concatenated_latent_and_lebm_layer():
    gen, _ = build_hierarchical(_cfg("toy012"))
    zs = _randn_z(gen.z_dims, n=3)
    with torch.no_grad():
        torch.testing.assert_close(gen(torch.cat(zs, 1)), gen(zs))
        with pytest.raises(ValueError):
            gen(zs[:1])


def test_overrides_change_depth_width_and_merge():
    gen, inf = build_hierarchical(_cfg("mnist_small", z_dims=(3, 3, 3, 5), hidden=64))
    assert gen.n_layers == inf.n_layers == 4
    assert [mu.shape[1] for mu, _ in inf(torch.zeros(2, 1, 28, 28))] == [3, 3, 3, 5]
    g_add, _ = build_hierarchical(_cfg("svhn4", merge="concat"))
    assert g_add.merge == "concat" and count_params(g_add) != 392_288
    gen, inf = build_hierarchical(_cfg("svhn4", z_dims=(2, 2, 10), channels=(32, 64, 256)))
    assert gen(_randn_z((2, 2, 10))).shape == (2, 3, 32, 32)
    gen, inf = build_hierarchical(_cfg("toy012"), image_shape=(3, 32, 32))  # data shape override
    assert gen(_randn_z(gen.z_dims)).shape == (2, 3, 32, 32)
    spec = resolve_preset(_cfg("svhn5", merge="add"))
    assert spec["merge"] == "add" and spec["family"] == "fid"


def test_config_errors_name_the_valid_options():
    with pytest.raises(ConfigError) as e:
        build_hierarchical(_cfg("svhn7"))
    for name in PRESETS:
        assert name in str(e.value)
    with pytest.raises(ConfigError, match="ConditionalHierarchy"):
        resolve_preset(_cfg("conditional6"))
    with pytest.raises(ConfigError, match=r"len\(model.channels\)"):  # 3 layers, 4 channel widths
        resolve_preset(_cfg("svhn4", z_dims=(2, 2, 10)))
    with pytest.raises(ConfigError, match="channels"):
        resolve_preset(_cfg("mnist_small", channels=(64, 128, 1024)))
    with pytest.raises(ConfigError, match="concat, add, gated"):
        resolve_preset(_cfg("svhn4", merge="sum"))
    with pytest.raises(ConfigError, match="divisible"):
        resolve_preset(_cfg("svhn5"), image_shape=(3, 28, 28))
    with pytest.raises(ConfigError, match="at least 2"):
        resolve_preset(_cfg("svhn4", z_dims=(10,), channels=(32,)))


def test_layer_norm_option_is_per_sample_and_off_by_default():
    """model.norm=layer adds LayerNorm / GroupNorm(1, C) to G and I, and a sample never depends on its batch."""
    norm_types = (nn.LayerNorm, nn.GroupNorm)
    gen0, inf0 = build_hierarchical(_cfg("mnist_small"))
    assert not any(isinstance(m, norm_types) for m in [*gen0.modules(), *inf0.modules()])
    assert count_params(gen0) == 1_443_616 and count_params(inf0) == 1_776_780  # default unchanged
    torch.manual_seed(0)
    gen, inf = build_hierarchical(_cfg("mnist_small", norm="layer"))
    # G: 3 in g_3 MLP, 3 in g_2, 2 in the image tail (fc, first deconv); I: 2 + 2 convs, 1 + 3 trunk fc, 2 x 2 head fc
    assert sum(isinstance(m, norm_types) for m in gen.modules()) == 8
    assert sum(isinstance(m, norm_types) for m in inf.modules()) == 12
    gen.train(), inf.train()  # train mode: a BatchNorm would couple the batch here
    zs = _randn_z(gen.z_dims, n=6, seed=1)
    torch.testing.assert_close(gen([z[:1] for z in zs]), gen(zs)[:1])
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    for (m1, v1), (m6, v6) in zip(inf(x[:1]), inf(x)):
        torch.testing.assert_close(m1, m6[:1]), torch.testing.assert_close(v1, v6[:1])
    # the normalisation is what changes: scaling a hidden layer's weights leaves the output unchanged
    lin = gen.top[0]
    before = gen(zs)
    with torch.no_grad():
        lin.weight.mul_(3.0), lin.bias.mul_(3.0)
    torch.testing.assert_close(gen(zs), before, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="VLAE-small family only"):
        resolve_preset(_cfg("svhn4", norm="layer"))
    with pytest.raises(ConfigError, match="none, layer"):
        resolve_preset(_cfg("mnist_small", norm="batch"))
    with pytest.raises(ConfigError, match="none, layer"):
        get_config("fmnist_joint", "ci", ["model.norm=batch"])


# ----------------------------------------------------------------------------------------------
# Conditional hierarchy (paper Problem II)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chier():
    torch.manual_seed(0)
    return ConditionalHierarchy((1, 28, 28), z_dims=(12, 10, 8, 6, 4), hidden=64)


def test_whitening_inverts_the_sampler(chier):
    eps = chier.sample_eps(5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        zs, x_mean = chier.sample(eps)
        back = chier.eps_from_z(zs)
        zs2, _ = chier.sample(back)
    assert x_mean.shape == (5, 1, 28, 28) and x_mean.abs().max() <= 1
    assert [z.shape[1] for z in zs] == list(chier.z_dims)
    for a, b in zip(back, eps):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for a, b in zip(zs2, zs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [0, 2, 4])
def test_resampling_one_eps_changes_that_layer_and_below_only(chier, k):
    eps = chier.sample_eps(4, generator=torch.Generator().manual_seed(2))
    eps2 = list(eps)
    eps2[k] = torch.randn(eps[k].shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        zs, x1 = chier.sample(eps)
        zs2, x2 = chier.sample(eps2)
    for j in range(chier.n_layers):
        if j > k:
            assert torch.equal(zs[j], zs2[j]), f"layer {j} above the resampled layer {k} changed"
        else:
            assert (zs[j] - zs2[j]).abs().min() > 0, f"layer {j} at/below {k} did not change"
    assert (x1 - x2).abs().max() > 0


def test_elbo_kl_terms_and_free_bits(chier):
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    torch.manual_seed(4)
    loss, info = chier.elbo(x)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert info["nll"].shape == (6,) and torch.isfinite(info["nll"]).all()
    assert len(info["kl"]) == len(info["kl_per_dim"]) == chier.n_layers
    for k, kd, d in zip(info["kl"], info["kl_per_dim"], chier.z_dims):
        assert k.shape == (6,) and kd.shape == (d,)
        torch.testing.assert_close(kd.sum(), k.mean(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(info["elbo"], -(info["nll"] + sum(info["kl"])))
    torch.testing.assert_close(loss, info["nll"].mean() + sum(info["kl_used"]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in chier.parameters())
    chier.zero_grad()
    # free bits: the same posterior draw, every layer's KL used is >= the plain one and >= free_bits
    torch.manual_seed(4)
    _, info_fb = chier.elbo(x, free_bits=3.0)
    for plain, used, kd in zip(info["kl_used"], info_fb["kl_used"], info["kl_per_dim"]):
        assert used >= plain - 1e-5 and used >= 3.0 - 1e-4
        torch.testing.assert_close(used, kd.clamp(min=3.0 / kd.numel()).sum())
    assert sum(info_fb["kl_used"]) > sum(info["kl_used"])


def test_single_sample_kl_is_unbiased_for_the_top_layer(chier):
    # mean of log q - log p over many draws -> the analytic KL(q(z_L|x) || N(0, I))
    x = torch.rand(1, 1, 28, 28) * 2 - 1
    torch.manual_seed(5)
    with torch.no_grad():
        _, info = chier.elbo(x, n_samples=4000)
        _, stats = chier.posterior(x)
    mu, lv = stats[-1]["q_mu"], stats[-1]["q_logvar"]
    analytic = (0.5 * (mu.pow(2) + lv.exp() - 1 - lv)).sum()
    assert abs(info["kl"][-1].item() - analytic.item()) < 0.05 + 0.02 * analytic.item()


def test_conditional_gaussian_likelihood_and_from_config():
    m = ConditionalHierarchy((1, 28, 28), z_dims=(8, 4, 2), hidden=32, likelihood="gaussian", sigma=0.3)
    loss, info = m.elbo(torch.rand(3, 1, 28, 28) * 2 - 1, n_samples=2)
    assert torch.isfinite(loss) and info["nll"].shape == (3,) and len(info["zs"]) == 3
    cfg = get_config("mnist_conditional", profile="ci")
    m6 = ConditionalHierarchy.from_config(cfg.model)
    assert m6.z_dims == (48, 40, 32, 24, 16, 8) and m6.n_layers == 6
    with pytest.raises(ConfigError, match="conditional6"):
        ConditionalHierarchy.from_config(_cfg("svhn4"))
    with pytest.raises(ConfigError, match="bernoulli"):
        ConditionalHierarchy(likelihood="laplace")


# ----------------------------------------------------------------------------------------------
# LEBM
# ----------------------------------------------------------------------------------------------


def test_lebm_decode_and_from_config():
    gen, _ = build_hierarchical(_cfg("lebm_mnist"))
    lebm = LEBM(gen, JointEBMPrior((2,), None))
    z = torch.randn(5, 2)
    assert lebm.z_dim == 2 and lebm.z_dims == (2,)
    assert lebm.decode(z).shape == (5, 1, 28, 28)
    torch.testing.assert_close(lebm.decode([z]), lebm.decode(z))
    # any module (B, d) -> image works
    plain = LEBM(nn.Sequential(nn.Linear(3, 16), Reshape(1, 4, 4), nn.Tanh()), JointEBMPrior((3,), None))
    assert plain.decode(torch.randn(2, 3)).shape == (2, 1, 4, 4)

    cfg = get_config("toy012_lebm", profile="ci")
    lebm = LEBM.from_config(cfg)
    assert lebm.z_dim == 2 and lebm.prior.z_dims == (2,) and lebm.prior.has_energy
    x = lebm.decode(torch.randn(4, 2))
    assert x.shape == (4, 1, 28, 28) and x.abs().max() <= 1
    assert lebm.prior.f(torch.randn(4, 2)).shape == (4,)
    bad = dataclasses.replace(cfg, model=_cfg("toy012"))
    with pytest.raises(ConfigError, match="one latent layer"):
        LEBM.from_config(bad)
