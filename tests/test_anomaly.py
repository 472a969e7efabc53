"""Anomaly / OOD detection (paper Sec. 5.4, Tabs. 3 and 7): the MNIST hold-out split on the real data, the
metrics on scorers of known quality, and the log-joint score on learners whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from jebm_lite import objectives as obj
from jebm_lite.analysis import anomaly
from jebm_lite.analysis.metrics import auprc, auroc
from jebm_lite.config import get_config
from jebm_lite.data import anomaly as anomaly_data
from jebm_lite.data import as_tensors, get_dataset
from jebm_lite.runtime import ConfigError, seed_everything
from jebm_lite.training.learners import build_learner
from jebm_lite.training.load import run_experiment

# ---------------------------------------------------------------------------------------------
# The split
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split1(shared_data):
    return anomaly_data.anomaly_split(1, root=shared_data)


def test_split_counts_match_the_protocol(split1, shared_data):
    tr = get_dataset("mnist", "train", root=shared_data)
    te = get_dataset("mnist", "test", root=shared_data)
    labels = torch.cat([tr.targets, te.targets]).numpy()
    n_ones = int((labels == 1).sum())
    assert n_ones == 6742 + 1135 == 7877  # MNIST's digit-1 count (train + test)
    c = split1.counts
    assert c["n_pooled"] == 70000 and c["n_anomalous"] == 7877 and c["n_normal"] == 62123
    assert c["n_train"] == len(split1.train) == int(0.8 * 62123) == 49698
    assert c["n_test_normal"] == 62123 - 49698 == 12425
    assert c["n_test"] == len(split1.test) == 12425 + 7877 == split1.test_labels.numel()
    # the protocol's shuffle: normal rows of the pooled train+test set, permuted by RandomState(42)
    normal = np.flatnonzero(labels != 1)
    expected = normal[np.random.RandomState(42).permutation(normal.size)]
    assert np.array_equal(split1.train_index.numpy(), expected[:49698])
    assert np.array_equal(split1.test_index[:12425].numpy(), expected[49698:])


def test_split_is_disjoint_labelled_and_holds_the_right_images(split1, shared_data):
    tr_idx, te_idx = split1.train_index, split1.test_index
    assert np.intersect1d(tr_idx.numpy(), te_idx.numpy()).size == 0
    assert torch.equal(torch.sort(torch.cat([tr_idx, te_idx])).values, torch.arange(70000))  # each image once
    assert not (split1.train.targets == 1).any()  # no anomaly in training
    assert torch.equal(split1.test_labels, (split1.test.targets == 1).long())  # label 1 = anomaly
    assert int(split1.test_labels.sum()) == 7877
    # rows are the pooled images (train split first, then test split)
    tr = get_dataset("mnist", "train", root=shared_data)
    te = get_dataset("mnist", "test", root=shared_data)
    pooled = torch.cat([tr.images, te.images])
    for j in (0, 1234, len(split1.train) - 1):
        assert torch.equal(split1.train.images[j], pooled[tr_idx[j]])
    assert torch.equal(split1.test.images[-1], pooled[te_idx[-1]])
    x = split1.test_images()
    assert x.shape == (20302, 1, 28, 28) and float(x.min()) == -1.0 and float(x.max()) == 1.0


def test_split_is_deterministic_and_seeded(split1, shared_data):
    again = anomaly_data.anomaly_split(1, root=shared_data)
    assert torch.equal(again.train_index, split1.train_index) and torch.equal(again.test_index, split1.test_index)
    other = anomaly_data.anomaly_split(1, root=shared_data, seed=0)
    assert not torch.equal(other.train_index, split1.train_index)
    four = anomaly_data.anomaly_split(4, root=shared_data)
    assert four.counts["n_anomalous"] == 5842 + 982 and not (four.train.targets == 4).any()
    for bad in (10, -1, 1.5, True):
        with pytest.raises(ConfigError, match="0..9"):
            anomaly_data.anomaly_split(bad, root=shared_data)


def test_anomaly_presets_and_training_data(split1, shared_data):
    cfgs = {m: get_config(f"mnist_anomaly_{m}", profile="ci") for m in ("joint", "vlae", "lebm")}
    assert {m: c.method for m, c in cfgs.items()} == {"joint": "joint", "vlae": "vlae", "lebm": "lebm"}
    assert all(c.data.hold_out == 1 for c in cfgs.values())
    cfg = get_config("mnist_anomaly_joint", profile="ci", overrides=[f"data.root={shared_data}", "data.hold_out=1"])
    data = anomaly_data.anomaly_training_data(cfg, device="cpu", split=split1)
    assert torch.equal(data, split1.train_images()[: cfg.data.subset])  # ci: the first 512 training normals
    four = get_config("mnist_anomaly_vlae", profile="ci", overrides=[f"data.root={shared_data}", "data.hold_out=4",
                                                                      "data.on_device=false"])
    ds = anomaly_data.anomaly_training_data(four)
    assert len(ds) == 512 and not (ds.targets == 4).any() and (ds.targets == 1).any()
    with pytest.raises(ConfigError, match="hold_out"):
        anomaly_data.anomaly_training_data(get_config("mnist_joint", profile="ci"))


# ---------------------------------------------------------------------------------------------
# Metrics on scorers of known quality
# ---------------------------------------------------------------------------------------------


def test_auprc_of_perfect_random_and_inverted_scorers():
    rng = np.random.default_rng(0)
    labels = (rng.random(20000) < 0.2).astype(int)
    perfect = anomaly.evaluate_scores(labels + 0.01 * rng.random(20000), labels)
    assert perfect == {"auprc": pytest.approx(1.0), "auroc": pytest.approx(1.0)}
    rand = anomaly.evaluate_scores(rng.random(20000), labels)
    assert rand["auprc"] == pytest.approx(labels.mean(), abs=0.02)  # a random scorer's AUPRC = the prevalence
    assert rand["auroc"] == pytest.approx(0.5, abs=0.02)
    assert auroc(-labels.astype(float), labels) == pytest.approx(0.0)
    assert auprc(torch.tensor([0.1, 0.9]), torch.tensor([0, 1])) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# The score on learners with a known answer
# ---------------------------------------------------------------------------------------------


class _Quadratic(nn.Module):
    """f(z) = -a ||z||^2: a known energy."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a
        self.w = nn.Parameter(torch.zeros(1))  # so that the prior has a device

    def forward(self, z):
        return -self.a * z.pow(2).sum(dim=1) + 0.0 * self.w


