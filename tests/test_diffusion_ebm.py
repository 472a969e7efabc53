"""Tests of jebm_lite.models.diffusion (and its learner and analysis): u-space hierarchical EBM diffusion (Cui & Han, ICML 2024) on a frozen
conditional hierarchy: the recovery Langevin, the DRL loss, learning, the learner and its configs, and the
"why u and not z" measurement."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import assert_same, learner_state

from jebm_lite.analysis.diffusion import diffusion_consistency
from jebm_lite.config import ExperimentConfig, apply_overrides, config_from_json, get_config, to_dict
from jebm_lite.models.conditional import ConditionalHierarchy
from jebm_lite.models.diffusion import (
    DiffusionEBMPrior,
    TimeEnergyMLP,
    drl_loss,
    drl_train_step,
    recovery_langevin,
    recovery_step_size,
    sample_diffusion_prior,
    z_of_u,
)
from jebm_lite.runtime import ConfigError
from jebm_lite.training import load as runs
from jebm_lite.training.learners import LEARNERS, UDiffusionLearner, build_learner
from jebm_lite.training.trainer import Trainer, load_checkpoint
from jebm_lite.uspace import diffusion_schedule, from_u, to_u

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def hierarchy():
    """The non-trivial fixture hierarchy of tests/test_uspace.py."""
    torch.manual_seed(0)
    m = ConditionalHierarchy((1, 8, 8), z_dims=(6, 4, 2), hidden=32).eval()
    with torch.no_grad():
        for head in m.p_heads:
            head.weight.mul_(4.0)
            head.bias.normal_()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _zero_prior(z_dims, T):
    """Energies that are exactly 0 (zero-initialised output layers, no spectral norm)."""
    return DiffusionEBMPrior(z_dims, T, nef=16, layers=1, t_dim=8, spectral_norm=False, zero_init=True)


# ----------------------------------------------------------------------------------------------
# nets, step sizes, the sampler, the loss
# ----------------------------------------------------------------------------------------------


def test_step_sizes_match_the_reference_numbers():
    s = diffusion_schedule(3)
    got = recovery_step_size(s, torch.arange(3), 3e-5)
    assert torch.allclose(got, torch.tensor([1.44e-5, 1.77e-3, 2.88e-3], dtype=torch.float64), rtol=0.02)
    assert float(recovery_step_size(s, 2, 1e-5)) == pytest.approx(9.6e-4, rel=0.01)  # the presets' top step


def test_time_energy_mlp_shapes_levels_and_z_of_u(hierarchy):
    torch.manual_seed(1)
    net = TimeEnergyMLP(5, T=3, nef=16, layers=2, t_dim=8).eval()  # eval: fixed spectral-norm weights
    z = torch.randn(7, 5)
    f0, f2 = net(z, 0), net(z, torch.full((7,), 2))
    assert f0.shape == (7,) and not torch.allclose(f0, f2)  # the level matters
    mixed = net(z, torch.tensor([0, 2, 0, 2, 0, 2, 0]))
    assert torch.allclose(mixed[0::2], f0[0::2], atol=1e-6) and torch.allclose(mixed[1::2], f2[1::2], atol=1e-6)
    prior = DiffusionEBMPrior(hierarchy.z_dims, 3, nef=16, layers=1, t_dim=8)
    zs = [torch.randn(7, d) for d in hierarchy.z_dims]
    parts = prior.f_layers(zs, 1)
    assert len(parts) == 3 and torch.allclose(prior.f(zs, 1), sum(parts), atol=1e-6)
    with pytest.raises(ConfigError, match="t_dim"):
        TimeEnergyMLP(5, 3, t_dim=7)
    u = [torch.randn(9, d) for d in hierarchy.z_dims]
    with torch.no_grad():
        for a, b in zip(z_of_u(hierarchy, torch.cat(u, 1)), from_u(hierarchy, u)):
            assert torch.allclose(a, b)


def test_zero_init_starts_at_the_base_gaussian_prior(hierarchy):
    """f = 0 and the presets' tiny steps: the reverse chain stays close to its N(0, I) start (a small random
    walk), so the samples are the base's own prior, z = T(u) with u ~ N(0, I)."""
    torch.manual_seed(3)
    prior = _zero_prior(hierarchy.z_dims, 3)
    zs = [torch.randn(5, d) for d in hierarchy.z_dims]
    assert torch.equal(prior.f(zs, 2), torch.zeros(5))
    y_T = torch.randn(2000, sum(hierarchy.z_dims))
    u = torch.cat(sample_diffusion_prior(prior, hierarchy, 2000, 30, 1e-5, y_T=y_T).u, 1)
    assert (u - y_T).pow(2).mean() < 0.1
    assert u.mean(0).abs().max() < 0.1 and (u.var(0) - 1).abs().max() < 0.12
    with pytest.raises(ConfigError, match="spectral_norm"):
        DiffusionEBMPrior(hierarchy.z_dims, 3, spectral_norm=True, zero_init=True)


