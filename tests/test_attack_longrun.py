"""The latent attack (Gondim-Ribeiro et al. 2018; paper Fig. 9) and the long-run prior chain (paper Fig. 8)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from jebm_lite.analysis import anomaly
from jebm_lite.analysis.attack import attack_all_layers, latent_attack, posterior_kl_per_layer
from jebm_lite.analysis.longrun import long_run_chain, saturation_fraction
from jebm_lite.config import get_config
from jebm_lite.data import as_tensors, get_dataset
from jebm_lite.runtime import ConfigError, seed_everything
from jebm_lite.sampling import sample_prior
from jebm_lite.training.learners import build_learner


@pytest.fixture(scope="module")
def digits(shared_data):
    x, y = as_tensors(get_dataset("mnist", "train", root=shared_data, subset=1000))
    return x, y


@pytest.fixture(scope="module")
def learner(digits):
    """A 2-layer joint-prior model after 40 steps on real digits (a few seconds on one core)."""
    seed_everything(0)
    # concat merge: after 40 steps both layers already encode the digits (with the gated merge the bottom
    # code is barely used this early, so its attack would have nothing to move)
    cfg = get_config("toy012_joint", profile="ci",
                     overrides=["model.hidden=64", "train.batch_size=64", "model.merge=concat"])
    lrn = build_learner(cfg, "cpu")
    g = torch.Generator().manual_seed(0)
    for step in range(40):
        lrn.train_step(digits[0][torch.randint(0, 1000, (64,), generator=g)], step)
    return lrn


# ---------------------------------------------------------------------------------------------
# Latent attack
# ---------------------------------------------------------------------------------------------


def _pairs(digits):
    x, y = digits
    orig = x[(y == 0).nonzero()[:6, 0]]
    target = x[(y == 1).nonzero()[:6, 0]]
    return orig, target


@pytest.mark.parametrize("layer", [0, -1])
def test_attack_pulls_the_attacked_layer_to_the_target(learner, digits, layer):
    x, t = _pairs(digits)
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in learner.named_parameters()}
    r = latent_attack(learner, x, t, layer, c=1e-3, steps=150, lr=2e-2)
    k = r.layer
    assert k == (0 if layer == 0 else 1)
    before, after = r.kl_before[k].mean(), r.kl_after[k].mean()
    assert before > 0.05 and after < 0.3 * before  # the objective's KL fell by > 70 %
    assert r.loss_history[-10:].mean() < r.loss_history[:10].mean()
    assert r.x_adv.min() >= -1.0 and r.x_adv.max() <= 1.0  # the box constraint
    assert (r.delta_norm > 0).all()
    assert torch.allclose(r.delta_norm, (r.x_adv - x).flatten(1).norm(dim=1))
    # the reported KLs are the ones of the returned images
    with torch.no_grad(), anomaly.eval_mode(learner):
        assert torch.allclose(posterior_kl_per_layer(learner, r.x_adv, t), r.kl_after, atol=1e-4)
        assert torch.allclose(r.rec_adv, learner.decode(learner.posterior(r.x_adv)[0]), atol=1e-5)
    assert r.rec_orig.shape == r.rec_target.shape == x.shape
    assert learner.training and all(p.requires_grad for p in learner.parameters())  # state restored
    for n, p in learner.named_parameters():  # gradients went to delta only
        assert (p.grad is None) == (grads[n] is None) and (p.grad is None or torch.equal(p.grad, grads[n]))


def test_attack_budget_and_penalty(learner, digits):
    x, t = _pairs(digits)
    capped = latent_attack(learner, x, t, -1, c=0.0, steps=60, lr=5e-2, budget=0.5)
    assert (capped.delta_norm <= 0.5 + 1e-4).all()
    assert capped.x_adv.min() >= -1.0 and capped.x_adv.max() <= 1.0
    free = latent_attack(learner, x, t, -1, c=0.0, steps=60, lr=5e-2)
    dear = latent_attack(learner, x, t, -1, c=1.0, steps=60, lr=5e-2)
    assert dear.delta_norm.mean() < free.delta_norm.mean()  # a larger c buys a smaller perturbation
    l2 = latent_attack(learner, x, t, -1, c=1e-2, steps=20, lr=5e-2, penalty="l2")
    assert torch.isfinite(l2.loss_history).all()
    with pytest.raises(ConfigError):
        latent_attack(learner, x, t, 0, penalty="l1")


def test_attack_all_layers_table(learner, digits):
    x, t = _pairs(digits)
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    rows, results = attack_all_layers(learner, x, t[:1], classifier=clf, steps=30, lr=2e-2)
    assert [r["layer"] for r in rows] == [1, 2] and len(results) == 2
    for row, res in zip(rows, results):
        assert row["kl_after"] < row["kl_before"]
        assert row["mse_to_orig"] >= 0 and row["mse_to_target"] >= 0
        assert 0.0 <= row["label_orig"] <= 1.0 and 0.0 <= row["label_target"] <= 1.0
        assert res.x_adv.shape == x.shape
    # the reference row: the clean x's reconstruction, scored like the attacked ones
    torch.manual_seed(0)
    rows_c, results_c = attack_all_layers(learner, x, t[:1], classifier=clf, steps=30, lr=2e-2,
                                          with_clean=True)
    clean = rows_c[0]
    assert [r["layer"] for r in rows_c] == [0, 1, 2] and len(results_c) == 2
    assert clean["delta_norm"] == 0.0 and math.isnan(clean["kl_before"]) and math.isnan(clean["kl_after"])
    rec = results_c[0].rec_orig
    assert clean["mse_to_orig"] == pytest.approx(float((rec - x).pow(2).flatten(1).mean(1).mean()))
    assert clean["mse_to_target"] == pytest.approx(float((rec - t[:1]).pow(2).flatten(1).mean(1).mean()))
    with torch.no_grad():
        same = (clf(rec).argmax(1) == clf(x).argmax(1)).float().mean()
    assert clean["label_orig"] == pytest.approx(float(same))
    with pytest.raises(ConfigError, match="inference network"):
        latent_attack(build_learner(get_config("toy012_lebm", profile="ci"), "cpu"), x, t, 0)


# ---------------------------------------------------------------------------------------------
# Long-run chain
# ---------------------------------------------------------------------------------------------


def test_long_run_records_frames_and_energies(learner):
    out = long_run_chain(learner, n=6, steps=250, record_every=100, seed=0)
    assert out.frame_steps.tolist() == [0, 100, 200, 250]
    assert out.frames.shape == (4, 6, 1, 28, 28)
    assert out.energy.shape == (251, 6) and out.energy_mean.shape == out.energy_std.shape == (251,)
    assert out.grad_norm.shape == (250,) and out.z_norm.shape == (251,)
    assert torch.isfinite(out.energy).all() and torch.isfinite(out.frames).all()
    assert torch.allclose(out.energy_mean, out.energy.mean(1))
    assert out.saturation.shape == (4,) and ((0 <= out.saturation) & (out.saturation <= 1)).all()
    assert torch.allclose(out.frames[-1], learner.decode(learner.prior.split(out.z)), atol=1e-5)
    assert learner.training


def test_long_run_segments_equal_one_chain(learner):
    """Running in segments of record_every steps is the same chain as one sample_prior call."""
    out = long_run_chain(learner, n=4, steps=120, record_every=50, seed=7)
    g = torch.Generator().manual_seed(7)
    with anomaly.eval_mode(learner):
        z0 = learner.prior.sample_base(4, generator=g)
        tr = sample_prior(learner.prior, 4, 120, learner.cfg.prior_langevin.step_size, z0=z0, record=True, generator=g)
        frame = learner.decode(learner.prior.split(tr.z))
    assert torch.allclose(out.z, tr.z, atol=1e-6)
    assert torch.allclose(out.energy, tr.energy, atol=1e-6)
    assert torch.allclose(out.frames[-1], frame, atol=1e-6)


def test_long_run_without_noise_climbs_the_prior_density(learner):
    out = long_run_chain(learner, n=8, steps=60, record_every=20, noise=False, step_size=0.2, seed=1)
    d = out.log_prob_mean.diff()
    assert (d > -1e-4).all() and out.log_prob_mean[-1] > out.log_prob_mean[0]
    vlae = build_learner(get_config("toy012_vlae", profile="ci"), "cpu")
    with pytest.raises(ConfigError, match="EBM"):
        long_run_chain(vlae, n=2, steps=10)


def test_saturation_fraction():
    x = torch.tensor([[[1.0, -1.0, 0.5, 0.0]], [[0.995, 0.2, -0.999, -0.98]]])
    assert saturation_fraction(x).tolist() == [0.5, 0.5]
    assert saturation_fraction(x, threshold=0.9).tolist() == [0.5, 0.75]