def test_score_is_the_negative_log_joint_with_each_prior():
    seed_everything(0)
    learner = build_learner(get_config("toy012_joint", profile="ci"), "cpu")
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    learner.prior.energy = _Quadratic(0.7)
    with anomaly.eval_mode(learner), torch.no_grad():
        mus, _ = learner.posterior(x)
        x_hat = learner.decode(mus)
    sigma = learner.cfg.model.sigma
    z = torch.cat(mus, 1)
    expected = -obj.log_joint(x, x_hat, mus, -0.7 * z.pow(2).sum(1), sigma)
    got = anomaly.anomaly_scores(learner, x, use_mean=True, batch_size=4)  # two batches
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-3)
    # f enters additively: with f = 0 (VLAE) the score drops by exactly a ||z||^2
    learner.prior.energy = None
    vlae = anomaly.anomaly_scores(learner, x, use_mean=True)
    assert torch.allclose(got - vlae, 0.7 * z.pow(2).sum(1), rtol=1e-5, atol=1e-3)
    # by hand: ||x - g||^2 / (2 s^2) + (D/2) log(2 pi s^2) + ||z||^2 / 2 + (d/2) log(2 pi)
    D, d = 784, z.shape[1]
    by_hand = ((x - x_hat) ** 2).flatten(1).sum(1) / (2 * sigma**2) + 0.5 * D * np.log(2 * np.pi * sigma**2) \
        + 0.5 * z.pow(2).sum(1) + 0.5 * d * np.log(2 * np.pi)
    assert torch.allclose(vlae, by_hand, rtol=1e-5, atol=1e-3)


