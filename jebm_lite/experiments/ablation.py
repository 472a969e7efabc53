"""Paper Tabs. 4 and 5 with retraining per setting, on MNIST: prior Langevin steps k and EBM width nef.

The paper retrains one model per setting: Tab. 4 varies the number of prior Langevin steps k used in
training and sampling (CelebA-64: 15, 30, 60, 150, 300), Tab. 5 the hidden width nef of the energy MLP
(SVHN: 0, 10, 20, 50, 100; nef = 0 is "no EBM", i.e. the Gaussian prior of VLAE). Here the same two sweeps
run on the book's MNIST joint model (preset ``mnist_joint``, three 2-D layers), one training per setting,
each scored by the **classifier Fréchet distance** of chapter 7: the Fréchet distance between Gaussians
fitted to the 64-d penultimate features of the book's digit classifier (:func:`~jebm_lite.analysis.metrics.
digit_classifier`, :func:`~jebm_lite.analysis.fid.digit_features`) for ``n`` samples against the 10 000 MNIST test
images. It ranks our own settings; it is **not** Inception FID and is never compared with the paper's
numbers. With ``metric="inception"`` (the default of the ``full`` profile, for a GPU) the same sweep is
scored with Inception FID instead (:func:`~jebm_lite.analysis.fid.inception_metric`: torch-fidelity's Inception-v3,
from a local weights file or downloaded; the weights are checked **before** any training, so a missing
file costs nothing). Its records go to ``..._inception.json`` beside the classifier ones.

Settings that equal a chapter-4 Tab. 1 cell reuse that cell's run (k = 60 and nef = 50 are the seed-0
``mnist_joint`` run, nef = 0 is the seed-0 ``mnist_vlae`` run), so the book trains each model once. Every
other setting trains in ``<runs>/mnist_joint_<setting><value>_seed<k>-<profile>`` (resumable).

One call of :func:`run_setting` writes one JSON file ``<results>/<setting><value>_seed<k>_<profile>.json``
(atomically) with the distance, the floor (5 000 real training images against the same test set) and the
provenance; :func:`load_results` / :func:`table_rows` build the tables from those files only.

Command line (run from ``notebooks/``; finished settings are skipped)::

    python -m jebm_lite.experiments.ablation --profile cpu --nef 0 10 20 50 100 --steps 15 30 60 150 300
    python -m jebm_lite.experiments.ablation --profile full --metric inception --n 10000   # GPU; Inception weights
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from jebm_lite.analysis import fid
from jebm_lite.analysis.metrics import digit_classifier
from jebm_lite.data import as_tensors, get_dataset
from jebm_lite.experiments import latent_table
from jebm_lite.experiments.tables import markdown_table
from jebm_lite.io import write_json_atomic
from jebm_lite.runtime import ConfigError, get_device, get_profile, seed_everything
from jebm_lite.training.load import run_experiment
from jebm_lite.training.rundir import diverged_info, load_records, provenance, stored_record
from jebm_lite.training.trainer import TrainingDiverged

METRICS = ("classifier", "inception")
"""``classifier``: Fréchet distance on the book's digit-classifier features; ``inception``: Inception FID."""
VALUE_KEY = {"classifier": "classifier_fd", "inception": "inception_fid"}
SETTINGS = ("nef", "steps")
"""``nef``: ``ebm.nef`` (Tab. 5); ``steps``: ``prior_langevin.steps`` in training and sampling (Tab. 4)."""
TITLES = {"nef": "Tab. 5, EBM width nef", "steps": "Tab. 4, prior Langevin steps k"}
"""Each setting's table in the paper: the one place that pairs them (chapters and commands read it)."""
PAPER: dict[str, dict[int, float]] = {
    "steps": {15: 56.42, 30: 39.89, 60: 32.15, 150: 31.20, 300: 30.78},
    "nef": {0: 43.95, 10: 41.72, 20: 33.10, 50: 30.42, 100: 24.16},
}
"""The paper's Inception FIDs (Tab. 4: CelebA-64; Tab. 5: SVHN, a 2-layer energy MLP, nef = 0 is VLAE).
Quoted for the trend only, never compared with our distances."""
TAB1_DEFAULT = {"steps": 60, "nef": 50}


def setting_config(setting: str, value: int, seed: int = 0, profile: str | None = None):
    """The config of one setting: chapter 4's ``mnist_joint`` Tab. 1 cell with the one field changed.

    ``nef = 0`` is the ``mnist_vlae`` cell (the Gaussian prior; the paper's "nef = 0" row).
    """
    if setting not in SETTINGS:
        raise ConfigError(f"setting {setting!r} is not one of {', '.join(SETTINGS)}")
    if int(value) < 0 or (setting == "steps" and int(value) < 1):
        raise ConfigError(f"{setting}={value} is out of range (nef >= 0, steps >= 1)")
    if setting == "nef" and int(value) == 0:
        return latent_table.cell_config("mnist", "vlae", seed, profile)
    key = "ebm.nef" if setting == "nef" else "prior_langevin.steps"
    return latent_table.cell_config("mnist", "joint", seed, profile, overrides=[f"{key}={int(value)}"])


