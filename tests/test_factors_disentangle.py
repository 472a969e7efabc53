"""Tests of jebm_lite.data.factors (the rendered factor dataset) and jebm_lite.analysis.disentangle (MIG, MIG-sup,
latent traversals)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jebm_lite.analysis.disentangle import (
    discretize,
    disentanglement_report,
    factor_entropies,
    latent_traversal,
    mig,
    mig_sup,
    mutual_info_matrix,
)
from jebm_lite.data import get_loader
from jebm_lite.data.factors import (
    DEFAULT_FACTOR_SIZES,
    FACTOR_NAMES,
    FactorDataset,
    factor_sizes,
    factor_values,
    palette,
    render_factors,
    sample_factors,
    traverse_factor,
)
from jebm_lite.runtime import ConfigError

SIZES = factor_sizes()
K = {n: i for i, n in enumerate(FACTOR_NAMES)}


@pytest.fixture(scope="module")
def data():
    """3000 rendered images and their factors (about 0.2 s)."""
    return FactorDataset(3000, seed=7).tensors()


def _object_mask(x: torch.Tensor) -> torch.Tensor:
    """Pixels that differ from the corner (background) colour: (B, 3, S, S) -> (B, S, S) bool."""
    return (x - x[:, :, :1, :1]).abs().amax(1) > 0.05


def _centroid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = _object_mask(x).float()
    idx = torch.arange(x.shape[-1], dtype=torch.float32)
    area = m.sum((1, 2))
    return (m.sum(1) * idx).sum(1) / area, (m.sum(2) * idx).sum(1) / area


# ---------------------------------------------------------------------------------------------
# The factor dataset
# ---------------------------------------------------------------------------------------------


def test_sizes_and_names():
    assert FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y", "object_color", "bg_color")
    assert SIZES == tuple(DEFAULT_FACTOR_SIZES[n] for n in FACTOR_NAMES)
    assert factor_sizes({"orientation": 16, "bg_color": 1})[K["orientation"]] == 16
    with pytest.raises(ConfigError, match="unknown factor"):
        factor_sizes({"colour": 3})
    with pytest.raises(ConfigError, match="at most 4"):
        factor_sizes({"shape": 5})
    with pytest.raises(ConfigError):
        factor_sizes([4, 6])


def test_determinism_and_prefix_consistency():
    a, b = FactorDataset(200, seed=3), FactorDataset(200, seed=3)
    xa, va = a.tensors()
    xb, vb = b.tensors()
    assert torch.equal(xa, xb) and torch.equal(va, vb)
    # index i's factors depend on (seed, i) only
    assert torch.equal(FactorDataset(50, seed=3).factors, va[:50])
    assert torch.equal(sample_factors(20, seed=3, start=100), va[100:120])
    assert not torch.equal(FactorDataset(200, seed=4).factors, va)
    # items, batched items and the one-shot render agree
    x5, v5 = a[5]
    assert torch.equal(v5, va[5]) and torch.allclose(x5, xa[5])
    items = a.__getitems__([1, 2, 3])
    assert torch.allclose(torch.stack([x for x, _ in items]), xa[1:4])


def test_ranges_and_uniform_independent_factors(data):
    x, v = data
    assert x.shape == (3000, 3, 32, 32) and x.dtype == torch.float32
    assert v.shape == (3000, 7) and v.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    for k, size in enumerate(SIZES):
        counts = torch.bincount(v[:, k], minlength=size)
        assert counts.numel() == size, FACTOR_NAMES[k]
        expected = v.shape[0] / size
        assert (counts - expected).abs().max() < 0.3 * expected, (FACTOR_NAMES[k], counts.tolist())
    # pairwise independence: plug-in MI between factor columns is at the level of its small-sample bias
    from sklearn.metrics import mutual_info_score

    for i in range(7):
        for j in range(i + 1, 7):
            bias = (SIZES[i] - 1) * (SIZES[j] - 1) / (2 * v.shape[0])
            assert mutual_info_score(v[:, i], v[:, j]) < 3 * bias + 1e-3


def test_each_factor_changes_the_image():
    base = torch.tensor([1, 2, 5, 3, 4, 2, 1])
    for name in FACTOR_NAMES:
        imgs = render_factors(traverse_factor(base, name))
        assert imgs.shape == (SIZES[K[name]], 3, 32, 32)
        diff = (imgs[:, None] - imgs[None]).abs().flatten(2).amax(2)
        off_diag = diff[~torch.eye(len(imgs), dtype=torch.bool)]
        assert off_diag.min() > 0.05, f"two values of {name} render the same image"


def test_background_from_corner_and_object_colour_at_centre(data):
    x, v = data
    bg = (palette("background", SIZES[K["bg_color"]]) * 2 - 1)  # (4, 3) in [-1, 1]
    corners = torch.stack([x[:, :, 0, 0], x[:, :, 0, -1], x[:, :, -1, 0], x[:, :, -1, -1]])  # (4, N, 3)
    for c in corners:
        assert torch.equal(torch.cdist(c, bg).argmin(1), v[:, K["bg_color"]])
        assert (c - bg[v[:, K["bg_color"]]]).abs().max() < 1e-5
    # the pixel under the object's centre shows the object colour
    vals = factor_values(v)
    col = ((vals["cx"] + 1) * 16).floor().long().clamp(0, 31)
    row = ((vals["cy"] + 1) * 16).floor().long().clamp(0, 31)
    centre = x[torch.arange(len(x)), :, row, col]
    obj = palette("object", SIZES[K["object_color"]]) * 2 - 1
    assert torch.equal(torch.cdist(centre, obj).argmin(1), v[:, K["object_color"]])


def test_position_and_scale_move_monotonically():
    base = torch.tensor([0, 3, 6, 3, 3, 1, 0])
    for shape in range(4):
        base[0] = shape
        cx, cy = _centroid(render_factors(traverse_factor(base, "pos_x")))
        assert (cx.diff() > 0.5).all() and (cy - cy[0]).abs().max() < 0.3
        cx, cy = _centroid(render_factors(traverse_factor(base, "pos_y")))
        assert (cy.diff() > 0.5).all() and (cx - cx[0]).abs().max() < 0.3
        area = _object_mask(render_factors(traverse_factor(base, "scale"))).sum((1, 2))
        assert (area.diff() > 0).all()


def test_fixed_factor_render_errors_and_loader():
    ds = FactorDataset(64, seed=0, factors={"bg_color": 1, "orientation": 16}, image_size=24)
    x, v = ds.tensors()
    assert x.shape == (64, 3, 24, 24) and (v[:, K["bg_color"]] == 0).all() and v[:, K["orientation"]].max() < 16
    assert (x[:, :, 0, 0] - x[0, :, 0, 0]).abs().max() == 0  # one background colour
    assert render_factors(v[0], ds.factor_sizes, 24).shape == (3, 24, 24)
    with pytest.raises(ConfigError, match="out of range"):
        render_factors(torch.tensor([4, 0, 0, 0, 0, 0, 0]))
    xb, vb = next(iter(get_loader(ds, batch_size=16, seed=0)))
    assert xb.shape == (16, 3, 24, 24) and vb.shape == (16, 7)
    assert torch.allclose(xb, ds.render(vb))


# ---------------------------------------------------------------------------------------------
# MIG / MIG-sup
# ---------------------------------------------------------------------------------------------


def test_mig_is_one_for_the_factors_themselves_and_zero_for_noise(data):
    _, v = data
    h = factor_entropies(v)
    assert np.allclose(h, np.log(SIZES), atol=0.02)  # near-uniform factors
    mi = mutual_info_matrix(v.float(), v)
    assert mi.shape == (7, 7) and (mi >= -1e-12).all()
    assert np.allclose(np.diag(mi), h)  # 20 bins resolve every factor value: I(v_k; v_k) = H(v_k)
    assert mig(v.float(), v) > 0.98
    assert mig_sup(v.float(), v) > 0.98
    z = torch.randn(v.shape[0], 10, generator=torch.Generator().manual_seed(0))
    assert mig(z, v) < 0.03
    assert mig_sup(z, v) < 0.03


def test_scores_are_invariant_to_permuting_and_rescaling_units(data):
    _, v = data
    g = torch.Generator().manual_seed(1)
    z = torch.cat([v[:, :4].float() + 0.3 * torch.randn(len(v), 4, generator=g),
                   torch.randn(len(v), 3, generator=g), v[:, 4:].float() * 0.1], dim=1)
    perm = torch.randperm(z.shape[1], generator=g)
    scale = torch.rand(z.shape[1], generator=g) * 5 + 0.1
    assert mig(z[:, perm], v) == pytest.approx(mig(z, v), abs=1e-12)
    assert mig_sup(z[:, perm], v) == pytest.approx(mig_sup(z, v), abs=1e-12)
    assert mig(z * scale - 3, v) == pytest.approx(mig(z, v), abs=1e-9)  # equal-width bins: affine-invariant


def test_mig_sup_penalises_one_unit_for_two_factors_and_mig_two_units_for_one():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, 4, (4000,), generator=g), torch.randint(0, 4, (4000,), generator=g)
    f = torch.stack([a, b], 1)
    # one unit encodes both factors (16 values, resolved by 20 bins), the other is noise
    mixed = torch.stack([(4 * a + b).float(), torch.randn(4000, generator=g)], 1)
    assert mig(mixed, f) > 0.95  # MIG only asks that each factor has one best unit ...
    assert mig_sup(mixed, f) < 0.05  # ... MIG-sup asks that each unit has one factor
    # two copies of a, one of b: MIG-sup is perfect, MIG loses factor a entirely
    copies = torch.stack([a.float(), a.float(), b.float()], 1)
    assert mig_sup(copies, f) > 0.98
    assert mig(copies, f) == pytest.approx(0.5, abs=0.02)
    # inactive (constant) units are left out of MIG-sup with a threshold
    padded = torch.cat([copies, torch.zeros(4000, 3)], 1)
    assert mig_sup(padded, f) == pytest.approx(mig_sup(copies, f) / 2, abs=1e-9)
    assert mig_sup(padded, f, active_threshold=1e-2) == pytest.approx(mig_sup(copies, f), abs=1e-9)


def test_discretize_and_report(data):
    x, v = data
    zb = discretize(np.c_[np.arange(10.0), np.ones(10)], n_bins=5)
    assert zb[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and (zb[:, 1] == 0).all()
    rep = disentanglement_report([v[:, :3].float(), v[:, 3:].float()], v, FACTOR_NAMES)
    assert rep.best_layer.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert rep.best_unit.tolist() == list(range(7))
    assert rep.mig == pytest.approx(mig(v.float(), v)) and rep.table()[3]["layer"] == 2
    # hand-made image features: the centroid finds the position factors, the object area the scale
    cx, cy = _centroid(x)
    area = _object_mask(x).sum((1, 2)).float()
    rep = disentanglement_report(torch.stack([cx, cy, area], 1), v, FACTOR_NAMES)
    assert rep.best_unit[K["pos_x"]] == 0 and rep.best_unit[K["pos_y"]] == 1 and rep.best_unit[K["scale"]] == 2
    assert rep.best_score[K["pos_x"]] > 0.8 and rep.best_score[K["pos_y"]] > 0.8


# ---------------------------------------------------------------------------------------------
# Latent traversals
# ---------------------------------------------------------------------------------------------


class _LinearLearner(torch.nn.Module):
    """A stand-in learner: two layers of codes, decode = a fixed linear map of their concatenation."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.enc = torch.nn.Linear(12, 5)
        self.dec = torch.nn.Linear(5, 12)

    def encode(self, x):
        h = self.enc(x.flatten(1))
        return [h[:, :3], h[:, 3:]]

    def decode(self, zs):
        return self.dec(torch.cat(zs, 1)).reshape(-1, 3, 2, 2)


