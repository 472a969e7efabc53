"""Paper Fig. 1, one controlled run: does a deterministic top-down path put semantic variation in the top layer?

Chapter 2 trains ``mnist_conditional`` (a dense LVAE-style 6-layer conditional Gaussian hierarchy in which only
z_1 talks to the image, ``model.topdown="markov"``) and finds the opposite of the paper's Fig. 1: nearly all the
variation of the samples, and the digit changes, come from the bottom noises (eps_1, eps_2). The BIVA / LVAE
code differs in one structural point: its top-down pass carries a deterministic state d_i (``d_i = f(z_i,
d_{i+1})``, decoder on d_1), so every latent reaches the image through a deterministic path
(``model.topdown="deterministic"``, :class:`~jebm_lite.models.conditional.ConditionalHierarchy`). The hypothesis
tested here: that path is what lets the top layer hold semantic variation.

Per variant (``markov``, ``deterministic``) the chapter's main setting is trained with the same seed and budget
(preset ``mnist_conditional`` with ``model.likelihood=bernoulli model.free_bits=0 model.topdown=<variant>``; load
or train, resumable, ``<runs>/fig1-<variant>-<profile>``) and measured exactly as chapter 2 measures its model:

* ``kl``: the KL term per layer on MNIST test digits (:func:`~jebm_lite.analysis.metrics.layer_kl`; 10 000
  digits, 500 in ``ci``), with the test negative ELBO;
* ``by_group``: for the noise groups bottom (eps1, eps2), middle (eps3, eps4) and top (eps5, eps6)
  (:func:`~jebm_lite.analysis.hierarchy.layer_groups`), the share of the total pixel variance and the share of
  redraws that change the digit (:func:`~jebm_lite.analysis.hierarchy.resample_stats` with the book's digit
  classifier, :func:`~jebm_lite.analysis.metrics.digit_classifier`; 256 contexts x 16 redraws, 16 x 4 in ``ci``);
  ``by_layer``: the same for one noise at a time.

One JSON record per variant, ``<results>/<variant>_<profile>.json`` (``<variant>_seed<k>_<profile>.json`` for a
seed other than the preset's), written atomically with its provenance (profile, device, seed, wall times,
commit, config). :func:`load_results` reads them back, :func:`verdict` says in one sentence which group holds
the most digit changes in each variant. Run from ``notebooks/`` (about 8 and 10 minutes of training plus about a
minute of measuring per variant on one CPU thread)::

    python -m jebm_lite.experiments.fig1 --profile cpu --results results/fig1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from jebm_lite.analysis import hierarchy, metrics
from jebm_lite.config import ExperimentConfig, get_config
from jebm_lite.data import DataNotFoundError, as_tensors, get_dataset
from jebm_lite.io import write_json_atomic
from jebm_lite.runtime import CheckpointError, ConfigError, get_device, get_profile, git_commit
from jebm_lite.training.load import run_experiment
from jebm_lite.training.rundir import load_records, provenance, stored_record

PRESET = "mnist_conditional"
VARIANTS = ("markov", "deterministic")
"""``model.topdown`` of the two runs."""
BASE_OVERRIDES = ("model.likelihood=bernoulli", "model.free_bits=0")
"""Chapter 2's main setting (Bernoulli likelihood, the plain ELBO)."""
STAT_SIZES = {"ci": (16, 4), "default": (256, 16)}
"""``(contexts, redraws per context)`` of :func:`~jebm_lite.analysis.hierarchy.resample_stats`, as in chapter 2."""
N_TEST = {"ci": 500, "default": 10000}
"""MNIST test digits for the KL and the ELBO, as in chapter 2."""
STATS_SEED = 2  # chapter 2's measure(learner, seed=2)


def _sizes(table: dict[str, Any], profile: str) -> Any:
    return table["ci"] if profile == "ci" else table["default"]


def variant_config(variant: str, profile: str | None = None, seed: int | None = None,
                   overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config of one run: ``mnist_conditional`` + :data:`BASE_OVERRIDES` + ``overrides`` (e.g. a shorter
    training for tests) + ``model.topdown=<variant>`` (+ ``train.seed=<seed>`` when given).

    Raises:
        ConfigError: an unknown variant, an override of ``model.topdown`` (choose it with the variant), or a
            bad override.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"variant {variant!r} is not one of {', '.join(VARIANTS)}")
    if any(o.split("=", 1)[0].strip() == "model.topdown" for o in overrides):
        raise ConfigError("model.topdown is set by the variant; choose it with --variants, not an override")
    seed_over = [] if seed is None else [f"train.seed={seed}"]
    return get_config(PRESET, profile=profile,
                      overrides=[*BASE_OVERRIDES, *overrides, f"model.topdown={variant}", *seed_over])


def _default_seed() -> int:
    return get_config(PRESET, profile="ci").train.seed