def setting_run_dir(setting: str, value: int, cfg, runs_dir: str | Path = "runs/ablation",
                    tab1_runs: str | Path = "runs/tab1") -> Path | None:
    """Where the run of one setting lives (None in ``ci``: a temporary folder); Tab. 1 cells are reused."""
    if cfg.profile == "ci":
        return None
    if (setting == "nef" and int(value) == 0) or int(value) == TAB1_DEFAULT[setting]:
        return latent_table.cell_run_dir(cfg, tab1_runs)
    return Path(runs_dir) / f"mnist_joint_{setting}{int(value)}_seed{cfg.train.seed}-{cfg.profile}"


def default_metric(profile: str) -> str:
    """Inception FID in the ``full`` profile (a GPU, weights at hand or downloadable); the classifier
    distance otherwise."""
    return "inception" if profile == "full" else "classifier"


def result_path(results_dir: str | Path, setting: str, value: int, seed: int, profile: str,
                metric: str = "classifier") -> Path:
    tail = "" if metric == "classifier" else f"_{metric}"
    return Path(results_dir) / f"{setting}{int(value)}_seed{seed}_{profile}{tail}.json"


def run_setting(
    setting: str,
    value: int,
    seed: int = 0,
    profile: str | None = None,
    results_dir: str | Path | None = "results/ablation",
    runs_dir: str | Path = "runs/ablation",
    tab1_runs: str | Path = "runs/tab1",
    n: int = 5000,
    n_real: int = 10000,
    classifier: torch.nn.Module | None = None,
    device: str | torch.device | None = None,
    force: bool = False,
    metric: str | None = None,
    weights_path: str | Path | None = None,
) -> dict[str, Any]:
    """Train (or load) one setting, score its samples with the classifier Fréchet distance (or Inception
    FID: ``metric="inception"``, the ``full`` profile's default; ``weights_path`` as in
    :func:`~jebm_lite.analysis.fid.resolve_weights`), write the record.

    Samples are drawn with the setting's own k (the trained number of prior steps). In the ``ci`` profile
    the record is written only when ``results_dir`` is given (tests pass a temporary folder).

    Returns:
        ``{"setting", "value", "seed", "profile", "classifier_fd", "floor_fd", "n", "n_real",
        "train_steps", "train_time_s", "eval_wall_s", "run_dir", "device", "torch", "commit", "date",
        "config"}`` (``"inception_fid"`` in place of ``"classifier_fd"`` for Inception); a setting whose
        training diverges (:class:`~jebm_lite.training.trainer.TrainingDiverged`) gives
        ``"classifier_fd": None`` and ``"diverged": {"step", "message"}`` (stored, so it is not retrained).
    """
    cfg = setting_config(setting, value, seed, profile)
    metric = default_metric(cfg.profile) if metric is None else metric
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    key = VALUE_KEY[metric]
    out = result_path(results_dir, setting, value, seed, cfg.profile, metric) if results_dir is not None else None
    stored = None if (out is None or force) else stored_record(out, cfg)
    if stored is not None and stored.get("n") == n:
        return stored
    dev = get_device(device if device is not None else cfg.train.device)
    if metric == "inception":  # the weights first: a missing file must not cost a training
        fid.inception_metric(weights_path)
    rd = setting_run_dir(setting, value, cfg, runs_dir, tab1_runs)
    try:
        learner, _history, run = run_experiment(cfg, rd, device=dev)
    except TrainingDiverged as err:  # a result too: the setting does not train (the record stops a rerun)
        rec = {"setting": setting, "value": int(value), "seed": seed, "profile": cfg.profile, "n": n,
               "n_real": n_real, "run_dir": str(rd) if rd is not None else None, key: None,
               "floor_fd": None, "metric": metric, "train_steps": err.step, "train_time_s": None, "diverged": diverged_info(err),
               **provenance(cfg, dev)}
        if out is not None:
            write_json_atomic(out, rec)
        return rec
    learner.eval()
    t0 = time.perf_counter()
    if metric == "classifier":
        clf = classifier if classifier is not None else digit_classifier(device=dev)
        feat = fid.digit_features(clf)
        label = "classifier Fréchet distance (digit-classifier features; not Inception FID)"
    else:
        feat = None
        label = "Inception FID (torch-fidelity Inception-v3, 2048 features; grey digits repeated to RGB)"
    x_test, _ = as_tensors(get_dataset("mnist", "test", root=cfg.data.root), device=dev)
    x_train, _ = as_tensors(get_dataset("mnist", "train", root=cfg.data.root, subset=n), device=dev)
    seed_everything(seed)
    with torch.no_grad():
        kw = dict(n=n, n_real=min(n_real, len(x_test)), extractor=feat, batch_size=500, seed=seed, device=dev,
                  weights_path=weights_path)
        floor = fid.compute_fid(x_test, x_train, name="floor", **kw).fid
        score = fid.compute_fid(x_test, lambda m: learner.sample(m), name=f"{setting}{value}", **kw).fid
    result = run.read_result()
    rec = {
        "setting": setting, "value": int(value), "seed": seed, "profile": cfg.profile,
        key: score, "floor_fd": floor, "n": n, "n_real": min(n_real, len(x_test)), "metric": metric,
        "metric_label": label,
        "train_steps": result.get("steps"), "train_time_s": result.get("wall_time_s"),
        "eval_wall_s": round(time.perf_counter() - t0, 1),
        "run_dir": str(run.path) if cfg.profile != "ci" else None,
        **provenance(cfg, dev),
    }
    if out is not None:
        write_json_atomic(out, rec)
    return rec


