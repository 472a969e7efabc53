"""The Tab. 1 campaign: enough paired seeds for a verdict, in the order of a rule written before the runs.

The rule is ``notebooks/results/tab1_campaign/RULE.md``; this module is its code. :data:`ARMS` are the arms
(recipe, data, normalisation, EBM rate), :data:`ORDER` the order in which pairs are trained (a pair is the
unit: work cut short leaves whole pairs). :func:`lane` trains the cells one after the other with
:func:`~jebm_lite.experiments.latent_table.run_cell` (the Tab. 1 record, unchanged) and keeps each model's code
kit (:mod:`jebm_lite.analysis.codekit`), so that the probe study and the EBM measures never need a retraining.

Command line (resumable: finished cells and kits are skipped; run from ``notebooks/``)::

    python -m jebm_lite.experiments.campaign lane --profile cpu            # one CPU thread, hours per pair
    python -m jebm_lite.experiments.campaign lane --profile cpu --device cuda --only A:5 A:6   # on a GPU

The lane imports every module of the package before its first cell, so that editing the code while it runs
(hours) cannot change what a later cell trains with.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import jebm_lite
from jebm_lite.analysis.codekit import extract_kit, kit_paths, save_kit
from jebm_lite.experiments.latent_table import (
    cell_config,
    cell_run,
    cell_run_dir,
    probe_data,
    result_path,
    run_cell,
)
from jebm_lite.runtime import ConfigError, get_profile
from jebm_lite.training.rundir import RunDir


@dataclass(frozen=True)
class Arm:
    """One arm of the campaign: a data set and a recipe (overrides of the ``<data>_ref_*`` presets)."""

    key: str
    name: str
    dataset: str
    overrides: tuple[str, ...]
    results: str  # folder of the Tab. 1 records, relative to notebooks/
    seeds: tuple[int, ...]  # every seed the rule allows (pairs beyond the minimum only if the budget allows)


ARMS: dict[str, Arm] = {
    "A": Arm("A", "mnist-layer", "mnist", (), "results/tab1_ref", tuple(range(10))),
    "B": Arm("B", "mnist-none", "mnist", ("model.norm=none", "optim.lr_e=2e-05"), "results/tab1_ref_nonorm",
             tuple(range(6))),
    "C": Arm("C", "fmnist-layer", "fmnist", (), "results/tab1_ref", tuple(range(6))),
}
"""The arms of RULE.md: A = MNIST with LayerNorm (the ``mnist_ref_*`` presets), B = MNIST without normalisation
(``lr_e`` 2e-5, chosen from the sweep records by the sweep's rule), C = Fashion-MNIST with LayerNorm."""

ORDER: tuple[tuple[str, int], ...] = (
    ("B", 0), ("A", 3), ("B", 1), ("A", 4), ("B", 2),
    ("A", 5), ("A", 6), ("A", 7), ("A", 8), ("A", 9),
    ("B", 3), ("B", 4), ("B", 5),
    ("C", 3), ("C", 4), ("C", 5),
)
"""Pairs in the rule's priority order (the joint cell of a seed first, then its VLAE cell)."""

RETRAIN: tuple[tuple[str, int], ...] = (("A", 0), ("A", 1), ("A", 2), ("C", 0), ("C", 1), ("C", 2))
"""Step 9 of the rule: pre-campaign pairs trained again for their kits only (records under
``results/tab1_campaign/retrain``; never pooled)."""

KITS = "results/tab1_campaign/kits"
RETRAIN_RESULTS = "results/tab1_campaign/retrain"
METHODS = ("joint", "vlae")


def import_all() -> int:
    """Import every module of ``jebm_lite`` now (a long run then never reads code edited after it started).
    Returns the number of modules."""
    n = 0
    for m in pkgutil.walk_packages(jebm_lite.__path__, "jebm_lite."):
        if m.name.endswith("__main__"):
            continue
        importlib.import_module(m.name)
        n += 1
    return n


def kit_path(root: str | Path, arm: Arm, method: str, seed: int, retrain: bool = False) -> Path:
    """``<root>/<kits>/<arm name>[-retrain]/<dataset>_<method>_seed<k>.pt``."""
    sub = arm.name + ("-retrain" if retrain else "")
    return Path(root) / KITS / sub / f"{arm.dataset}_{method}_seed{seed}.pt"


def cell_paths(root: str | Path, arm: Arm, method: str, seed: int, profile: str, retrain: bool = False
               ) -> tuple[Path, Path]:
    """``(record, run folder)`` of one cell under the notebooks folder ``root``."""
    results = Path(root) / (f"{RETRAIN_RESULTS}/{arm.name}" if retrain else arm.results)
    return result_path(results, arm.dataset, method, seed, profile), results


def _commit(repo: Path, paths: list[Path], message: str, tries: int = 20) -> bool:
    """Commit exactly ``paths`` in ``repo`` (other staged or edited files are left as they are); retried while
    another git command holds the index."""
    rel = [str(p.resolve().relative_to(repo.resolve())) for p in paths if p.exists()]
    if not rel:
        return False
    for _ in range(tries):
        add = subprocess.run(["git", "add", "--", *rel], cwd=repo, capture_output=True, text=True)
        if add.returncode == 0:
            c = subprocess.run(["git", "commit", "-q", "-m", message, "--", *rel], cwd=repo, capture_output=True,
                               text=True)
            if c.returncode == 0 or "nothing to commit" in c.stdout + c.stderr:
                return True
        time.sleep(3)
    print(f"lane: could not commit {rel}", file=sys.stderr, flush=True)
    return False


def run_pair_cell(arm: Arm, method: str, seed: int, root: str | Path, runs: str | Path, profile: str,
                  device: str | None = None, retrain: bool = False) -> tuple[dict[str, Any], Path | None]:
    """Train (or find) one cell, write its Tab. 1 record, then its code kit. Returns ``(record, kit path)``;
    the kit is None when the record exists but its run does not (a pre-campaign model: see :data:`RETRAIN`)."""
    rec_path, results = cell_paths(root, arm, method, seed, profile, retrain)
    runs_dir = Path(runs) / (arm.name + ("-retrain" if retrain else ""))
    rec = run_cell(arm.dataset, method, seed, profile, results, runs_dir, arm.overrides, recipe="ref",
                   device=device)
    kit = kit_path(root, arm, method, seed, retrain)
    if rec.get("accuracy") is None or kit_paths(kit)[1].exists():
        return rec, kit if kit_paths(kit)[1].exists() else None
    cfg = cell_config(arm.dataset, method, seed, profile, arm.overrides, "ref")
    rd = cell_run_dir(cfg, runs_dir)
    if rd is None or not RunDir(rd).is_finished():
        return rec, None  # the record predates the campaign and its run is gone
    learner, _, _ = cell_run(cfg, runs_dir, device=device)
    learner.eval()
    train, test = probe_data(cfg)
    save_kit(extract_kit(learner, train, test, meta={
        "arm": arm.name, "dataset": arm.dataset, "method": method, "seed": seed, "profile": profile,
        "record": str(rec_path.relative_to(Path(root))), "train_time_s": rec.get("train_time_s"),
        "commit": rec.get("commit"), "device": rec.get("device"), "retrain": retrain}), kit)
    return rec, kit


def lane(root: str | Path = ".", runs: str | Path = "runs/campaign", profile: str | None = None,
         device: str | None = None, only: list[tuple[str, int]] | None = None, retrain: bool = True,
         commit: bool = False) -> None:
    """Train the campaign's pairs in :data:`ORDER` (then :data:`RETRAIN` with ``retrain``), skipping what is done.

    ``root``: the notebooks folder whose ``results/`` receive the records and kits (``commit``: each finished
    cell's files are committed in the repository holding ``root``)."""
    prof = get_profile(profile)
    todo = [(k, s, False) for k, s in (only or ORDER)]
    if retrain and only is None:
        todo += [(k, s, True) for k, s in RETRAIN]
    repo = Path(root).resolve().parent
    for key, seed, again in todo:
        if key not in ARMS:
            raise ConfigError(f"arm {key!r} is not one of {', '.join(ARMS)}")
        arm = ARMS[key]
        for method in METHODS:
            t0 = time.time()
            rec, kit = run_pair_cell(arm, method, seed, root, runs, prof, device, again)
            acc = "diverged" if rec.get("accuracy") is None else " / ".join(f"{a:.1f}" for a in rec["accuracy"])
            tag = " (retrain)" if again else ""
            print(f"{time.strftime('%H:%M')} {arm.name} {method} seed {seed}{tag}: {acc} "
                  f"[{time.time() - t0:.0f} s]", flush=True)
            if commit:
                rec_path, _ = cell_paths(root, arm, method, seed, prof, again)
                files = [rec_path] + ([*kit_paths(kit)] if kit is not None else [])
                _commit(repo, files, f"Campaign record: {arm.name} {method} seed {seed}{tag}, "
                                     f"{rec.get('device')}, commit {rec.get('commit')}")


def _cell(text: str) -> tuple[str, int]:
    try:
        key, seed = text.split(":")
        return key, int(seed)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write a cell as ARM:SEED, e.g. A:3") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jebm_lite.experiments.campaign", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    la = sub.add_parser("lane", help="train the campaign's pairs in the rule's order (resumable)")
    la.add_argument("--profile", choices=["ci", "cpu", "full"], default=None)
    la.add_argument("--device", default=None)
    la.add_argument("--root", default=".", help="the notebooks folder (records and kits go under its results/)")
    la.add_argument("--runs", default="runs/campaign", help="folder of the run directories")
    la.add_argument("--only", nargs="+", type=_cell, default=None, metavar="ARM:SEED")
    la.add_argument("--no-retrain", action="store_true", help="skip step 9 (pre-campaign pairs trained again)")
    la.add_argument("--commit", action="store_true", help="commit each finished cell's record and kit")
    la.add_argument("--threads", type=int, default=None, help="torch threads (the campaign's CPU cells use 1)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    n = import_all()
    print(f"lane: {n} modules imported from {Path(jebm_lite.__file__).parent}", flush=True)
    lane(a.root, a.runs, a.profile, a.device, a.only, not a.no_retrain, a.commit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
