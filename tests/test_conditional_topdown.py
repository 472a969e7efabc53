"""model.topdown of the conditional hierarchy: "markov" unchanged, "deterministic" (the BIVA / LVAE code's top-down
state d_i) consistent in every method."""

from __future__ import annotations

import math

import pytest
import torch

from jebm_lite.analysis import hierarchy as H
from jebm_lite.config import apply_overrides, get_config
from jebm_lite.models.conditional import ConditionalHierarchy
from jebm_lite.runtime import ConfigError, seed_everything
from jebm_lite.training.learners import build_learner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(topdown: str, likelihood: str = "bernoulli", z_dims=(5, 4, 3)) -> ConditionalHierarchy:
    torch.manual_seed(0)
    return ConditionalHierarchy((1, 6, 6), z_dims, hidden=16, likelihood=likelihood, sigma=0.3, topdown=topdown)


def _x(n: int = 7) -> torch.Tensor:
    return torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(1)) * 2 - 1


# Recorded with the code before model.topdown existed (seeded model and data as in _model / _x, torch.manual_seed(2)
# before elbo(x, free_bits, n_samples=2), eps from torch.Generator().manual_seed(3)):
# (likelihood, free_bits) -> (loss, sum of the per-sample ELBOs, sum of the sample means, sum of log_prior)
MARKOV_REFERENCE = {
    ("bernoulli", 0.0): (25.671293258666992, -179.69906616210938, -2.0636253356933594, -44.56012725830078),
    ("gaussian", 2.0): (74.44915008544922, -482.29925537109375, -3.946573495864868, -44.56012725830078),
}


@pytest.mark.parametrize("likelihood,free_bits", list(MARKOV_REFERENCE))
def test_markov_mode_gives_the_values_of_the_code_before_the_option(likelihood, free_bits):
    m = _model("markov", likelihood)
    assert m.td_state is None and not m.deterministic
    torch.manual_seed(2)
    with torch.no_grad():
        loss, info = m.elbo(_x(), free_bits=free_bits, n_samples=2)
        zs, xm = m.sample(m.sample_eps(3, generator=torch.Generator().manual_seed(3)))
        got = (float(loss), float(info["elbo"].sum()), float(xm.sum()), float(m.log_prior(zs).sum()))
    for a, b in zip(got, MARKOV_REFERENCE[(likelihood, free_bits)]):
        assert math.isclose(a, b, rel_tol=1e-5), (got, MARKOV_REFERENCE[(likelihood, free_bits)])
    # the old call forms still work in markov mode: decode(z_1) and log_px(x, z_1) equal the list forms
    torch.testing.assert_close(m.decode(zs[0]), m.decode(zs))
    torch.testing.assert_close(m.log_px(_x(3), zs[0]), m.log_px(_x(3), zs))


def test_markov_parameters_are_those_of_the_model_without_the_option():
    """Same parameter names, shapes and seeded values as a model built without the argument."""
    torch.manual_seed(0)
    old = ConditionalHierarchy((1, 6, 6), (5, 4, 3), hidden=16)
    new = _model("markov")
    assert list(old.state_dict()) == list(new.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))


