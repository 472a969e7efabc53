"""Tests of jebm_lite.experiments.anomaly_table (paper Tab. 3 from result files, one training per held-out digit)."""

from __future__ import annotations

import pytest

from jebm_lite.data import anomaly as anomaly_data
from jebm_lite.experiments import anomaly_table
from jebm_lite.io import read_json, write_json_atomic
from jebm_lite.runtime import ConfigError


def test_cell_configs_hold_out_the_digit_and_name_their_run():
    c = anomaly_table.cell_config("joint", 4, "cpu")
    assert c.method == "joint" and c.data.hold_out == 4 and c.train.max_steps == 1500
    assert c.train.ckpt_every == 500 and c.train.keep_ckpts == 3
    assert anomaly_table.cell_run_dir(c).as_posix() == "runs/mnist_anomaly_joint-h4-s1500-cpu"
    lebm = anomaly_table.cell_config("lebm", 9, "cpu", steps=3000, ckpt_every=300, last=10)
    assert lebm.method == "lebm" and lebm.train.keep_ckpts == 10
    assert anomaly_table.cell_run_dir(lebm).as_posix() == "runs/mnist_anomaly_lebm-h9-s3000-cpu"
    assert anomaly_table.cell_run_dir(anomaly_table.cell_config("vlae", 1, "ci")) is None
    with pytest.raises(ConfigError, match="joint, vlae, lebm"):
        anomaly_table.cell_config("gan", 1)
    with pytest.raises(ConfigError, match="not a digit"):
        anomaly_table.cell_config("joint", 12)
    with pytest.raises(ConfigError, match="fewer than last=3"):
        anomaly_table.cell_config("joint", 1, steps=1000, ckpt_every=500, last=3)


def test_run_cell_writes_a_record_that_builds_the_table(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("JEBM_DATA", str(shared_data))
    split = anomaly_data.anomaly_split(4, root=shared_data)
    rec = anomaly_table.run_cell("vlae", 4, "ci", steps=20, ckpt_every=10, last=2, results_dir=tmp_path,
                                 limit=400, split=split, device="cpu")
    assert rec["ckpt_steps"] == [10, 20] and len(rec["auprc"]) == 2 and rec["limit"] == 400
    assert all(0.0 <= v <= 1.0 for v in rec["auprc"] + rec["auroc"])
    assert rec["auprc_mean"] == pytest.approx(sum(rec["auprc"]) / 2)
    assert rec["random_auprc"] == pytest.approx(float(split.test_labels.float().mean()))
    assert rec["config"]["data"]["hold_out"] == 4 and rec["profile"] == "ci" and rec["train_steps"] == 20
    path = anomaly_table.result_path(tmp_path, "vlae", 4, "ci")
    assert read_json(path)["auprc"] == rec["auprc"]
    # the stored record of the same config is returned as it is (no retraining) ...
    write_json_atomic(path, {**rec, "auprc_mean": 0.5, "auprc_std": 0.25})
    again = anomaly_table.run_cell("vlae", 4, "ci", steps=20, ckpt_every=10, last=2, results_dir=tmp_path,
                                   limit=400, split=split)
    assert again["auprc_mean"] == 0.5
    table = anomaly_table.table_markdown(anomaly_table.load_results(tmp_path, "ci"))
    assert "| ours: VLAE | – | 0.500 ± 0.250 | – | – | – |" in table
    assert "| paper: Ours (joint EBM prior) | 0.722 ± 0.010 | 0.949 ± 0.002 |" in table
    assert f"| random score (share of anomalies) | – | {rec['random_auprc']:.3f} |" in table
    assert anomaly_table.load_results(tmp_path, "cpu") == []
    # ... but a record of another budget (or another evaluation subset) is recomputed
    fresh = anomaly_table.run_cell("vlae", 4, "ci", steps=20, ckpt_every=10, last=2, results_dir=tmp_path,
                                   limit=300, split=split)
    assert fresh["auprc_mean"] != 0.5 and fresh["limit"] == 300


def test_a_diverged_cell_is_recorded_shown_and_not_retrained(tmp_path, monkeypatch):
    from jebm_lite.training.trainer import TrainingDiverged

    calls = []

    def diverge(cfg, run_dir=None, device=None):
        calls.append(cfg.data.hold_out)
        raise TrainingDiverged("Training diverged at step 812: energy energy/prior = 1e4. Advice", step=812)

    monkeypatch.setattr(anomaly_table, "run_experiment", diverge)
    rec = anomaly_table.run_cell("lebm", 7, "ci", results_dir=tmp_path)
    assert rec["auprc_mean"] is None and rec["diverged"]["step"] == 812
    assert anomaly_table.run_cell("lebm", 7, "ci", results_dir=tmp_path)["diverged"]["step"] == 812
    assert calls == [7]  # the stored record stops a rerun
    good = {"method": "joint", "digit": 7, "auprc_mean": 0.9, "auprc_std": 0.01, "auroc_mean": 0.95,
            "random_auprc": 0.3, "train_time_s": 60.0}
    recs = [good, rec]
    table = anomaly_table.table_markdown(recs)
    assert "| ours: LEBM | – | – | – | diverged at 812 | – |" in table
    assert "| ours: joint EBM prior | – | – | – | 0.900 ± 0.010 | – |" in table
    diff = anomaly_table.differences(recs)
    assert diff == [{"method": "joint", "digit": 7, "ours": 0.9, "paper": 0.941, "difference": pytest.approx(-0.041),
                     "random": 0.3}]
    s = anomaly_table.summary(recs)
    assert list(s) == ["joint"] and s["joint"]["above_random"] == 1 and s["joint"]["train_min"] == 1.0


def test_markdown_table_keeps_row_order_and_renames_only_the_header():
    from jebm_lite.experiments.tables import markdown_table

    rows = [{"model": "a", "1": "0.5"}, {"model": "b", "1": "–"}]
    assert markdown_table(rows, headers={"1": "held-out 1"}) == (
        "| model | held-out 1 |\n|---|---|\n| a | 0.5 |\n| b | – |")
    assert markdown_table([]) == ""
