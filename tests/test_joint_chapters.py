"""Chapters 4 and 5: the gated merge, the two readings of hierarchical sampling, unit sweeps, Tab. 1 files."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from jebm_lite.analysis import hierarchy as H
from jebm_lite.config import get_config
from jebm_lite.experiments import latent_table as T
from jebm_lite.io import write_json_atomic
from jebm_lite.models.blocks import Gate
from jebm_lite.models.hierarchical import build_hierarchical, model_config_for
from jebm_lite.runtime import ConfigError, seed_everything
from jebm_lite.training.learners import build_learner
from jebm_lite.training.rundir import RunDir, config_diff

# ----------------------------------------------------------------------------------------------
# the gated merge (VLAE's gated add)
# ----------------------------------------------------------------------------------------------


def test_gate_starts_at_point_one_and_scales_the_lower_code():
    seed_everything(0)
    gen, _ = build_hierarchical(model_config_for("toy012", merge="gated"))
    gates = [m for m in gen.modules() if isinstance(m, Gate)]
    assert len(gates) == 1 and torch.allclose(gates[0].gate, torch.full_like(gates[0].gate, 0.1))
    z2 = torch.randn(4, 2)
    za, zb = torch.randn(4, 2), torch.randn(4, 2) * 3
    with torch.no_grad():
        assert not torch.allclose(gen([za, z2]), gen([zb, z2]))
        gates[0].gate.zero_()  # a closed gate: the bottom code no longer reaches the image
        assert torch.allclose(gen([za, z2]), gen([zb, z2]))


def test_gated_spatial_merge_has_one_gate_per_channel():
    gen, _ = build_hierarchical(model_config_for("toy012_spatial", merge="gated"))
    gate = next(m for m in gen.modules() if isinstance(m, Gate)).gate
    assert gate.shape == (32, 1, 1)
    assert gen(torch.randn(3, 4)).shape == (3, 1, 28, 28)


def test_mnist_family_presets_use_the_gate():
    for name in ("mnist_joint", "mnist_vlae", "toy012_joint", "fmnist_joint"):
        assert get_config(name, profile="ci").model.merge == "gated"
    assert get_config("toy012_lebm", profile="ci").model.merge is None  # one layer: nothing to merge


# ----------------------------------------------------------------------------------------------
# hierarchical sampling: (a) swap vs (b) conditional redraw
# ----------------------------------------------------------------------------------------------


def _learner(name: str):
    seed_everything(0)
    return build_learner(get_config(name, profile="ci"), "cpu").eval()


def test_swap_grid_pastes_donor_codes_and_keeps_the_rest():
    learner = _learner("mnist_joint")
    g = torch.Generator().manual_seed(0)
    state = H.sample_state(learner, 3, g)
    donors = H.sample_state(learner, 4, g)
    x = H.swap_grid(learner, (1,), state=state, donors=donors, include_context=True)
    assert x.shape == (3 * 5, 1, 28, 28)
    grid = x.reshape(3, 5, 1, 28, 28)
    for r in range(3):
        assert torch.allclose(grid[r, 0], learner.decode([s[r:r + 1] for s in state])[0])
        for c in range(4):
            codes = [state[0][r:r + 1], donors[1][c:c + 1], state[2][r:r + 1]]
            assert torch.allclose(grid[r, c + 1], learner.decode(codes)[0], atol=1e-6)


def test_swap_reading_of_resample_stats_and_its_errors():
    learner = _learner("mnist_joint")
    clf = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    st = H.resample_stats(learner, {"z_1": (0,), "z_3": (2,)}, 4, 3, classifier=clf,
                          generator=torch.Generator().manual_seed(0), reading="swap")
    assert set(st) == {"z_1", "z_3", "all"} and all(0 <= v["class_change"] <= 1 for v in st.values())
    with pytest.raises(ValueError, match="reading"):
        H.resample_stats(learner, {"z_1": (0,)}, 2, 2, reading="gibbs")
    cond = build_learner(get_config("mnist_conditional", profile="ci"), "cpu")
    with pytest.raises(ValueError, match="architectural"):
        H.resample_stats(cond, {"z_1": (0,)}, 2, 2, reading="swap")


# ----------------------------------------------------------------------------------------------
# unit sweeps (Figs. 2 and 6, measured)
# ----------------------------------------------------------------------------------------------


class _SignLearner(nn.Module):
    """decode([z1, z2]) = an image whose mean is z2[:, 0] (the 'class') and whose left half is z1[:, 0];
    a LayeredModel with an N(0, I) prior on two 2-D layers."""

    z_dims = (2, 2)
    state_kind = "codes"
    image_shape = (1, 4, 4)
    device = torch.device("cpu")

    def decode(self, zs):
        z1, z2 = zs
        x = torch.zeros(z1.shape[0], 1, 4, 4)
        x[:, :, :, 2:] = torch.tanh(z2[:, 0]).view(-1, 1, 1, 1)
        x[:, :, :, :2] = 0.5 * torch.tanh(z1[:, 0]).view(-1, 1, 1, 1)
        return x

    decode_state = decode

    def encode(self, x):  # part of the protocol; the unit sweep never encodes images
        raise NotImplementedError("the _SignLearner test double has no images to encode")

    def sample_latents(self, n):
        return self.sample_state(n)

    def sample(self, n):
        return self.decode(self.sample_latents(n))

    def sample_state(self, n, generator=None):
        return [torch.randn(n, d, generator=generator) for d in self.z_dims]

    def resample_layers(self, state, layers, generator=None):
        return [torch.randn(s.shape, generator=generator) if i in layers else s for i, s in enumerate(state)]


def _sign_classifier(x):
    right = x[:, 0, :, 2:].mean(dim=(1, 2))
    return torch.stack([-right, right], dim=1)  # class 1 iff the right half is positive


def test_unit_sweep_stats_tells_a_class_unit_from_a_style_unit():
    learner = _SignLearner()
    bases = [torch.randn(50, 2), torch.randn(50, 2)]
    vals = torch.linspace(-2, 2, 9)
    top = H.unit_sweep_stats(learner, bases, _sign_classifier, layer=1, unit=0, values=vals)
    bottom = H.unit_sweep_stats(learner, bases, _sign_classifier, layer=0, unit=0, values=vals)
    unused = H.unit_sweep_stats(learner, bases, _sign_classifier, layer=0, unit=1, values=vals)
    assert top["changed"] == 1.0 and top["changes"] == 1.0 and top["distinct"] == 2.0
    assert bottom["changed"] == 0.0 and bottom["distinct"] == 1.0 and bottom["pix_same"] > 0.01
    assert unused["changed"] == 0.0 and unused["pix_same"] == 0.0


# ----------------------------------------------------------------------------------------------
# Tab. 1: result files -> table
# ----------------------------------------------------------------------------------------------


def _record(ds, me, seed, acc):
    return {"dataset": ds, "method": me, "seed": seed, "profile": "cpu", "accuracy": acc}


def test_summarise_mean_std_paper_and_rise():
    recs = [_record("mnist", "joint", s, [30 + s, 50 + s, 70 + s]) for s in range(3)]
    recs += [_record("mnist", "vlae", s, [40.0, 60.0, 50.0]) for s in range(3)]
    rows = T.summarise(recs)
    assert len(rows) == 6
    r = next(r for r in rows if r["method"] == "joint" and r["layer"] == 3)
    assert r["mean"] == pytest.approx(71.0) and r["std"] == pytest.approx(1.0) and r["n_seeds"] == 3
    assert r["paper"] == pytest.approx(67.64) and r["diff"] == pytest.approx(71.0 - 67.64)
    assert T.rises_bottom_to_top(rows, "mnist", "joint")
    assert not T.rises_bottom_to_top(rows, "mnist", "vlae")
    md = T.table_markdown(rows)
    assert "71.0 ± 1.0" in md and "67.6" in md and "VLAE" in md


def test_load_results_reads_only_the_files(tmp_path):
    for s in (0, 1):
        write_json_atomic(T.result_path(tmp_path, "fmnist", "vlae", s, "cpu"), _record("fmnist", "vlae", s, [1.0, 2.0, 3.0]))
    write_json_atomic(T.result_path(tmp_path, "fmnist", "vlae", 0, "full"), {**_record("fmnist", "vlae", 0, [9.0] * 3),
                                                                         "profile": "full"})
    assert len(T.load_results(tmp_path)) == 3
    assert [r["seed"] for r in T.load_results(tmp_path, profile="cpu")] == [0, 1]


def test_cell_config_errors():
    with pytest.raises(ConfigError, match="dataset"):
        T.cell_config("cifar", "joint", 0, "ci")
    with pytest.raises(ConfigError, match="method"):
        T.cell_config("mnist", "lebm", 0, "ci")
    assert T.cell_config("fmnist", "vlae", 2, "ci").train.seed == 2


def test_run_cell_end_to_end_writes_a_record_and_reuses_it(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("JEBM_DATA", str(shared_data))
    over = ["train.max_steps=4", "data.subset=200"]
    rec = T.run_cell("mnist", "vlae", 0, "ci", results_dir=tmp_path, overrides=over, probe_epochs=1,
                     test_subset=300, device="cpu")
    path = T.result_path(tmp_path, "mnist", "vlae", 0, "ci")
    assert path.exists() and json.loads(path.read_text())["accuracy"] == rec["accuracy"]
    assert len(rec["accuracy"]) == 3 and rec["probe"]["n_train"] == 200 and rec["probe"]["n_test"] == 300
    assert rec["train_steps"] == 4 and rec["config"]["train"]["seed"] == 0

    def boom(*a, **k):
        raise AssertionError("a finished cell must not be trained again")

    monkeypatch.setattr(T, "cell_run", boom)
    assert T.run_cell("mnist", "vlae", 0, "ci", results_dir=tmp_path, overrides=over)["accuracy"] == rec["accuracy"]


def test_fit_and_val_splits_partition_the_training_set(shared_data):
    from jebm_lite.data import as_tensors, get_dataset

    train = as_tensors(get_dataset("mnist", "train", root=shared_data))
    fit = as_tensors(get_dataset("mnist", "fit", root=shared_data))
    val = as_tensors(get_dataset("mnist", "val", root=shared_data))
    assert len(fit[1]) == 50_000 and len(val[1]) == 10_000
    # slices of the same stored images (no arithmetic): exact equality holds on any machine
    assert torch.equal(torch.cat([fit[0], val[0]]), train[0]) and torch.equal(torch.cat([fit[1], val[1]]), train[1])
    assert sorted(val[1].unique().tolist()) == list(range(10))


def test_reference_presets_share_networks_and_follow_the_reference_ebm():
    for ds in ("mnist", "fmnist"):
        j, v = T.cell_config(ds, "joint", 0, "cpu", recipe="ref"), T.cell_config(ds, "vlae", 0, "cpu", recipe="ref")
        assert j.ebm.spectral_norm and j.ebm.layers == 4 and j.ebm.nef == 50 and j.optim.betas_e == (0.0, 0.9)
        assert v.method == "vlae" and v.ebm.nef == 0 and j.model == v.model and j.optim.lr_g == v.optim.lr_g
        assert j.train.max_steps >= 30_000
        cv = T.cell_config(ds, "joint", 0, "cpu", recipe="ref", validation=True)
        assert cv.data.split == "fit"


def _sweep_rec(method, lr, norm, top, split="val"):
    acc = None if top is None else [40.0, 45.0, top]
    return {"method": method, "accuracy": acc, "probe": {"split": split},
            "config": {"model": {"norm": norm}, "optim": {"lr_e": lr}}}


def test_selection_rule_breaks_ties_to_the_smaller_rate_and_keeps_layernorm_only_for_a_clear_gain():
    recs = [_sweep_rec("joint", 2e-6, "none", 50.0), _sweep_rec("joint", 2e-5, "none", 50.8),
            _sweep_rec("joint", 2e-4, "none", 48.0), _sweep_rec("vlae", 0, "none", 44.0),
            _sweep_rec("joint", 2e-6, "layer", 51.0), _sweep_rec("joint", 2e-5, "layer", None),  # diverged
            _sweep_rec("joint", 2e-4, "layer", 53.0), _sweep_rec("vlae", 0, "layer", 44.5)]
    c = T.select_setting(recs)
    assert c["scores"]["none"]["joint"][2e-5] == 50.8
    # none: 2e-6 is within 1 point of the best (50.8): the smaller rate wins. layer: 2e-4 (53.0).
    # pair means: none (50.0 + 44.0) / 2 = 47.0, layer (53.0 + 44.5) / 2 = 48.75: gain 1.75 < 2 -> none
    assert c["norm"] == "none" and c["lr_e"] == 2e-6
    recs[-1] = _sweep_rec("vlae", 0, "layer", 46.0)  # gain 2.5 -> layer, with its own best rate
    c = T.select_setting(recs)
    assert c["norm"] == "layer" and c["lr_e"] == 2e-4
    with pytest.raises(ValueError, match="validation"):
        T.select_setting([_sweep_rec("joint", 2e-6, "none", 50.0, split="test")])


def test_sweep_grid_covers_every_rate_and_norm():
    grid = T.sweep_settings("mnist")
    joint = [o for _, m, o in grid if m == "joint"]
    assert len(joint) == len(T.SWEEP_LR_E) * len(T.SWEEP_NORMS) and len([1 for _, m, _ in grid if m == "vlae"]) == 2
    assert len({name for name, _, _ in grid}) == len(grid)


# ----------------------------------------------------------------------------------------------
# config compatibility
# ----------------------------------------------------------------------------------------------


def test_a_field_added_later_does_not_orphan_old_runs(tmp_path):
    cfg = get_config("toy012_joint", profile="ci")
    stored = json.loads(json.dumps(__import__("jebm_lite.config", fromlist=["to_dict"]).to_dict(cfg)))
    del stored["data"]["hold_out"]  # as written before the field existed
    assert config_diff(stored, cfg) == []
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    rd.config_path.write_text(json.dumps(stored))
    rd.check_config(cfg)  # no ConfigError
    stored["data"]["subset"] = 7
    rd.config_path.write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match="data.subset"):
        rd.check_config(cfg)


def test_hold_out_is_validated():
    with pytest.raises(ConfigError, match="hold_out"):
        get_config("mnist_joint", profile="ci", overrides=["data.hold_out=12"])
    with pytest.raises(ConfigError, match="hold_out"):
        get_config("fmnist_joint", profile="ci", overrides=["data.hold_out=3"])


def test_time_train_step_leaves_the_learner_unchanged():
    from jebm_lite.analysis.metrics import time_train_step

    learner = _learner("toy012_joint")  # in eval mode
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    opt_before = learner.optimizers["g"].state_dict()["state"]
    threads = torch.get_num_threads()
    t = time_train_step(learner, torch.rand(8, 1, 28, 28) * 2 - 1, repeat=1, number=1)
    assert t > 0 and torch.get_num_threads() == threads and not learner.training
    after = learner.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert learner.optimizers["g"].state_dict()["state"] == opt_before == {}


def test_svhn_row_trains_and_probes_both_priors_on_a_synthetic_svhn_file(tmp_path, monkeypatch):
    """Tab. 1's SVHN row end to end (ci profile) on small files in SVHN's own .mat format: 4 layers per record,
    the paper's numbers beside them, the same networks for both priors."""
    import numpy as np
    import scipy.io

    root = tmp_path / "data" / "svhn"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("extra", 96), ("test", 40)):
        X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": X, "y": y})
    monkeypatch.setenv("JEBM_DATA", str(tmp_path / "data"))
    recs = [T.run_cell("svhn", m, 0, "ci", results_dir=tmp_path / "res", probe_epochs=1, device="cpu")
            for m in ("joint", "vlae")]
    for r in recs:
        assert len(r["accuracy"]) == 4 and all(0.0 <= a <= 100.0 for a in r["accuracy"])
        assert r["config"]["data"]["name"] == "svhn" and r["probe"]["n_test"] == 40
    j, v = (T.cell_config("svhn", m, 0, "ci") for m in ("joint", "vlae"))
    assert j.model == v.model and j.ebm.nef == 50 and v.ebm.nef == 0 and j.optim.lr_e == 2e-6
    rows = T.summarise(T.load_results(tmp_path / "res"))
    assert {r["paper"] for r in rows if r["layer"] == 4} == {86.63, 52.14}
    with pytest.raises(ConfigError, match="validation"):
        T.cell_config("svhn", "joint", 0, "ci", validation=True)