def load_results(results_dir: str | Path, profile: str | None = None) -> list[dict[str, Any]]:
    """Every record under ``results_dir`` (optionally one profile), sorted by (setting, value, seed)."""
    return load_records(results_dir, lambda r: (r["setting"], r["value"], r["seed"]), profile)


def record_metric(record: dict[str, Any]) -> str:
    """``"inception"`` or ``"classifier"`` (records written before Inception was an option are classifier)."""
    return "inception" if record.get("metric") == "inception" else "classifier"


def table_rows(records: Sequence[dict[str, Any]], setting: str, metric: str = "classifier") -> list[dict[str, str]]:
    """Tab. 4 (``setting="nef"``) or Tab. 5 (``"steps"``) as rows, one per value of ``setting``: our
    distance of ``metric`` (mean over seeds; diverged runs named), seeds, train iterations, the paper's
    Inception FID. Keys are the column titles; every cell is a string (missing: "–")."""
    key = VALUE_KEY[metric]
    by_value: dict[int, list[dict]] = {}
    for r in records:
        if r["setting"] == setting and record_metric(r) == metric:
            by_value.setdefault(r["value"], []).append(r)
    name = {"nef": "nef (EBM width)", "steps": "k (prior Langevin steps)"}[setting]
    data = {"nef": "SVHN", "steps": "CelebA-64"}[setting]
    ours = "classifier FD, MNIST (ours)" if metric == "classifier" else "Inception FID, MNIST (ours)"
    rows = []
    for v in sorted(by_value):
        rs = by_value[v]
        ok = [r for r in rs if r.get(key) is not None]
        paper = PAPER[setting].get(v)
        if ok:
            cell = f"{sum(r[key] for r in ok) / len(ok):.1f}"
            if len(ok) < len(rs):
                cell += f" ({len(rs) - len(ok)} diverged)"
            steps = str(ok[0]["train_steps"])
        else:
            cell = "diverged at iteration " + ", ".join(str(r["diverged"]["step"]) for r in rs)
            steps = "–"
        rows.append({name: str(v), ours: cell, "seeds": str(len(rs)), "train iterations": steps,
                     f"paper Inception FID, {data}": "–" if paper is None else f"{paper:.2f}"})
    return rows


def table_markdown(records: Sequence[dict[str, Any]], setting: str, metric: str = "classifier") -> str:
    """:func:`table_rows` as a markdown table (the command line prints it; chapters show a DataFrame)."""
    return markdown_table(table_rows(records, setting, metric))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jebm_lite.experiments.ablation",
                                description="Paper Tabs. 4 and 5 on MNIST, one training per setting.")
    p.add_argument("--nef", nargs="*", type=int, default=[0, 10, 20, 50, 100])
    p.add_argument("--steps", nargs="*", type=int, default=[15, 30, 60, 150, 300])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--profile", choices=["ci", "cpu", "full"], default=None)
    p.add_argument("--results", default="results/ablation")
    p.add_argument("--runs", default="runs/ablation")
    p.add_argument("--n", type=int, default=5000, help="samples per distance")
    p.add_argument("--metric", choices=METRICS, default=None,
                   help="classifier Fréchet distance or Inception FID (default: inception in the full profile)")
    p.add_argument("--fid-weights", default=None, help="local Inception weights file (else $JEBM_FID_WEIGHTS, "
                   "the torch hub cache, or a download)")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prof = get_profile(a.profile)
    metric = default_metric(prof) if a.metric is None else a.metric
    for setting, values in (("nef", a.nef), ("steps", a.steps)):
        for v in values:
            for s in a.seeds:
                r = run_setting(setting, v, s, prof, a.results, a.runs, n=a.n, force=a.force, metric=metric,
                                weights_path=a.fid_weights)
                if r.get("diverged"):
                    print(f"{setting}={v} seed {s}: diverged at iteration {r['diverged']['step']}", flush=True)
                else:
                    print(f"{setting}={v} seed {s}: {metric} {r[VALUE_KEY[metric]]:.2f} (floor {r['floor_fd']:.2f})",
                          flush=True)
    recs = load_results(a.results, prof)
    for setting in SETTINGS:
        print(table_markdown(recs, setting, metric))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
