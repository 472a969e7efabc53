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
    METHODS,
    RECIPES,
    cell_config,
    cell_run,
)
from jebm_lite.io import write_json_atomic
from jebm_lite.runtime import get_device, get_profile, git_commit, seed_everything
from jebm_lite.training.rundir import load_records, provenance, stored_record

READINGS = ("resample", "swap")


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
    "pixel_var_frac", "class_change"}, ..., "all": {...}}}, "classifier_test_accuracy", ...provenance}``.
    """
    cfg = cell_config(dataset, method, seed, profile, recipe=recipe)
    out = result_path(results_dir, dataset, method, seed, cfg.profile)
    stored = None if force else stored_record(out, cfg)
    if stored is not None:
        return stored
    dev = get_device(device if device is not None else cfg.train.device)
    commit = git_commit()
    t0 = time.perf_counter()
    learner, _, _ = cell_run(cfg, runs_dir, device=dev)
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
           **provenance(cfg, dev, commit)}
    write_json_atomic(out, rec)
    return rec


def load_results(results_dir: str | Path, profile: str | None = None) -> list[dict[str, Any]]:
    return load_records(results_dir, lambda r: (r["dataset"], r["method"], r["seed"]), profile)


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
