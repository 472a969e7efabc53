"""Paper Fig. 4, quantified: how much of an image each layer controls, joint prior beside VLAE.

Fig. 4 of the paper shows hierarchical sampling: redraw one layer with the others fixed and look at what
changes (the top layer should change the class, the bottom one the style). Here each (data set, prior, seed)
of the Tab. 1 runs gets numbers instead of a picture (:func:`jebm_lite.analysis.hierarchy.resample_stats`):
per layer z_i,

* ``pixel_var_frac``: the share of the samples' pixel variance that redrawing z_i alone produces;
* ``class_change``: how often a classifier trained on the real images (MNIST digits, Fashion-MNIST classes)
  changes its label when z_i alone is redrawn;

for both readings of the figure: ``resample`` (z_i redrawn from the prior given the other layers: Langevin
for the joint prior, N(0, I) for VLAE) and ``swap`` (z_i copied from another prior sample). One JSON record
per cell, ``<results>/<dataset>_<method>_seed<k>_<profile>.json``, with provenance; the runs are those of
:mod:`jebm_lite.experiments.latent_table` (loaded, or trained when missing)::

    python -m jebm_lite.experiments.fig4 --recipe ref --profile cpu --seeds 0 1 2 \\
        --results results/fig4_ref --runs runs/tab1_ref
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from jebm_lite.analysis.hierarchy import resample_stats
from jebm_lite.analysis.metrics import digit_classifier
from jebm_lite.experiments.latent_table import (
    DATASETS,
    DEFAULT_DATASETS,
    DISPLAY_NAMES,
    METHODS,
    RECIPES,
    cell_config,
    cell_run,
    interval_side,
    t_interval,
)
from jebm_lite.io import write_json_atomic
from jebm_lite.runtime import get_device, get_profile, git_commit, seed_everything
from jebm_lite.training.rundir import load_records, provenance, run_link, stored_record

READINGS = ("resample", "swap")
MEASURES = ("pixel_var_frac", "class_change")


def result_path(results_dir: str | Path, dataset: str, method: str, seed: int, profile: str) -> Path:
    return Path(results_dir) / f"{dataset}_{method}_seed{seed}_{profile}.json"


def run_cell(dataset: str, method: str, seed: int, profile: str | None = None, results_dir: str | Path = "results/fig4",
             runs_dir: str | Path = "runs/tab1", recipe: str = "ref", n_contexts: int = 256, n_resamples: int = 16,
             classifier_cache: str | None = None, device: str | torch.device | None = None,
             force: bool = False) -> dict[str, Any]:
    """Per-layer control of one trained model (both readings); writes and returns its record.

    ``n_contexts`` x ``n_resamples`` redraws per layer: with 64 contexts two random streams of one model moved
    a layer's class change by up to 0.06, so the default is 256 (about 2 minutes per cell on one CPU thread).

    Returns ``{"dataset", "method", "seed", "profile", "layers": L, "readings": {reading: {"z1": {"pixel_var",
    "pixel_var_frac", "class_change"}, ..., "all": {...}}}, "classifier_test_accuracy", "train_time_s" (the scored
    run's training time, :func:`~jebm_lite.training.rundir.scored_from`), "run_dir", ...provenance}``.
    """
    cfg = cell_config(dataset, method, seed, profile, recipe=recipe)
    out = result_path(results_dir, dataset, method, seed, cfg.profile)
    stored = None if force else stored_record(out, cfg)
    if stored is not None:
        return stored
    dev = get_device(device if device is not None else cfg.train.device)
    commit = git_commit()
    t0 = time.perf_counter()
    learner, _, rd = cell_run(cfg, runs_dir, device=dev)
    learner.eval()
    ci = cfg.profile == "ci"
    cache = classifier_cache if classifier_cache is not None else (None if ci else f"runs/classifier-{dataset}.pt")
    clf = digit_classifier(cache=cache, root=cfg.data.root, epochs=1 if ci else 2, subset=2000 if ci else None,
                           device=dev, dataset=DATASETS[dataset])
    L = len(learner.z_dims)
    groups = {f"z{i + 1}": (i,) for i in range(L)}
    readings = {}
    for reading in READINGS:
        seed_everything(seed)
        g = torch.Generator(device=dev).manual_seed(seed)
        readings[reading] = resample_stats(learner, groups, n_contexts=n_contexts, n_resamples=n_resamples,
                                           classifier=clf, generator=g, reading=reading)
    rec = {"dataset": dataset, "method": method, "seed": seed, "profile": cfg.profile, "layers": L,
           "readings": readings, "n_contexts": n_contexts, "n_resamples": n_resamples,
           "classifier_test_accuracy": float(clf.test_accuracy), "wall_s": round(time.perf_counter() - t0, 1),
           **run_link(rd, keep_path=not ci),  # which training was scored (rundir.scored_from)
           **provenance(cfg, dev, commit)}
    write_json_atomic(out, rec)
    return rec


def load_results(results_dir: str | Path, profile: str | None = None) -> list[dict[str, Any]]:
    return load_records(results_dir, lambda r: (r["dataset"], r["method"], r["seed"]), profile)


def layer_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (record, reading, layer): ``{"dataset", "method", "seed", "reading", "layer" ("z1" ...
    "all"), "pixel_var_frac", "class_change"}``, ready for a DataFrame."""
    out = []
    for r in records:
        for reading, layers in r["readings"].items():
            for layer, v in layers.items():
                out.append({"dataset": r["dataset"], "method": r["method"], "seed": r["seed"], "reading": reading,
                            "layer": layer, **{m: v.get(m) for m in MEASURES}})
    return out


def summarise(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds per (dataset, method, reading, layer): ``{"dataset", "method", "reading",
    "layer", "n_seeds", "<measure>_mean", "<measure>_std"}`` for each of :data:`MEASURES` (std NaN with one
    seed; a measure missing from a record, e.g. ``class_change`` without a classifier, is left out)."""
    groups: dict[tuple, list[dict]] = {}
    for row in layer_rows(records):
        groups.setdefault((row["dataset"], row["method"], row["reading"], row["layer"]), []).append(row)
    out = []
    for (ds, me, reading, layer), rows in sorted(groups.items()):
        entry: dict[str, Any] = {"dataset": ds, "method": me, "reading": reading, "layer": layer, "n_seeds": len(rows)}
        for m in MEASURES:
            vals = [r[m] for r in rows if r[m] is not None]
            entry[f"{m}_mean"] = statistics.fmean(vals) if vals else None
            entry[f"{m}_std"] = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        out.append(entry)
    return out


def top_layer_contrast(records: Sequence[dict[str, Any]], dataset: str, reading: str = "resample",
                       measure: str = "class_change", level: float = 0.95) -> dict[str, Any]:
    """Joint prior vs VLAE at the top layer of ``dataset``, paired over seeds: how much more often does
    redrawing z_L change the class under the joint prior (``measure="class_change"``; or the pixel-variance
    share, ``"pixel_var_frac"``)?

    The per-seed difference joint - VLAE (percentage points, i.e. the measure x 100) over the seeds where both
    records exist, with a Student-t interval at ``level``
    (:func:`~jebm_lite.experiments.latent_table.t_interval`). ``outcome``: ``"joint higher"`` (interval above
    0), ``"joint lower"`` (below 0), ``"no difference shown"`` (containing 0) or ``"untested"`` (fewer than two
    paired seeds).

    Returns ``{"dataset", "reading", "measure", "layer" ("z<L>"), "joint", "vlae" (means over the paired
    seeds, percent), "diffs", "seeds", "diff", "ci_low", "ci_high", "n_pairs", "level", "outcome", "text"}``.

    Raises:
        ValueError: an unknown ``reading`` or ``measure``, or no record of ``dataset``.
    """
    if reading not in READINGS:
        raise ValueError(f"reading {reading!r} is not one of {', '.join(READINGS)}")
    if measure not in MEASURES:
        raise ValueError(f"measure {measure!r} is not one of {', '.join(MEASURES)}")
    recs = [r for r in records if r["dataset"] == dataset]
    if not recs:
        raise ValueError(f"no Fig. 4 record for dataset {dataset!r}")
    top = f"z{max(r['layers'] for r in recs)}"
    by: dict[int, dict[str, float]] = {}
    for r in recs:
        v = r["readings"][reading][top].get(measure)
        if v is not None:
            by.setdefault(r["seed"], {})[r["method"]] = 100.0 * v
    seeds = sorted(s for s, m in by.items() if set(METHODS) <= set(m))
    joint = [by[s]["joint"] for s in seeds]
    vlae = [by[s]["vlae"] for s in seeds]
    diffs = [a - b for a, b in zip(joint, vlae)]
    diff = lo = hi = None
    if diffs:
        diff, lo, hi = t_interval(diffs, level)
    n = len(diffs)
    outcome = {"untested": "untested", "above": "joint higher", "below": "joint lower",
               "includes 0": "no difference shown"}[interval_side(n, lo, hi)]
    name = DISPLAY_NAMES.get(dataset, dataset)
    what = "changes the class in" if measure == "class_change" else "produces"
    how = "redrawing" if reading == "resample" else "swapping"
    unit = (f"of the {'redraws' if reading == 'resample' else 'swaps'}" if measure == "class_change"
            else "of the pixel variance")
    seeds_txt = {0: "no paired seed", 1: "one paired seed"}.get(n, f"{n} paired seeds")
    if n == 0:
        text = f"{name}: no seed has Fig. 4 records of both priors."
    else:
        j, v = sum(joint) / n, sum(vlae) / n
        text = (f"{name}, {seeds_txt}: {how} the top layer {top} {what} {j:.1f} % {unit} under the joint prior "
                f"and {v:.1f} % under VLAE, a difference of {diff:+.1f} points")
        if outcome == "untested":
            text += " that one seed cannot test."
        else:
            ci = f"{100 * level:g} % CI {lo:+.1f} to {hi:+.1f}"
            text += {"joint higher": f" ({ci}): the joint prior's top layer controls more.",
                     "joint lower": f" ({ci}): the joint prior's top layer controls less.",
                     "no difference shown": f", and the {ci} includes 0."}[outcome]
    return {"dataset": dataset, "reading": reading, "measure": measure, "layer": top,
            "joint": sum(joint) / n if n else None, "vlae": sum(vlae) / n if n else None, "diffs": diffs,
            "seeds": seeds, "diff": diff, "ci_low": lo, "ci_high": hi, "n_pairs": n, "level": level,
            "outcome": outcome, "text": text}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jebm_lite.experiments.fig4", description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=list(DATASETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--profile", choices=["ci", "cpu", "full"], default=None)
    p.add_argument("--recipe", choices=RECIPES, default="ref")
    p.add_argument("--results", default="results/fig4")
    p.add_argument("--runs", default="runs/tab1", help="the run directories of the Tab. 1 cells")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prof = get_profile(a.profile)
    for ds in a.datasets:
        for s in a.seeds:
            for me in a.methods:
                rec = run_cell(ds, me, s, prof, a.results, a.runs, a.recipe, force=a.force)
                row = rec["readings"]["resample"]
                print(f"{ds:7s} {me:6s} seed {s}: class change " + " / ".join(
                    f"{row[f'z{i + 1}']['class_change']:.2f}" for i in range(rec["layers"])), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
