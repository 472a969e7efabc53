"""Run directories, result files and load-or-train.

One run is one directory::

    runs/toy012_joint-cpu/
        config.json           the ExperimentConfig (JSON)
        history.jsonl         one JSON object per step (and per roll-back event)
        checkpoints/          step_00000500.pt, ..., and a `latest` text pointer
        samples/              sample grids written by chapters
        result.json           written once training finished: {"finished": true, "steps", ...}
        run_card.json         optional, the chapter's run card

A chapter calls :func:`load_or_train`: a finished run is loaded, anything else is trained (a partial
run is resumed from its newest checkpoint). Finished runs are never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .config import ExperimentConfig, config_from_json, to_dict
from .io import (  # noqa: F401  (re-exported: chapters and older code import the file helpers from here)
    RunLock,
    atomic_write,
    read_json,
    read_jsonl,
    temp_dir,
    write_json_atomic,
    write_jsonl_atomic,
)
from .runtime import ConfigError, device_name, get_device, seed_everything

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Learner

#: Config keys that may change between a checkpoint and the run that resumes it: they change how
#: long a run lasts, how it reports and where it runs, never what it computes.
RESUMABLE_KEYS: frozenset[str] = frozenset(
    {
        "train.max_steps",
        "train.progress",
        "train.log_every",
        "train.ckpt_every",
        "train.keep_ckpts",
        "train.device",
        "profile",
        "data.download",
        "data.root",
        "data.num_workers",
    }
)

CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


def config_diff(old: dict | ExperimentConfig, new: dict | ExperimentConfig,
                ignore: Iterable[str] = RESUMABLE_KEYS) -> list[tuple[str, Any, Any]]:
    """``[(dotted key, old value, new value), ...]`` for every key whose value differs, except the
    keys in ``ignore``.

    A key missing from a stored ``old`` dict (a config written before that field existed) counts as
    its default value, so adding a config field does not orphan the runs made before it.
    """
    defaults = _flatten(to_dict(ExperimentConfig()))
    a = {**defaults, **_flatten(old)} if isinstance(old, dict) else _flatten(to_dict(old))
    b = _flatten(new if isinstance(new, dict) else to_dict(new))
    ignore = set(ignore)
    missing = object()
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k in ignore:
            continue
        va, vb = a.get(k, missing), b.get(k, missing)
        if va != vb:
            diffs.append((k, None if va is missing else va, None if vb is missing else vb))
    return diffs


def format_diff(diffs: list[tuple[str, Any, Any]], old_label: str = "old", new_label: str = "new") -> str:
    """One line per differing key: ``  key: old=... new=...``."""
    return "\n".join(f"  {k}: {old_label}={a!r}  {new_label}={b!r}" for k, a, b in diffs)


# ----------------------------------------------------------------------------------------------
# Result records (one JSON file per table cell: latent_table, ablation)
# ----------------------------------------------------------------------------------------------


def provenance(cfg: ExperimentConfig, device: torch.device | str, commit: str | None = None) -> dict[str, Any]:
    """What a result record says about where it was made: device, torch version, threads, commit (pass the
    one taken when the work started; default: now), UTC date and the whole config."""
    from .runtime import git_commit

    return {"device": device_name(torch.device(device)), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "commit": commit or git_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "config": to_dict(cfg)}


def stored_record(path: str | Path, cfg: ExperimentConfig) -> dict | None:
    """The record at ``path`` if it exists and was written for ``cfg`` (every key compared; a key the
    stored config lacks counts as its default, see :func:`config_diff`), else ``None``."""
    path = Path(path)
    if not path.exists():
        return None
    rec = read_json(path)
    return rec if "config" in rec and not config_diff(rec["config"], cfg, ignore=()) else None


def diverged_info(err: Exception) -> dict[str, Any]:
    """``{"step", "message"}`` of a :class:`~jebm_lite.trainer.TrainingDiverged`: a diverged training is a
    result too (stored, so that tables show it and a rerun does not train it again)."""
    return {"step": getattr(err, "step", None), "message": str(err).split(". ")[0]}


def load_records(results_dir: str | Path, key: Callable[[dict], Any], profile: str | None = None) -> list[dict]:
    """Every JSON record under ``results_dir`` (optionally of one profile), sorted by ``key``."""
    recs = [read_json(p) for p in sorted(Path(results_dir).glob("*.json"))]
    if profile is not None:
        recs = [r for r in recs if r.get("profile") == profile]
    return sorted(recs, key=key)


# ----------------------------------------------------------------------------------------------
# The run directory
# ----------------------------------------------------------------------------------------------


class RunDir:
    """The files of one run (see the module docstring). Creating the object touches nothing."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.jsonl"

    @property
    def ckpt_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @property
    def result_path(self) -> Path:
        return self.path / "result.json"

    @property
    def card_path(self) -> Path:
        return self.path / "run_card.json"

    def exists(self) -> bool:
        return self.config_path.exists()

    def read_config(self) -> ExperimentConfig:
        """The config stored in ``config.json``."""
        return config_from_json(read_json(self.config_path))

    def check_config(self, cfg: ExperimentConfig) -> None:
        """Raise :class:`ConfigError` if ``config.json`` exists and differs from ``cfg`` in a key that
        changes what the run computes (anything outside :data:`RESUMABLE_KEYS`)."""
        if not self.config_path.exists():
            return
        try:
            old = read_json(self.config_path)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(
                f"{self.config_path} cannot be read ({e}); fix or delete it, or use another run directory."
            ) from None
        diffs = config_diff(old, cfg)
        if diffs:
            raise ConfigError(
                f"Run directory {self.path} holds a run with a different config:\n"
                f"{format_diff(diffs, 'stored', 'requested')}\n"
                "Use a new run directory (--out DIR) for a different config, or restore these values."
            )

    def create(self, cfg: ExperimentConfig, exist_ok_if_same_config: bool = True) -> RunDir:
        """Create the directory and write ``config.json``.

        An existing directory is accepted when its config equals ``cfg`` up to
        :data:`RESUMABLE_KEYS` (``config.json`` is then updated to ``cfg``, e.g. a longer
        ``train.max_steps``) and ``exist_ok_if_same_config`` is True.

        Raises:
            ConfigError: the directory holds a different config (the differing keys are listed), or
                it exists and ``exist_ok_if_same_config`` is False.
        """
        if self.config_path.exists():
            self.check_config(cfg)
            if not exist_ok_if_same_config:
                raise ConfigError(f"Run directory {self.path} already exists; choose another one.")
            if read_json(self.config_path) != to_dict(cfg):
                write_json_atomic(self.config_path, to_dict(cfg))
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.config_path, to_dict(cfg))
        return self

    def is_finished(self) -> bool:
        """True once ``result.json`` exists (training finished and was recorded)."""
        return self.result_path.exists()

    def write_result(self, result: dict) -> None:
        """Write ``result.json`` atomically (marks the run as finished)."""
        write_json_atomic(self.result_path, result)

    def read_result(self) -> dict:
        return read_json(self.result_path)

    def read_history(self) -> list[dict]:
        """The rows of ``history.jsonl`` (empty if there is none)."""
        return read_jsonl(self.history_path)

    def checkpoints(self) -> list[Path]:
        """Checkpoint files ``step_XXXXXXXX.pt``, oldest first (by step)."""
        if not self.ckpt_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.ckpt_dir.iterdir() if (m := CKPT_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint with the highest step (not checked for validity), or None."""
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None


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
        build_learner: ``build_learner(cfg, device) -> Learner``, e.g. ``jebm_lite.learners.build_learner``.
        device: where to put the learner (default: the config's ``train.device``, else the default).
        cfg: the config to build with; it must agree with the checkpoint's (up to
            :data:`RESUMABLE_KEYS`). Default: the checkpoint's own config.

    Raises:
        CheckpointError: no checkpoint, a corrupt file, a different config or different shapes.
    """
    from .trainer import CheckpointError, load_checkpoint, restore_learner

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
    :class:`~jebm_lite.trainer.Trainer` (a partial run resumes from its newest good checkpoint) and
    ``result.json`` is written: ``{"finished": true, "steps", "wall_time_s", "device", "torch",
    "profile", "seed", ...}``.

    Args:
        cfg: the experiment config.
        run_dir: the run directory.
        build_learner: ``build_learner(cfg, device) -> Learner``.
        data: images, a ``(N, C, H, W)`` tensor or a Dataset (see :class:`~jebm_lite.trainer.Trainer`).
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
    from . import distributed
    from .trainer import Trainer

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
    from .data import as_tensors, get_dataset

    if cfg.data.hold_out is not None:  # anomaly detection: MNIST train+test pooled, one digit held out
        from .anomaly import anomaly_training_data

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
    never trips over a stale run left by an older version of the code).
    """
    from .learners import build_learner

    if run_dir is None:
        run_dir = temp_dir(f"{cfg.name}-ci-") if cfg.profile == "ci" else default_run_dir(cfg)
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    data = None if rd.is_finished() else training_data(cfg, device)
    learner, history = load_or_train(cfg, rd, build_learner, data, device=device, resume=resume)
    return learner, history, rd