@pytest.mark.parametrize("topdown", ["markov", "deterministic"])
def test_eps_from_z_inverts_top_down(topdown):
    m = _model(topdown, z_dims=(6, 5, 4, 3))
    eps = m.sample_eps(9, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        zs = m.top_down(eps)
        back = m.eps_from_z(zs)
        zs_s, x = m.sample(eps)
    for a, b in zip(back, eps):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(zs, zs_s):
        assert torch.equal(a, b)
    torch.testing.assert_close(m.decode(zs), x)  # sample = top_down + decode


def test_deterministic_prior_density_matches_the_change_of_variables():
    """log p(z) = log N(eps; 0, I) - sum_i sum log sigma_i: the prior of log_prior_layers is the one sampled
    by top_down."""
    m = _model("deterministic")
    eps = m.sample_eps(5, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        zs = m.top_down(eps)
        lp = m.log_prior(zs)
        log_n = sum((-0.5 * e.pow(2) - 0.5 * math.log(2 * math.pi)).sum(1) for e in eps)
        d = m.topdown_state(2, zs[2])
        log_det = torch.zeros(5)
        for i in (1, 0):
            log_det += 0.5 * m.prior_params(i, d)[1].sum(1)
            d = m.topdown_state(i, zs[i], d)
    torch.testing.assert_close(lp, log_n - log_det, atol=1e-4, rtol=1e-5)
    assert m.log_prior_layers(zs).shape == (5, 3)


@pytest.mark.parametrize("topdown", ["markov", "deterministic"])
def test_decoded_image_depends_on_the_top_layer_only_through_the_deterministic_path(topdown):
    """d x / d z_L with z_1 (and every other layer) held fixed: nonzero with the deterministic top-down path,
    none at all in the markov model (its decoder reads z_1 only)."""
    m = _model(topdown)
    zs = [z.detach() for z in m.top_down(m.sample_eps(4, generator=torch.Generator().manual_seed(6)))]
    z_top = zs[-1].clone().requires_grad_(True)
    x = m.decode([zs[0], zs[1], z_top])
    (grad,) = torch.autograd.grad(x.sum(), z_top, allow_unused=True)
    if topdown == "deterministic":
        assert grad is not None and grad.abs().sum() > 0
    else:
        assert grad is None


def test_deterministic_decode_refuses_z1_alone():
    m = _model("deterministic")
    zs = m.top_down(m.sample_eps(2))
    with pytest.raises(ValueError, match="every layer"):
        m.decode(zs[0])
    with pytest.raises(ValueError, match="every layer"):
        m.log_px(_x(2), zs[0])
    with pytest.raises(RuntimeError, match="deterministic"):
        _model("markov").topdown_state(0, zs[0])


def test_deterministic_elbo_is_consistent_with_its_parts():
    """The ELBO's nll is -log p(x | z) at the posterior draw, and its prior terms are log_prior_layers."""
    m = _model("deterministic")
    x = _x(4)
    torch.manual_seed(7)
    with torch.no_grad():
        loss, info = m.elbo(x)
    torch.manual_seed(7)
    with torch.no_grad():
        zs, stats = m.posterior(x)
        nll = -m.log_px(x, zs)
        from jebm_lite.models.conditional import _gauss_logpdf_nc

        log_q = sum((_gauss_logpdf_nc(z, s["q_mu"], s["q_logvar"]) - 0.5 * math.log(2 * math.pi)).sum(1)
                    for z, s in zip(zs, stats))
        lp = m.log_prior(zs)
    torch.testing.assert_close(info["nll"], nll)
    torch.testing.assert_close(info["elbo"], -nll + lp - log_q, atol=1e-3, rtol=1e-5)
    for a, b in zip(info["zs"], zs):
        assert torch.equal(a, b)
    assert torch.isfinite(loss)
    # the posterior's prior stats are those of the prior at the drawn codes
    for i in range(2):
        torch.testing.assert_close(stats[i]["p_mu"], m._prior_chain(zs)[i][0])


def test_from_config_reads_topdown():
    cfg = get_config("mnist_conditional", profile="ci", overrides=["model.topdown=deterministic", "model.hidden=16",
                                                                   "model.z_dims=4,3"])
    assert ConditionalHierarchy.from_config(cfg.model).deterministic
    assert not ConditionalHierarchy.from_config(get_config("mnist_conditional", profile="ci").model).deterministic


# ----------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------


def test_config_rejects_a_bad_topdown_value():
    with pytest.raises(ConfigError, match="model.topdown='sideways' is not one of markov, deterministic") as e:
        get_config("mnist_conditional", profile="ci", overrides=["model.topdown=sideways"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["mnist_cond_joint", "mnist_joint"])
def test_config_rejects_deterministic_for_methods_that_cannot_use_it(name):
    with pytest.raises(ConfigError, match="method 'conditional' only") as e:
        get_config(name, profile="ci", overrides=["model.topdown=deterministic"])
    assert "\n" not in str(e.value)


def test_cli_exits_2_for_a_bad_topdown(capsys):
    from jebm_lite.__main__ import main

    assert main(["show", "mnist_conditional", "--profile", "ci", "model.topdown=sideways"]) == 2
    assert "model.topdown" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# learner, analysis, training
# ----------------------------------------------------------------------------------------------


def _learner(topdown: str):
    seed_everything(0)
    cfg = get_config("mnist_conditional", profile="ci",
                     overrides=[f"model.topdown={topdown}", "model.z_dims=6,5,4,3,2,2", "model.hidden=32"])
    return build_learner(cfg, "cpu")


def test_learner_and_hierarchy_analysis_work_in_deterministic_mode():
    learner = _learner("deterministic")
    assert learner.model.deterministic
    x = _x(5)
    x = torch.nn.functional.interpolate(x, size=(28, 28))
    zs = learner.encode(x)
    assert learner.decode(zs).shape == (5, 1, 28, 28)
    eps = H.sample_state(learner, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(H.decode_state(learner, eps), learner.decode(learner.sample_latents(3, eps)))
    groups = H.layer_groups(6)
    stats = H.resample_stats(learner, groups, 4, 3, classifier=lambda im: im.flatten(1)[:, :10],
                             generator=torch.Generator().manual_seed(1))
    assert set(stats) == {"bottom", "middle", "top", "all"}
    assert all(stats[g]["pixel_var"] > 0 for g in groups)  # every group moves the image, the top one included
    gib = H.bottom_layer_gibbs(learner, x[:2], 2, generator=torch.Generator().manual_seed(2))
    assert gib.shape == (3, 2, 1, 28, 28)
    rows = H.conditional_resample_stats(learner, lambda im: im.flatten(1)[:, :10], n=4)
    assert len(rows) == 6


def test_udiffusion_refuses_a_deterministic_base_run(tmp_path):
    """The u-space diffusion reads p(z_i | z_{i+1}) of a markov base; a deterministic base run is named as the
    problem (before any checkpoint is read)."""
    from jebm_lite.config import ExperimentConfig
    from jebm_lite.training.learners import load_base_run
    from jebm_lite.training.rundir import RunDir

    base = get_config("mnist_conditional", profile="ci", overrides=["model.topdown=deterministic"])
    rd = RunDir(tmp_path / "base").create(base)
    rd.write_result({"finished": True})
    rd.ckpt_dir.mkdir(parents=True, exist_ok=True)
    (rd.ckpt_dir / "step_00000001.pt").write_bytes(b"")
    ucfg = apply_overrides(ExperimentConfig(name="udiff", method="udiffusion", profile="ci"),
                           {"diffusion.base_run": str(rd.path), "ebm.nef": 16, "data.name": "mnist"})
    with pytest.raises(ConfigError, match="model.topdown='deterministic'"):
        load_base_run(ucfg, "cpu")


def test_ci_training_of_the_deterministic_model_gives_a_finite_elbo(tmp_path):
    from jebm_lite.training.load import run_experiment

    cfg = get_config("mnist_conditional", profile="ci",
                     overrides=["model.topdown=deterministic", "model.likelihood=bernoulli", "model.free_bits=0",
                                "train.max_steps=5", "train.ckpt_every=5", "train.log_every=1"])
    learner, history, rd = run_experiment(cfg, run_dir=tmp_path / "run", device="cpu")
    assert learner.model.deterministic and rd.read_result()["steps"] == 5
    rows = [h for h in history if "event" not in h]
    assert rows and all(math.isfinite(h["loss"]) for h in rows)
    x = _x(8)
    x = torch.nn.functional.interpolate(x, size=(28, 28))
    with torch.no_grad():
        _, info = learner.model.elbo(x)
    assert torch.isfinite(info["elbo"]).all()