def test_fig4_record_quantifies_each_layer_for_both_readings(tmp_path, shared_data, monkeypatch):
    from jebm_lite.experiments import fig4

    monkeypatch.setenv("JEBM_DATA", str(shared_data))
    rec = fig4.run_cell("mnist", "joint", 0, "ci", results_dir=tmp_path, recipe="ref", n_contexts=4, n_resamples=3,
                        device="cpu")
    assert rec["layers"] == 3 and set(rec["readings"]) == {"resample", "swap"}
    for reading in rec["readings"].values():
        assert set(reading) == {"z1", "z2", "z3", "all"}
        for k in ("z1", "z2", "z3"):
            assert 0.0 <= reading[k]["class_change"] <= 1.0 and reading[k]["pixel_var"] >= 0.0
        assert abs(reading["all"]["pixel_var_frac"] - 1.0) < 1e-6
    assert fig4.load_results(tmp_path)[0]["readings"] == rec["readings"]
    assert fig4.run_cell("mnist", "joint", 0, "ci", results_dir=tmp_path, recipe="ref") == rec  # stored: reused
    assert rec["train_time_s"] > 0  # which training was scored: the run's wall time, for rundir.scored_from


def test_scored_from_tells_the_scored_training_from_a_retrained_one():
    from jebm_lite.training.rundir import scored_from

    rec = {"train_time_s": 3101.089}
    assert scored_from(rec, {"wall_time_s": 3101.089, "steps": 30000})
    assert not scored_from(rec, {"wall_time_s": 3099.5, "steps": 30000})  # the same cell, trained again
    assert not scored_from({}, {"wall_time_s": 3101.089})                   # an older record without the link
    assert not scored_from({"train_time_s": None}, {"wall_time_s": None})   # a diverged run links to nothing