def _tag(variant: str, cfg: ExperimentConfig) -> str:
    """``<variant>`` or ``<variant>_seed<k>`` (a seed other than the preset's)."""
    return variant if cfg.train.seed == _default_seed() else f"{variant}_seed{cfg.train.seed}"


def result_path(results_dir: str | Path, variant: str, cfg: ExperimentConfig) -> Path:
    """``<results_dir>/<variant>_<profile>.json`` (``<variant>_seed<k>_<profile>.json`` for another seed)."""
    return Path(results_dir) / f"{_tag(variant, cfg)}_{cfg.profile}.json"


def variant_run_dir(variant: str, cfg: ExperimentConfig, runs_dir: str | Path | None = None) -> Path | None:
    """``<runs_dir>/fig1-<variant>-<profile>`` (``fig1-<variant>-seed<k>-<profile>`` for another seed);
    ``runs_dir`` defaults to ``runs``, and in ``ci`` to None (a temporary run directory)."""
    if runs_dir is None:
        if cfg.profile == "ci":
            return None
        runs_dir = "runs"
    return Path(runs_dir) / f"fig1-{_tag(variant, cfg).replace('_', '-')}-{cfg.profile}"


def run_variant(
    variant: str,
    profile: str | None = None,
    results_dir: str | Path = "results/fig1",
    runs_dir: str | Path | None = None,
    seed: int | None = None,
    overrides: Sequence[str] = (),
    classifier_cache: str | None = None,
    device: str | torch.device | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train (or load) one variant, measure it as chapter 2 does, write and return its record.

    A record already written for the same config is returned as it is (``force`` measures again). The digit
    classifier is chapter 2's: ``runs/digit_classifier-mnist.pt`` (2 epochs on all of MNIST, trained on first
    use); in ``ci`` a fresh one on 2000 digits for 1 epoch, never cached (``classifier_cache`` overrides both).

    Returns:
        ``{"variant", "topdown", "profile", "seed", "layers", "z_dims", "kl" (nats per layer, bottom to top),
        "kl_total", "test_nll", "test_neg_elbo", "n_test", "groups" ({name: [code indices]}), "by_group"
        ({"bottom" | "middle" | "top" | "all": {"pixel_var", "pixel_var_frac", "class_change"}}), "by_layer"
        ({"z_1" ... "z_L" | "all": ...}), "n_contexts", "n_resamples", "classifier_test_accuracy",
        "train_steps", "train_time_s", "rollbacks", "lr_scale", "train_wall_s", "measure_wall_s", "wall_s",
        "run_dir"}`` plus the
        provenance (``device``, ``torch``, ``threads``, ``commit``, ``date``, ``config``).
    """
    cfg = variant_config(variant, profile, seed, overrides)
    out = result_path(results_dir, variant, cfg)
    stored = None if force else stored_record(out, cfg)
    if stored is not None:
        return stored
    dev = get_device(device if device is not None else cfg.train.device)
    commit = git_commit()  # the code that trains, not the tree at the end of the run
    ci = cfg.profile == "ci"
    t0 = time.perf_counter()
    learner, _, rd = run_experiment(cfg, run_dir=variant_run_dir(variant, cfg, runs_dir), device=dev)
    learner.eval()
    train_wall = time.perf_counter() - t0
    result = rd.read_result()

    t1 = time.perf_counter()
    # chapter 2, "Where the information sits": KL per layer and the ELBO on the test digits
    n_test = _sizes(N_TEST, cfg.profile)
    x_test, _ = as_tensors(get_dataset("mnist", "test", root=cfg.data.root, subset=n_test), device=dev)
    torch.manual_seed(0)
    kl = metrics.layer_kl(learner, x_test)
    with torch.no_grad():
        _, info = learner.model.elbo(x_test)
    # chapter 2, "Measuring what each group of layers controls"
    if classifier_cache is None and ci:
        clf = metrics.digit_classifier(cache=None, root=cfg.data.root, subset=2000, epochs=1, device=dev)
    elif classifier_cache is None:
        clf = metrics.digit_classifier(root=cfg.data.root, device=dev)
    else:
        clf = metrics.digit_classifier(cache=classifier_cache, root=cfg.data.root, device=dev)
    L = len(learner.z_dims)
    groups = hierarchy.layer_groups(L)
    n_ctx, n_res = _sizes(STAT_SIZES, cfg.profile)
    g = torch.Generator(dev).manual_seed(STATS_SEED)
    by_group = hierarchy.resample_stats(learner, groups, n_ctx, n_res, classifier=clf, generator=g)
    g = torch.Generator(dev).manual_seed(STATS_SEED)
    by_layer = hierarchy.resample_stats(learner, {f"z_{i + 1}": (i,) for i in range(L)}, n_ctx, n_res,
                                        classifier=clf, generator=g)
    measure_wall = time.perf_counter() - t1
    rec = {
        "variant": variant, "topdown": cfg.model.topdown, "profile": cfg.profile, "seed": cfg.train.seed,
        "layers": L, "z_dims": list(learner.z_dims),
        "kl": [float(v) for v in kl], "kl_total": float(kl.sum()),
        "test_nll": float(info["nll"].mean()), "test_neg_elbo": float(-info["elbo"].mean()), "n_test": len(x_test),
        "groups": {k: list(v) for k, v in groups.items()}, "by_group": by_group, "by_layer": by_layer,
        "n_contexts": n_ctx, "n_resamples": n_res, "classifier_test_accuracy": float(clf.test_accuracy),
        "train_steps": result.get("steps"), "train_time_s": result.get("wall_time_s"),
        # the trainer's divergence guard: each roll-back scales the learning rates by train.guard_lr_factor
        "rollbacks": int(result.get("rollbacks", 0)),
        "lr_scale": cfg.train.guard_lr_factor ** int(result.get("rollbacks", 0)),
        "train_wall_s": round(train_wall, 1), "measure_wall_s": round(measure_wall, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "run_dir": None if variant_run_dir(variant, cfg, runs_dir) is None else str(rd.path),
        **provenance(cfg, dev, commit),
    }
    write_json_atomic(out, rec)
    return rec


def load_results(results_dir: str | Path, profile: str | None = None) -> list[dict[str, Any]]:
    """Every record under ``results_dir`` (optionally of one profile), markov before deterministic, then by seed."""
    return load_records(results_dir, lambda r: (_variant_rank(r["variant"]), r["seed"]), profile)


def _variant_rank(v: str) -> int:
    return VARIANTS.index(v) if v in VARIANTS else len(VARIANTS)


def _eps_names(layers: Sequence[int]) -> str:
    return ", ".join(f"ε{i + 1}" for i in layers)


_VARIANT_WORDS = {"markov": "Markov-chain", "deterministic": "deterministic-path"}


def verdict(records: Iterable[dict[str, Any]]) -> str:
    """One sentence: which noise group holds the most digit changes in each variant.

    The share of redraws that change the digit (``by_group[g]["class_change"]``) is averaged over the records of
    a variant (one per seed); groups within 0.5 percentage points of the largest share tie.

    Raises:
        ValueError: no record, or a record without class changes.
    """
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["variant"], []).append(r)
    if not by:
        raise ValueError("verdict needs at least one fig1 record")
    parts = []
    for variant in sorted(by, key=_variant_rank):
        recs = by[variant]
        names = [g for g in recs[0]["by_group"] if g != "all"]
        if any("class_change" not in r["by_group"][g] for r in recs for g in names):
            raise ValueError(f"a {variant} record has no class_change (measured without a classifier)")
        share = {g: 100 * sum(r["by_group"][g]["class_change"] for r in recs) / len(recs) for g in names}
        top = max(share.values())
        best = [g for g in names if share[g] >= top - 0.5]
        groups = recs[0].get("groups", {})
        label = {g: f"{g} ({_eps_names(groups[g])})" if g in groups else g for g in names}
        seeds = f", {len(recs)} seeds" if len(recs) > 1 else ""
        others = ", ".join(f"{g} {share[g]:.0f} %" for g in names if g not in best)
        rest = f"; {others}" if others else ""
        if len(best) == 1:
            head = f"the {label[best[0]]} group holds the most digit changes"
        else:
            head = f"the {' and '.join(label[g] for g in best)} groups tie for the most digit changes"
        name = _VARIANT_WORDS.get(variant, variant)
        parts.append(f"in the {name} model{seeds} {head} ({top:.0f} % of its redraws{rest})")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 usage / config / data / checkpoint error)."""
    p = argparse.ArgumentParser(prog="python -m jebm_lite.experiments.fig1",
                                description="Paper Fig. 1: markov against deterministic top-down path.")
    p.add_argument("--profile", choices=["ci", "cpu", "full"], default=None)
    p.add_argument("--results", default="results/fig1", help="folder of the result files")
    p.add_argument("--runs", default=None, help="folder of the run directories (default: runs; ci: temporary)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seed", type=int, default=None, help="train.seed of both runs (default: the preset's)")
    p.add_argument("--force", action="store_true", help="measure again even if the result file exists")
    p.add_argument("--device", default=None)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args(argv)
    try:
        prof = get_profile(a.profile)
        recs = []
        for v in a.variants:
            rec = run_variant(v, prof, a.results, a.runs, a.seed, a.overrides, device=a.device, force=a.force)
            recs.append(rec)
            bg = rec["by_group"]
            print(f"{v:13s} KL {' / '.join(f'{k:.1f}' for k in rec['kl'])} nats; digit changes "
                  + " / ".join(f"{g} {100 * bg[g]['class_change']:.0f} %" for g in rec["groups"])
                  + f"  (train {rec['train_wall_s']} s, measure {rec['measure_wall_s']} s)", flush=True)
        print(verdict(recs))
    except (ConfigError, DataNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