def test_latent_traversal_sets_one_unit():
    learner = _LinearLearner()
    x = torch.randn(4, 3, 2, 2)
    vals = [-2.0, 0.0, 1.5]
    out = latent_traversal(learner, x, layer=-1, dim=1, values=vals)
    assert out.shape == (4, 3, 3, 2, 2)
    with torch.no_grad():
        zs = learner.encode(x)
        for i, val in enumerate(vals):
            top = zs[1].clone()
            top[:, 1] = val
            assert torch.allclose(out[:, i], learner.decode([zs[0], top]), atol=1e-6)
        assert torch.allclose(latent_traversal(learner, x, 0, 2, [0.0], relative=True)[:, 0],
                              learner.decode(zs), atol=1e-6)
    with pytest.raises(IndexError):
        latent_traversal(learner, x, layer=2, dim=0, values=vals)


def test_latent_traversal_on_a_conditional_hierarchy_moves_eps():
    from jebm_lite.config import get_config
    from jebm_lite.training.learners import build_learner

    torch.manual_seed(0)
    cfg = get_config("mnist_conditional", profile="ci", overrides=["model.z_dims=4,3,2", "model.hidden=16"])
    learner = build_learner(cfg, "cpu").eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    out = latent_traversal(learner, x, layer=-1, dim=0, values=torch.linspace(-2, 2, 5))
    assert out.shape == (3, 5, 1, 28, 28) and out.abs().max() <= 1
    assert (out[:, 0] - out[:, -1]).abs().max() > 1e-4  # the top unit reaches the image
    with torch.no_grad():
        _, stats = learner.model.posterior(x, use_mean=True)
        x_mean = learner.model.decode(stats[0]["q_mu"])
    same = latent_traversal(learner, x, layer=1, dim=2, values=[0.0], relative=True)[:, 0]
    assert torch.allclose(same, x_mean, atol=1e-5)  # zero offset in eps-space reproduces the posterior mean