def test_paired_differences_pair_seeds_and_give_a_t_interval():
    def rec(method, seed, acc, ds="mnist"):
        return {"dataset": ds, "method": method, "seed": seed, "accuracy": acc}

    recs = [rec("joint", 0, [30.0, 50.0, 70.0]), rec("vlae", 0, [31.0, 45.0, 60.0]),
            rec("joint", 1, [32.0, 52.0, 66.0]), rec("vlae", 1, [30.0, 50.0, 62.0]),
            rec("joint", 2, [31.0, 51.0, 68.0]), rec("vlae", 2, None),  # diverged: seed 2 is not paired
            rec("joint", 3, [30.0, 50.0, 64.0])]  # no VLAE partner
    rows = {r["layer"]: r for r in T.paired_differences(recs)}
    assert rows[3]["seeds"] == [0, 1] and rows[3]["diffs"] == [10.0, 4.0] and rows[3]["mean"] == 7.0
    half = 12.706204736174707 * (18.0 ** 0.5) / 2 ** 0.5  # t(0.975, 1) * sd / sqrt(n), sd = sqrt(18)
    assert rows[3]["ci_low"] == pytest.approx(7.0 - half) and rows[3]["ci_high"] == pytest.approx(7.0 + half)
    one = T.paired_differences(recs[:2])
    assert one[0]["ci_low"] is None and one[0]["diffs"] == [-1.0]


