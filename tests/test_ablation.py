"""Tests of jebm_lite.experiments.ablation (paper Tabs. 4 and 5 with one training per setting, on MNIST)."""

from __future__ import annotations

import pytest

from jebm_lite.analysis.metrics import digit_classifier
from jebm_lite.experiments import ablation
from jebm_lite.io import read_json, write_json_atomic
from jebm_lite.runtime import ConfigError


def test_setting_configs_change_one_field_and_reuse_tab1_cells(tmp_path):
    base = ablation.setting_config("nef", 50, seed=0, profile="cpu")
    assert base.ebm.nef == 50 and base.method == "joint"
    c10 = ablation.setting_config("nef", 10, seed=0, profile="cpu")
    assert c10.ebm.nef == 10 and c10.prior_langevin.steps == base.prior_langevin.steps
    k300 = ablation.setting_config("steps", 300, seed=0, profile="cpu")
    assert k300.prior_langevin.steps == 300 and k300.ebm.nef == base.ebm.nef
    vlae = ablation.setting_config("nef", 0, seed=0, profile="cpu")
    assert vlae.method == "vlae" and vlae.ebm.nef == 0
    # the defaults and nef = 0 are chapter 4's Tab. 1 cells; everything else gets its own directory
    assert ablation.setting_run_dir("nef", 50, base).as_posix() == "runs/tab1/mnist_joint_seed0-cpu"
    assert ablation.setting_run_dir("steps", 60, base).as_posix() == "runs/tab1/mnist_joint_seed0-cpu"
    assert ablation.setting_run_dir("nef", 0, vlae).as_posix() == "runs/tab1/mnist_vlae_seed0-cpu"
    assert ablation.setting_run_dir("steps", 300, k300).as_posix() == "runs/ablation/mnist_joint_steps300_seed0-cpu"
    assert ablation.setting_run_dir("nef", 10, ablation.setting_config("nef", 10, profile="ci")) is None
    with pytest.raises(ConfigError, match="nef, steps"):
        ablation.setting_config("width", 3)
    with pytest.raises(ConfigError, match="out of range"):
        ablation.setting_config("steps", 0)


