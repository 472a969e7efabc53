"""``make gpu-check`` runs here too: without CUDA it says so and runs its CPU parts (short ci-profile runs that
must not diverge and whose loss must fall)."""

from __future__ import annotations

import json

import torch

from benchmarks import gpu_check


def test_loss_fell_compares_the_first_and_last_fifth():
    rows = [{"step": i, "loss": 10.0 - i * 0.1} for i in range(50)] + [{"step": 50, "event": "rollback"}]
    assert gpu_check.loss_fell(rows)[0]
    assert not gpu_check.loss_fell([{"step": i, "loss": float(i)} for i in range(50)])[0]
    assert not gpu_check.loss_fell([{"step": 1, "loss": 1.0}])[0]  # too short to judge


def test_gpu_check_without_cuda_runs_the_cpu_parts(tmp_path, shared_data, monkeypatch, capsys):
    monkeypatch.setenv("JEBM_DATA", str(shared_data))
    rc = gpu_check.main(["--out", str(tmp_path), "--smoke-seconds", "8", "--skip-tests", "--skip-benchmarks"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cuda"] == torch.cuda.is_available()
    smoke = summary["parts"]["smoke"]
    assert [s["preset"] for s in smoke] == list(gpu_check.SMOKE_PRESETS)
    assert all(s["steps"] > 0 and s["rollbacks"] == 0 for s in smoke)
    assert rc == (0 if all(s["ok"] for s in smoke) else 1)
    if not torch.cuda.is_available():
        assert "CUDA parts skipped" in capsys.readouterr().out
