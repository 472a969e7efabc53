"""Helpers added for chapters 2 (conditional hierarchy) and 3 (VLAE): jebm_lite.analysis.hierarchy, the per-layer
metrics hooks (layer_codes, layer_kl, layerwise_probe), the digit classifier and two viz helpers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from jebm_lite.analysis import hierarchy as H  # noqa: E402
from jebm_lite.analysis import metrics, viz  # noqa: E402
from jebm_lite.config import get_config  # noqa: E402
from jebm_lite.objectives import kl_analytic  # noqa: E402
from jebm_lite.runtime import seed_everything  # noqa: E402
from jebm_lite.training.learners import build_learner  # noqa: E402


def _conditional(z_dims=(6, 5, 4, 3), hidden=32, likelihood="bernoulli"):
    seed_everything(0)
    cfg = get_config("mnist_conditional", profile="ci",
                     overrides={"model.z_dims": z_dims, "model.hidden": hidden, "model.likelihood": likelihood})
    return build_learner(cfg, "cpu")


def _vlae(name="mnist_vlae", **over):
    seed_everything(0)
    return build_learner(get_config(name, profile="ci", overrides=over or None), "cpu")


# ----------------------------------------------------------------------------------------------
# layer groups, state, resampling
# ----------------------------------------------------------------------------------------------


def test_layer_groups_match_paper_fig1():
    assert H.layer_groups(6) == {"bottom": (0, 1), "middle": (2, 3), "top": (4, 5)}
    assert H.layer_groups(3, 3) == {"bottom": (0,), "middle": (1,), "top": (2,)}
    g = H.layer_groups(5)
    assert sum(g.values(), ()) == (0, 1, 2, 3, 4)  # a partition, bottom to top
    assert H.layer_groups(4, 4, names=("a",)) == {f"group {k + 1}": (k,) for k in range(4)}
    with pytest.raises(ValueError):
        H.layer_groups(3, 4)


def test_conditional_resampling_keeps_other_eps_and_layers_above():
    learner = _conditional()
    assert H.is_conditional(learner) and H.n_layers(learner) == 4
    g = torch.Generator().manual_seed(0)
    eps = H.sample_state(learner, 5, g)
    new = H.resample_layers(learner, eps, (1,), g)
    for i in (0, 2, 3):
        assert torch.equal(new[i], eps[i])
    assert not torch.allclose(new[1], eps[1])
    zs_old, _ = learner.model.sample(eps)
    zs_new, _ = learner.model.sample(new)
    # redrawing eps_2 changes z_2 and z_1 (below), never z_3, z_4 (above)
    assert torch.equal(zs_new[2], zs_old[2]) and torch.equal(zs_new[3], zs_old[3])
    assert not torch.allclose(zs_new[1], zs_old[1]) and not torch.allclose(zs_new[0], zs_old[0])
    # negative layer indices work
    top = H.resample_layers(learner, eps, (-1,), g)
    assert torch.equal(top[0], eps[0]) and not torch.allclose(top[3], eps[3])


def test_resample_grid_layout_and_zero_variance_for_no_layer():
    learner = _conditional()
    g = torch.Generator().manual_seed(1)
    state = H.sample_state(learner, 3, g)
    x = H.resample_grid(learner, (), n_resamples=4, state=state, generator=g)
    assert x.shape == (12, 1, 28, 28)
    rows = x.reshape(3, 4, -1)
    assert torch.allclose(rows, rows[:, :1].expand_as(rows), atol=1e-5)  # nothing redrawn: one image per row
    assert torch.allclose(rows[:, 0], H.decode_state(learner, state).reshape(3, -1), atol=1e-5)
    y = H.resample_grid(learner, (0,), n_resamples=4, state=state, generator=g).reshape(3, 4, -1)
    assert (y.var(dim=1).mean() > 0)


def test_resample_stats_on_a_generator_that_ignores_a_layer():
    learner = _vlae()
    # make g ignore z_1: the projection of the bottom code outputs zeros
    with torch.no_grad():
        for p in learner.generator.projections[0].parameters():
            p.zero_()
    g = torch.Generator().manual_seed(0)
    groups = {f"z{i + 1}": (i,) for i in range(3)}
    const = lambda x: torch.zeros(x.shape[0], 10)  # noqa: E731  a classifier that always says "0"
    st = H.resample_stats(learner, groups, n_contexts=6, n_resamples=5, classifier=const, generator=g,
                          batch_contexts=4)
    assert set(st) == {"z1", "z2", "z3", "all"}
    assert st["z1"]["pixel_var"] == pytest.approx(0.0, abs=1e-10)
    assert st["z3"]["pixel_var"] > 0 and st["all"]["pixel_var"] > 0
    assert st["all"]["pixel_var_frac"] == pytest.approx(1.0)
    assert all(v["class_change"] == 0.0 for v in st.values())
    # without a classifier there is no class_change entry
    st2 = H.resample_stats(learner, {"z3": (2,)}, n_contexts=2, n_resamples=3, generator=g)
    assert "class_change" not in st2["z3"]


def test_vlae_resampling_draws_standard_normal_and_keeps_others():
    learner = _vlae()
    g = torch.Generator().manual_seed(0)
    zs = H.sample_state(learner, 4000, g)
    assert all(z.shape == (4000, 2) for z in zs)
    new = H.resample_layers(learner, zs, (2,), g)
    assert torch.equal(new[0], zs[0]) and torch.equal(new[1], zs[1])
    assert new[2].mean().abs() < 0.06 and (new[2].std() - 1).abs() < 0.06
    assert H.learner_image_shape(learner) == (1, 28, 28)


def test_joint_resampling_uses_langevin_on_the_chosen_layers_only():
    learner = _vlae("mnist_joint", **{"prior_langevin.steps": 3})
    assert learner.prior.energy is not None
    g = torch.Generator().manual_seed(0)
    zs = [torch.randn(5, d, generator=g) for d in learner.z_dims]
    new = H.resample_layers(learner, zs, (1,), g)
    assert torch.equal(new[0], zs[0]) and torch.equal(new[2], zs[2])
    assert new[1].shape == zs[1].shape and not torch.allclose(new[1], zs[1])
    st = H.sample_state(learner, 3, g)
    assert [s.shape for s in st] == [(3, 2), (3, 2), (3, 2)]


# ----------------------------------------------------------------------------------------------
# manifold sweeps
# ----------------------------------------------------------------------------------------------


def test_sweep_codes_read_like_a_plot():
    c = H._sweep_codes(2.0, 3, torch.device("cpu")).reshape(3, 3, 2)
    assert torch.equal(c[0, 0], torch.tensor([-2.0, 2.0]))  # top left: first coord low, second high
    assert torch.equal(c[2, 2], torch.tensor([2.0, -2.0]))  # bottom right
    assert torch.equal(c[1, 1], torch.tensor([0.0, 0.0]))


def test_layer_sweep_changes_only_that_layer():
    learner = _vlae()
    g = torch.Generator().manual_seed(0)
    state = H.sample_state(learner, 2, g)
    x = H.layer_sweep(learner, state, 1, lim=2.0, n=4)
    assert x.shape == (16, 1, 28, 28)
    # tile (r, c) equals decoding the state with z_2 set to the tile's code
    code = H._sweep_codes(2.0, 4, torch.device("cpu"))[6:7]
    ref = learner.decode([state[0][:1], code, state[2][:1]])
    assert torch.allclose(x[6:7], ref, atol=1e-6)
    with pytest.raises(ValueError):
        H.layer_sweep(_conditional(), H.sample_state(_conditional(), 1), 0)  # 6-D layer: no 2-D sweep


def test_sweep_class_changes_counts():
    learner = _vlae()
    g = torch.Generator().manual_seed(0)
    const = lambda x: torch.zeros(x.shape[0], 10)  # noqa: E731
    out = H.sweep_class_changes(learner, const, n_contexts=2, n=3, generator=g)
    assert out == {k: {"distinct": 1.0, "changed": 0.0} for k in range(3)}

    def by_brightness(x):  # two "classes" split at the median brightness of the batch
        b = x.flatten(1).mean(1)
        return torch.stack([b, b.median() * torch.ones_like(b)], 1)

    out = H.sweep_class_changes(learner, by_brightness, layers=(0,), n_contexts=2, n=3, generator=g)
    assert set(out) == {0} and 1.0 <= out[0]["distinct"] <= 2.0 and 0.0 <= out[0]["changed"] <= 1.0


# ----------------------------------------------------------------------------------------------
# metrics hooks
# ----------------------------------------------------------------------------------------------


def test_layer_codes_and_kl_vlae():
    learner = _vlae()
    x = torch.rand(7, 1, 28, 28) * 2 - 1
    codes = metrics.layer_codes(learner, x, batch_size=3)
    enc = learner.encode(x)
    assert len(codes) == 3 and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(codes, enc))
    kl = metrics.layer_kl(learner, x, batch_size=3)
    mus, lvs = learner.posterior(x)
    ref = torch.stack([kl_analytic(m, lv).mean() for m, lv in zip(mus, lvs)])
    assert kl.shape == (3,) and torch.allclose(kl, ref.detach(), rtol=1e-4, atol=1e-5)


def test_layer_codes_and_kl_conditional():
    learner = _conditional()
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    codes = metrics.layer_codes(learner, x, batch_size=4)
    assert [c.shape for c in codes] == [(6, 6), (6, 5), (6, 4), (6, 3)]
    white = metrics.layer_codes(learner, x, batch_size=4, whiten=True)
    ref = learner.model.eps_from_z(codes)  # whitened means = the noise that reproduces the means
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(white, ref))
    assert torch.allclose(white[-1], codes[-1])  # the top prior is N(0, I)
    # the closed-form per-layer KL agrees with the ELBO's single-sample estimate on average
    torch.manual_seed(0)
    kl = torch.stack([metrics.layer_kl(learner, x) for _ in range(200)]).mean(0)
    with torch.no_grad():
        mc = torch.stack([torch.stack([k.mean() for k in learner.model.elbo(x)[1]["kl"]]) for _ in range(400)]).mean(0)
    assert (kl >= 0).all()
    assert torch.allclose(kl, mc, rtol=0.1, atol=0.05)


class _FakeCoder(nn.Module):
    """encode() gives layer 0 = the label (plus noise), layer 1 = pure noise."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def encode(self, x):
        y = x[:, 0, 0, 0]
        return [torch.stack([y, torch.randn_like(y) * 0.1], 1), torch.randn(x.shape[0], 2)]


