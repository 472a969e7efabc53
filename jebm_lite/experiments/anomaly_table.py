"""Paper Tab. 3 from result files: anomaly detection on MNIST, one held-out digit per training.

One *cell* is (method, held-out digit): train the preset ``mnist_anomaly_<method>`` on the anomaly split
of :func:`jebm_lite.data.anomaly.anomaly_split` (``data.hold_out=<digit>``), then score the newest ``last``
checkpoints with the log-joint decision function (:func:`jebm_lite.analysis.anomaly.evaluate_checkpoints`, Sec. 5.4)
and report the AUPRC as mean ± std over those checkpoints (the paper: over the last 10 epochs).

The book's budget is **reduced**: ``steps`` training iterations (default 1 500, about three epochs of the
49 698 normal training images), a checkpoint every ``ckpt_every`` = 500 iterations, ``last`` = 3
checkpoints. The run directory is ``<runs>/mnist_anomaly_<method>-h<digit>-s<steps>-<profile>`` (the name
chapter 7's digit-1 runs already have; resumable), and one call of :func:`run_cell` writes
``<results>/<method>_h<digit>_<profile>.json`` atomically with the per-checkpoint AUPRC / AUROC, the
share of anomalies in the test set (the AUPRC of a random score) and the provenance. A training that
diverges is stored as such (``"diverged": {"step", "message"}``) and is not retrained.
:func:`load_results` / :func:`table_rows` build the table from those files only.

Command line (from ``notebooks/``; finished cells are skipped, runs that exist are loaded)::

    python -m jebm_lite.experiments.anomaly_table --profile cpu --digits 1 4 5 7 9 --methods joint vlae lebm
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jebm_lite.analysis import anomaly
from jebm_lite.config import get_config
from jebm_lite.data import anomaly as anomaly_data
from jebm_lite.experiments.tables import markdown_table
from jebm_lite.io import write_json_atomic
from jebm_lite.runtime import ConfigError, get_device, get_profile
from jebm_lite.training.load import run_experiment
from jebm_lite.training.rundir import diverged_info, load_records, provenance, stored_record
from jebm_lite.training.trainer import TrainingDiverged

DIGITS = (1, 4, 5, 7, 9)
"""The held-out digits of paper Tab. 3."""
METHODS = ("joint", "vlae", "lebm")
"""The methods we train ourselves: the joint EBM prior (ours), VLAE (the same networks, Gaussian prior) and
LEBM (one latent layer with an EBM prior, Pang et al. 2020)."""
METHOD_LABEL = {"joint": "joint EBM prior", "vlae": "VLAE", "lebm": "LEBM"}
PAPER: dict[str, dict[int, tuple[float, float | None]]] = {
    "VAE": {1: (0.063, None), 4: (0.337, None), 5: (0.325, None), 7: (0.148, None), 9: (0.104, None)},
    "HVAE": {1: (0.494, 0.004), 4: (0.920, 0.004), 5: (0.913, 0.003), 7: (0.680, 0.006), 9: (0.791, 0.008)},
    "MEG": {1: (0.281, 0.035), 4: (0.401, 0.061), 5: (0.402, 0.062), 7: (0.290, 0.040), 9: (0.342, 0.034)},
    "BiGAN-σ": {1: (0.287, 0.023), 4: (0.443, 0.029), 5: (0.514, 0.029), 7: (0.347, 0.017), 9: (0.307, 0.028)},
    "Latent EBM": {1: (0.336, 0.008), 4: (0.630, 0.017), 5: (0.619, 0.013), 7: (0.463, 0.009), 9: (0.413, 0.010)},
    "Ours (joint EBM prior)": {1: (0.722, 0.010), 4: (0.949, 0.002), 5: (0.980, 0.001), 7: (0.941, 0.003),
                               9: (0.935, 0.003)},
}
"""Paper Tab. 3: AUPRC (mean, std over the last 10 epochs; the baselines as reported by Pang et al. 2020)."""
PAPER_ROW = {"joint": "Ours (joint EBM prior)", "lebm": "Latent EBM"}
"""Which paper row each of our methods is compared with (VLAE has none)."""


def cell_config(method: str, digit: int, profile: str | None = None, steps: int = 1500, ckpt_every: int = 500,
                last: int = 3):
    """The config of one cell: preset ``mnist_anomaly_<method>`` with ``data.hold_out=digit`` and the budget."""
    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if int(digit) not in range(10):
        raise ConfigError(f"held-out digit {digit!r} is not a digit 0-9 (Tab. 3 uses {DIGITS})")
    if steps < 1 or ckpt_every < 1 or last < 1:
        raise ConfigError(f"steps={steps}, ckpt_every={ckpt_every} and last={last} must all be >= 1")
    if steps // ckpt_every < last:
        raise ConfigError(f"{steps} iterations with a checkpoint every {ckpt_every} give fewer than last={last} "
                          "checkpoints; lower ckpt_every or last")
    return get_config(f"mnist_anomaly_{method}", profile=profile,
                      overrides=[f"data.hold_out={int(digit)}", f"train.max_steps={int(steps)}",
                                 f"train.ckpt_every={int(ckpt_every)}", f"train.keep_ckpts={int(last)}"])


def cell_run_dir(cfg, runs_dir: str | Path = "runs") -> Path | None:
    """``<runs>/mnist_anomaly_<method>-h<digit>-s<steps>-<profile>``; None in ``ci`` (a temporary folder)."""
    if cfg.profile == "ci":
        return None
    return Path(runs_dir) / f"{cfg.name}-h{cfg.data.hold_out}-s{cfg.train.max_steps}-{cfg.profile}"


def result_path(results_dir: str | Path, method: str, digit: int, profile: str) -> Path:
    return Path(results_dir) / f"{method}_h{int(digit)}_{profile}.json"


def run_cell(
    method: str,
    digit: int,
    profile: str | None = None,
    steps: int = 1500,
    ckpt_every: int = 500,
    last: int = 3,
    results_dir: str | Path | None = "results/tab3",
    runs_dir: str | Path = "runs",
    device: str | torch.device | None = None,
    limit: int | None = None,
    split=None,
    force: bool = False,
) -> dict[str, Any]:
    """Train (or load) one cell, score its last ``last`` checkpoints on the whole test set, write the record.

    ``limit`` scores a stratified subset of the test set (quick checks only; stored in the record).
    ``split`` reuses an :class:`~jebm_lite.data.anomaly.AnomalySplit` of the same digit. In the ``ci`` profile
    the record is written only when ``results_dir`` is given (tests pass a temporary folder).

    Returns:
        ``{"method", "digit", "profile", "seed", "auprc": [...], "auroc": [...], "ckpt_steps": [...],
        "auprc_mean", "auprc_std", "auroc_mean", "auroc_std", "random_auprc", "n_test", "n_anomalous",
        "limit", "train_steps", "train_time_s", "eval_wall_s", "run_dir", "device", "torch", "commit",
        "date", "config"}``; a diverged training gives ``"auprc_mean": None`` and ``"diverged"``.
    """
    cfg = cell_config(method, digit, profile, steps, ckpt_every, last)
    out = result_path(results_dir, method, digit, cfg.profile) if results_dir is not None else None
    stored = None if (out is None or force) else stored_record(out, cfg)
    if stored is not None and stored.get("limit") == limit and stored.get("last") == last:
        return stored
    dev = get_device(device if device is not None else cfg.train.device)
    rd = cell_run_dir(cfg, runs_dir)
    base = {"method": method, "digit": int(digit), "profile": cfg.profile, "seed": cfg.train.seed, "last": last,
            "limit": limit, "run_dir": str(rd) if rd is not None else None}
    try:
        _learner, _history, run = run_experiment(cfg, run_dir=rd, device=dev)
    except TrainingDiverged as err:  # a result too: stored, so that the table shows it and it is not retrained
        rec = {**base, "auprc": [], "auroc": [], "ckpt_steps": [], "auprc_mean": None, "auprc_std": None,
               "auroc_mean": None, "auroc_std": None, "train_steps": err.step, "train_time_s": None,
               "diverged": diverged_info(err), **provenance(cfg, dev)}
        if out is not None:
            write_json_atomic(out, rec)
        return rec
    if split is None or split.held_out != int(digit):
        split = anomaly_data.anomaly_split(int(digit), root=cfg.data.root, download=cfg.data.download)
    t0 = time.perf_counter()
    ev = anomaly.evaluate_checkpoints(run, split, last=last, device=dev, seed=0, limit=limit)
    labels = split.test_labels
    result = run.read_result()
    rec = {
        **base,
        "auprc": ev["auprc"], "auroc": ev["auroc"], "ckpt_steps": ev["steps"],
        "auprc_mean": ev["auprc_mean"], "auprc_std": ev["auprc_std"],
        "auroc_mean": ev["auroc_mean"], "auroc_std": ev["auroc_std"],
        "random_auprc": float(labels.float().mean()), "n_test": int(labels.numel()),
        "n_anomalous": int(labels.sum()),
        "metric": "AUPRC of -log p(x, z), z ~ q(z|x) (LEBM: posterior Langevin); mean, std over checkpoints",
        "train_steps": result.get("steps"), "train_time_s": result.get("wall_time_s"),
        "eval_wall_s": round(time.perf_counter() - t0, 1),
        **provenance(cfg, dev),
    }
    if out is not None:
        write_json_atomic(out, rec)
    return rec


def load_results(results_dir: str | Path, profile: str | None = None) -> list[dict[str, Any]]:
    """Every record under ``results_dir`` (optionally one profile), sorted by (method, digit)."""
    return load_records(results_dir, lambda r: (METHODS.index(r["method"]), r["digit"]), profile)


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def table_rows(records: Sequence[dict[str, Any]], digits: Sequence[int] = DIGITS) -> list[dict[str, str]]:
    """Tab. 3 as rows ``{"model", "1", "4", ...}``: the paper's rows, then ours (one per method with a
    record), then the AUPRC of a random score on our test sets. Missing cells are "–"."""
    rows = [{"model": f"paper: {name}", **{str(d): _cell(*vals[d]) for d in digits}} for name, vals in PAPER.items()]
    by: dict[tuple[str, int], dict] = {(r["method"], r["digit"]): r for r in records}
    for m in METHODS:
        if not any((m, d) in by for d in digits):
            continue
        row = {"model": f"ours: {METHOD_LABEL[m]}"}
        for d in digits:
            r = by.get((m, d))
            if r is None:
                row[str(d)] = "–"
            elif r.get("diverged"):
                row[str(d)] = f"diverged at {r['diverged']['step']}"
            else:
                row[str(d)] = _cell(r["auprc_mean"], r["auprc_std"])
        rows.append(row)
    rand = {d: next((r["random_auprc"] for r in records if r["digit"] == d and r.get("random_auprc")), None)
            for d in digits}
    if any(v is not None for v in rand.values()):
        rows.append({"model": "random score (share of anomalies)", **{str(d): _cell(rand[d], None) for d in digits}})
    return rows


def table_markdown(records: Sequence[dict[str, Any]], digits: Sequence[int] = DIGITS) -> str:
    """:func:`table_rows` as a markdown table (AUPRC, held-out digit per column; the command line prints it,
    chapters show a DataFrame of :func:`table_rows`)."""
    return markdown_table(table_rows(records, digits), headers={str(d): f"held-out {d}" for d in digits})


def differences(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours minus the paper's AUPRC, per (method, digit) that has a paper row (joint, LEBM) and a result."""
    out = []
    for r in records:
        name = PAPER_ROW.get(r["method"])
        if name is None or r.get("auprc_mean") is None or r["digit"] not in PAPER[name]:
            continue
        paper = PAPER[name][r["digit"]][0]
        out.append({"method": r["method"], "digit": r["digit"], "ours": r["auprc_mean"], "paper": paper,
                    "difference": r["auprc_mean"] - paper, "random": r.get("random_auprc")})
    return out


