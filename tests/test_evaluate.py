"""Tests of ``python -m jebm_lite.experiments.evaluate``: MSE and FID of a tiny ``ci``-profile run of the SVHN stand-in
(CPU, a small injected feature network instead of Inception), the result files, and the documented errors
(missing Inception weights offline, not a run directory)."""

from __future__ import annotations

import json
import urllib.error

import pytest
import torch
from torch import nn

import jebm_lite as jl
from jebm_lite.analysis import fid
from jebm_lite.experiments import evaluate as ev
from jebm_lite.training.load import run_experiment


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory, shared_data):
    """A finished ``svhn4_standin_joint`` run in the ``ci`` profile (3 iterations on 64 colour digits)."""
    cfg = jl.get_config("svhn4_standin_joint", profile="ci", overrides=[f"data.root={shared_data}"])
    path = tmp_path_factory.mktemp("evaluate") / "run"
    run_experiment(cfg, run_dir=path, device="cpu")
    return path


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())


def test_mse_and_fid_with_injected_extractor(ci_run):
    out = ev.evaluate(ci_run, mse=True, fid=True, n=32, batch_size=16, mse_n=40, extractor=small_cnn(),
                      device="cpu")
    m = out["mse"]
    assert m["n"] == 40 and m["split"] == "test" and m["mse_01"] > 0
    assert m["mse_pm1"] == pytest.approx(4 * m["mse_01"])
    f = out["fid"]
    assert f["n_fake"] == 32 and f["n_real"] == 32 and f["fid"] > 0 and "custom" in f["feature_extractor"]
    assert f["langevin_steps"] == 5 and f["real_data"] == "colour_mnist/train"  # the ci profile's 5 steps
    stored = json.loads((ci_run / "results" / "fid.json").read_text())
    assert stored["fid"] == f["fid"]
    assert json.loads((ci_run / "results" / "mse.json").read_text())["mse_01"] == m["mse_01"]
    # test-time Langevin other than training: its own result name, and the same seed gives the same value
    a = ev.evaluate(ci_run, mse=False, fid=True, n=32, batch_size=16, langevin_steps=2, extractor=small_cnn(),
                    device="cpu")["fid"]
    b = ev.evaluate(ci_run, mse=False, fid=True, n=32, batch_size=16, langevin_steps=2, extractor=small_cnn(),
                    device="cpu")["fid"]
    assert a["name"] == "fid_k2_s0.4" and a["fid"] == b["fid"]
    assert (ci_run / "results" / "fid_k2_s0.4.json").is_file()


def test_cli_offline_without_weights_exits_2_with_the_fix(ci_run, monkeypatch, tmp_path, capsys):
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    def no_network(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fe, "load_state_dict_from_url", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    (ci_run / "results" / "mse.json").unlink(missing_ok=True)
    rc = ev.main([str(ci_run), "--mse", "--fid", "--n", "16", "--mse-n", "20", "--batch-size", "8",
                  "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == ev.EXIT_USAGE
    assert err.startswith("error: ") and "Traceback" not in err
    for part in (fid.WEIGHTS_FILE, fid.WEIGHTS_ENV, "download failed"):
        assert part in err, part
    assert (ci_run / "results" / "mse.json").is_file()  # MSE ran first and was kept


def test_cli_usage_errors(tmp_path, capsys):
    assert ev.main([str(tmp_path), "--mse"]) == ev.EXIT_USAGE
    assert "not a run directory" in capsys.readouterr().err
    assert ev.main([str(tmp_path)]) == ev.EXIT_USAGE
    assert "Nothing to evaluate" in capsys.readouterr().err
