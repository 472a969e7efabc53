"""Pretrained runs: ``runs pack`` / ``runs fetch`` round-trip a finished run through a ``file://`` base URL with
sha256 checking, and ``run_experiment`` loads a published run instead of training it."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import flip_tensor_byte

from jebm_lite.__main__ import main
from jebm_lite.config import get_config
from jebm_lite.io import check_sha256
from jebm_lite.runtime import CheckpointError, ConfigError
from jebm_lite.training import archive
from jebm_lite.training.learners import build_learner
from jebm_lite.training.load import load_learner, run_experiment
from jebm_lite.training.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, shared_data):
    """A tiny finished toy012_joint run (cpu-profile name and config, a few iterations)."""
    import os

    os.environ.setdefault("JEBM_DATA", str(shared_data))
    root = tmp_path_factory.mktemp("runs")
    cfg = get_config("toy012_joint", profile="cpu", overrides=["train.max_steps=4", "data.subset=256",
                                                                "prior_langevin.steps=5", "train.progress=false"])
    _, _, rd = run_experiment(cfg, root / "toy012_joint-cpu", device="cpu")
    assert rd.is_finished()
    return cfg, rd.path


def test_pack_and_fetch_round_trip_through_a_file_url(tmp_path, finished_run, monkeypatch, capsys):
    cfg, run = finished_run
    dist = tmp_path / "dist"
    assert main(["runs", "pack", str(run), "--out", str(dist)]) == 0
    man = json.loads((dist / "manifest.json").read_text())
    entry = man["runs"]["toy012_joint-cpu"]
    assert entry["sha256"] == archive.sha256(dist / entry["file"]) and entry["steps"] == 4
    monkeypatch.setenv("JEBM_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "reader" / "runs"
    assert main(["runs", "fetch", "toy012_joint-cpu", "--base-url", f"file://{dist}", "--runs", str(runs)]) == 0
    got = RunDir(runs / "toy012_joint-cpu")
    assert got.is_finished() and [p.name for p in got.checkpoints()] == ["step_00000004.pt"]
    # the sha256 recorded when the checkpoint was written travels with it and still matches
    assert check_sha256(got.ckpt_dir / "step_00000004.pt") == (True, None)
    a = load_learner(run, build_learner).state_dict()
    b = load_learner(got.path, build_learner, cfg=cfg).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same bytes, unpacked


def test_run_experiment_fetches_a_published_run_instead_of_training(tmp_path, finished_run, monkeypatch):
    cfg, run = finished_run
    dist = tmp_path / "dist"
    archive.pack([run], dist)
    monkeypatch.setenv("JEBM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(archive.RUNS_URL_ENV, f"file://{dist}")
    import jebm_lite.training.load as load

    def no_training(*a, **k):
        raise AssertionError("a published run must be fetched, not trained")

    monkeypatch.setattr(load, "training_data", no_training)
    learner, history, rd = run_experiment(cfg, tmp_path / "runs" / "toy012_joint-cpu", device="cpu")
    assert rd.is_finished() and len([r for r in history if "event" not in r]) == 4
    # a run that is not published trains as usual (here: refused by the spy, so it is reached)
    other = get_config("toy012_vlae", profile="cpu", overrides=["train.max_steps=2"])
    with pytest.raises(AssertionError, match="fetched, not trained"):
        run_experiment(other, tmp_path / "runs" / "toy012_vlae-cpu", device="cpu")


def test_a_tampered_archive_is_refused_before_unpacking(tmp_path, finished_run, monkeypatch, capsys):
    _, run = finished_run
    dist = tmp_path / "dist"
    archive.pack([run], dist)
    with open(dist / "toy012_joint-cpu.tar.gz", "ab") as f:
        f.write(b"tampered")
    monkeypatch.setenv("JEBM_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    assert main(["runs", "fetch", "toy012_joint-cpu", "--base-url", f"file://{dist}", "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "does not match" in err and len(err.strip().splitlines()) == 1
    assert not (runs / "toy012_joint-cpu").exists()


def test_an_archive_with_paths_outside_its_run_is_refused(tmp_path, finished_run, monkeypatch):
    _, run = finished_run
    dist = tmp_path / "dist"
    archive.pack([run], dist)
    evil = dist / "toy012_joint-cpu.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:  # a crafted archive whose manifest hash is updated to match
        data = b"owned"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    man = json.loads((dist / "manifest.json").read_text())
    man["runs"]["toy012_joint-cpu"]["sha256"] = archive.sha256(evil)
    (dist / "manifest.json").write_text(json.dumps(man))
    monkeypatch.setenv("JEBM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CheckpointError, match="unsafe or broken"):
        archive.fetch("toy012_joint-cpu", tmp_path / "a" / "b" / "runs", f"file://{dist}")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_pack_refuses_an_unfinished_run_and_fetch_names_what_is_published(tmp_path, finished_run, monkeypatch):
    _, run = finished_run
    (tmp_path / "half").mkdir()
    with pytest.raises(ConfigError, match="not a finished run"):
        archive.pack([tmp_path / "half"], tmp_path / "dist")
    archive.pack([run], tmp_path / "dist")
    monkeypatch.setenv("JEBM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="published: toy012_joint-cpu"):
        archive.fetch("nope-cpu", tmp_path / "runs", f"file://{tmp_path / 'dist'}")
    monkeypatch.delenv(archive.RUNS_URL_ENV, raising=False)
    with pytest.raises(ConfigError, match="JEBM_RUNS_URL"):
        archive.fetch_manifest()
    assert Path(run).is_dir()


def test_a_checkpoint_that_differs_from_its_recorded_sha256_is_neither_packed_nor_unpacked(
        tmp_path, finished_run, monkeypatch):
    _, run = finished_run
    bad_run = tmp_path / "toy012_joint-cpu"
    shutil.copytree(run, bad_run)
    flip_tensor_byte(bad_run / "checkpoints" / "step_00000004.pt")
    with pytest.raises(CheckpointError, match="step_00000004.pt is corrupt .*not packed"):
        archive.pack([bad_run], tmp_path / "dist-bad")
    assert not list((tmp_path / "dist-bad").glob("*.tar.gz"))
    # an archive made of the flipped run, its manifest hash updated to match: pooch's check passes, ours does not
    dist = tmp_path / "dist"
    archive.pack([run], dist)
    evil = dist / "toy012_joint-cpu.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(bad_run, arcname="toy012_joint-cpu")
    man = json.loads((dist / "manifest.json").read_text())
    man["runs"]["toy012_joint-cpu"]["sha256"] = archive.sha256(evil)
    (dist / "manifest.json").write_text(json.dumps(man))
    monkeypatch.setenv("JEBM_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "reader" / "runs"
    with pytest.raises(CheckpointError, match="step_00000004.pt is corrupt .*nothing was unpacked"):
        archive.fetch("toy012_joint-cpu", runs, f"file://{dist}")
    assert not (runs / "toy012_joint-cpu").exists() and not list(runs.iterdir())
