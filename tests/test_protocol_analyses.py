"""The anomaly scores and the per-layer metrics go through the learner protocols only
(training/learner.py: ``ScoredModel``, ``LayerwisePosterior``): every learner kind implements what it can, a
minimal object implementing nothing but a protocol is analysed like a real learner, and the two analysis modules
keep no dispatch on the learner's kind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from jebm_lite.analysis import anomaly, metrics
from jebm_lite.config import ExperimentConfig, apply_overrides, get_config
from jebm_lite.runtime import ConfigError
from jebm_lite.training import load as runs
from jebm_lite.training.learner import LatentModel, LayerwisePosterior, ScoredModel
from jebm_lite.training.learners import build_learner

ANALYSIS = Path(__file__).resolve().parent.parent / "jebm_lite" / "analysis"

# name, overrides -> (ScoredModel?, LayerwisePosterior?, has_posterior_mean)
KINDS = {
    "toy012_joint": ((), (True, True, True)),
    "toy012_vlae": ((), (True, True, True)),
    "toy012_lebm": ((), (True, False, False)),
    "mnist_conditional": ((), (True, True, True)),
    "mnist_cond_joint": ((), (True, True, True)),
    "mnist_cond_joint-langevin": (("model.posterior=langevin",), (True, True, False)),
}


def _build(key: str):
    name = key.split("-")[0]
    over = ["prior_langevin.steps=2", "posterior_langevin.steps=2", *KINDS[key][0]]
    torch.manual_seed(0)
    return build_learner(get_config(name, profile="ci", overrides=over), "cpu")


@pytest.mark.parametrize("key", list(KINDS))
def test_every_learner_kind_implements_the_analysis_protocols(key):
    """What each kind promises (isinstance on the runtime-checkable protocols) and that the promise holds:
    the score parts add up, the per-layer codes and KLs have one entry per layer with the layer's shape."""
    learner = _build(key)
    scored, layerwise, has_mean = KINDS[key][1]
    assert isinstance(learner, ScoredModel) is scored
    assert isinstance(learner, LayerwisePosterior) is layerwise
    assert learner.has_posterior_mean is has_mean
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    L = len(learner.z_dims)
    with anomaly.eval_mode(learner), torch.no_grad():
        parts = learner.anomaly_score_parts(x, use_mean=True, generator=torch.Generator().manual_seed(0),
                                            langevin_steps=1)
    assert {"score", "rec", "ebm", *(f"prior/{i + 1}" for i in range(L))} <= set(parts)
    assert all(v.shape == (3,) and torch.isfinite(v).all() for v in parts.values())
    total = parts["rec"] + parts["ebm"] + sum(parts[f"prior/{i + 1}"] for i in range(L))
    torch.testing.assert_close(parts["score"], total, rtol=1e-5, atol=1e-3)
    assert ("neg_elbo" in parts) is has_mean  # an amortised q: closed-form KLs and the per-image ELBO
    if layerwise:
        codes = learner.layer_codes(x)
        assert [c.shape for c in codes] == [(3, d) for d in learner.z_dims]
        assert [c.shape for c in learner.layer_codes(x, whiten=True)] == [(3, d) for d in learner.z_dims]
        kls = learner.layer_kl(x)
        assert len(kls) == L and all(k.shape == (3,) and (k >= -1e-5).all() for k in kls)
        if learner.state_kind == "codes":  # q_phi(z_i | x): deterministic (a conditional KL is at one draw)
            torch.testing.assert_close(metrics.layer_kl(learner, x, batch_size=2),
                                       torch.stack([k.mean() for k in kls]), rtol=1e-4, atol=1e-5)
    else:  # the LEBM: codes by posterior Langevin (LatentModel.encode), no closed-form KL
        assert isinstance(learner, LatentModel)
        assert [c.shape for c in metrics.layer_codes(learner, x)] == [(3, d) for d in learner.z_dims]
        with pytest.raises(TypeError, match="LayerwisePosterior"):
            metrics.layer_kl(learner, x)