def test_layerwise_probe_finds_the_informative_layer():
    torch.manual_seed(0)
    y = torch.randint(0, 3, (600,))
    x = torch.zeros(600, 1, 2, 2)
    x[:, 0, 0, 0] = y.float()
    res = metrics.layerwise_probe(_FakeCoder(), (x[:400], y[:400]), (x[400:], y[400:]), batch_size=100, epochs=20)
    assert len(res) == 2
    assert res[0].test_accuracy > 0.95
    assert res[1].test_accuracy < 0.55  # chance is 1/3


def test_digit_classifier_trains_and_caches(shared_data, tmp_path):
    cache = tmp_path / "clf.pt"
    net = metrics.digit_classifier(cache=str(cache), root=str(shared_data), epochs=1, subset=3000, device="cpu")
    assert cache.is_file()
    assert net.test_accuracy > 0.5 and not net.training  # 24 Adam steps; chance is 0.1
    again = metrics.digit_classifier(cache=str(cache), root=str(shared_data), epochs=1, subset=3000, device="cpu")
    assert again.test_accuracy == net.test_accuracy
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    assert torch.allclose(again(x), net(x))
    # another key retrains (a different seed gives different weights)
    other = metrics.digit_classifier(cache=str(cache), root=str(shared_data), epochs=1, subset=1000, seed=1,
                                     device="cpu")
    assert not torch.allclose(other(x), net(x))


