"""Learners: each loss sends gradients to exactly the parameters it should, and training learns."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import record_optimizer_steps

from jebm_lite.config import get_config
from jebm_lite.data import as_tensors, get_dataset
from jebm_lite.runtime import seed_everything
from jebm_lite.training.learners import build_learner


def _param_ids(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


@pytest.mark.parametrize("name", ["toy012_joint", "mnist_joint"])
def test_joint_gradient_routing(name):
    seed_everything(0)
    cfg = get_config(name, profile="ci")
    learner = build_learner(cfg, "cpu")
    seen = record_optimizer_steps(learner)
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    learner.train_step(x, 1)
    gi = _param_ids(learner.generator) | _param_ids(learner.inference)
    e = _param_ids(learner.prior)
    # Eqs. 11-12: the inference + generator loss reaches G and I (every parameter), never the EBM.
    assert seen["g"]["with_grad"] == gi
    # Eq. 10: the EBM loss reaches only the EBM, and adds nothing to the G / I gradients.
    assert e <= seen["e"]["with_grad"]
    assert seen["e"]["with_grad"] - e == gi  # the G / I gradients are the ones left from the G step ...
    for pid in gi:  # ... unchanged by the EBM backward pass and the prior Langevin chains
        assert torch.equal(seen["e"]["grads"][pid], seen["g"]["grads"][pid])


def test_vlae_has_no_ebm_step():
    cfg = get_config("toy012_vlae", profile="ci")
    learner = build_learner(cfg, "cpu")
    assert set(learner.optimizers) == {"g"} and learner.prior.energy is None
    seen = record_optimizer_steps(learner)
    m = learner.train_step(torch.rand(8, 1, 28, 28) * 2 - 1, 1)
    assert seen["g"]["with_grad"] == _param_ids(learner.generator) | _param_ids(learner.inference)
    assert "e_loss" not in m


def test_lebm_gradient_routing():
    seed_everything(0)
    cfg = get_config("toy012_lebm", profile="ci")
    learner = build_learner(cfg, "cpu")
    seen = record_optimizer_steps(learner)
    learner.train_step(torch.rand(8, 1, 28, 28) * 2 - 1, 1)
    g, e = _param_ids(learner.generator), _param_ids(learner.prior)
    # the posterior and prior Langevin chains leave no gradient on any parameter
    assert seen["g"]["with_grad"] == g
    assert seen["e"]["with_grad"] - g == e


def test_conditional_elbo_reaches_every_parameter():
    cfg = get_config("mnist_conditional", profile="ci", overrides=["model.z_dims=8,4,2", "model.hidden=32"])
    learner = build_learner(cfg, "cpu")
    seen = record_optimizer_steps(learner)
    m = learner.train_step(torch.rand(8, 1, 28, 28) * 2 - 1, 1)
    assert seen["g"]["with_grad"] == _param_ids(learner.model)
    assert [k for k in m if k.startswith("kl/")] == ["kl/1", "kl/2", "kl/3"]


def test_joint_learner_learns_on_real_digits(shared_data):
    """On 256 real 0/1/2 digits: reconstruction improves a lot, and the EBM learns to give the
    posterior codes a higher f (lower energy) than its own short-run prior samples."""
    seed_everything(0)
    cfg = get_config("toy012_joint", profile="ci", overrides={
        "optim.lr_e": 1e-3, "prior_langevin.steps": 20, "ebm.spectral_norm": False,
    })
    ds = get_dataset("mnist", root=shared_data, classes=(0, 1, 2), subset=256)
    x, _ = as_tensors(ds)
    learner = build_learner(cfg, "cpu")
    hist = []
    for step in range(1, 121):
        idx = torch.randint(0, x.shape[0], (64,))
        hist.append(learner.train_step(x[idx], step))
    first = sum(h["mse"] for h in hist[:10]) / 10
    last = sum(h["mse"] for h in hist[-10:]) / 10
    assert last < 0.5 * first
    gap = sum(h["energy/post"] - h["energy/prior"] for h in hist[-40:]) / 40
    assert gap > 0
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in hist)


def test_sample_and_encode_shapes():
    cfg = get_config("toy012_joint", profile="ci")
    learner = build_learner(cfg, "cpu")
    zs = learner.sample_latents(5, steps=3)
    assert [z.shape for z in zs] == [torch.Size([5, 2]), torch.Size([5, 2])]
    x = learner.sample(5, steps=3)
    assert x.shape == (5, 1, 28, 28) and x.abs().max() <= 1
    codes = learner.encode(x)
    assert [c.shape for c in codes] == [torch.Size([5, 2]), torch.Size([5, 2])]


def test_kl_warmup_scales_the_prior_term_in_a_train_step():
    """With model.kl_warmup the logged weight follows 1 - exp(-step / T) and lowers the loss below the
    plain ELBO's on the same batch and parameters (rec. identical, KL - f scaled down)."""
    import math

    from jebm_lite.config import apply_overrides

    x = torch.rand(8, 1, 28, 28) * 2 - 1
    losses = {}
    for warm in (0, 100):
        seed_everything(0)
        cfg = apply_overrides(get_config("mnist_vlae", profile="ci"), [f"model.kl_warmup={warm}"])
        learner = build_learner(cfg, "cpu")
        m = learner.train_step(x, 50)
        losses[warm] = (m["loss"], m["rec"])
        if warm:
            assert abs(m["kl_weight"] - (1 - math.exp(-0.5))) < 1e-9
        else:
            assert "kl_weight" not in m
    assert losses[0][1] == losses[100][1]
    assert losses[100][0] < losses[0][0]