@pytest.mark.parametrize("t", [0, 1, 2])
def test_zero_energy_recovery_langevin_is_the_analytic_gaussian(hierarchy, t):
    """F = 0: p(y_t | y_{t+1}) ∝ N(y_t; 0, I) N(y_{t+1}; a y_t, sigma^2 I) = N(a y_{t+1} / (a^2 + sigma^2),
    sigma^2 / (a^2 + sigma^2)); at the top level (kernel off) N(0, I). A larger base step than training uses,
    so that 120 steps mix: s_t P = 0.2 per step (P the target precision); the unadjusted chain's stationary
    variance is then 1 / (P (1 - s_t P / 4)), which is what we compare with."""
    s = diffusion_schedule(3)
    prior = _zero_prior(hierarchy.z_dims, 3)
    n, D = 4000, sum(hierarchy.z_dims)
    g = torch.Generator().manual_seed(10 + t)
    y_next = (1.5 * torch.randn(1, D, generator=g)).expand(n, D)
    a, sig = float(s.a[t + 1]), float(s.sigma[t + 1])
    if t < 2:
        mean, var = a * y_next[0] / (a * a + sig * sig), sig * sig / (a * a + sig * sig)
    else:
        mean, var = torch.zeros(D), 1.0
    s_unit = float(recovery_step_size(s, t, 1.0))
    base = 0.2 * var / s_unit  # s_t = 0.2 / P
    y = recovery_langevin(prior, hierarchy, y_next, t, 120, base, s, generator=g)
    var_ula = var / (1 - 0.2 / 4)
    assert (y.mean(0) - mean).abs().max() < 4.5 * math.sqrt(var / n) * 1.5
    assert ((y.var(0) / var_ula) - 1).abs().max() < 0.1
    assert all(p.grad is None for p in prior.parameters())
    assert all(p.grad is None for p in hierarchy.parameters())
    assert torch.equal(recovery_langevin(prior, hierarchy, y_next[:3], t, 0, base, s), y_next[:3])
    with pytest.raises(ValueError, match="0..2"):
        recovery_langevin(prior, hierarchy, y_next[:3], 3, 1, base, s)


def test_drl_loss_sign_and_scaling():
    f_pos = torch.tensor([0.5, 1.0], requires_grad=True)
    f_neg = torch.tensor([0.2, 0.1], requires_grad=True)
    s_t = torch.tensor([0.1, 0.01])
    loss = drl_loss(f_pos, f_neg, s_t)
    assert loss.item() == pytest.approx(-((0.3 / 0.1) + (0.9 / 0.01)) / 2)
    loss.backward()
    assert (f_pos.grad < 0).all() and (f_neg.grad > 0).all()  # raising f at positives lowers the loss
    assert torch.allclose(f_pos.grad, -1 / (2 * s_t))  # the 1/s_t scaling (DRL)
    # per-layer lists are summed over layers
    parts = [torch.tensor([0.2, 0.3]), torch.tensor([0.3, 0.7])]
    assert drl_loss(parts, [f_neg.detach()], s_t).item() == pytest.approx(drl_loss(f_pos.detach(), f_neg.detach(), s_t).item())
    # one gradient step on a net raises its positives relative to its negatives
    torch.manual_seed(0)
    net = TimeEnergyMLP(3, 2, nef=16, layers=1, t_dim=8)
    zp, zn, t = torch.randn(64, 3) + 1, torch.randn(64, 3) - 1, torch.zeros(64, dtype=torch.long)
    st = torch.full((64,), 1e-2)
    before = (net(zp, t) - net(zn, t)).mean().item()
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    drl_loss(net(zp, t), net(zn, t), st).backward()
    opt.step()
    assert (net(zp, t) - net(zn, t)).mean().item() > before