# ----------------------------------------------------------------------------------------------
# Chapter 4's verdicts: does the Tab. 1 claim hold? (paired over seeds)
# ----------------------------------------------------------------------------------------------


def _pairs(ds, joint_top, vlae_top, joint_low=(30.0, 50.0)):
    """Records of both priors, one seed per pair of top-layer accuracies."""
    recs = []
    for s, (j, v) in enumerate(zip(joint_top, vlae_top)):
        recs.append(_record(ds, "joint", s, [*joint_low, j]))
        recs.append(_record(ds, "vlae", s, [35.0, 55.0, v]))
    return recs


def test_verdict_holds_when_the_paired_interval_is_above_zero():
    recs = _pairs("mnist", [70.0, 72.0, 71.0], [60.0, 61.0, 59.0])
    v = T.verdict(recs, "mnist")
    assert v["outcome"] == "holds" and v["n_pairs"] == 3 and v["layer"] == 3 and v["seeds"] == [0, 1, 2]
    assert v["diff"] == pytest.approx(11.0) and 0 < v["ci_low"] < 11.0 < v["ci_high"]
    assert v["joint_rises"] and v["joint_means"] == pytest.approx([30.0, 50.0, 71.0])
    assert v["paper_diff"] == pytest.approx(67.64 - 52.08)
    assert v["text"].startswith("MNIST, 3 paired seeds: the claim holds") and "+11.0 points" in v["text"]
    assert "paper +15.6" in v["text"] and "rises strictly from z1 to z3" in v["text"]
    assert v["text"].endswith(".") and "\n" not in v["text"]