def test_run_setting_writes_a_record_that_builds_the_table(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("JEBM_DATA", str(shared_data))
    clf = digit_classifier(cache=None, subset=1000, epochs=1, device="cpu")
    rec = ablation.run_setting("steps", 15, seed=0, profile="ci", results_dir=tmp_path, n=300, n_real=300,
                               classifier=clf, device="cpu")
    assert rec["config"]["prior_langevin"]["steps"] == 15 and rec["profile"] == "ci"
    # 30 training iterations are far from the data; real training images are close to the test set
    assert rec["floor_fd"] < rec["classifier_fd"]
    path = ablation.result_path(tmp_path, "steps", 15, 0, "ci")
    assert read_json(path)["classifier_fd"] == rec["classifier_fd"]
    # a stored record of the same config is returned as it is (no retraining), also when it was written
    # before a config section existed (a missing key counts as its default) ...
    old_cfg = {k: v for k, v in rec["config"].items() if k != "diffusion"}
    write_json_atomic(path, {**rec, "classifier_fd": -1.0, "config": old_cfg})
    assert ablation.run_setting("steps", 15, seed=0, profile="ci", results_dir=tmp_path, n=300,
                                classifier=clf)["classifier_fd"] == -1.0
    recs = ablation.load_results(tmp_path, "ci")
    table = ablation.table_markdown(recs, "steps")
    assert "| 15 | -1.0 | 1 | 30 | 56.42 |" in table
    assert ablation.load_results(tmp_path, "cpu") == []
    # ... but a record written with another config is recomputed
    stale = {**rec, "classifier_fd": -2.0, "config": {**rec["config"], "ebm": {**rec["config"]["ebm"], "nef": 7}}}
    write_json_atomic(path, stale)
    again = ablation.run_setting("steps", 15, seed=0, profile="ci", results_dir=tmp_path, n=300, n_real=300,
                                 classifier=clf, device="cpu")
    assert again["classifier_fd"] > 0 and read_json(path)["config"]["ebm"]["nef"] == rec["config"]["ebm"]["nef"]


def test_a_diverged_setting_is_recorded_and_not_retrained(tmp_path, monkeypatch):
    from jebm_lite.training.trainer import TrainingDiverged

    calls = []

    def diverge(cfg, rd, device=None):
        calls.append(cfg.prior_langevin.steps)
        raise TrainingDiverged("Training diverged at step 17: energy energy/post = 1e4. More text", step=17)

    monkeypatch.setattr(ablation, "run_experiment", diverge)
    rec = ablation.run_setting("steps", 15, profile="ci", results_dir=tmp_path, n=100, classifier=object())
    assert rec["classifier_fd"] is None and rec["diverged"] == {
        "step": 17, "message": "Training diverged at step 17: energy energy/post = 1e4"}
    again = ablation.run_setting("steps", 15, profile="ci", results_dir=tmp_path, n=100, classifier=object())
    assert again["diverged"]["step"] == 17 and calls == [15]  # the stored record stops a rerun
    assert "| 15 | diverged at iteration 17 | 1 | – | 56.42 |" in ablation.table_markdown(
        ablation.load_results(tmp_path), "steps")
    # the rows a chapter shows as a DataFrame carry the same cells, keyed by column title
    assert ablation.table_rows(ablation.load_results(tmp_path), "steps") == [
        {"k (prior Langevin steps)": "15", "classifier FD, MNIST (ours)": "diverged at iteration 17", "seeds": "1",
         "train iterations": "–", "paper Inception FID, CelebA-64": "56.42"}]
    assert ablation.table_rows(ablation.load_results(tmp_path), "nef") == []


def test_a_diverged_tab1_cell_is_counted_apart(tmp_path, monkeypatch):
    from jebm_lite.experiments import latent_table
    from jebm_lite.training.trainer import TrainingDiverged

    def diverge(cfg, runs_dir="runs/tab1", device=None):
        raise TrainingDiverged("Training diverged at step 5371: boom. Advice", step=5371)

    monkeypatch.setattr(latent_table, "cell_run", diverge)
    rec = latent_table.run_cell("mnist", "joint", 2, profile="ci", results_dir=tmp_path)
    assert rec["accuracy"] is None and rec["diverged"]["step"] == 5371
    good = [{"dataset": "mnist", "method": "joint", "seed": s, "accuracy": [10.0 + s, 20.0, 30.0 + s]} for s in (0, 1)]
    rows = latent_table.summarise([*good, rec])
    assert [r["n_seeds"] for r in rows] == [2, 2, 2] and rows[0]["diverged_seeds"] == [2]
    assert rows[0]["mean"] == 10.5 and latent_table.rises_bottom_to_top(rows, "mnist")
    assert "| mnist | joint EBM prior | 2 (+1 diverged) |" in latent_table.table_markdown(rows)


def test_inception_fid_checks_the_weights_before_training(tmp_path, monkeypatch):
    from jebm_lite.analysis import fid

    calls = []
    monkeypatch.setattr(ablation, "run_experiment", lambda *a, **k: calls.append(1))
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(fid.FIDWeightsNotFoundError, match="nowhere.pth"):
        ablation.run_setting("nef", 10, profile="ci", results_dir=tmp_path, n=100, metric="inception")
    assert calls == [] and list(tmp_path.glob("*.json")) == []  # no training, no record
    with pytest.raises(ConfigError, match="classifier, inception"):
        ablation.run_setting("nef", 10, profile="ci", results_dir=tmp_path, metric="kid")
    assert ablation.default_metric("full") == "inception" and ablation.default_metric("cpu") == "classifier"


def test_inception_records_sit_beside_the_classifier_ones(tmp_path, shared_data, monkeypatch):
    """The Inception path end to end, with a small random network standing in for Inception-v3 (no weights
    here): its own file and key, its own table."""
    import torch
    from torch import nn
    from torchmetrics.image.fid import FrechetInceptionDistance

    from jebm_lite.analysis import fid

    class StandIn(nn.Module):  # uint8 (B, 3, H, W) -> (B, 32), as torchmetrics feeds Inception
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                     nn.Linear(32, 32))

        def forward(self, x):
            return self.net(x.float() / 127.5 - 1.0)

    seen = []

    def stand_in_metric(weights_path=None, feature=2048, antialias=False):
        seen.append(weights_path)
        return FrechetInceptionDistance(feature=StandIn(), normalize=False)

    monkeypatch.setattr(fid, "inception_metric", stand_in_metric)
    monkeypatch.setenv("JEBM_DATA", str(shared_data))
    rec = ablation.run_setting("nef", 10, profile="ci", results_dir=tmp_path, n=200, n_real=200, device="cpu",
                               metric="inception", weights_path="w.pth")
    assert rec["metric"] == "inception" and "classifier_fd" not in rec and rec["inception_fid"] > rec["floor_fd"] > 0
    assert seen and set(seen) == {"w.pth"}  # checked first, then used for the floor and the samples
    path = ablation.result_path(tmp_path, "nef", 10, 0, "ci", "inception")
    assert path.name == "nef10_seed0_ci_inception.json" and read_json(path)["inception_fid"] == rec["inception_fid"]
    recs = ablation.load_results(tmp_path)
    assert f"| 10 | {rec['inception_fid']:.1f} | 1 | 30 | 41.72 |" in ablation.table_markdown(recs, "nef", "inception")
    assert "| 10 |" not in ablation.table_markdown(recs, "nef")  # the classifier table does not mix it in


def test_titles_pair_each_setting_with_its_table_in_the_paper():
    from jebm_lite.experiments import ablation

    # Tab. 4 varies the prior Langevin steps k, Tab. 5 the EBM width nef (paper Sec. 5.5)
    assert ablation.TITLES["steps"].startswith("Tab. 4") and "steps" in ablation.TITLES["steps"]
    assert ablation.TITLES["nef"].startswith("Tab. 5") and "width" in ablation.TITLES["nef"]
    assert set(ablation.TITLES) == set(ablation.SETTINGS)