def summary(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method: mean AUPRC / AUROC over its finished digits, how many digits beat a random score, and
    the training wall time (minutes, summed)."""
    out: dict[str, dict[str, float]] = {}
    for m in METHODS:
        rs = [r for r in records if r["method"] == m and r.get("auprc_mean") is not None]
        if not rs:
            continue
        out[m] = {"digits": len(rs), "auprc": float(np.mean([r["auprc_mean"] for r in rs])),
                  "auroc": float(np.mean([r["auroc_mean"] for r in rs])),
                  "above_random": sum(r["auprc_mean"] > r["random_auprc"] for r in rs),
                  "train_min": sum((r.get("train_time_s") or 0.0) for r in rs) / 60.0}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jebm_lite.experiments.anomaly_table",
                                description="Paper Tab. 3 (MNIST anomaly detection), one training per cell.")
    p.add_argument("--digits", nargs="+", type=int, default=list(DIGITS))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--profile", choices=["ci", "cpu", "full"], default=None)
    p.add_argument("--steps", type=int, default=1500, help="training iterations per cell")
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--last", type=int, default=3, help="checkpoints averaged (the paper: 10 epochs)")
    p.add_argument("--results", default="results/tab3")
    p.add_argument("--runs", default="runs")
    p.add_argument("--force", action="store_true", help="re-evaluate cells that have a record")
    p.add_argument("--device", default=None,
                   help="e.g. cuda:1 (one process per device runs cells side by side; default: CUDA if available)")
    a = p.parse_args(argv)
    prof = get_profile(a.profile)
    for d in a.digits:
        split = None
        for m in a.methods:
            if split is None:
                cfg = cell_config(m, d, prof, a.steps, a.ckpt_every, a.last)
                split = anomaly_data.anomaly_split(d, root=cfg.data.root, download=cfg.data.download)
            r = run_cell(m, d, prof, a.steps, a.ckpt_every, a.last, a.results, a.runs, split=split, force=a.force,
                         device=a.device)
            if r.get("diverged"):
                print(f"{m} held-out {d}: diverged at iteration {r['diverged']['step']}", flush=True)
            else:
                print(f"{m} held-out {d}: AUPRC {r['auprc_mean']:.3f} ± {r['auprc_std']:.3f} "
                      f"(random {r['random_auprc']:.3f}; eval {r['eval_wall_s']:.0f} s)", flush=True)
    print(table_markdown(load_results(a.results, prof)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
