"""Paper Tab. 1: the latent classifier per layer, run per seed, written to result files, then tabulated.

Protocol (paper Sec. 5.1; ``reference-implementations.md`` Sec. 1.9): train the model, infer the codes of
every training and test image with the inference network (the posterior **means** mu_i, for
determinism), fit one classifier per layer (Linear -> 256 -> ReLU -> Linear, :func:`~jebm_lite.analysis.metrics.
latent_probe`) on the training codes of that layer, report its test accuracy. The baseline is VLAE with the
same generator and inference networks (the preset ``<data>_vlae``: the same config with ``ebm.nef = 0``).

One call of :func:`run_cell` = one (dataset, method, seed, profile) cell: it loads the finished run or
trains it (:func:`~jebm_lite.training.load.run_experiment`), probes it and writes one JSON result file
``<results>/<dataset>_<method>_seed<k>_<profile>.json`` (atomically) holding the accuracies and the
provenance (profile, device, torch version, commit, training steps and wall time). :func:`load_results`
and :func:`summarise` build the table from those files only; nothing in the table is typed in except the
paper's own numbers (:data:`PAPER`), which are always labelled as such.

Command line (all cells of a table, resumable: finished cells are skipped; run from ``notebooks/``)::

    # the reference recipe at 30,000 iterations, MNIST and Fashion-MNIST (chapter 4; hours per cell on a CPU)
    python -m jebm_lite.experiments.latent_table --recipe ref --profile cpu --seeds 0 1 2 \
        --results results/tab1_ref --runs runs/tab1_ref
    # the SVHN row on a GPU (the svhn4 model, 100 epochs of SVHN-extra per cell; SVHN's .mat files in $JEBM_DATA)
    python -m jebm_lite.experiments.latent_table --profile full --datasets svhn --seeds 0 1 2 \
        --results results/tab1_svhn --runs runs/tab1_svhn
    # the selection sweep of the reference recipe (validation split; rule in results/ref_sweep/RULE.md)
    python -m jebm_lite.experiments.latent_table --sweep --profile cpu --results results/ref_sweep --runs runs/ref_sweep
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from jebm_lite.analysis.metrics import layerwise_probe
from jebm_lite.config import get_config
from jebm_lite.data import as_tensors, get_dataset
from jebm_lite.io import write_json_atomic
from jebm_lite.runtime import ConfigError, get_device, get_profile, git_commit, seed_everything
from jebm_lite.training.load import run_experiment
from jebm_lite.training.rundir import diverged_info, load_records, provenance, run_link, stored_record
from jebm_lite.training.trainer import TrainingDiverged

DATASETS = {"mnist": "mnist", "fmnist": "fashion_mnist", "svhn": "svhn"}
"""Table row -> ``data.name``; the experiment presets are ``<row>_joint`` and ``<row>_vlae`` (SVHN: ``svhn4_*``,
the reference code's 4-layer model, whose settings already are the reference recipe)."""
DEFAULT_DATASETS = ("mnist", "fmnist")  # SVHN needs its files and a GPU: ask for it with --datasets svhn
METHODS = ("joint", "vlae")
RECIPES = ("book", "ref")
"""``book``: the presets ``<row>_<method>`` (chapters 3-7); ``ref``: ``<row>_ref_<method>``, the reference EBM
recipe (spectral norm, 4 x 50 MLP, the EBM learning rate chosen on the validation split)."""

PAPER: dict[tuple[str, str], tuple[float, ...]] = {
    ("mnist", "joint"): (32.60, 58.32, 67.64),
    ("mnist", "vlae"): (35.69, 57.86, 52.08),
    ("fmnist", "joint"): (39.27, 44.81, 84.27),
    ("fmnist", "vlae"): (52.43, 35.65, 83.24),
    ("svhn", "joint"): (21.00, 25.29, 30.58, 86.63),
    ("svhn", "vlae"): (22.59, 26.97, 56.70, 52.14),
}
"""The paper's Tab. 1 test accuracies in %, per layer bottom (z_1) to top (z_3). Quoted, not measured."""


def result_path(results_dir: str | Path, dataset: str, method: str, seed: int, profile: str) -> Path:
    """``<results_dir>/<dataset>_<method>_seed<seed>_<profile>.json``."""
    return Path(results_dir) / f"{dataset}_{method}_seed{seed}_{profile}.json"


def cell_config(dataset: str, method: str, seed: int, profile: str | None = None, overrides: Sequence[str] = (),
                recipe: str = "book", validation: bool = False):
    """The experiment config of one table cell: preset ``<dataset>_<method>`` (``recipe="ref"``:
    ``<dataset>_ref_<method>``) with ``train.seed = seed``; ``validation`` trains on the ``fit`` split only
    (the first 50000 training images), so that the ``val`` split can score hyper-parameters."""
    if dataset not in DATASETS:
        raise ConfigError(f"dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if recipe not in RECIPES:
        raise ConfigError(f"recipe {recipe!r} is not one of {', '.join(RECIPES)}")
    if dataset == "svhn":
        if validation:
            raise ConfigError("the validation split (fit / val) exists for MNIST and Fashion-MNIST only; drop "
                              "--validation for svhn")
        name = f"svhn4_{method}"
    else:
        name = f"{dataset}_{method}" if recipe == "book" else f"{dataset}_ref_{method}"
    split = ["data.split=fit"] if validation else []
    return get_config(name, profile=profile, overrides=[f"train.seed={seed}", *split, *overrides])


def cell_run_dir(cfg, runs_dir: str | Path = "runs/tab1") -> Path | None:
    """``<runs_dir>/<dataset>_<method>_seed<k>-<profile>`` for a :func:`cell_config` (None in ``ci``: temporary)."""
    if cfg.profile == "ci":
        return None
    dataset = next(k for k, v in DATASETS.items() if v == cfg.data.name)
    return Path(runs_dir) / f"{dataset}_{cfg.method}_seed{cfg.train.seed}-{cfg.profile}"


def cell_run(cfg, runs_dir: str | Path = "runs/tab1", device: str | torch.device | None = None):
    """Load or train the run of one table cell: ``(learner, history, run_dir)``. Chapters 3 and 4 show
    the seed-0 runs of the table, so the book trains each model once."""
    return run_experiment(cfg, cell_run_dir(cfg, runs_dir), device=device)


def probe_data(cfg, test_subset: int | None = None) -> tuple[tuple, tuple]:
    """``((x_train, y_train), (x_test, y_test))`` of ``cfg.data``: all the training images the model saw
    (``data.subset`` if set) and the full test split (or its first ``test_subset`` images). A model trained
    on the ``fit`` split is scored on the ``val`` split instead of ``test``."""
    d = cfg.data
    held_out = "val" if d.split == "fit" else "test"
    tr = as_tensors(get_dataset(d.name, d.split, root=d.root, classes=d.classes, subset=d.subset))
    te = as_tensors(get_dataset(d.name, held_out, root=d.root, classes=d.classes, subset=test_subset))
    return tr, te


def run_cell(
    dataset: str,
    method: str,
    seed: int,
    profile: str | None = None,
    results_dir: str | Path = "results/tab1",
    runs_dir: str | Path = "runs/tab1",
    overrides: Sequence[str] = (),
    probe_epochs: int = 30,
    test_subset: int | None = None,
    device: str | torch.device | None = None,
    force: bool = False,
    recipe: str = "book",
    validation: bool = False,
) -> dict[str, Any]:
    """Train (or load) one cell of Tab. 1, probe every layer, write and return its result record.

    ``recipe`` and ``validation`` as in :func:`cell_config` (with ``validation`` the accuracies are on the
    ``val`` split, recorded as ``probe.split``).

    A result file that already exists for the same config is returned as it is (``force`` recomputes).
    In the ``ci`` profile the run trains in a temporary directory and the record is written only if
    ``results_dir`` is given explicitly (the caller decides; tests pass a temporary folder).

    Returns:
        ``{"dataset", "method", "seed", "profile", "accuracy": [% per layer, bottom to top],
        "train_accuracy", "config", "train_steps", "train_wall_s", "probe_wall_s", "device", "torch",
        "commit", "date"}``. A run that diverges (:class:`~jebm_lite.training.trainer.TrainingDiverged`) is a result
        too: its record has ``"accuracy": None`` and ``"diverged": {"step", "message"}``, :func:`summarise`
        counts it apart, and the stored record keeps a rerun from training it again.
    """
    cfg = cell_config(dataset, method, seed, profile, overrides, recipe, validation)
    out = result_path(results_dir, dataset, method, seed, cfg.profile)
    stored = None if force else stored_record(out, cfg)
    if stored is not None:
        return stored
    dev = get_device(device if device is not None else cfg.train.device)
    commit = git_commit()  # the code that trains, not the tree at the end of an hour-long run
    t0 = time.perf_counter()
    try:
        learner, history, rd = cell_run(cfg, runs_dir, device=dev)
    except TrainingDiverged as err:  # a result too: written, so that the table says so and no rerun starts
        rec = {"dataset": dataset, "method": method, "seed": seed, "profile": cfg.profile, "accuracy": None,
               "train_accuracy": None, "diverged": diverged_info(err), "train_steps": err.step,
               "train_time_s": None, "train_wall_s": round(time.perf_counter() - t0, 1), "probe_wall_s": 0.0,
               "run_dir": str(cell_run_dir(cfg, runs_dir)), **provenance(cfg, dev, commit)}
        write_json_atomic(out, rec)
        return rec
    train_wall = time.perf_counter() - t0
    learner.eval()
    seed_everything(seed)
    t1 = time.perf_counter()

    train, test = probe_data(cfg, test_subset)
    probes = layerwise_probe(learner, train, test, epochs=probe_epochs, seed=seed)
    rec = {
        "dataset": dataset, "method": method, "seed": seed, "profile": cfg.profile,
        "accuracy": [100.0 * p.test_accuracy for p in probes],
        "train_accuracy": [100.0 * p.train_accuracy for p in probes],
        "probe": {"epochs": probe_epochs, "codes": "posterior means", "n_train": len(train[1]),
                  "n_test": len(test[1]), "split": "val" if cfg.data.split == "fit" else "test"},
        "train_steps": rd.read_result().get("steps"),
        "train_wall_s": round(train_wall, 1),
        "probe_wall_s": round(time.perf_counter() - t1, 1),
        **run_link(rd, keep_path=cfg.profile != "ci"),
        **provenance(cfg, dev, commit),
    }
    write_json_atomic(out, rec)
    return rec


def load_results(results_dir: str | Path, profile: str | None = None) -> list[dict[str, Any]]:
    """Every result record under ``results_dir`` (optionally only one profile), sorted by cell."""
    return load_records(results_dir, lambda r: (r["dataset"], r["method"], r["seed"]), profile)


def summarise(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds per (dataset, method, layer), beside the paper's number.

    Returns one row per (dataset, method, layer): ``{"dataset", "method", "layer" (1 = bottom), "mean",
    "std", "n_seeds", "seeds", "paper", "diff" (ours - paper, percentage points)}``.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    diverged: dict[tuple[str, str], list[int]] = {}
    for r in records:
        if r.get("accuracy") is None:  # a run that diverged: no accuracies, counted separately
            diverged.setdefault((r["dataset"], r["method"]), []).append(r["seed"])
            continue
        groups.setdefault((r["dataset"], r["method"]), []).append(r)
    rows = []
    for (ds, me), recs in sorted(groups.items()):
        n_layers = len(recs[0]["accuracy"])
        for i in range(n_layers):
            acc = [r["accuracy"][i] for r in recs]
            m = statistics.fmean(acc)
            sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")  # sample std over seeds
            paper = PAPER.get((ds, me), (None,) * n_layers)[i] if (ds, me) in PAPER else None
            rows.append({"dataset": ds, "method": me, "layer": i + 1, "mean": m, "std": sd, "n_seeds": len(recs),
                         "seeds": sorted(r["seed"] for r in recs), "diverged_seeds": sorted(diverged.get((ds, me), [])),
                         "paper": paper,
                         "diff": None if paper is None else m - paper})
    return rows


def t_quantile(n: int, level: float = 0.95) -> float:
    """t_{n-1}: the two-sided ``level`` quantile of Student's t with ``n - 1`` degrees of freedom (the
    multiplier of s / sqrt(n) in a confidence interval of ``n`` values; 2.776 for n = 5 at 95 %)."""
    if n < 2:
        raise ValueError(f"a t quantile needs n >= 2 values, not {n}")
    # imported on use: a heavy import (~0.6 s)
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float | None, float | None]:
    """``(mean, low, high)``: the mean of ``values`` and its two-sided Student-t confidence interval at ``level``
    (``low``, ``high`` None with fewer than 2 values). Used for per-seed paired differences."""
    if not values:
        raise ValueError("t_interval needs at least one value")
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, None, None
    half = t_quantile(len(values), level) * statistics.stdev(values) / len(values) ** 0.5
    return m, m - half, m + half


def t_prediction_interval(values: Sequence[float], level: float = 0.95) -> tuple[float | None, float | None]:
    """``(low, high)``: where **one new** value (one more pair's difference) falls with probability ``level``,
    ``mean ± t_{n-1} · s · sqrt(1 + 1/n)`` (None with fewer than 2 values). A single run, like one cell of a
    paper's table, is to be compared with this interval, not with the mean's confidence interval."""
    n = len(values)
    if n < 2:
        return None, None
    m = statistics.fmean(values)
    half = t_quantile(n, level) * statistics.stdev(values) * (1 + 1 / n) ** 0.5
    return m - half, m + half


def interval_side(n: int, low: float | None, high: float | None) -> str:
    """Where a confidence interval of ``n`` paired differences lies: ``"untested"`` (fewer than 2),
    ``"above"`` / ``"below"`` 0 (excluding it), or ``"includes 0"``."""
    if n < 2 or low is None or high is None:
        return "untested"
    return "above" if low > 0 else "below" if high < 0 else "includes 0"


def paired_differences(records: Iterable[dict[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """Joint minus VLAE per seed and layer, for the seeds where both finished, with a t confidence interval.

    The two priors of a seed share the seed (the same batch order, the same start of the RNG stream), so the
    per-seed difference removes the seed-to-seed variation that both share. Returns one row per (dataset,
    layer): ``{"dataset", "layer", "diffs" (per seed, percentage points), "seeds", "mean", "ci_low",
    "ci_high", "level"}`` (``ci_*`` None with fewer than 2 seeds).
    """
    by: dict[tuple[str, int], dict[str, list[float]]] = {}
    for r in records:
        if r.get("accuracy") is not None:
            by.setdefault((r["dataset"], r["seed"]), {})[r["method"]] = r["accuracy"]
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for (ds, seed), acc in sorted(by.items()):
        if "joint" not in acc or "vlae" not in acc:
            continue
        for i, (a, b) in enumerate(zip(acc["joint"], acc["vlae"])):
            row = rows.setdefault((ds, i + 1), {"dataset": ds, "layer": i + 1, "diffs": [], "seeds": []})
            row["diffs"].append(a - b)
            row["seeds"].append(seed)
    out = []
    for row in rows.values():
        m, lo, hi = t_interval(row["diffs"], level)
        out.append({**row, "mean": m, "ci_low": lo, "ci_high": hi, "level": level})
    return out


def strictly_rising(acc: Sequence[float]) -> bool:
    """True if per-layer accuracies (bottom to top, e.g. one record's ``accuracy``) increase strictly."""
    return len(acc) > 1 and all(b > a for a, b in zip(acc, acc[1:]))


def rises_bottom_to_top(rows: Sequence[dict[str, Any]], dataset: str, method: str = "joint") -> bool:
    """True if the mean accuracy of (dataset, method) increases strictly from z_1 to z_L."""
    return strictly_rising([r["mean"] for r in sorted(
        (r for r in rows if r["dataset"] == dataset and r["method"] == method), key=lambda r: r["layer"])])


DISPLAY_NAMES = {"mnist": "MNIST", "fmnist": "Fashion-MNIST", "svhn": "SVHN"}
"""Table row -> the data set's name in reading text."""

OUTCOMES = ("holds", "reversed", "not shown", "untested")
"""The verdicts of :func:`verdict`: the paired CI of joint - VLAE at the top layer above 0, below 0, across 0,
or fewer than two paired seeds."""


def comparison_rows(records: Iterable[dict[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """Tab. 1 with the paper beside it: one row per (dataset, layer) that has records of both priors.

    Returns ``{"dataset", "layer", "n_layers", "joint_mean", "joint_std", "joint_n", "joint_paper", "vlae_mean",
    "vlae_std", "vlae_n", "vlae_paper", "diff_mean", "ci_low", "ci_high", "n_pairs", "paper_diff", "level"}``
    (percent / percentage points; ``*_std`` NaN with one seed; ``diff_mean`` and the CI are the paired
    per-seed differences joint - VLAE of :func:`paired_differences`, None without a paired seed; ``*_paper``
    None where the paper has no number).
    """
    records = list(records)
    summ = {(r["dataset"], r["method"], r["layer"]): r for r in summarise(records)}
    pairs = {(p["dataset"], p["layer"]): p for p in paired_differences(records, level)}
    out = []
    for ds, layer in sorted({(d, la) for d, _, la in summ}, key=lambda k: (list(DATASETS).index(k[0]), k[1])):
        j, v = summ.get((ds, "joint", layer)), summ.get((ds, "vlae", layer))
        if j is None or v is None:
            continue
        p = pairs.get((ds, layer))
        out.append({
            "dataset": ds, "layer": layer, "n_layers": max(la for d, _, la in summ if d == ds),
            "joint_mean": j["mean"], "joint_std": j["std"], "joint_n": j["n_seeds"], "joint_paper": j["paper"],
            "vlae_mean": v["mean"], "vlae_std": v["std"], "vlae_n": v["n_seeds"], "vlae_paper": v["paper"],
            "diff_mean": None if p is None else p["mean"],
            "ci_low": None if p is None else p["ci_low"], "ci_high": None if p is None else p["ci_high"],
            "n_pairs": 0 if p is None else len(p["diffs"]),
            "paper_diff": None if j["paper"] is None or v["paper"] is None else j["paper"] - v["paper"],
            "level": level,
        })
    return out


def _seeds(n: int) -> str:
    return {0: "no paired seed", 1: "one paired seed"}.get(n, f"{n} paired seeds")


def verdict(records: Iterable[dict[str, Any]], dataset: str, level: float = 0.95) -> dict[str, Any]:
    """Does the paper's Tab. 1 claim hold on ``dataset``? Judged from the result records alone.

    The claim: the joint prior's top layer is more predictive of the class than VLAE's. The test is the paired
    per-seed difference joint - VLAE of the top layer's accuracy (:func:`paired_differences`, a Student-t
    interval at ``level``): interval above 0 -> ``"holds"``; below 0 -> ``"reversed"``; containing 0 ->
    ``"not shown"``; fewer than two seeds with both priors finished -> ``"untested"`` (the difference cannot be
    tested). Also reported: whether the joint prior's mean accuracy rises strictly from z_1 to z_L (the
    paper's other reading of Tab. 1), which is a description of the means, not a test.

    Returns ``{"dataset", "layer" (the top layer, 1-based), "outcome" (one of :data:`OUTCOMES`), "n_pairs",
    "seeds", "diff" (mean paired difference, points; None without a pair), "ci_low", "ci_high", "level",
    "paper_diff", "joint_rises" (bool), "joint_means", "vlae_means" (per layer, bottom to top), "text"}``;
    ``text`` is one sentence for the reader.

    Raises:
        ValueError: no record of ``dataset`` has accuracies.
    """
    recs = [r for r in records if r["dataset"] == dataset]
    rows = summarise(recs)
    if not rows:
        raise ValueError(f"no finished result record for dataset {dataset!r}")
    means = {me: [r["mean"] for r in sorted((r for r in rows if r["method"] == me), key=lambda r: r["layer"])]
             for me in METHODS}
    top = max(r["layer"] for r in rows)
    pair = next((p for p in paired_differences(recs, level) if p["layer"] == top), None)
    n = 0 if pair is None else len(pair["diffs"])
    diff = None if pair is None else pair["mean"]
    lo = None if pair is None else pair["ci_low"]
    hi = None if pair is None else pair["ci_high"]
    outcome = {"untested": "untested", "above": "holds", "below": "reversed",
               "includes 0": "not shown"}[interval_side(n, lo, hi)]
    paper = PAPER.get((dataset, "joint")), PAPER.get((dataset, "vlae"))
    paper_diff = None if None in paper else paper[0][-1] - paper[1][-1]
    rises = len(means["joint"]) > 1 and strictly_rising(means["joint"])

    name = DISPLAY_NAMES.get(dataset, dataset)
    zt = f"z{top}"
    pct = f"{100 * level:g} %"
    paper_txt = "" if paper_diff is None else f"paper {paper_diff:+.1f}"
    if n == 0:
        core = "no seed has both priors finished, so the top-layer difference cannot be measured"
    elif outcome == "untested":
        paren = f" ({paper_txt})" if paper_txt else ""
        core = (f"the joint prior's top layer ({zt}) is {diff:+.1f} points from VLAE's{paren}, a difference "
                f"that one seed cannot test")
    elif outcome in ("holds", "reversed"):
        verb = "holds, the joint prior's top layer ({}) beats" if outcome == "holds" else \
            "is reversed, the joint prior's top layer ({}) trails"
        paren = f"; {paper_txt}" if paper_txt else ""
        core = (f"the claim {verb.format(zt)} VLAE's by {diff:+.1f} points ({pct} CI {lo:+.1f} to {hi:+.1f}"
                f"{paren})")
    else:
        paren = f" ({paper_txt})" if paper_txt else ""
        core = (f"the claim is not shown, the joint prior's top layer ({zt}) differs from VLAE's by {diff:+.1f} "
                f"points{paren}, and the {pct} CI, {lo:+.1f} to {hi:+.1f}, includes 0")
    if means["joint"]:
        rise = "rises" if rises else "does not rise"
        core += f"; the joint prior's mean accuracy {rise} strictly from z1 to {zt}"
    text = f"{name}, {_seeds(n)}: {core}."
    return {"dataset": dataset, "layer": top, "outcome": outcome, "n_pairs": n,
            "seeds": [] if pair is None else list(pair["seeds"]), "diff": diff, "ci_low": lo, "ci_high": hi,
            "level": level, "paper_diff": paper_diff, "joint_rises": rises, "joint_means": means["joint"],
            "vlae_means": means["vlae"], "text": text}


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table: one line per (dataset, method), ``mean ± std`` per layer, then the paper's numbers."""
    by: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by.setdefault((r["dataset"], r["method"]), []).append(r)
    n = max(r["layer"] for r in rows)
    head = "| data | model | seeds | " + " | ".join(f"z{i} ours" for i in range(1, n + 1)) + " | " + \
        " | ".join(f"z{i} paper" for i in range(1, n + 1)) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * n)]
    for (ds, me), rs in sorted(by.items()):
        rs = sorted(rs, key=lambda r: r["layer"])
        ours = " | ".join(f"{r['mean']:.1f} ± {r['std']:.1f}" for r in rs)
        paper = " | ".join("–" if r["paper"] is None else f"{r['paper']:.1f}" for r in rs)
        name = "joint EBM prior" if me == "joint" else "VLAE"
        n_div = len(rs[0].get("diverged_seeds", []))
        seeds = f"{rs[0]['n_seeds']}" + (f" (+{n_div} diverged)" if n_div else "")
        lines.append(f"| {ds} | {name} | {seeds} | {ours} | {paper} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The reference recipe's validation sweep (rule fixed before the runs: notebooks/results/ref_sweep/RULE.md)
# ----------------------------------------------------------------------------------------------

SWEEP_LR_E = (2e-6, 2e-5, 2e-4)
SWEEP_NORMS = ("none", "layer")
SWEEP_STEPS = 3000
TIE_POINTS = 1.0  # EBM learning rates within this many points count as tied: the smaller one wins
NORM_GAIN_POINTS = 2.0  # LayerNorm is kept only if it raises the mean of both priors' scores by this much


def sweep_settings(dataset: str) -> list[tuple[str, str, list[str]]]:
    """The sweep of one data set: ``[(folder name, method, overrides)]`` (joint: lr_e x norm; VLAE: norm)."""
    out = []
    for norm in SWEEP_NORMS:
        for lr in SWEEP_LR_E:
            out.append((f"{dataset}_joint_lr{lr:g}_{norm}", "joint", [f"optim.lr_e={lr:g}", f"model.norm={norm}"]))
        out.append((f"{dataset}_vlae_{norm}", "vlae", [f"model.norm={norm}"]))
    return out


def select_setting(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Apply the written selection rule to the sweep records of one data set.

    Score = validation accuracy of the top layer (seed 0, :data:`SWEEP_STEPS` iterations). Per norm, the
    joint prior's EBM learning rate is the best-scoring one among runs that did not diverge; rates within
    :data:`TIE_POINTS` of the best are tied and the smallest of them (closest to the reference 2e-6) wins.
    LayerNorm is kept only if the mean of (best joint, VLAE) with it beats the mean without it by at least
    :data:`NORM_GAIN_POINTS`; both priors then use the chosen norm (identical networks).

    Returns ``{"norm", "lr_e", "scores": {norm: {"joint": {lr: score | None}, "vlae": score | None}}}``.
    """
    scores: dict[str, dict[str, Any]] = {n: {"joint": {}, "vlae": None} for n in SWEEP_NORMS}
    for r in records:
        if r.get("probe", {}).get("split") != "val" and r.get("accuracy") is not None:
            raise ValueError("select_setting needs validation-split records (latent_table --validation)")
        norm = r["config"]["model"]["norm"]
        top = None if r.get("accuracy") is None else r["accuracy"][-1]
        if r["method"] == "joint":
            scores[norm]["joint"][float(r["config"]["optim"]["lr_e"])] = top
        else:
            scores[norm]["vlae"] = top
    best: dict[str, tuple[float | None, float | None]] = {}
    for norm, sc in scores.items():
        ok = {lr: v for lr, v in sc["joint"].items() if v is not None}
        if not ok:
            best[norm] = (None, None)
            continue
        top = max(ok.values())
        lr = min(lr for lr, v in ok.items() if v >= top - TIE_POINTS)
        best[norm] = (lr, ok[lr])

    def pair_mean(norm: str) -> float | None:
        j, v = best[norm][1], scores[norm]["vlae"]
        return None if j is None or v is None else (j + v) / 2

    plain, layer = pair_mean("none"), pair_mean("layer")
    norm = "layer" if plain is not None and layer is not None and layer >= plain + NORM_GAIN_POINTS else "none"
    if plain is None and layer is not None:
        norm = "layer"
    return {"norm": norm, "lr_e": best[norm][0], "scores": scores, "pair_mean": {"none": plain, "layer": layer}}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jebm_lite.experiments.latent_table", description="Paper Tab. 1, cell by cell.")
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=list(DATASETS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--profile", choices=["ci", "cpu", "full"], default=None)
    p.add_argument("--results", default="results/tab1", help="folder of the result files")
    p.add_argument("--runs", default="runs/tab1", help="folder of the run directories")
    p.add_argument("--force", action="store_true", help="recompute cells whose result file exists")
    p.add_argument("--recipe", choices=RECIPES, default="book", help="book presets or the reference EBM recipe")
    p.add_argument("--validation", action="store_true",
                   help="train on the first 50000 training images and score on the last 10000 (no test set)")
    p.add_argument("--sweep", action="store_true",
                   help="the reference recipe's validation sweep (seed 0, one folder per setting under --results) "
                        "and the setting chosen by the written rule")
    p.add_argument("--device", default=None,
                   help="e.g. cuda:1 (one process per device runs seeds side by side; default: CUDA if available)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args(argv)
    prof = get_profile(a.profile)
    if a.sweep:
        return _sweep(a, prof)
    for ds in a.datasets:
        for s in a.seeds:  # seed-major: the two priors of a seed finish together (a paired difference)
            for me in a.methods:
                rec = run_cell(ds, me, s, prof, a.results, a.runs, a.overrides, force=a.force, recipe=a.recipe,
                               validation=a.validation, device=a.device)
                if rec.get("diverged"):
                    print(f"{ds:7s} {me:6s} seed {s}: diverged at iteration {rec['diverged']['step']}", flush=True)
                    continue
                print(f"{ds:7s} {me:6s} seed {s}: " + " / ".join(f"{v:.1f}" for v in rec["accuracy"])
                      + f"  (train {rec['train_wall_s']} s, probe {rec['probe_wall_s']} s)", flush=True)
    print(table_markdown(summarise(load_results(a.results, prof))))
    return 0


def _sweep(a: argparse.Namespace, prof: str) -> int:
    steps = [f"train.max_steps={SWEEP_STEPS}", "train.ckpt_every=1000"] if prof != "ci" else []
    for ds in a.datasets:
        recs = []
        for folder, me, over in sweep_settings(ds):
            rec = run_cell(ds, me, 0, prof, Path(a.results) / folder, Path(a.runs) / folder,
                           [*over, *steps, *a.overrides], force=a.force, recipe="ref", validation=True)
            recs.append(rec)
            acc = "diverged" if rec.get("accuracy") is None else " / ".join(f"{v:.1f}" for v in rec["accuracy"])
            print(f"{folder}: {acc}", flush=True)
        choice = select_setting(recs)
        print(f"{ds}: chosen model.norm={choice['norm']} optim.lr_e={choice['lr_e']:g}", flush=True)
        write_json_atomic(Path(a.results) / f"{ds}_choice_{prof}.json", {"dataset": ds, **choice,
                          "scores": {n: {"joint": {f"{k:g}": v for k, v in sc["joint"].items()}, "vlae": sc["vlae"]}
                                     for n, sc in choice["scores"].items()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