def test_verdict_reversed_not_shown_and_the_rise():
    rev = T.verdict(_pairs("fmnist", [50.0, 51.0, 52.0], [60.0, 62.0, 61.0], joint_low=(60.0, 40.0)), "fmnist")
    assert rev["outcome"] == "reversed" and rev["ci_high"] < 0 and not rev["joint_rises"]
    assert "the claim is reversed" in rev["text"] and "does not rise strictly" in rev["text"]
    assert rev["text"].startswith("Fashion-MNIST, 3 paired seeds")
    wide = T.verdict(_pairs("mnist", [70.0, 50.0, 62.0], [60.0, 60.0, 60.0]), "mnist")
    assert wide["outcome"] == "not shown" and wide["ci_low"] < 0 < wide["ci_high"]
    assert "includes 0" in wide["text"]
    # the level is passed through
    assert T.verdict(_pairs("mnist", [70.0, 72.0, 71.0], [60.0, 61.0, 59.0]), "mnist", level=0.99)["level"] == 0.99


def test_verdict_with_fewer_than_two_seeds_says_it_cannot_test():
    one = T.verdict(_pairs("mnist", [62.6], [64.3]), "mnist")
    assert one["outcome"] == "untested" and one["n_pairs"] == 1 and one["ci_low"] is None
    assert one["diff"] == pytest.approx(-1.7) and "cannot test" in one["text"] and "one paired seed" in one["text"]
    # seed 1 of VLAE diverged: only seed 0 pairs
    recs = _pairs("mnist", [62.6, 60.0], [64.3, 61.0])
    recs[-1] = {**recs[-1], "accuracy": None}
    assert T.verdict(recs, "mnist")["n_pairs"] == 1
    lone = T.verdict([_record("mnist", "joint", 0, [30.0, 50.0, 70.0])], "mnist")
    assert lone["outcome"] == "untested" and lone["n_pairs"] == 0 and lone["diff"] is None
    assert "no paired seed" in lone["text"]
    with pytest.raises(ValueError, match="svhn"):
        T.verdict(recs, "svhn")
    for v in (one, lone):
        assert v["outcome"] in T.OUTCOMES