def test_classifier_accuracy():
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert metrics.classifier_accuracy(net, x, torch.tensor([0, 1, 1]), batch_size=2) == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------
# viz
# ----------------------------------------------------------------------------------------------


def test_show_panels_and_plot_per_layer():
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    fig = viz.show_panels({"a": x, "b": x}, nrow=3, suptitle="t")
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "b"
    plt.close(fig)
    fig, ax = plt.subplots()
    viz.plot_per_layer(ax, [1.0, 2.0, 3.0], ylabel="KL", reference=[1.5, 1.5, 1.5])
    heights = [p.get_height() for p in ax.patches]
    assert heights == [1.0, 2.0, 3.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["$z_{1}$", "$z_{2}$", "$z_{3}$"]
    plt.close(fig)


def test_bottom_layer_gibbs_chain():
    learner = _conditional()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 28, 28) * 2 - 1
    torch.manual_seed(0)
    chain = H.bottom_layer_gibbs(learner, x0, 4, generator=g)
    assert chain.shape == (5, 3, 1, 28, 28)
    assert torch.equal(chain[0], x0)
    assert chain[1:].min() >= -1 and chain[1:].max() <= 1
    # with sample_x=False the chain feeds back the decoder mean: step 1 equals one posterior draw + decode
    torch.manual_seed(1)
    det = H.bottom_layer_gibbs(learner, x0, 1, sample_x=False)
    torch.manual_seed(1)
    zs, _ = learner.model.posterior(x0)
    assert torch.allclose(det[1], learner.model.decode(zs[0]), atol=1e-6)
    gauss = _conditional(likelihood="gaussian")
    assert H.bottom_layer_gibbs(gauss, x0, 2, generator=g).shape == (3, 3, 1, 28, 28)
    with pytest.raises(TypeError):
        H.bottom_layer_gibbs(_vlae(), x0, 1)


def test_resample_grid_include_context():
    learner = _vlae()
    g = torch.Generator().manual_seed(0)
    state = H.sample_state(learner, 2, g)
    x = H.resample_grid(learner, (2,), n_resamples=3, state=state, generator=g, include_context=True)
    assert x.shape == (8, 1, 28, 28)
    own = H.decode_state(learner, state)
    assert torch.allclose(x.reshape(2, 4, -1)[:, 0], own.reshape(2, -1), atol=1e-5)
