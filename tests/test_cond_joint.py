"""The CVPR 2023 joint EBM prior on a conditional hierarchy (method ``cond_joint``): gradient routing of both
learning modes, the eps-space prior sampler, that the per-layer energies learn, exact resume, config errors,
anomaly scores of both conditional learners and the hierarchical-sampling statistics."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_same, learner_state, no_time, record_optimizer_steps

from jebm_lite import objectives as obj
from jebm_lite.analysis import anomaly, hierarchy
from jebm_lite.config import get_config
from jebm_lite.data import as_tensors, get_dataset
from jebm_lite.models.cond_ebm import LayerEnergies, log_prior_unnorm, resample_layers_eps, sample_prior_eps
from jebm_lite.models.conditional import ConditionalHierarchy
from jebm_lite.runtime import ConfigError, seed_everything
from jebm_lite.training.learners import ConditionalLearner, CondJointLearner, build_learner
from jebm_lite.training.rundir import RunDir
from jebm_lite.training.trainer import Trainer

TINY = ["model.z_dims=6,4,2", "model.hidden=32", "ebm.nef=16", "prior_langevin.steps=3",
        "posterior_langevin.steps=3"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def _tiny(posterior: str = "amortized", extra=()) -> CondJointLearner:
    cfg = get_config("mnist_cond_joint", profile="ci", overrides=[*TINY, f"model.posterior={posterior}", *extra])
    return build_learner(cfg, "cpu")


def _zero_output(energies: LayerEnergies) -> None:
    """f_i == 0 exactly (the output Linear of every f_i zeroed), but the networks are still there."""
    with torch.no_grad():
        for net in energies.nets:
            net.net[-1].weight.zero_()
            net.net[-1].bias.zero_()


# ---------------------------------------------------------------------------------------------
# Gradient routing
# ---------------------------------------------------------------------------------------------


def test_amortized_loss_routes_each_term_to_its_parameters():
    seed_everything(0)
    learner = _tiny()
    model, energies = learner.model, learner.energies
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    zs_neg = learner.sample_latents(8, steps=3)
    loss, info = learner.amortized_loss(x, zs_neg)
    zs_pos = info["zs"]

    def grads(scalar, params, keep=True):
        return torch.autograd.grad(scalar, params, retain_graph=keep, allow_unused=True)

    # energies: exactly the EBM loss of Eq. 10, mean f(z-) - mean f(z+)
    e_params = list(energies.parameters())
    ref = grads(obj.ebm_loss(energies.f(zs_neg), energies.f(zs_pos)), e_params)
    for g, r in zip(grads(loss, e_params), ref):
        assert torch.allclose(g, r, atol=1e-6, rtol=1e-5)
    # the prior heads (not used by q): the MLE contrast mean log p_beta(z-) - mean log p_beta(z+)
    h_params = list(model.p_heads.parameters())
    ref = grads(model.log_prior(zs_neg).mean() - model.log_prior(zs_pos).mean(), h_params)
    got = grads(loss, h_params)
    for g, r in zip(got, ref):
        assert torch.allclose(g, r, atol=1e-5, rtol=1e-4)
    assert sum(float(g.abs().sum()) for g in got) > 0
    # the decoder: only the reconstruction term -log p(x | z1+)
    d_params = list(model.decoder.parameters())
    ref = grads(-model.log_px(x, zs_pos[0]).mean(), d_params)
    for g, r in zip(grads(loss, d_params), ref):
        assert torch.allclose(g, r, atol=1e-4, rtol=1e-4)
    # q gets the reparameterised ELBO gradient: the whole first bracket, including f(z+) and log p_beta(z+)
    q_params = list(model.q_heads.parameters())
    with_f = grads(loss, q_params)
    without_f = grads(loss + energies.f(zs_pos).mean(), q_params)  # zs_pos detached: adds nothing for q
    assert all(torch.equal(a, b) for a, b in zip(with_f, without_f))
    assert all(g is not None and float(g.abs().sum()) > 0 for g in with_f)


@pytest.mark.parametrize("posterior", ["amortized", "langevin"])
def test_train_step_updates_the_right_networks(posterior):
    seed_everything(1)
    learner = _tiny(posterior)
    m = learner.model
    seen = record_optimizer_steps(learner)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    metrics = learner.train_step(torch.rand(8, 1, 28, 28) * 2 - 1, 1)
    assert all(math.isfinite(v) for v in metrics.values())
    assert {"loss", "mse", "nll", "energy/prior", "energy/post", "e_loss"} <= set(metrics)
    inference = _ids(m.bottom_up.parameters()) | _ids(m.q_top.parameters()) | _ids(m.q_heads.parameters())
    if posterior == "amortized":
        assert seen["g"]["with_grad"] >= _ids(m.parameters())
        assert [k for k in metrics if k.startswith("kl/")] == ["kl/1", "kl/2", "kl/3"]
    else:  # decoder on the reconstruction, prior nets on the contrast; q is unused
        assert seen["g"]["with_grad"] & _ids(m.parameters()) == _ids(m.parameters()) - inference
        assert [k for k in metrics if k.startswith("log_pbeta/") and k[-1].isdigit()] == [
            "log_pbeta/1", "log_pbeta/2", "log_pbeta/3"]
        after = learner.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("model.q_", "model.bottom_up")))
    assert seen["e"]["with_grad"] >= _ids(learner.energies.parameters())


# ---------------------------------------------------------------------------------------------
# The eps-space prior sampler
# ---------------------------------------------------------------------------------------------


def test_eps_langevin_with_zero_energies_reproduces_the_hierarchy():
    torch.manual_seed(0)
    model = ConditionalHierarchy((1, 4, 4), z_dims=(3, 2, 2), hidden=16, likelihood="gaussian")
    energies = LayerEnergies(model.z_dims, nef=8, layers=1)
    _zero_output(energies)
    n, s = 6000, 0.4
    g = torch.Generator().manual_seed(1)
    zs, eps, trace = sample_prior_eps(model, energies, n, steps=30, step_size=s, generator=g)
    assert trace.steps == 30 and [e.shape[1] for e in eps] == [3, 2, 2]
    u = torch.cat(eps, 1)
    # ULA on N(0, I): mean 0, variance 1 / (1 - s^2 / 4) (+4 % at s = 0.4)
    assert u.mean(0).abs().max() < 0.06
    assert torch.allclose(u.var(0), torch.full((7,), 1 / (1 - s * s / 4)), atol=0.08)
    # z = T(eps) has the moments of the hierarchy's own ancestral samples
    with torch.no_grad():
        ref, _ = model.sample(model.sample_eps(n, generator=torch.Generator().manual_seed(2)))
    for a, b in zip(zs, ref):
        assert torch.allclose(a.mean(0), b.mean(0), atol=0.08)
        assert torch.allclose(a.std(0), b.std(0), rtol=0.08, atol=0.03)
    # without energies: exact N(0, I) draws, no Langevin step; T is the model's top-down sampler
    zs0, eps0, tr0 = sample_prior_eps(model, None, 5, steps=30, step_size=s)
    assert tr0.steps == 0
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(zs0, model.sample(eps0)[0]))
    # the unnormalised log prior: sum_i f_i + log p_beta, here f = 0; log p_beta(T(eps)) + log|det dT| = log N(eps)
    with torch.no_grad():
        lp = log_prior_unnorm(model, energies, zs0)
        log_det = sum(0.5 * model.prior_params(i, zs0[i + 1])[1].sum(1) for i in range(2))
        log_n = -0.5 * torch.cat(eps0, 1).pow(2).sum(1) - 3.5 * math.log(2 * math.pi)
        assert torch.allclose(lp + log_det, log_n, atol=1e-4)


def test_resample_layers_eps_keeps_the_layers_above():
    torch.manual_seed(0)
    model = ConditionalHierarchy((1, 4, 4), z_dims=(3, 2, 2), hidden=16)
    energies = LayerEnergies(model.z_dims, nef=8, layers=1)
    zs, eps, _ = sample_prior_eps(model, energies, 50, steps=5, step_size=0.3)
    new_zs, new_eps = resample_layers_eps(model, energies, eps, [1], steps=5, step_size=0.3)
    assert torch.equal(new_eps[0], eps[0]) and torch.equal(new_eps[2], eps[2]) and not torch.equal(new_eps[1], eps[1])
    assert torch.equal(new_zs[2], zs[2]) and not torch.equal(new_zs[0], zs[0])  # z_1 moves with z_2
    # the poster's reading (layers <= k) with energies None: an exact redraw of those eps, no Langevin
    g = torch.Generator().manual_seed(3)
    _, exact = resample_layers_eps(model, None, eps, [0, 1], steps=50, step_size=0.3, generator=g)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(exact[0], torch.randn(50, 3, generator=g)) and torch.equal(exact[2], eps[2])


def test_layer_energies_learn_to_tilt_the_prior_toward_the_codes():
    """Contrastive learning of the f_i alone (the hierarchy fixed): prior samples move to shifted codes."""
    torch.manual_seed(0)
    model = ConditionalHierarchy((1, 2, 2), z_dims=(2, 2), hidden=16).requires_grad_(False)
    energies = LayerEnergies(model.z_dims, nef=32, layers=2)
    opt = torch.optim.Adam(energies.parameters(), lr=2e-3, betas=(0.5, 0.999))  # 1e-2 diverges
    shift = [torch.tensor([1.5, -1.0]), torch.tensor([-1.0, 1.0])]

    def codes(n):  # the "posterior codes": each layer a narrow Gaussian away from the prior's mass
        return [m + 0.5 * torch.randn(n, 2) for m in shift]

    def gap():
        zs, _, _ = sample_prior_eps(model, energies, 2000, steps=30, step_size=0.4)
        return sum(float((z.mean(0) - m).norm()) for z, m in zip(zs, shift))

    start = gap()
    for _ in range(150):
        zs_neg, _, _ = sample_prior_eps(model, energies, 200, steps=15, step_size=0.4)
        loss = obj.ebm_loss(energies.f(zs_neg), energies.f(codes(200)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = gap()
    assert end < 0.3 * start, (start, end)  # measured: 3.40 -> ~0.2


# ---------------------------------------------------------------------------------------------
# Trainer: finite steps and exact resume
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("posterior", ["amortized", "langevin"])
def test_checkpoint_resume_reproduces_the_state(tmp_path, posterior):
    def cfg_for(steps):
        return get_config("mnist_cond_joint", profile="ci", overrides=[
            *TINY, f"model.posterior={posterior}", "train.batch_size=8", f"train.max_steps={steps}",
            "train.ckpt_every=2", "train.log_every=1", "train.device=cpu"])

    data = torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def run(steps, run_dir):
        cfg = cfg_for(steps)
        seed_everything(0)
        learner = build_learner(cfg, "cpu")
        return learner, Trainer(cfg, learner, data, run_dir).fit()

    ref, ref_hist = run(6, tmp_path / "ref")
    assert len(ref_hist) == 6 and all(math.isfinite(v) for r in ref_hist for v in r.values())
    run(3, tmp_path / "cut")  # stop after step 3 (mid-epoch: 3 batches per epoch), then continue to 6
    assert RunDir(tmp_path / "cut").latest_checkpoint().name == "step_00000003.pt"
    got, hist = run(6, tmp_path / "cut")
    assert_same(learner_state(ref), learner_state(got))
    assert no_time(hist) == no_time(ref_hist)


# ---------------------------------------------------------------------------------------------
# Config errors
# ---------------------------------------------------------------------------------------------


def test_bad_configs_name_the_fix():
    with pytest.raises(ConfigError, match="method=conditional"):
        build_learner(get_config("mnist_cond_joint", profile="ci", overrides=["ebm.nef=0"]), "cpu")
    with pytest.raises(ConfigError, match="model.posterior=amortized"):
        get_config("mnist_cond_joint", profile="ci", overrides=["model.posterior=mcmc"])
    cfg = get_config("mnist_cond_joint", profile="ci")
    cfg.model.posterior = "mcmc"  # past validate(): the learner checks again
    with pytest.raises(ConfigError, match="model.posterior=langevin"):
        CondJointLearner(cfg, "cpu")
    with pytest.raises(ConfigError, match="model.preset=conditional3"):
        build_learner(get_config("mnist_cond_joint", profile="ci", overrides=["model.preset=mnist_small"]), "cpu")


def test_presets():
    a = get_config("mnist_anomaly_conditional", profile="cpu")
    b = get_config("mnist_anomaly_cond_joint", profile="cpu")
    full = get_config("mnist_cond_joint", profile="cpu")
    assert (a.method, b.method, full.method) == ("conditional", "cond_joint", "cond_joint")
    assert a.data.hold_out == b.data.hold_out == 1 and full.data.hold_out is None
    assert a.model == b.model  # the same networks (model.posterior is read by cond_joint only)
    assert b.ebm.nef > 0 and not b.ebm.spectral_norm and b.model.posterior == "amortized"
    assert (b.prior_langevin.steps, b.prior_langevin.step_size) == (60, 0.4)
    assert a.model.likelihood == "gaussian" and a.model.sigma == 0.3 and a.train.max_steps == 3000


# ---------------------------------------------------------------------------------------------
# Anomaly scores
# ---------------------------------------------------------------------------------------------


def test_conditional_scores_are_the_decision_functions():
    seed_everything(2)
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    cj = _tiny()
    with anomaly.eval_mode(cj), torch.no_grad():
        zs = cj.model.posterior(x, use_mean=True)[0]
        expected = -cj.log_joint(x, zs)
        base = -(cj.model.log_px(x, zs[0]) + cj.model.log_prior(zs))
        f = cj.energies.f(zs)
    got = anomaly.anomaly_scores(cj, x, use_mean=True, batch_size=4)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-3)
    assert torch.allclose(got, base - f, rtol=1e-5, atol=1e-3)  # f enters additively
    parts = anomaly.ood_scores(cj, x, seed=0)
    total = parts["rec"] + parts["ebm"] + sum(parts[f"prior/{i}"] for i in (1, 2, 3))
    assert torch.allclose(parts["score"], total, rtol=1e-5, atol=1e-3)
    assert torch.equal(anomaly.anomaly_scores(cj, x, seed=0), parts["score"])  # seeded draws of z ~ q

    cond = build_learner(get_config("mnist_anomaly_conditional", profile="ci",
                                    overrides=["model.z_dims=6,4,2", "model.hidden=32"]), "cpu")
    assert isinstance(cond, ConditionalLearner)
    with anomaly.eval_mode(cond), torch.no_grad():
        zs = cond.model.posterior(x, use_mean=True)[0]
        expected = -(cond.model.log_px(x, zs[0]) + cond.model.log_prior(zs))
    p = anomaly.ood_scores(cond, x, use_mean=True)
    assert torch.allclose(p["score"], expected, rtol=1e-5, atol=1e-3)
    assert torch.equal(p["ebm"], torch.zeros(6)) and {"kl/1", "kl/2", "kl/3", "neg_elbo"} <= set(p)

    lg = _tiny("langevin")
    s = anomaly.anomaly_scores(lg, x, seed=0, langevin_steps=2)
    assert s.shape == (6,) and torch.isfinite(s).all()
    assert torch.equal(s, anomaly.anomaly_scores(lg, x, seed=0, langevin_steps=2))


@pytest.mark.parametrize("name", ["mnist_anomaly_conditional", "mnist_anomaly_cond_joint"])
def test_short_training_ranks_noise_above_digits(shared_data, name):
    seed_everything(0)
    cfg = get_config(name, profile="ci", overrides=["model.hidden=64", "prior_langevin.steps=5"])
    learner = build_learner(cfg, "cpu")
    x, _ = as_tensors(get_dataset("mnist", "train", root=shared_data, subset=1024))
    for step in range(1, 61):
        learner.train_step(x[torch.randint(0, x.shape[0], (64,))], step)
    x_in, _ = as_tensors(get_dataset("mnist", "test", root=shared_data, subset=200))
    noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    s_in = anomaly.anomaly_scores(learner, x_in, seed=0)
    s_out = anomaly.anomaly_scores(learner, noise, seed=0)
    assert s_in.shape == (200,) and torch.isfinite(s_in).all() and torch.isfinite(s_out).all()
    labels = torch.cat([torch.zeros(200), torch.ones(200)])
    # measured after 40 steps (seeds 0-2): AUROC 0.97-0.98, mean score ~960 (digits) vs ~2000 (noise)
    assert anomaly.evaluate_scores(torch.cat([s_in, s_out]), labels)["auroc"] > 0.9
    assert s_out.mean() > 1.5 * s_in.mean()


# ---------------------------------------------------------------------------------------------
# Hierarchical sampling statistics
# ---------------------------------------------------------------------------------------------


def _brightness_classifier(x: torch.Tensor) -> torch.Tensor:
    """Ten 'classes' from the mean pixel value: a deterministic stand-in for a digit classifier."""
    m = x.flatten(1).mean(1)
    centres = torch.linspace(-1, 1, 10)
    return -(m[:, None] - centres[None]).abs()


def test_conditional_resample_stats():
    seed_everything(3)
    cond = build_learner(get_config("mnist_anomaly_conditional", profile="ci",
                                    overrides=["model.z_dims=6,4,2", "model.hidden=32"]), "cpu")
    rows = hierarchy.conditional_resample_stats(cond, _brightness_classifier, n=400, seed=0)
    assert [r["layer"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert 0 <= r["class_change"] <= 1 and 0 <= r["class_change_upto"] <= 1 and r["pixel_dist"] > 0
    # layer 1: both readings redraw eps_1 alone; the top 'upto' redraws everything, which moves z_1 at least
    # as much as eps_1 alone (Var z_1 = Var mu_1(z_2) + E sigma_1^2)
    assert rows[0]["pixel_dist_upto"] == pytest.approx(rows[0]["pixel_dist"], rel=0.1)
    assert rows[2]["pixel_dist_upto"] >= 0.95 * rows[0]["pixel_dist"]
    assert rows == hierarchy.conditional_resample_stats(cond, _brightness_classifier, n=400, seed=0)

    cj = _tiny()
    rows = hierarchy.conditional_resample_stats(cj, _brightness_classifier, n=64, steps=3, seed=0)
    assert len(rows) == 3 and all(math.isfinite(v) for r in rows for v in r.values())
    # the shared hierarchy helpers use the eps-space Langevin of the joint prior for cond_joint
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    state = hierarchy.sample_state(cj, 4, g1)
    plain = [torch.randn(4, d, generator=g2) for d in cj.z_dims]
    assert not all(torch.equal(a, b) for a, b in zip(state, plain))
    new = hierarchy.resample_layers(cj, state, [0])
    assert torch.equal(new[1], state[1]) and not torch.equal(new[0], state[0])