def test_t_interval_and_comparison_rows():
    m, lo, hi = T.t_interval([10.0, 4.0])
    half = 12.706204736174707 * 18.0 ** 0.5 / 2 ** 0.5
    assert (m, lo, hi) == (7.0, pytest.approx(7.0 - half), pytest.approx(7.0 + half))
    assert T.t_interval([3.0]) == (3.0, None, None)
    plo, phi = T.t_prediction_interval([10.0, 4.0])  # one new value: wider by sqrt(n + 1) than the mean's
    assert (plo, phi) == (pytest.approx(7.0 - half * 3 ** 0.5), pytest.approx(7.0 + half * 3 ** 0.5))
    assert T.t_prediction_interval([3.0]) == (None, None)
    with pytest.raises(ValueError):
        T.t_interval([])
    assert T.t_quantile(2) == pytest.approx(12.706204736174707)  # the multiplier used above
    assert T.t_quantile(5) == pytest.approx(2.7764451051977987)
    assert T.t_quantile(5, 0.99) > T.t_quantile(5) > T.t_quantile(30) > 1.96
    with pytest.raises(ValueError, match="n >= 2"):
        T.t_quantile(1)
    recs = _pairs("mnist", [70.0, 72.0], [60.0, 62.0]) + [_record("fmnist", "joint", 0, [1.0, 2.0, 3.0])]
    rows = T.comparison_rows(recs)
    assert [(r["dataset"], r["layer"]) for r in rows] == [("mnist", 1), ("mnist", 2), ("mnist", 3)]  # fmnist: no VLAE
    top = rows[-1]
    assert top["joint_mean"] == 71.0 and top["vlae_mean"] == 61.0 and top["n_pairs"] == 2
    assert top["diff_mean"] == 10.0 and top["ci_low"] is not None and top["joint_paper"] == pytest.approx(67.64)
    assert top["paper_diff"] == pytest.approx(67.64 - 52.08) and top["n_layers"] == 3


