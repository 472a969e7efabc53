"""The benchmark runner (``python -m benchmarks.run``) in quick mode on tiny sizes: JSON structure only,
never timings."""

from __future__ import annotations

import json

import torch

from benchmarks import run as bench


def test_quick_run_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "res.json"
    ret = bench.main(["--quick", "--out", str(out), "--batch", "4", "--chains", "8", "--steps", "3",
                      "--train-steps", "2", "--repeats", "2", "--warmup", "1", "--profile"])
    data = json.loads(out.read_text())
    assert data["schema"] == bench.SCHEMA and ret["schema"] == bench.SCHEMA
    env = data["environment"]
    for key in ("device", "device_name", "torch", "threads", "date", "cpu_model", "commit"):
        assert key in env, key
    assert env["device"] == "cpu" and env["torch"] == torch.__version__
    assert data["settings"]["quick"] is True and data["settings"]["warmup"] == 1

    (lv,) = data["langevin"]
    assert (lv["preset"], lv["chains"], lv["steps"], lv["repeats"], lv["warmup"]) == ("svhn4_joint", 8, 3, 2, 1)
    assert lv["ebm"] == {"in_dim": 16, "nef": 50, "layers": 4, "spectral_norm": True, "mode": "train"}
    for k in ("plain", "fast"):
        assert len(lv[k]["times_s"]) == 2
        assert lv[k]["min_s"] <= lv[k]["median_s"] <= lv[k]["max_s"]
        assert lv[k]["chain_steps_per_s"] > 0
    assert lv["ratio"] > 0

    (ts,) = data["train_step"]
    assert (ts["preset"], ts["batch"], ts["prior_langevin_steps"]) == ("toy012_joint", 4, 2)
    assert ts["image_shape"] == [1, 28, 28] and ts["params"] > 0
    for k in ("plain", "fast"):
        assert ts[k]["images_per_s"] > 0 and len(ts[k]["times_s"]) == 2

    prof = data["profile"]
    assert prof["plain"]["ops"] and prof["fast"]["ops"]
    assert {"op", "calls", "self_ms", "share"} <= set(prof["plain"]["ops"][0])

    printed = capsys.readouterr().out
    assert "| toy012_joint | 4 |" in printed and "16-50x4 (svhn4_joint)" in printed


def test_time_calls_interleaves_and_counts():
    calls = []
    res = bench.time_calls({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                           torch.device("cpu"), warmup=1, repeats=3)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert set(res) == {"a", "b"} and len(res["a"]["times_s"]) == 3


def test_markdown_and_default_out():
    result = {"environment": {"device_name": "X", "device": "cpu", "torch": "2", "threads": 1, "date": "d"},
              "train_step": [], "langevin": []}
    assert "device: X (cpu)" in bench.markdown(result)
    assert bench.default_out(torch.device("cpu")).name.startswith("cpu-")
