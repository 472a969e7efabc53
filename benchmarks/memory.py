"""How much memory a `full`-profile training iteration needs, measured on the CPU (device-independent).

Run from the repository root::

    python -m benchmarks.memory                      # every chapter preset; JSON in benchmarks/results/
    python -m benchmarks.memory --presets mnist_joint,svhn4_joint

For each preset, one ``learner.train_step`` at the `full` profile's batch size on a random batch:

* ``state_mb``: parameters, their gradients and Adam's two moments (16 bytes per float32 parameter);
* ``activations_mb``: the tensors autograd saves for the backward passes of that iteration, counted once per
  storage (:func:`torch.autograd.graph.saved_tensors_hooks`), i.e. the peak of what backward keeps alive;
* ``estimate_gpu_mb``: their sum plus the batch, doubled for allocator slack, cuDNN workspaces and the
  CUDA context's own ~500 MB. A **sizing estimate**, not a measured GPU peak (``make gpu-check`` measures
  that where a GPU exists).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.run import dated, environment, save  # noqa: E402
from jebm_lite.config import get_config  # noqa: E402

#: The presets a reader trains in the `full` profile, by chapter.
CHAPTER_PRESETS: dict[str, tuple[str, ...]] = {
    "1": ("toy012_lebm",),
    "2": ("mnist_conditional",),
    "3": ("mnist_vlae",),
    "4": ("mnist_ref_joint", "mnist_ref_vlae"),
    "5": ("toy012_joint", "toy012_vlae"),
    "6": ("svhn4_standin_joint", "svhn4_joint", "svhn5_joint", "celeba64_joint", "cifar10_joint"),
    "7": ("mnist_joint", "mnist_anomaly_joint"),
    "8": ("mnist_cond_joint", "mnist_anomaly_udiff_t3"),
}
CONTEXT_MB = 500.0


def measure(preset: str, batch: int | None = None) -> dict[str, Any]:
    """The record of the module docstring for one preset (one iteration on the CPU)."""
    from jebm_lite.data import image_shape
    from jebm_lite.training.learners import build_learner

    over = {} if batch is None else {"train.batch_size": batch}
    cfg = get_config(preset, profile="full", overrides=over)
    if cfg.method == "udiffusion":  # trains on a frozen base run; its own cost is the EBM's
        return {"preset": preset, "skipped": "needs a trained base run (chapter 8 trains it first)"}
    torch.manual_seed(0)
    learner = build_learner(cfg, "cpu")
    x = torch.rand(cfg.train.batch_size, *image_shape(cfg.data.name)) * 2 - 1
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            storage = t.untyped_storage()
        except RuntimeError:  # a tensor without storage (a wrapper subclass): nothing of its own to count
            return t
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        learner.train_step(x, 1)
    n_params = sum(p.numel() for p in learner.parameters() if p.requires_grad)
    state = 16 * n_params / 2**20
    acts = sum(seen.values()) / 2**20
    data = x.numel() * 4 / 2**20
    return {
        "preset": preset, "method": cfg.method, "batch": cfg.train.batch_size, "iterations": cfg.train.max_steps,
        "prior_langevin_steps": cfg.prior_langevin.steps, "params": n_params, "state_mb": round(state, 1),
        "activations_mb": round(acts, 1), "estimate_gpu_mb": round(2 * (state + acts + data) + CONTEXT_MB),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default=None, help="comma-separated (default: every chapter's presets)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    presets = a.presets.split(",") if a.presets else [p for ps in CHAPTER_PRESETS.values() for p in ps]
    out: dict[str, Any] = {"environment": environment(torch.device("cpu")), "records": []}
    for p in presets:
        rec = measure(p)
        out["records"].append(rec)
        print(json.dumps(rec), flush=True)
    save(out, a.out or dated("memory"))
    return out


if __name__ == "__main__":
    main()
