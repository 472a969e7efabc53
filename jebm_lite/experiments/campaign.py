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
import math
import pkgutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import jebm_lite
from jebm_lite.analysis.codekit import extract_kit, kit_paths, load_kit, save_kit
from jebm_lite.analysis.probe_study import ebm_activity, probe_variants, variance_split
from jebm_lite.experiments.latent_table import (
    DISPLAY_NAMES,
    PAPER,
    cell_config,
    cell_run,
    cell_run_dir,
    interval_side,
    load_results,
    probe_data,
    result_path,
    run_cell,
    t_interval,
    t_prediction_interval,
)
from jebm_lite.io import read_json, write_json_atomic
from jebm_lite.runtime import ConfigError, device_name, get_profile, git_commit
from jebm_lite.training.rundir import RunDir, config_diff


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


# ----------------------------------------------------------------------------------------------
# The report: the rule's primary and secondary questions, from the records only
# ----------------------------------------------------------------------------------------------


def arm_records(arm: Arm, root: str | Path = ".", profile: str = "cpu") -> list[dict[str, Any]]:
    """The pooled Tab. 1 records of ``arm`` (every seed of its data set whose config is the arm's recipe, whatever
    commit or device trained it; one record per (method, seed))."""
    out = []
    for r in load_results(Path(root) / arm.results, profile):
        if r["dataset"] != arm.dataset or r["seed"] not in arm.seeds:
            continue
        want = cell_config(arm.dataset, r["method"], r["seed"], profile, arm.overrides, "ref")
        if config_diff(r["config"], want, ignore=("train.device",)):
            continue  # another recipe in the same folder
        out.append(r)
    return out


