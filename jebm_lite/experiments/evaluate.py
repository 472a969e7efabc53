"""Evaluate a finished (or checkpointed) run: test-set reconstruction MSE and FID (paper Tab. 2 / Tab. 6).

Command line (one run directory per call; results land in ``RUN_DIR/results/``)::

    python -m jebm_lite.experiments.evaluate RUN_DIR --mse --fid [--n 50000] [--langevin-steps K] [--langevin-step-size S]

The protocol (``book/full_scale.md`` explains each choice):

* **MSE** (``--mse``): per-pixel mean squared error of ``g(mu_phi(x))`` (reconstruction from the posterior
  **means**) over the whole **test** split of the run's data set (``--mse-split``; SVHN ``test``, CelebA-64
  ``test``), on the [0, 1] scale *and* the [-1, 1] scale (4x); written to ``results/mse.json``
  (:func:`jebm_lite.analysis.fid.reconstruction_report`).
* **FID** (``--fid``): ``--n`` (default 50 000) prior samples (Langevin from N(0, I), paper Eq. 14, with the
  run's training settings unless ``--langevin-steps`` / ``--langevin-step-size`` say otherwise) against
  ``--n-real`` (default ``--n``) images of the run's **training** data (``data.name`` / ``data.split`` of its
  config: SVHN-extra for the SVHN presets, as in ``hre:train_fid.py``), drawn without replacement, both
  quantised to uint8, torchmetrics' Inception-v3 (:func:`jebm_lite.analysis.fid.compute_fid`, resumable: an
  interrupted call continues from ``results/<name>.state.pt``); written to ``results/<name>.json``.

The networks are put in eval mode (spectral-norm weights fixed during sampling). Exit status: 0 ok, 2 a
usage / data / checkpoint / missing-FID-weights error (the message says what to do).

Python::

    from jebm_lite.experiments.evaluate import evaluate
    out = evaluate("runs/svhn5_joint-full", mse=True, fid=True)   # {"mse": {...}, "fid": {...}}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jebm_lite.analysis import fid as fidlib
from jebm_lite.data import DataNotFoundError, get_dataset
from jebm_lite.io import write_json_atomic
from jebm_lite.runtime import CheckpointError, ConfigError, get_device
from jebm_lite.training.learners import build_learner
from jebm_lite.training.load import load_learner
from jebm_lite.training.rundir import RunDir

EXIT_USAGE = 2

__all__ = ["evaluate", "main"]


def _sampler(learner: nn.Module, steps: int | None, step_size: float | None):
    """``f(m) -> (m, C, H, W)`` prior samples in [-1, 1] (Langevin with the given or trained settings)."""

    def sample(m: int) -> torch.Tensor:
        return learner.sample(m, steps=steps, step_size=step_size).float().clamp(-1, 1)

    return sample


def evaluate(
    run_dir: str | Path,
    mse: bool = True,
    fid: bool = False,
    n: int = 50_000,
    n_real: int | None = None,
    batch_size: int = 200,
    mse_split: str = "test",
    mse_n: int | None = None,
    langevin_steps: int | None = None,
    langevin_step_size: float | None = None,
    weights_path: str | Path | None = None,
    extractor: nn.Module | None = None,
    name: str | None = None,
    root: str | Path | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Reconstruction MSE and / or FID of the run in ``run_dir`` (its newest checkpoint).

    Args:
        run_dir: a run directory written by ``python -m jebm_lite train`` (``config.json`` + ``checkpoints/``).
        mse, fid: which metrics to compute (MSE first, so that it is stored even when FID fails).
        n, n_real: generated / real images for FID (default 50 000 each, the reference protocol).
        batch_size: images per feature pass and per sampler call.
        mse_split: the split whose images are reconstructed (default ``test``); ``mse_n``: only its first
            ``mse_n`` images (default all).
        langevin_steps, langevin_step_size: test-time prior Langevin (default: the run's ``prior_langevin``).
        weights_path: the Inception weights file (see :func:`jebm_lite.analysis.fid.resolve_weights`).
        extractor: a feature network instead of Inception (tests; a classifier-feature distance).
        name: the result name for FID (default ``fid`` or ``fid_k<steps>_s<step size>`` when the test-time
            Langevin differs from training).
        root: the data folder (default: the run's ``data.root``, else ``$JEBM_DATA``).
        device: where to evaluate (default: CUDA if available).
        seed: picks the real images and seeds the sampler's batches.

    Returns:
        ``{"mse": {...}, "fid": {...}}`` (the keys that were asked for), also written to ``results/``.

    Raises:
        CheckpointError: no usable checkpoint; DataNotFoundError: the data files are missing;
        FIDWeightsNotFoundError: the Inception weights are missing offline; ConfigError: bad arguments.
    """
    if not (mse or fid):
        raise ConfigError("Nothing to evaluate: pass --mse and / or --fid.")
    rd = RunDir(run_dir)
    if not rd.config_path.exists():
        raise ConfigError(f"{run_dir} is not a run directory (no config.json); train one with "
                          "`python -m jebm_lite train CONFIG --out DIR` first.")
    dev = get_device(device)
    learner = load_learner(rd, build_learner, device=dev)
    learner.eval()
    cfg = learner.cfg
    data_root = root if root is not None else cfg.data.root
    out: dict[str, Any] = {}
    if mse:
        test = get_dataset(cfg.data.name, split=mse_split, root=data_root, classes=cfg.data.classes,
                           subset=mse_n)
        rep = fidlib.reconstruction_report(learner.reconstruct, test, batch_size=batch_size, device=dev)
        rep.update(split=mse_split, data=cfg.data.name, reconstruction="g(posterior means)",
                   scales="mse_01: images on [0, 1]; mse_pm1: on [-1, 1] (= 4 mse_01)")
        write_json_atomic(rd.path / "results" / "mse.json", rep)
        out["mse"] = rep
    if fid:
        lc = cfg.prior_langevin
        steps = lc.steps if langevin_steps is None else int(langevin_steps)
        size = lc.step_size if langevin_step_size is None else float(langevin_step_size)
        if name is None:
            name = "fid" if (steps, size) == (lc.steps, lc.step_size) else f"fid_k{steps}_s{size:g}"
        real = get_dataset(cfg.data.name, split=cfg.data.split, root=data_root, classes=cfg.data.classes,
                           subset=cfg.data.subset)
        res = fidlib.compute_fid(real, _sampler(learner, steps, size), n=n, n_real=n_real, batch_size=batch_size,
                                 extractor=extractor, weights_path=weights_path, device=dev, seed=seed,
                                 run_dir=rd.path, name=name, progress=progress)
        d = res.as_dict()
        d.update(langevin_steps=steps, langevin_step_size=size, real_data=f"{cfg.data.name}/{cfg.data.split}")
        write_json_atomic(rd.path / "results" / f"{name}.json", d)
        out["fid"] = d
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jebm_lite.experiments.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run directory (config.json + checkpoints/)")
    p.add_argument("--mse", action="store_true", help="test-set reconstruction MSE (both scales)")
    p.add_argument("--fid", action="store_true", help="FID of prior samples against training images")
    p.add_argument("--n", type=int, default=50_000, help="generated images for FID (default 50000)")
    p.add_argument("--n-real", type=int, default=None, help="real images for FID (default: --n)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--mse-split", default="test", help="split reconstructed for MSE (default test)")
    p.add_argument("--mse-n", type=int, default=None, help="only the first N test images (default all)")
    p.add_argument("--langevin-steps", type=int, default=None, help="test-time prior Langevin steps")
    p.add_argument("--langevin-step-size", type=float, default=None, help="test-time prior Langevin step size")
    p.add_argument("--weights", default=None, help="Inception weights file (else $JEBM_FID_WEIGHTS / hub cache)")
    p.add_argument("--name", default=None, help="FID result name (default fid[_k<steps>_s<size>])")
    p.add_argument("--data-root", default=None, help="data folder (default: the run's, else $JEBM_DATA)")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 usage / data / checkpoint / FID-weights error)."""
    args = _parser().parse_args(argv)
    try:
        out = evaluate(
            args.run_dir, mse=args.mse, fid=args.fid, n=args.n, n_real=args.n_real, batch_size=args.batch_size,
            mse_split=args.mse_split, mse_n=args.mse_n, langevin_steps=args.langevin_steps,
            langevin_step_size=args.langevin_step_size, weights_path=args.weights, name=args.name,
            root=args.data_root, device=args.device, seed=args.seed, progress=args.progress,
        )
    except (ConfigError, DataNotFoundError, CheckpointError) as e:  # FIDWeightsNotFoundError is a DataNotFoundError
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
