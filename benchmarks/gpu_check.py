"""``make gpu-check``: one command for a lent GPU machine, a few minutes, everything written as JSON in one folder.

    python -m benchmarks.gpu_check --out benchmarks/results/gpu-check-<date>

1. **CUDA test cases**: ``tests/test_fastpath.py`` (its cases run on ``cuda`` too where CUDA exists).
2. **Benchmarks**: ``python -m benchmarks.run --device cuda`` (chains and whole iterations, plain and fast path).
3. **Smoke runs**: ``mnist_joint`` and ``svhn4_standin_joint`` in the ``full`` profile for ``--smoke-seconds``
   each, stopped with SIGTERM (the trainer checkpoints and exits 143); the check passes when the run did not
   diverge (no roll-back, no non-finite value) and its loss fell (mean of the last fifth of the logged rows
   below that of the first fifth).

Without CUDA it says so, runs the CPU parts (the tests, ``benchmarks.run --quick``, ``ci``-profile smoke runs of a fixed 100 iterations)
and exits 0, so that the script itself is tested on any machine. ``summary.json`` in ``--out`` holds the device,
each part's outcome and wall time; ``benchmarks/results/`` keeps the folders, which book/performance.md reads.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SMOKE_PRESETS = ("mnist_joint", "svhn4_standin_joint")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1",
            "JEBM_DATA": os.environ.get("JEBM_DATA") or str(REPO.parent / "shared" / "data")}


def run_tests(out: Path) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "tests/test_fastpath.py", "-q", "-p", "no:cacheprovider",
                        f"--junitxml={out / 'tests.xml'}"], cwd=REPO, env=_env(), capture_output=True, text=True)
    tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
    return {"ok": r.returncode == 0, "summary": tail[0], "wall_s": round(time.perf_counter() - t0, 1)}


def run_benchmarks(out: Path, cuda: bool) -> dict:
    t0 = time.perf_counter()
    args = ["--device", "cuda"] if cuda else ["--quick"]
    r = subprocess.run([sys.executable, "-m", "benchmarks.run", *args, "--out", str(out / "benchmarks.json")],
                       cwd=REPO, env=_env(), capture_output=True, text=True)
    (out / "benchmarks.log").write_text(r.stdout + r.stderr)
    return {"ok": r.returncode == 0, "args": args, "wall_s": round(time.perf_counter() - t0, 1)}


def loss_fell(rows: list[dict], key: str = "loss") -> tuple[bool, float | None, float | None]:
    """Mean of the last fifth of the logged ``key`` below the mean of the first fifth."""
    vals = [r[key] for r in rows if key in r and "event" not in r]
    if len(vals) < 10:
        return False, None, None
    k = max(1, len(vals) // 5)
    first, last = statistics.fmean(vals[:k]), statistics.fmean(vals[-k:])
    return last < first, first, last


CPU_SMOKE_STEPS = 100  # ci-profile smoke iterations without CUDA (20 logged losses for loss_fell)


def smoke_run(preset: str, out: Path, seconds: float, cuda: bool) -> dict:
    """Train ``preset`` and judge it: on CUDA the ``full`` profile for ``seconds``, then SIGTERM (a throughput
    check); without CUDA the ``ci`` profile for :data:`CPU_SMOKE_STEPS` iterations, so that the judgement does not
    depend on how loaded the machine is (``seconds`` only bounds the wait)."""
    run_dir = out / "smoke" / preset
    profile = "full" if cuda else "ci"
    steps_cap = 1000000 if cuda else CPU_SMOKE_STEPS
    cmd = [sys.executable, "-m", "jebm_lite", "train", preset, "--profile", profile, "--out", str(run_dir),
           "train.log_every=5", f"train.max_steps={steps_cap}", f"train.ckpt_every={steps_cap}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=seconds if cuda else max(seconds, 600.0))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    from jebm_lite.io import read_jsonl

    rows = read_jsonl(run_dir / "history.jsonl")
    fell, first, last = loss_fell(rows)
    rollbacks = [r for r in rows if r.get("event") == "rollback"]
    steps = max((r["step"] for r in rows if "event" not in r), default=0)
    ok = proc.returncode in (0, 128 + signal.SIGTERM) and fell and not rollbacks
    return {"preset": preset, "profile": profile, "ok": ok, "returncode": proc.returncode, "steps": steps,
            "loss_first_fifth": first, "loss_last_fifth": last, "rollbacks": len(rollbacks),
            "steps_per_s": round(steps / max(time.perf_counter() - t0, 1e-9), 2),
            "stderr_tail": err.strip().splitlines()[-1:] if proc.returncode not in (0, 143) else []}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--smoke-seconds", type=float, default=120.0)
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-benchmarks", action="store_true")
    a = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    out = a.out or REPO / "benchmarks" / "results" / f"gpu-check-{date}"
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
    print(f"gpu-check on {device}" + ("" if cuda else ": CUDA parts skipped, CPU parts only"), flush=True)
    summary: dict = {"device": device, "cuda": cuda, "torch": torch.__version__, "date": date, "parts": {}}
    if not a.skip_tests:
        summary["parts"]["tests"] = run_tests(out)
        print(f"tests: {summary['parts']['tests']['summary']}", flush=True)
    if not a.skip_benchmarks:
        summary["parts"]["benchmarks"] = run_benchmarks(out, cuda)
        print(f"benchmarks: {'ok' if summary['parts']['benchmarks']['ok'] else 'FAILED'}", flush=True)
    smoke = [smoke_run(p, out, a.smoke_seconds if cuda else min(a.smoke_seconds, 30.0), cuda) for p in SMOKE_PRESETS]
    summary["parts"]["smoke"] = smoke
    for s in smoke:
        print(f"smoke {s['preset']} ({s['profile']}): {'ok' if s['ok'] else 'FAILED'}, {s['steps']} steps, loss "
              f"{s['loss_first_fifth']} -> {s['loss_last_fifth']}, roll-backs {s['rollbacks']}", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    ok = all(p.get("ok", True) for k, p in summary["parts"].items() if k != "smoke") and all(s["ok"] for s in smoke)
    print(f"== gpu-check {'passed' if ok else 'FAILED'}: {out / 'summary.json'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