def test_udiffusion_has_the_base_codes_and_no_score(tmp_path):
    """The u-space diffusion shares its frozen base hierarchy's posterior (LayerwisePosterior) but has no
    log-joint score: the anomaly analysis refuses it by the protocol, with a message that names the kinds."""
    base = apply_overrides(ExperimentConfig(name="base", method="conditional", profile="ci"), {
        "model.preset": "conditional3", "model.z_dims": (4, 3, 2), "model.hidden": 32, "model.likelihood": "gaussian",
        "model.sigma": 0.3, "ebm.nef": 0, "train.max_steps": 1, "train.batch_size": 8, "train.progress": False,
        "train.log_every": 1, "train.ckpt_every": 1})
    g = torch.Generator().manual_seed(0)
    runs.load_or_train(base, tmp_path / "base", build_learner, torch.rand(16, 1, 28, 28, generator=g) * 2 - 1)
    cfg = apply_overrides(ExperimentConfig(name="udiff", method="udiffusion", profile="ci"), {
        "diffusion.base_run": str(tmp_path / "base"), "diffusion.T": 2, "diffusion.langevin_steps": 1,
        "diffusion.base_step": 1e-5, "diffusion.t_dim": 8, "ebm.nef": 8, "ebm.layers": 1, "ebm.activation": "silu",
        "optim.lr_e": 1e-3, "optim.betas_e": (0.99, 0.999), "optim.weight_decay_e": 3e-5})
    learner = build_learner(cfg, "cpu")
    assert isinstance(learner, LayerwisePosterior) and not isinstance(learner, ScoredModel)
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    base_learner = runs.load_learner(tmp_path / "base", build_learner)
    for white in (False, True):
        for a, b in zip(metrics.layer_codes(learner, x, whiten=white), metrics.layer_codes(base_learner, x, whiten=white)):
            assert torch.equal(a, b)
    assert metrics.layer_kl(learner, x).shape == (3,)
    with pytest.raises(ConfigError, match="no log-joint score.*ScoredModel"):
        anomaly.anomaly_scores(learner, x)


# ----------------------------------------------------------------------------------------------
# Objects that implement a protocol and nothing else
# ----------------------------------------------------------------------------------------------


class _ScoreOnly(nn.Module):
    """Only the ScoredModel protocol: score = ||x||^2 + one N(0, 1) draw from the generator it is handed.
    Records each call (eval mode, grad mode, arguments)."""

    def __init__(self, has_mean: bool):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self._has_mean = has_mean
        self.calls: list[dict] = []

    @property
    def device(self) -> torch.device:
        return self.w.device

    @property
    def has_posterior_mean(self) -> bool:
        return self._has_mean

    def anomaly_score_parts(self, x: Tensor, use_mean: bool = False, generator=None, langevin_steps=None):
        self.calls.append(dict(n=x.shape[0], training=self.training, grad=torch.is_grad_enabled(),
                               use_mean=use_mean, generator=generator, langevin_steps=langevin_steps))
        rec = x.flatten(1).pow(2).sum(1)
        noise = torch.zeros_like(rec) if use_mean else torch.randn(x.shape[0], generator=generator)
        return {"score": rec + noise, "rec": rec, "ebm": noise, "prior/1": torch.zeros_like(rec)}