def test_drl_learns_a_two_mode_mixture():
    """A few hundred DRL steps on u-codes from a 2-mode mixture (identity-like hierarchy: mu = 0,
    sigma = 1, so z = u) make T = 3 samples land near the modes far more often than untrained ones."""
    torch.manual_seed(0)
    m = ConditionalHierarchy((1, 4, 4), z_dims=(2, 2), hidden=8).eval()
    with torch.no_grad():
        for h in m.p_heads:
            h.weight.zero_()
            h.bias.zero_()
    for p in m.parameters():
        p.requires_grad_(False)
    c = torch.tensor([1.5, 1.5, -1.5, 1.5])

    def data(n):
        return (torch.randint(0, 2, (n, 1)) * 2 - 1) * c + 0.2 * torch.randn(n, 4)

    s = diffusion_schedule(3)
    prior = DiffusionEBMPrior(m.z_dims, 3, nef=32, layers=2, t_dim=16)
    opt = torch.optim.Adam(prior.parameters(), 1e-2, betas=(0.9, 0.999))
    steps, base = 10, 1e-5

    def near_modes():
        torch.manual_seed(123)
        out = sample_diffusion_prior(prior, m, 1000, steps, base, schedule=s, record_levels=True)
        y = torch.cat(out.u, 1)
        assert len(out.levels) == 4 and torch.equal(out.levels[0], y)
        d = torch.stack([(y - c).norm(dim=1), (y + c).norm(dim=1)], 1)
        near = d.min(1).values < 1.0
        return near.float().mean().item(), [(near & (d.argmin(1) == k)).float().mean().item() for k in (0, 1)]

    before, _ = near_modes()
    for _ in range(300):
        metrics = drl_train_step(prior, m, opt, data(100), s, steps, base)
    after, per_mode = near_modes()
    assert {"loss", "energy/pos", "energy/neg", "drl/recovery_mse"} <= set(metrics)
    assert before < 0.02
    assert after > before + 0.15, (before, after)
    assert min(per_mode) > 0.03, per_mode  # both modes are reached


# ----------------------------------------------------------------------------------------------
# "why u and not z"
# ----------------------------------------------------------------------------------------------


def test_u_path_keeps_the_inter_layer_relation_z_path_breaks_it(hierarchy):
    with torch.no_grad():
        zs, _ = hierarchy.sample(hierarchy.sample_eps(4000, generator=torch.Generator().manual_seed(1)))
    rows = diffusion_consistency(hierarchy, zs, T=3, generator=torch.Generator().manual_seed(2))
    assert len(rows) == 4 * 2 and {r["t"] for r in rows} == {0, 1, 2, 3} and {r["layer"] for r in rows} == {0, 1}
    for r in rows:
        assert abs(r["clean_resid"] - 1) < 0.05  # prior samples follow the model's conditional
        assert abs(r["u_path_resid"] - r["clean_resid"]) < 0.06  # ... at every level along the u-path
        assert abs(r["u_path_logp"] - r["clean_logp"]) < 0.06
        if r["t"] >= 1:  # diffusing z directly breaks it
            assert abs(r["z_path_resid"] - 1) > 0.3
            assert r["z_path_logp"] < r["clean_logp"] - 0.2
        else:
            assert abs(r["z_path_resid"] - r["clean_resid"]) < 0.05  # level 0 is the data up to 1 % noise