def clean_hierarchy(acc: Sequence[float]) -> bool:
    """A run's hierarchy is "clean" if its top layer is the most predictive of its layers (RULE.md); otherwise it
    is "mixed" (the top layer below a lower one)."""
    return acc[-1] > max(acc[:-1])


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c`` (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def arm_report(arm: Arm, records: Sequence[dict[str, Any]], level: float = 0.95) -> dict[str, Any]:
    """Everything the rule asks of one arm, from its records.

    Returns ``{"arm", "name", "dataset", "pairs": [{"seed", "joint", "vlae" (per-layer %), "diff" (top, points),
    "commit": {method: commit}, "device"}], "unpaired": [(method, seed)], "layers": [{"layer", "joint_mean",
    "joint_sd", "vlae_mean", "vlae_sd"}], "diff", "ci_low", "ci_high", "n_pairs", "paper_diff", "outcome"
    ("holds" | "reversed" | "not shown" | "untested"), "excludes_paper" (bool | None), "clean": {method: count},
    "mixed": {method: count}, "discordant": (joint clean & VLAE mixed, joint mixed & VLAE clean), "mcnemar_p"}``.
    """
    by: dict[int, dict[str, dict]] = {}
    for r in records:
        if r.get("accuracy") is not None:
            by.setdefault(r["seed"], {})[r["method"]] = r
    pairs, unpaired = [], []
    for seed, recs in sorted(by.items()):
        if set(recs) != set(METHODS):
            unpaired += [(m, seed) for m in recs]
            continue
        j, v = recs["joint"]["accuracy"], recs["vlae"]["accuracy"]
        pairs.append({"seed": seed, "joint": j, "vlae": v, "diff": j[-1] - v[-1],
                      "commit": {m: recs[m].get("commit") for m in METHODS}, "device": recs["joint"].get("device")})
    diffs = [p["diff"] for p in pairs]
    m, lo, hi = t_interval(diffs, level) if diffs else (None, None, None)
    outcome = {"untested": "untested", "above": "holds", "below": "reversed",
               "includes 0": "not shown"}[interval_side(len(diffs), lo, hi)]
    pj, pv = PAPER[(arm.dataset, "joint")], PAPER[(arm.dataset, "vlae")]
    paper_diff = pj[-1] - pv[-1]
    excl = None if lo is None else not (lo <= paper_diff <= hi)
    pi_lo, pi_hi = t_prediction_interval(diffs, level)  # where one more pair (one run, as in the paper) falls
    n_layers = len(pairs[0]["joint"]) if pairs else 0
    layers = []
    for i in range(n_layers):
        row: dict[str, Any] = {"layer": i + 1}
        for me in METHODS:
            vals = [p[me][i] for p in pairs]
            row[f"{me}_mean"] = statistics.fmean(vals)
            row[f"{me}_sd"] = statistics.stdev(vals) if len(vals) > 1 else math.nan
            row[f"{me}_paper"] = PAPER[(arm.dataset, me)][i]
        layers.append(row)
    clean = {me: sum(clean_hierarchy(p[me]) for p in pairs) for me in METHODS}
    b = sum(clean_hierarchy(p["joint"]) and not clean_hierarchy(p["vlae"]) for p in pairs)
    c = sum(not clean_hierarchy(p["joint"]) and clean_hierarchy(p["vlae"]) for p in pairs)
    return {"arm": arm.key, "name": arm.name, "dataset": arm.dataset, "pairs": pairs, "unpaired": unpaired,
            "layers": layers, "diff": m, "ci_low": lo, "ci_high": hi, "n_pairs": len(pairs), "level": level,
            "paper_diff": paper_diff, "outcome": outcome, "excludes_paper": excl, "pi_low": pi_lo, "pi_high": pi_hi,
            "paper_in_pi": None if pi_lo is None else pi_lo <= paper_diff <= pi_hi, "clean": clean,
            "mixed": {me: len(pairs) - clean[me] for me in METHODS}, "discordant": (b, c),
            "mcnemar_p": mcnemar_exact(b, c)}


LAYER_NAMES = {1: "z1 (bottom)", 2: "z2", 3: "z3 (top)"}
PRIOR_NAMES = {"joint": "joint EBM prior", "vlae": "VLAE"}


def arm_label(arm: Arm) -> str:
    """``"A: MNIST, LayerNorm"``: an arm as the chapter names it."""
    norm = "no normalisation" if "model.norm=none" in arm.overrides else "LayerNorm"
    return f"{arm.key}: {DISPLAY_NAMES[arm.dataset]}, {norm}"


def layer_rows(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Tab. 1 per arm and prior, the layers as columns: ``{"arm", "prior", "z1", "z2", "z3"}`` with cells
    ``"mean ± sd (paper)"`` in % (an arm without pairs is left out)."""
    rows = []
    for k, rep in reports.items():
        if not rep["layers"]:
            continue
        for me in METHODS:
            row: dict[str, Any] = {"arm": arm_label(ARMS[k]), "prior": PRIOR_NAMES[me]}
            for la in rep["layers"]:
                sd = la[f"{me}_sd"]
                ours = f"{la[me + '_mean']:.1f}" + ("" if math.isnan(sd) else f" ± {sd:.1f}")
                row[f"z{la['layer']}"] = f"{ours} ({la[me + '_paper']:.1f})"
            rows.append(row)
    return rows


def verdict_rows(reports: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm: ``{"arm", "pairs", "d" (mean paired top-layer difference), "ci" (text), "paper",
    "claim", "paper_in_ci" ("yes" | "no" | None without an interval), "clean" ("joint / VLAE" counts),
    "clean_joint", "clean_vlae", "p" (McNemar)}``."""
    return [{"arm": arm_label(ARMS[k]), "pairs": rep["n_pairs"], "d": rep["diff"],
             "ci": None if rep["ci_low"] is None else f"{rep['ci_low']:+.1f} to {rep['ci_high']:+.1f}",
             "paper": rep["paper_diff"], "claim": rep["outcome"],
             "paper_in_ci": None if rep["excludes_paper"] is None else ("no" if rep["excludes_paper"] else "yes"),
             "clean": f"{rep['clean']['joint']} / {rep['clean']['vlae']} of {rep['n_pairs']}",
             "clean_joint": rep["clean"]["joint"], "clean_vlae": rep["clean"]["vlae"],
             "p": rep["mcnemar_p"] if rep["n_pairs"] else None} for k, rep in reports.items()]


def chaos_rows(first: Sequence[dict], second: Sequence[dict]) -> list[dict[str, Any]]:
    """The same cells trained twice: ``{"model", "layer", "first", "second", "change"}`` per (model, layer),
    matched by (data set, prior, seed)."""
    by = {(r["dataset"], r["method"], r["seed"]): r for r in second}
    rows = []
    for a in sorted(first, key=lambda r: (r["dataset"], r["method"], r["seed"])):
        b = by.get((a["dataset"], a["method"], a["seed"]))
        if b is None or a.get("accuracy") is None or b.get("accuracy") is None:
            continue
        for i, (x, y) in enumerate(zip(a["accuracy"], b["accuracy"])):
            rows.append({"model": f"{DISPLAY_NAMES[a['dataset']]}, {PRIOR_NAMES[a['method']]}, seed {a['seed']}",
                         "layer": LAYER_NAMES.get(i + 1, f"z{i + 1}"), "first": x, "second": y, "change": y - x})
    return rows


# ----------------------------------------------------------------------------------------------
# The probe study and the EBM measures, from the kits (RULE.md; no retraining)
# ----------------------------------------------------------------------------------------------


def study_path(kit: str | Path) -> Path:
    """``<kit name>.study.json`` beside the kit."""
    return kit_paths(kit)[0].with_suffix(".study.json")


def study_kit(kit_file: str | Path, seeds: Sequence[int] = (0, 1, 2, 3, 4), epochs: int = 30,
              force: bool = False) -> dict[str, Any]:
    """Probe one kit over ``seeds`` x :data:`~jebm_lite.analysis.probe_study.VARIANTS` and, for a joint model,
    measure its EBM (:func:`~jebm_lite.analysis.probe_study.ebm_activity`); write and return the study record."""
    out = study_path(kit_file)
    if out.exists() and not force:
        return read_json(out)
    kit = load_kit(kit_file)
    meta = kit.meta
    arm = next(a for a in ARMS.values() if a.name == meta["arm"].removesuffix("-retrain"))
    cfg = cell_config(arm.dataset, meta["method"], meta["seed"], meta["profile"], arm.overrides, "ref")
    t0 = time.perf_counter()
    rows = probe_variants(kit, seeds, epochs=epochs)
    probe_s = time.perf_counter() - t0
    ebm = ebm_activity(kit, cfg.ebm, cfg.prior_langevin, meta["seed"]) if kit.ebm is not None else None
    rec = {"kit": kit_paths(kit_file)[0].name, **{k: meta[k] for k in ("arm", "dataset", "method", "seed")},
           "retrain": meta.get("retrain", False), "probe_seeds": list(seeds), "epochs": epochs, "probes": rows,
           "ebm": ebm, "probe_wall_s": round(probe_s, 1), "device": device_name(torch.device("cpu")),
           "threads": torch.get_num_threads(), "commit": git_commit(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    write_json_atomic(out, rec)
    return rec


def all_kits(root: str | Path = ".") -> list[Path]:
    """Every kit under ``<root>/results/tab1_campaign/kits``, sorted."""
    return sorted(p.with_suffix(".pt") for p in (Path(root) / KITS).glob("*/*.json")
                  if not p.name.endswith(".study.json"))


def load_studies(root: str | Path = ".") -> list[dict[str, Any]]:
    """Every study record of the campaign's kits (those computed so far)."""
    return [read_json(study_path(k)) for k in all_kits(root) if study_path(k).exists()]


def ebm_rows(studies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The EBM measures of every joint model studied: ``{"model", "f_sd_prior", "fresh_sd", "f_gap", "move",
    "fresh_move", "end", "active"}`` (see :func:`~jebm_lite.analysis.probe_study.ebm_activity`)."""
    names = {a.name: arm_label(a) for a in ARMS.values()}
    return [{"model": f"{names.get(s['arm'], s['arm'])}, seed {s['seed']}" + (" (retrained)" if s.get("retrain") else ""),
             "f_sd_prior": s["ebm"]["trained"]["f_sd_prior"], "fresh_sd": s["ebm"]["fresh"]["f_sd_prior"],
             "f_gap": s["ebm"]["trained"]["f_gap"], "move": s["ebm"]["trained"]["move_rms"],
             "fresh_move": s["ebm"]["fresh"]["move_rms"], "end": s["ebm"]["endpoint_rms"],
             "active": s["ebm"]["active"]} for s in studies if s.get("ebm")]


def probe_split(studies: Sequence[dict[str, Any]], layer: int | None = None) -> list[dict[str, Any]]:
    """:func:`~jebm_lite.analysis.probe_study.variance_split` over the studied models (one layer, or all)."""
    per_model = {f"{s['arm']} {s['method']} {s['seed']}{' r' if s.get('retrain') else ''}": s["probes"]
                 for s in studies}
    rows = variance_split(per_model) if per_model else []
    return [r for r in rows if layer is None or r["layer"] == layer]


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
    pr = sub.add_parser("probes", help="the probe study and the EBM measures of every kit without a study record")
    pr.add_argument("--root", default=".", help="the notebooks folder")
    pr.add_argument("--threads", type=int, default=None)
    pr.add_argument("--commit", action="store_true", help="commit each study record")
    rp = sub.add_parser("report", help="print each arm's verdict from the records")
    rp.add_argument("--root", default=".")
    a = p.parse_args(argv)
    if getattr(a, "threads", None):
        torch.set_num_threads(a.threads)
    if a.cmd == "report":
        for arm in ARMS.values():
            r = arm_report(arm, arm_records(arm, a.root))
            ci = "" if r["ci_low"] is None else f" (95 % CI {r['ci_low']:+.1f} to {r['ci_high']:+.1f})"
            d = "" if r["diff"] is None else f"{r['diff']:+.1f}"
            print(f"{arm.key} {arm.name}: {r['n_pairs']} pairs, top-layer joint - VLAE {d}{ci}: {r['outcome']}; "
                  f"clean hierarchies joint {r['clean']['joint']}, VLAE {r['clean']['vlae']} "
                  f"(McNemar p = {r['mcnemar_p']:.2f})")
        return 0
    if a.cmd == "probes":
        repo = Path(a.root).resolve().parent
        for kit in all_kits(a.root):
            if study_path(kit).exists():
                continue
            rec = study_kit(kit)
            print(f"{time.strftime('%H:%M')} {kit.parent.name}/{kit.name}: probes {rec['probe_wall_s']} s"
                  + ("" if rec["ebm"] is None else f", EBM endpoint rms {rec['ebm']['endpoint_rms']:.3f}"),
                  flush=True)
            if a.commit:
                _commit(repo, [study_path(kit)], f"Campaign probe study: {kit.parent.name}/{kit.name}")
        return 0
    n = import_all()
    print(f"lane: {n} modules imported from {Path(jebm_lite.__file__).parent}", flush=True)
    lane(a.root, a.runs, a.profile, a.device, a.only, not a.no_retrain, a.commit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