def test_a_minimal_scored_model_is_scored_batched_and_averaged():
    x = torch.rand(7, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rec = x.flatten(1).pow(2).sum(1)
    m = _ScoreOnly(has_mean=True)
    assert isinstance(m, ScoredModel) and not isinstance(m, LayerwisePosterior)
    got = anomaly.anomaly_scores(m, x, use_mean=True, n_samples=5, batch_size=3, langevin_steps=4)
    torch.testing.assert_close(got, rec)
    # batches of 3, 3, 1; one call per batch (a posterior mean is drawn once, whatever n_samples), in eval mode
    # and without gradients; the arguments reach the learner
    assert [c["n"] for c in m.calls] == [3, 3, 1]
    assert all(not c["training"] and not c["grad"] and c["use_mean"] and c["langevin_steps"] == 4 for c in m.calls)
    assert m.training  # mode restored

    # seeded draws: a generator on the learner's device, the same seed the same scores; n_samples averages
    parts = anomaly.ood_scores(m, x, seed=3)
    assert set(parts) == {"score", "rec", "ebm", "prior/1"}
    assert torch.equal(anomaly.anomaly_scores(m, x, seed=3), parts["score"])
    assert not torch.equal(anomaly.anomaly_scores(m, x, seed=4), parts["score"])
    g = torch.Generator().manual_seed(3)
    draws = torch.stack([torch.randn(7, generator=g) for _ in range(4)])
    m.calls.clear()
    four = anomaly.anomaly_scores(m, x, n_samples=4, seed=3)
    assert len(m.calls) == 4
    torch.testing.assert_close(four, rec + draws.double().mean(0).float())
    # z by posterior Langevin (no posterior mean): use_mean does not cut the draws
    lang = _ScoreOnly(has_mean=False)
    anomaly.anomaly_scores(lang, x, use_mean=True, n_samples=3)
    assert len(lang.calls) == 3
    # the evaluation on top of the scores
    res = anomaly.evaluate_ood(m, x[:4] * 0.1, x[4:].sign(), use_mean=True)  # rec <= 0.16 in, = 16 out
    assert res["score"]["auroc"] == 1.0 and set(res) == set(parts)


class _LayerwiseOnly(nn.Module):
    """Only the LayerwisePosterior protocol: layer 1 = x's mean pixel (+ 1 when whitened), layer 2 = zeros;
    KLs 1 and 2 per image."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def layer_codes(self, x: Tensor, whiten: bool = False) -> list[Tensor]:
        m = x.flatten(1).mean(1, keepdim=True)
        return [m + 1.0 if whiten else m, torch.zeros(x.shape[0], 2)]

    def layer_kl(self, x: Tensor) -> list[Tensor]:
        return [torch.ones(x.shape[0]), 2.0 * torch.ones(x.shape[0])]


def test_a_minimal_layerwise_posterior_gives_the_metrics():
    x = torch.rand(5, 1, 2, 2)
    m = _LayerwiseOnly()
    assert isinstance(m, LayerwisePosterior) and not isinstance(m, ScoredModel)
    codes = metrics.layer_codes(m, x, batch_size=2)
    assert [c.shape for c in codes] == [(5, 1), (5, 2)]
    torch.testing.assert_close(codes[0][:, 0], x.flatten(1).mean(1))
    torch.testing.assert_close(metrics.layer_codes(m, x, batch_size=2, whiten=True)[0], codes[0] + 1.0)
    torch.testing.assert_close(metrics.layer_kl(m, x, batch_size=2), torch.tensor([1.0, 2.0]))
    with pytest.raises(ConfigError, match="ScoredModel"):
        anomaly.anomaly_scores(m, x)


# ----------------------------------------------------------------------------------------------
# No kind dispatch left in the two analyses
# ----------------------------------------------------------------------------------------------

LEARNER_CLASSES = {"HierarchicalLearner", "LEBMLearner", "ConditionalLearner", "CondJointLearner",
                   "UDiffusionLearner", "ConditionalHierarchy", "JointEBMPrior", "LayerEnergies"}


@pytest.mark.parametrize("module", ["anomaly.py", "metrics.py"])
def test_the_analyses_do_not_dispatch_on_the_learner_kind(module):
    src = (ANALYSIS / module).read_text()
    assert "_kind(" not in src and "_conditional_model" not in src
    tree = ast.parse(src)
    # the code (docstrings aside) names no learner or model class: it sees learners through the protocols only
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not used & LEARNER_CLASSES, f"{module} names {used & LEARNER_CLASSES}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("hasattr", "getattr"):  # duck typing on the learner
                raise AssertionError(f"{module}:{node.lineno}: {node.func.id}(...)")
            if node.func.id in ("isinstance", "issubclass"):
                names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)}
                assert not names & LEARNER_CLASSES, f"{module}:{node.lineno}: isinstance on {names & LEARNER_CLASSES}"
        if isinstance(node, ast.ImportFrom) and node.module:
            imported = {a.name for a in node.names}
            if node.module == "jebm_lite.training.learners":
                assert imported <= {"build_learner"}, f"{module}:{node.lineno}: imports {imported}"
            assert not node.module.startswith("jebm_lite.models"), f"{module}:{node.lineno}: imports {node.module}"


@pytest.mark.parametrize("key", list(KINDS))
def test_conditional_analyses_accept_exactly_the_conditional_hierarchies(key):
    """bottom_layer_gibbs / conditional_resample_stats read the hierarchy through ConditionalHierarchyModel
    (model, energies, prior_langevin): the conditional learners implement it, the architectural ones and the
    LEBM are refused with a TypeError naming the protocol."""
    from jebm_lite.analysis import hierarchy
    from jebm_lite.training.learner import ConditionalHierarchyModel

    learner = _build(key).eval()
    conditional = key.startswith("mnist_cond")
    assert isinstance(learner, ConditionalHierarchyModel) is conditional
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    if conditional:
        assert (learner.energies is None) is (key == "mnist_conditional")
        assert learner.prior_langevin is learner.cfg.prior_langevin
        assert hierarchy.bottom_layer_gibbs(learner, x, steps=2).shape == (3, 2, 1, 28, 28)
    else:
        with pytest.raises(TypeError, match="ConditionalHierarchyModel"):
            hierarchy.bottom_layer_gibbs(learner, x, steps=1)