def test_ood_parts_add_up_and_sampling_is_seeded():
    seed_everything(1)
    learner = build_learner(get_config("toy012_joint", profile="ci"), "cpu")
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    p = anomaly.ood_scores(learner, x, seed=3)
    assert set(p) == {"score", "rec", "ebm", "prior/1", "prior/2", "kl/1", "kl/2", "neg_elbo"}
    assert torch.allclose(p["score"], p["rec"] + p["ebm"] + p["prior/1"] + p["prior/2"], rtol=1e-5, atol=1e-3)
    with torch.no_grad(), anomaly.eval_mode(learner):
        mus, lvs = learner.posterior(x)
    assert torch.allclose(p["kl/2"], obj.kl_analytic(mus[1], lvs[1]), atol=1e-4)
    # z ~ q: the same seed gives the same draws, another seed others; n_samples averages draws
    assert torch.equal(anomaly.anomaly_scores(learner, x, seed=3), p["score"])
    assert not torch.equal(anomaly.anomaly_scores(learner, x, seed=4), p["score"])
    two = anomaly.anomaly_scores(learner, x, n_samples=2, seed=3)
    assert torch.isfinite(two).all() and not torch.equal(two, p["score"])
    assert learner.training  # modes restored


def test_lebm_scores_use_posterior_langevin():
    seed_everything(2)
    learner = build_learner(get_config("mnist_anomaly_lebm", profile="ci"), "cpu")
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    p = anomaly.ood_scores(learner, x, seed=0, langevin_steps=3)
    assert set(p) == {"score", "rec", "ebm", "prior/1"}  # no inference net, so no KL
    assert torch.isfinite(p["score"]).all()
    assert torch.allclose(p["score"], p["rec"] + p["ebm"] + p["prior/1"], rtol=1e-5, atol=1e-3)
    assert torch.equal(anomaly.anomaly_scores(learner, x, seed=0, langevin_steps=3), p["score"])
    # more Langevin steps climb log p(x, z): the score falls on average
    long = anomaly.anomaly_scores(learner, x, seed=0, langevin_steps=30)
    short = anomaly.anomaly_scores(learner, x, seed=0, langevin_steps=0)
    assert long.mean() < short.mean()


def test_trained_run_scores_noise_and_anomalies(split1, shared_data, tmp_path):
    """A short run on the split's normal digits (through load-or-train and its checkpoints) already ranks
    uniform noise as far more anomalous than real digits."""
    seed_everything(0)
    cfg = get_config("mnist_anomaly_vlae", profile="ci", overrides=[
        f"data.root={shared_data}", "model.preset=toy012", "model.hidden=64", "train.max_steps=60",
        "train.ckpt_every=20", "train.keep_ckpts=3"])
    learner, history, rd = run_experiment(cfg, run_dir=tmp_path / "run", device="cpu")
    losses = [r["loss"] for r in history if "loss" in r]
    assert losses[-1] < losses[0] and rd.is_finished()
    x_in, _ = as_tensors(get_dataset("mnist", "test", root=shared_data, subset=200))
    noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    res = anomaly.evaluate_ood(learner, x_in, noise, seed=0)
    assert res["score"]["auroc"] > 0.95 and res["neg_elbo"]["auroc"] > 0.95
    assert set(res["kl/1"]) == {"auroc", "auprc"}
    out = anomaly.evaluate_anomaly(learner, split1, limit=300, seed=0)
    assert out.scores.shape == (300,) and torch.isfinite(out.scores).all()
    assert out.auprc == pytest.approx(auprc(out.scores, out.labels))
    assert 0.0 < out.auprc <= 1.0 and out.as_row()["held_out"] == 1
    ck = anomaly.evaluate_checkpoints(rd, split1, last=10, limit=300, seed=0)
    assert ck["steps"] == [20, 40, 60] and len(ck["auprc"]) == 3
    assert ck["auprc"][-1] == pytest.approx(out.auprc)  # the last checkpoint is the trained learner
    assert ck["auprc_std"] == pytest.approx(float(np.std(ck["auprc"])))
