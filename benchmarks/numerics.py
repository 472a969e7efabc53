"""Numerics check of the CPU speed-ups: do they train the same model?

Run from the repository root (about 10 minutes on one core)::

    python -m benchmarks.numerics                   # JSON in benchmarks/results/numerics-<device>-<date>.json
    python -m benchmarks.numerics --steps 200       # a shorter check

``mnist_joint`` (the book's MNIST recipe) is trained for ``--steps`` iterations on the ``fit`` split
(the first 50,000 training images) in each *variant*, from the same seed, and every layer is probed
on the ``val`` split (:func:`jebm_lite.experiments.latent_table.run_cell`):

* ``reference``: today's path before the speed-ups (per-tensor Adam, float32),
* ``fused``: Adam's fused kernel (``optim.fused``),
* ``bf16``: fused Adam and bfloat16 autocast of the generator and inference networks
  (``train.amp_bf16``; on a CPU without native bf16 this falls back to float32 and says so),

plus the reference from a second seed, which measures how far two equally valid runs drift apart.

The rule, fixed before the runs: a variant **passes** when, against the reference of the same seed,
(a) the mean training loss of every window of ``--window`` iterations differs by at most
``max(2 %, seed drift)`` and (b) every layer's probe accuracy differs by at most
``max(2 points, seed drift)``, the seed drift being the same difference between the two reference
seeds. Wall time per iteration is recorded too (the benchmark proper is ``benchmarks.run``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.run import dated, environment, save  # noqa: E402
from jebm_lite.io import read_jsonl, temp_dir  # noqa: E402
from jebm_lite.runtime import bf16_native  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "reference": ["optim.fused=false", "train.amp_bf16=false"],
    "fused": ["optim.fused=true", "train.amp_bf16=false"],
    "bf16": ["optim.fused=true", "train.amp_bf16=true"],
}
LOSS_TOL = 0.02  # relative, per window
ACC_TOL = 2.0  # percentage points, per layer


def window_means(history: list[dict], window: int, key: str = "loss") -> list[float]:
    """Mean of ``key`` over consecutive windows of ``window`` iterations (by the records' ``step``)."""
    buckets: dict[int, list[float]] = {}
    for h in history:
        if key in h and "step" in h:
            buckets.setdefault((int(h["step"]) - 1) // window, []).append(float(h[key]))
    return [sum(v) / len(v) for _, v in sorted(buckets.items())]


def compare(a: dict, b: dict) -> dict[str, float]:
    """Largest relative loss-window difference and largest per-layer accuracy difference of two runs."""
    la, lb = a["loss_windows"], b["loss_windows"]
    n = min(len(la), len(lb))
    loss = max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(la[:n], lb[:n])) if n else float("nan")
    acc = max(abs(x - y) for x, y in zip(a["accuracy"], b["accuracy"]))
    return {"loss_rel": loss, "acc_points": acc}


def verdict(diff: dict[str, float], drift: dict[str, float]) -> dict[str, Any]:
    """The rule of the module docstring applied to ``diff`` (variant vs reference) and ``drift`` (seeds)."""
    loss_tol = max(LOSS_TOL, drift["loss_rel"])
    acc_tol = max(ACC_TOL, drift["acc_points"])
    return {"loss_tol": loss_tol, "acc_tol": acc_tol,
            "passes": bool(diff["loss_rel"] <= loss_tol and diff["acc_points"] <= acc_tol)}


def train_variant(name: str, seed: int, steps: int, window: int, runs: Path, results: Path) -> dict[str, Any]:
    from jebm_lite.experiments.latent_table import run_cell

    over = [*VARIANTS[name], f"train.max_steps={steps}", f"train.ckpt_every={steps}", "train.log_every=10",
            "train.progress=false"]
    rec = run_cell("mnist", "joint", seed, profile="cpu", results_dir=results / f"{name}-{seed}",
                   runs_dir=runs / f"{name}-{seed}", overrides=over, validation=True, probe_epochs=30)
    hist = read_jsonl(Path(rec["run_dir"]) / "history.jsonl")
    return {"variant": name, "seed": seed, "overrides": over, "accuracy": rec["accuracy"],
            "loss_windows": window_means(hist, window), "final_loss": hist[-1]["loss"] if hist else None,
            "train_wall_s": rec["train_wall_s"], "s_per_iter": rec["train_wall_s"] / steps}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.numerics", description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs=2, default=(0, 1), help="the seed of every variant, and a second one")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    work = temp_dir("numerics-")
    runs, results = work / "runs", work / "results"
    s0, s1 = a.seeds
    out: dict[str, Any] = {"environment": environment(torch.device("cpu")), "preset": "mnist_joint", "steps": a.steps,
                           "window": a.window, "bf16_native": bf16_native("cpu"),
                           "rule": {"loss_rel": LOSS_TOL, "acc_points": ACC_TOL, "or_seed_drift": True}, "runs": []}
    ref = train_variant("reference", s0, a.steps, a.window, runs, results)
    ref2 = train_variant("reference", s1, a.steps, a.window, runs, results)
    out["runs"] += [ref, ref2]
    drift = compare(ref2, ref)
    out["seed_drift"] = drift
    out["variants"] = {}
    for name in ("fused", "bf16"):
        r = train_variant(name, s0, a.steps, a.window, runs, results)
        out["runs"].append(r)
        d = compare(r, ref)
        out["variants"][name] = {**d, **verdict(d, drift), "speed_vs_reference": ref["s_per_iter"] / r["s_per_iter"]}
        print(f"{name}: loss windows within {d['loss_rel']:.3%}, probe within {d['acc_points']:.2f} points "
              f"-> {'passes' if out['variants'][name]['passes'] else 'FAILS'}", flush=True)
    print(f"seed drift: loss {drift['loss_rel']:.3%}, probe {drift['acc_points']:.2f} points")
    save(out, a.out or dated("numerics-cpu"))
    return out


if __name__ == "__main__":
    main()