def _fig4_record(ds, method, seed, top_change, layers=3):
    reading = {f"z{i + 1}": {"pixel_var": 0.01, "pixel_var_frac": 0.3, "class_change": 0.2} for i in range(layers)}
    reading[f"z{layers}"] = {"pixel_var": 0.01, "pixel_var_frac": 0.5, "class_change": top_change}
    reading["all"] = {"pixel_var": 0.02, "pixel_var_frac": 1.0, "class_change": 0.9}
    return {"dataset": ds, "method": method, "seed": seed, "layers": layers,
            "readings": {"resample": reading, "swap": reading}}


def test_fig4_top_layer_contrast_pairs_seeds():
    from jebm_lite.experiments import fig4

    recs = [_fig4_record("mnist", "joint", s, c) for s, c in enumerate((0.80, 0.78, 0.82))]
    recs += [_fig4_record("mnist", "vlae", s, c) for s, c in enumerate((0.60, 0.61, 0.59))]
    hi = fig4.top_layer_contrast(recs, "mnist")
    assert hi["outcome"] == "joint higher" and hi["n_pairs"] == 3 and hi["layer"] == "z3"
    assert hi["diff"] == pytest.approx(20.0) and hi["joint"] == pytest.approx(80.0) and hi["ci_low"] > 0
    assert "controls more" in hi["text"] and hi["text"].startswith("MNIST, 3 paired seeds")
    swapped = [{**r, "method": "vlae" if r["method"] == "joint" else "joint"} for r in recs]
    assert fig4.top_layer_contrast(swapped, "mnist", reading="swap")["outcome"] == "joint lower"
    noisy = [_fig4_record("mnist", "joint", s, c) for s, c in enumerate((0.9, 0.5, 0.7))]
    noisy += [_fig4_record("mnist", "vlae", s, 0.7) for s in range(3)]
    assert fig4.top_layer_contrast(noisy, "mnist")["outcome"] == "no difference shown"
    one = fig4.top_layer_contrast(recs[:1] + recs[3:4], "mnist", measure="pixel_var_frac")
    assert one["outcome"] == "untested" and one["diff"] == pytest.approx(0.0) and "cannot test" in one["text"]
    assert fig4.top_layer_contrast(recs[:3], "mnist")["n_pairs"] == 0
    with pytest.raises(ValueError, match="reading"):
        fig4.top_layer_contrast(recs, "mnist", reading="gibbs")
    with pytest.raises(ValueError, match="measure"):
        fig4.top_layer_contrast(recs, "mnist", measure="fid")
    with pytest.raises(ValueError, match="fmnist"):
        fig4.top_layer_contrast(recs, "fmnist")


