"""Run directories and result records.

One run is one directory::

    runs/toy012_joint-cpu/
        config.json           the ExperimentConfig (JSON)
        history.jsonl         one JSON object per step (and per roll-back event)
        checkpoints/          step_00000500.pt, ..., and a `latest` text pointer
        samples/              sample grids written by chapters
        result.json           written once training finished: {"finished": true, "steps", ...}
        run_card.json         optional, the chapter's run card

:class:`RunDir` names these files and decides the two questions every caller asks: is this run finished
(:meth:`RunDir.is_finished`), and does a stored config still fit (:func:`config_diff`). Result records of the
paper's tables (one JSON file per cell) carry :func:`provenance`. Loading and training live in
:mod:`jebm_lite.training.load`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from jebm_lite.config import ExperimentConfig, config_from_json, to_dict
from jebm_lite.io import read_json, read_jsonl, write_json_atomic
from jebm_lite.runtime import ConfigError, device_name, git_commit

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


def run_link(rd: RunDir, keep_path: bool = True) -> dict[str, Any]:
    """What a result record keeps of the run it scored: ``{"train_time_s", "run_dir"}`` (the run's training wall
    time, read by :func:`scored_from`, and its folder; ``None`` with ``keep_path=False``, e.g. a temporary run)."""
    return {"train_time_s": rd.read_result().get("wall_time_s"), "run_dir": str(rd.path) if keep_path else None}


def scored_from(record: dict[str, Any], result: dict[str, Any]) -> bool:
    """Whether a result record was scored from the run whose ``result.json`` is ``result``: the record's
    ``train_time_s`` (copied from that file when it was scored) equals the run's ``wall_time_s``. A run trained
    again is a new draw of the same experiment and no longer matches; a record without the field never does."""
    t = record.get("train_time_s")
    return t is not None and t == result.get("wall_time_s")


def diverged_info(err: Exception) -> dict[str, Any]:
    """``{"step", "message"}`` of a :class:`~jebm_lite.training.trainer.TrainingDiverged`: a diverged training is a
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
        if isinstance(path, str) and not path.strip():  # Path("") is the current folder: never a run directory
            raise ConfigError("The run directory is an empty string; name a directory for the run.")
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
    def result_path(self) -> Path:
        return self.path / "result.json"

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