def test_latent_traversal_with_a_real_learner():
    from jebm_lite.config import get_config
    from jebm_lite.training.learners import build_learner

    torch.manual_seed(0)
    learner = build_learner(get_config("toy012_vlae", profile="ci"), "cpu")
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    out = latent_traversal(learner, x, layer=-1, dim=0, values=[-2.0, 2.0])
    assert out.shape == (2, 2, 1, 28, 28)
    zs = learner.encode(x)
    zs[-1] = zs[-1].clone()
    zs[-1][:, 0] = 2.0
    assert torch.allclose(out[:, 1], learner.decode(zs), atol=1e-5)


def test_factors_presets_train_joint_and_vlae_on_rendered_batches():
    """Paper Tab. 8 presets: the same networks (``factors_small``) with and without the EBM, fed with
    per-batch rendered images (``data.on_device=False``); a few steps lower the reconstruction error."""
    from jebm_lite.config import get_config
    from jebm_lite.runtime import seed_everything
    from jebm_lite.training.learners import build_learner
    from jebm_lite.training.load import training_data

    for name in ("factors_joint", "factors_vlae"):
        cfg = get_config(name, profile="ci")
        assert cfg.data.name == "factors" and not cfg.data.on_device and cfg.model.preset == "factors_small"
        assert (cfg.ebm.nef > 0) == (name == "factors_joint")
        seed_everything(0)
        lrn = build_learner(cfg, "cpu")
        assert lrn.z_dims == (3, 3, 3)
        ds = training_data(cfg)
        x = torch.stack([ds[i][0] for i in range(32)])
        assert x.shape == (32, 3, 32, 32)
        first = lrn.train_step(x, 1)["mse"]
        for step in range(2, 26):
            m = lrn.train_step(x, step)
        assert np.isfinite(float(m["loss"])) and float(m["mse"]) < float(first)