# ----------------------------------------------------------------------------------------------
# The learner, its config and checkpoints
# ----------------------------------------------------------------------------------------------


def _base_cfg(**over) -> ExperimentConfig:
    cfg = ExperimentConfig(name="base", method="conditional", profile="ci")
    return apply_overrides(cfg, {"model.preset": "conditional3", "model.z_dims": (4, 3, 2), "model.hidden": 32,
                                 "model.likelihood": "gaussian", "model.sigma": 0.3, "ebm.nef": 0,
                                 "train.max_steps": 2, "train.batch_size": 16, "train.progress": False,
                                 "train.log_every": 1, "train.ckpt_every": 2, **over})


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished (tiny) run of method "conditional"."""
    d = tmp_path_factory.mktemp("base") / "run"
    runs.load_or_train(_base_cfg(), d, build_learner, _images())
    assert runs.RunDir(d).is_finished()
    return d


def _udiff_cfg(base_run, **over) -> ExperimentConfig:
    cfg = ExperimentConfig(name="udiff", method="udiffusion", profile="ci")
    return apply_overrides(cfg, {"diffusion.base_run": str(base_run), "diffusion.T": 3, "diffusion.langevin_steps": 3,
                                 "diffusion.base_step": 1e-5, "diffusion.t_dim": 8, "ebm.nef": 16, "ebm.layers": 1,
                                 "ebm.activation": "silu", "optim.lr_e": 1e-3, "optim.betas_e": (0.99, 0.999),
                                 "optim.weight_decay_e": 3e-5, "train.batch_size": 16, "train.max_steps": 6,
                                 "train.ckpt_every": 3, "train.log_every": 1, "train.progress": False,
                                 "train.deterministic": True, **over})


def test_learner_trains_only_the_energies_and_resumes_exactly(base_run, tmp_path):
    assert LEARNERS["udiffusion"] is UDiffusionLearner
    cfg = _udiff_cfg(base_run)
    base_state = {k: v.clone() for k, v in runs.load_learner(base_run, build_learner).model.state_dict().items()}
    data = _images(48, seed=1)

    torch.manual_seed(0)
    ref = build_learner(cfg, "cpu")
    prior0 = {k: v.clone() for k, v in ref.prior.state_dict().items()}
    Trainer(cfg, ref, data, tmp_path / "ref").fit()
    assert_same(base_state, ref.model.state_dict(), "base")  # the frozen base never changes
    assert any(not torch.equal(prior0[k], v) for k, v in ref.prior.state_dict().items())
    assert all(not p.requires_grad for p in ref.model.parameters())
    ckpt = load_checkpoint(tmp_path / "ref" / "checkpoints" / "step_00000006.pt")
    n_prior = len(list(ref.prior.parameters()))
    assert len(ckpt["optimizers"]["e"]["param_groups"][0]["params"]) == n_prior  # base not in the optimiser
    hist = runs.RunDir(tmp_path / "ref").read_history()
    assert len(hist) == 6 and all(math.isfinite(r["energy/pos"]) for r in hist)

    # stop at step 3, resume to 6: the same state as the uninterrupted run
    torch.manual_seed(0)
    Trainer(apply_overrides(cfg, {"train.max_steps": 3}), build_learner(cfg, "cpu"), data, tmp_path / "b").fit()
    torch.manual_seed(99)  # a different global RNG before resuming: the checkpoint restores it
    got = build_learner(cfg, "cpu")
    Trainer(cfg, got, data, tmp_path / "b").fit()
    assert_same(learner_state(ref), learner_state(got))

    # what chapters call
    with torch.no_grad():
        x = got.sample(5)
        zs = got.encode(data[:4])
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    assert [z.shape for z in zs] == [(4, 4), (4, 3), (4, 2)]
    u = got.sample_u(6, record_levels=True)
    assert len(u.levels) == 4 and [t.shape for t in u.u] == [(6, 4), (6, 3), (6, 2)]
    for a, b in zip(to_u(got.model, u.z), u.u):
        assert torch.allclose(a, b, atol=1e-4)


def test_t1_is_the_single_step_latent_ebm(base_run):
    cfg = _udiff_cfg(base_run, **{"diffusion.T": 1, "diffusion.base_step": 1e-3})
    torch.manual_seed(0)
    learner = build_learner(cfg, "cpu")
    assert learner.prior.T == 1 and learner.schedule.T == 1
    m = learner.train_step(_images(16), 1)
    assert set(m) >= {"loss", "energy/pos", "energy/neg", "drl/gap_t0"}
    assert learner.sample(3).shape == (3, 1, 28, 28)


def test_config_errors_name_the_fix(base_run, tmp_path):
    with pytest.raises(ConfigError, match="diffusion.base_run"):
        build_learner(_udiff_cfg(base_run, **{"diffusion.base_run": None}), "cpu")
    with pytest.raises(ConfigError, match="python -m jebm_lite train"):
        build_learner(_udiff_cfg(tmp_path / "nowhere"), "cpu")
    unfinished = tmp_path / "unfinished"
    shutil.copytree(base_run, unfinished)
    (unfinished / "result.json").unlink()
    with pytest.raises(ConfigError, match="not a finished run"):
        build_learner(_udiff_cfg(unfinished), "cpu")
    wrong = tmp_path / "wrong"
    shutil.copytree(base_run, wrong)
    c = json.loads((wrong / "config.json").read_text())
    c["method"] = "vlae"
    (wrong / "config.json").write_text(json.dumps(c))
    with pytest.raises(ConfigError, match="method 'conditional'"):
        build_learner(_udiff_cfg(wrong), "cpu")
    with pytest.raises(ConfigError, match="data.hold_out"):
        build_learner(_udiff_cfg(base_run, **{"data.hold_out": 1}), "cpu")
    with pytest.raises(ConfigError, match="diffusion.T"):
        _udiff_cfg(base_run, **{"diffusion.T": 0})
    with pytest.raises(ConfigError, match="ebm.nef"):
        _udiff_cfg(base_run, **{"ebm.nef": 0})
    with pytest.raises(ConfigError, match="ebm.spectral_norm=false"):
        _udiff_cfg(base_run, **{"diffusion.zero_init": True, "ebm.spectral_norm": True})


def test_presets_and_configs_without_a_diffusion_section(base_run, tmp_path):
    for name, T in (("mnist_anomaly_udiff_t3", 3), ("mnist_anomaly_udiff_t1", 1)):
        for prof in ("ci", "cpu", "full"):
            cfg = get_config(name, profile=prof)
            ref = get_config("mnist_anomaly_conditional", profile=prof)
            assert cfg.method == "udiffusion" and cfg.diffusion.T == T
            assert cfg.data == ref.data  # the base preset's data
            assert cfg.diffusion.base_run == "runs/mnist_anomaly_conditional-h1-s1500-cpu"
    # a config stored before the diffusion section existed loads, and equals the defaults
    old = to_dict(_base_cfg())
    del old["diffusion"]
    assert config_from_json(old).diffusion == ExperimentConfig().diffusion
    assert runs.config_diff(old, _base_cfg()) == []
    # ... and so does a run directory whose config.json and checkpoints lack it
    legacy = tmp_path / "legacy"
    shutil.copytree(base_run, legacy)
    (legacy / "config.json").write_text(json.dumps(old))
    for p in runs.RunDir(legacy).checkpoints():
        ck = torch.load(p, weights_only=True)
        del ck["config"]["diffusion"]
        torch.save(ck, p)
        p.with_name(p.name + ".sha256").unlink(missing_ok=True)  # a legacy checkpoint: written before hashes
    learner = runs.load_learner(legacy, build_learner)
    assert learner.cfg.diffusion == ExperimentConfig().diffusion
    build_learner(_udiff_cfg(legacy), "cpu")  # usable as a base
    real = REPO / "notebooks" / "runs" / "mnist_conditional-cpu"  # a finished run of the book, if present
    if (real / "result.json").exists():  # written before or after the section existed: it loads either way
        assert runs.load_learner(real, build_learner).cfg.method == "conditional"