def test_fig4_summarise_means_over_seeds():
    from jebm_lite.experiments import fig4

    recs = [_fig4_record("mnist", "joint", s, c) for s, c in enumerate((0.8, 0.6))]
    rows = fig4.layer_rows(recs)
    assert len(rows) == 2 * 2 * 4 and {r["layer"] for r in rows} == {"z1", "z2", "z3", "all"}
    summ = {(r["reading"], r["layer"]): r for r in fig4.summarise(recs)}
    top = summ[("resample", "z3")]
    assert top["n_seeds"] == 2 and top["class_change_mean"] == pytest.approx(0.7)
    assert top["class_change_std"] == pytest.approx(0.1414213, rel=1e-5) and top["pixel_var_frac_mean"] == 0.5


def test_layer_grids_share_contexts_and_donors_across_layers():
    from jebm_lite.analysis import viz

    learner = _learner("mnist_joint")
    g = torch.Generator().manual_seed(0)
    state = H.sample_state(learner, 2, g)
    donors = H.sample_state(learner, 3, g)
    swap = H.layer_grids(learner, "swap", state=state, donors=donors)
    assert set(swap) == {0, 1, 2} and all(x.shape == (2 * 4, 1, 28, 28) for x in swap.values())
    for i in range(3):  # the same contexts in the first column; the swap panels are swap_grid's
        assert torch.allclose(swap[i].reshape(2, 4, 1, 28, 28)[:, 0], swap[0].reshape(2, 4, 1, 28, 28)[:, 0])
        assert torch.allclose(swap[i], H.swap_grid(learner, (i,), state=state, donors=donors, include_context=True))
    redraw = H.layer_grids(learner, "resample", n_resamples=3, state=state, generator=g)
    assert all(x.shape == (2 * 4, 1, 28, 28) for x in redraw.values())
    assert torch.allclose(redraw[2].reshape(2, 4, 1, 28, 28)[:, 0], swap[0].reshape(2, 4, 1, 28, 28)[:, 0])
    with pytest.raises(ValueError, match="reading"):
        H.layer_grids(learner, "gibbs")
    fig = viz.show_panel_rows({"joint": {f"z{i + 1}": x for i, x in swap.items()},
                               "VLAE": {"z1": swap[0]}}, nrow=4, mark_first_column=True)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:4] == ["joint: z1", "joint: z2", "joint: z3", "VLAE: z1"] and titles[4:] == ["", ""]
    assert fig.get_size_inches()[0] == pytest.approx(viz.COLUMN_WIDTH_IN)  # 3 panels of 3.6 in, fitted to the column
    import matplotlib.pyplot as plt

    plt.close(fig)
