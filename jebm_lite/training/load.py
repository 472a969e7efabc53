"""Load or train: the switch every chapter and table uses (uvadlc's pattern).

:func:`run_experiment` (``cfg`` -> learner, history, run directory) loads a finished run or trains it; a partial
run resumes from its newest good checkpoint, a finished one is never overwritten. ``ci`` runs train in a
temporary directory that is removed when the process ends (:func:`jebm_lite.io.temp_dir`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

from jebm_lite.config import ExperimentConfig, config_from_json
from jebm_lite.data import as_tensors, get_dataset
from jebm_lite.data.anomaly import anomaly_training_data
from jebm_lite.io import RunLock, temp_dir
from jebm_lite.runtime import CheckpointError, ConfigError, device_name, get_device, seed_everything
from jebm_lite.training import archive, distributed
from jebm_lite.training.learner import Learner
from jebm_lite.training.learners import build_learner
from jebm_lite.training.rundir import RunDir, config_diff, format_diff
from jebm_lite.training.trainer import Trainer, load_checkpoint, restore_learner

# ----------------------------------------------------------------------------------------------
# Load or train
# ----------------------------------------------------------------------------------------------


def load_learner(
    run_dir_or_ckpt: str | Path | RunDir,
    build_learner: Callable[[ExperimentConfig, torch.device], Learner],
    device: str | torch.device | None = None,
    cfg: ExperimentConfig | None = None,
) -> Learner:
    """Build a learner and load trained weights and optimiser states into it.

    Args:
        run_dir_or_ckpt: a run directory (its newest checkpoint is used) or one ``step_*.pt`` file.
        build_learner: ``build_learner(cfg, device) -> Learner``, e.g. ``jebm_lite.training.learners.build_learner``.
        device: where to put the learner (default: the config's ``train.device``, else the default).
        cfg: the config to build with; it must agree with the checkpoint's (up to
            :data:`RESUMABLE_KEYS`). Default: the checkpoint's own config.

    Raises:
        CheckpointError: no checkpoint, a corrupt file, a different config or different shapes.
    """
    if isinstance(run_dir_or_ckpt, RunDir):
        run_dir_or_ckpt = run_dir_or_ckpt.path
    p = Path(run_dir_or_ckpt)
    if p.is_dir():
        path = RunDir(p).latest_checkpoint()
        if path is None:
            raise CheckpointError(f"No checkpoint (checkpoints/step_*.pt) in run directory {p}; train it first.")
    else:
        path = p
    ckpt = load_checkpoint(path)
    ckpt_cfg = config_from_json(ckpt["config"])
    if cfg is None:
        cfg = ckpt_cfg
    else:
        diffs = config_diff(ckpt["config"], cfg)
        if diffs:
            raise CheckpointError(
                f"Checkpoint {path} was written with a different config:\n"
                f"{format_diff(diffs, 'checkpoint', 'now')}\n"
                "Use a new --out / run directory for a different config, or restore these values."
            )
    dev = get_device(device if device is not None else cfg.train.device)
    learner = build_learner(cfg, dev)
    learner.to(dev)
    restore_learner(learner, ckpt, path)
    return learner


def load_or_train(
    cfg: ExperimentConfig,
    run_dir: str | Path | RunDir,
    build_learner: Callable[[ExperimentConfig, torch.device], Learner],
    data,
    device: str | torch.device | None = None,
    force_train: bool = False,
    resume: bool = True,
    fault_hook=None,
) -> tuple[Learner, list[dict]]:
    """The load-or-train switch of the chapters.

    A finished run (``result.json`` present) is loaded: a learner is built with ``build_learner`` and
    the final checkpoint is loaded into it, strictly. Anything else is trained with
    :class:`~jebm_lite.training.trainer.Trainer` (a partial run resumes from its newest good checkpoint) and
    ``result.json`` is written: ``{"finished": true, "steps", "wall_time_s", "device", "torch",
    "profile", "seed", ...}``.

    Args:
        cfg: the experiment config.
        run_dir: the run directory.
        build_learner: ``build_learner(cfg, device) -> Learner``.
        data: images, a ``(N, C, H, W)`` tensor or a Dataset (see :class:`~jebm_lite.training.trainer.Trainer`).
        device: the device (default: ``cfg.train.device`` or the default device).
        force_train: train even if a finished run could be loaded. A finished run is never
            overwritten, so this raises :class:`ConfigError` for a finished directory.
        resume: continue a partial run from its checkpoints (False: refuse a directory that has
            checkpoints).
        fault_hook: passed on to the Trainer (tests).

    Returns:
        ``(learner, history)``.

    Raises:
        CheckpointError: the stored run does not fit ``cfg`` / ``build_learner`` (keys or shapes named).
        ConfigError: ``force_train`` on a finished run, or a run directory holding another config.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if rd.is_finished():
        if force_train:
            raise ConfigError(
                f"Run {rd.path} is finished; refusing to overwrite it. Use a new run directory, "
                "or delete this one to train again."
            )
        learner = load_learner(rd, build_learner, device=device, cfg=cfg)
        return learner, rd.read_history()

    dev = get_device(device if device is not None else cfg.train.device)
    distributed.init_from_env(dev)
    dev = distributed.local_device(dev)
    # one writer per run directory (rank 0 writes): training and result.json under one lock
    with RunLock(rd.path) if distributed.is_main_process() else contextlib.nullcontext():
        seed_everything(cfg.train.seed, deterministic=cfg.train.deterministic)  # parameter init
        learner = build_learner(cfg, dev)
        trainer = Trainer(cfg, learner, data, rd.path, device=dev, fault_hook=fault_hook)
        t0 = time.perf_counter()
        history = trainer.fit(resume=resume)
        if distributed.is_main_process() and not rd.is_finished():
            last = next((r for r in reversed(history) if "event" not in r), {})
            rd.write_result(
                {
                    "finished": True,
                    "steps": trainer.step,
                    "wall_time_s": round(trainer.elapsed_s, 3),
                    "session_wall_time_s": round(time.perf_counter() - t0, 3),
                    "device": device_name(dev),
                    "torch": str(torch.__version__),
                    "profile": cfg.profile,
                    "seed": cfg.train.seed,
                    "world_size": distributed.world_size(),
                    "rollbacks": trainer.rollbacks,
                    "final_metrics": {k: v for k, v in last.items() if k not in ("step", "epoch", "time_s")},
                }
            )
    distributed.barrier()
    return learner, history