def test_layer_norm_option_reaches_the_networks_and_trains():
    """model.norm=layer builds G and I with LayerNorm and a few joint train steps fit a fixed batch."""
    from jebm_lite.config import apply_overrides

    seed_everything(0)
    cfg = apply_overrides(get_config("mnist_joint", profile="ci"), ["model.norm=layer"])
    learner = build_learner(cfg, "cpu")
    for net in (learner.generator, learner.inference):
        assert any(isinstance(m, torch.nn.LayerNorm) for m in net.modules())
    x = torch.rand(16, 1, 28, 28) * 2 - 1
    recs = [float(learner.train_step(x, step)["rec"]) for step in range(1, 31)]
    assert all(math.isfinite(float(r)) for r in recs)
    assert sum(recs[-5:]) < 0.8 * sum(recs[:5]), recs


@pytest.mark.parametrize("name", ["toy012_joint", "toy012_vlae", "toy012_lebm", "mnist_conditional", "mnist_cond_joint"])
def test_every_learner_with_codes_implements_the_latent_model_protocol(name):
    """What analyses may call (training/learner.py: LatentModel): codes bottom to top, images of codes, prior
    samples, with the shapes the protocol promises."""
    from jebm_lite.training.learner import LatentModel

    torch.manual_seed(0)
    cfg = get_config(name, profile="ci", overrides=["prior_langevin.steps=2", "posterior_langevin.steps=2"])
    learner = build_learner(cfg, "cpu")
    assert isinstance(learner, LatentModel)
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    zs = learner.encode(x)
    assert [z.shape for z in zs] == [(3, d) for d in learner.z_dims]
    assert learner.decode(zs).shape == (3, 1, 28, 28)
    prior = learner.sample_latents(4)
    assert [z.shape for z in prior] == [(4, d) for d in learner.z_dims]
    imgs = learner.sample(4)
    assert imgs.shape == (4, 1, 28, 28) and imgs.min() >= -1 and imgs.max() <= 1
    assert learner.device == torch.device("cpu")


@pytest.mark.parametrize("name", ["toy012_joint", "toy012_vlae", "toy012_lebm", "mnist_conditional", "mnist_cond_joint"])
def test_layered_learners_redraw_only_the_layers_asked(name):
    """The LayeredModel protocol (what analysis/hierarchy.py calls): a redraw changes the layers asked and
    keeps every other layer of the state; the state decodes to images; the same generator seed gives the
    same redraw. A module without a layered state is refused with a message that says so."""
    from jebm_lite.analysis import hierarchy
    from jebm_lite.analysis.longrun import long_run_chain
    from jebm_lite.runtime import ConfigError
    from jebm_lite.training.learner import AmortizedPosterior, JointPriorModel, LayeredModel

    torch.manual_seed(0)
    cfg = get_config(name, profile="ci", overrides=["prior_langevin.steps=3"])
    learner = build_learner(cfg, "cpu")
    assert isinstance(learner, LayeredModel)
    assert isinstance(learner, AmortizedPosterior) == (name in ("toy012_joint", "toy012_vlae"))
    assert isinstance(learner, JointPriorModel) == name.startswith("toy012")
    if not name.startswith("toy012"):  # the long-run chains of Fig. 8 need a joint EBM prior
        with pytest.raises(ConfigError, match="needs a learner with a joint EBM prior"):
            long_run_chain(learner, n=2, steps=2, record_every=1)
    assert learner.state_kind == ("eps" if "conditional" in name or "cond_" in name else "codes")
    assert hierarchy.is_conditional(learner) == (learner.state_kind == "eps")
    state = learner.sample_state(5, torch.Generator().manual_seed(1))
    assert [s.shape for s in state] == [(5, d) for d in learner.z_dims]
    top = len(state) - 1  # the LEBM's only layer is its top layer
    new = hierarchy.resample_layers(learner, state, [-1], torch.Generator().manual_seed(2))
    again = hierarchy.resample_layers(learner, state, [top], torch.Generator().manual_seed(2))
    for i in range(top):
        assert torch.equal(new[i], state[i]), i  # exact: a kept layer is copied, never recomputed
    assert not torch.allclose(new[top], state[top])
    torch.testing.assert_close(new[top], again[top])
    assert hierarchy.decode_state(learner, new).shape == (5, *learner.image_shape)
    assert hierarchy.learner_image_shape(learner) == (1, 28, 28)

    with pytest.raises(TypeError, match="no layered state"):
        hierarchy.sample_state(torch.nn.Linear(2, 2), 2)