def training_data(cfg: ExperimentConfig, device: str | torch.device | None = None):
    """The training images of ``cfg.data``: a Dataset, or one (N, C, H, W) tensor on ``device`` when
    ``cfg.data.on_device`` (small MNIST-family sets; the batches are the same either way).

    Raises:
        DataNotFoundError: the files are missing (the message says which files to put where).
    """
    if cfg.data.hold_out is not None:  # anomaly detection: MNIST train+test pooled, one digit held out
        return anomaly_training_data(cfg, device)
    data = get_dataset(cfg.data.name, split=cfg.data.split, root=cfg.data.root, classes=cfg.data.classes,
                       subset=cfg.data.subset, download=cfg.data.download)
    if cfg.data.on_device:
        data = as_tensors(data, device=get_device(device if device is not None else cfg.train.device))[0]
    return data


def default_run_dir(cfg: ExperimentConfig, root: str | Path = "runs") -> Path:
    """``runs/<experiment>-<profile>`` (``-h<digit>-`` inserted for an anomaly run with ``data.hold_out``):
    where the CLI and the chapters keep a run."""
    hold = f"-h{cfg.data.hold_out}" if cfg.data.hold_out is not None else ""
    return Path(root) / f"{cfg.name}{hold}-{cfg.profile}"


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path | RunDir | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
) -> tuple[Learner, list[dict], RunDir]:
    """Load a finished run of ``cfg`` or train it (uvadlc's load-or-train switch, in one call).

    Returns ``(learner, history, run_dir)``. The run directory defaults to :func:`default_run_dir`;
    in the ``ci`` profile it defaults to a fresh temporary directory, so that CI always trains (and
    never trips over a stale run left by an older version of the code). Outside ``ci``, a run directory that
    does not exist yet is fetched from the published runs when ``$JEBM_RUNS_URL`` lists it
    (:mod:`jebm_lite.training.archive`); its config must still fit ``cfg``.
    """
    if run_dir is None:
        run_dir = temp_dir(f"{cfg.name}-ci-") if cfg.profile == "ci" else default_run_dir(cfg)
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if cfg.profile != "ci" and not rd.is_finished() and not rd.checkpoints() and archive.is_published(rd.path.name):
        # a published pretrained run ($JEBM_RUNS_URL): load it instead of training
        archive.fetch(rd.path.name, rd.path.parent)
    data = None if rd.is_finished() else training_data(cfg, device)
    learner, history = load_or_train(cfg, rd, build_learner, data, device=device, resume=resume)
    return learner, history, rd
