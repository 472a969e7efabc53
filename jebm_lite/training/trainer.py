"""The training loop: device, progress, history, atomic checkpoints, exact resume, a divergence
guard and data-parallel training.

A method is a :class:`Learner` (networks, optimisers, one iteration's updates); the
:class:`Trainer` runs it::

    learner = build_learner(cfg, device)
    history = Trainer(cfg, learner, images, "runs/toy012_joint-cpu").fit()

Steps are counted from 1: ``train_step(x, step)`` performs iteration ``step``; the history row and
the checkpoint ``step_{step:08d}.pt`` written after it carry the same number, and a checkpoint at
``step`` holds the state after ``step`` iterations.

Resume is exact: a run killed at any point and resumed gives the same parameters, optimiser states
and history (``time_s`` aside) as an uninterrupted one, on CPU with ``train.deterministic=True``.
A checkpoint stores the data position and every RNG state (torch CPU / CUDA, NumPy, Python), and
the batches are a pure function of ``(seed, epoch, position)``.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data._utils.collate import default_collate
from tqdm.auto import tqdm

from jebm_lite.config import ExperimentConfig, to_dict
from jebm_lite.io import (
    RunLock,
    atomic_write,
    clean_temp_files,
    read_verified,
    sha256_sidecar,
    write_jsonl_atomic,
)
from jebm_lite.runtime import CheckpointError, ConfigError, get_device, seed_everything
from jebm_lite.training import distributed
from jebm_lite.training.learner import Learner
from jebm_lite.training.rundir import RESUMABLE_KEYS, RunDir, config_diff, format_diff

CKPT_FORMAT = "jebm_lite.ckpt/1"
DATA_SEED_MULT = 1000003  # batches of epoch e come from randperm seeded with seed * 1000003 + e
ROLLBACK_SEED_MULT = 7919  # after the k-th roll-back, RNGs are reseeded with seed + 7919 * k


class TrainingDiverged(RuntimeError):
    """Training kept producing non-finite values or exploding energies after the allowed
    roll-backs. ``step``: the iteration at which it gave up (None when unknown)."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM arrived during :meth:`Trainer.fit`: the state at ``step`` was checkpointed (with a
    run directory) and the same call or command resumes from it. ``signum``: the signal's number."""

    def __init__(self, message: str, step: int, signum: int) -> None:
        super().__init__(message)
        self.step = step
        self.signum = signum


class TrainerWarning(UserWarning):
    """Roll-backs and checkpoint fall-backs: training continues, but someone should look."""


# ----------------------------------------------------------------------------------------------
# Checkpoint files
# ----------------------------------------------------------------------------------------------


def _clone_to_cpu(obj: Any) -> Any:
    """A deep copy with every tensor detached and copied to the CPU."""
    if isinstance(obj, Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _clone_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone_to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_clone_to_cpu(v) for v in obj)
    return copy.deepcopy(obj)


def ckpt_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def save_checkpoint_atomic(state: dict, path: str | Path) -> str:
    """``torch.save(state)`` to ``path`` atomically (temp file in the same directory, flush,
    fsync, :func:`os.replace`), the sha256 of the written bytes recorded first in ``<path>.sha256``
    (:func:`jebm_lite.io.atomic_write`). On any error no file with the final name is created and an existing
    one is untouched. Returns the sha256."""
    digest = atomic_write(path, lambda f: torch.save(state, f), mode="wb", record_sha256=True)
    assert digest is not None
    return digest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", note_unhashed: bool = True) -> dict:
    """Load a checkpoint with ``torch.load(..., weights_only=True)``, after checking its bytes against the
    sha256 recorded when it was written (``<path>.sha256``).

    A checkpoint without a recorded hash (written before hashes were kept, or copied without its sidecar) is
    loaded as it is, with a one-line :class:`TrainerWarning` when ``note_unhashed``.

    Raises:
        CheckpointError: missing, corrupt (bytes differ from the recorded sha256) or truncated file, or not a
            jebm_lite checkpoint; the message names the file and what to do.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint file {path}.")
    fix = (f"delete it to resume from the previous checkpoint in {path.parent}, or load an earlier step_*.pt "
           "explicitly")
    data, verified = read_verified(path, "Checkpoint", fix)
    try:
        ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        detail = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
        err = CheckpointError(f"Checkpoint {path} is corrupt or truncated and cannot be loaded ({detail}); "
                              f"{fix}.")
        err.reason = f"cannot be loaded: {detail[:120]}"
        raise err from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        tag = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        err = CheckpointError(
            f"{path} is not a jebm_lite checkpoint (format {tag!r}, expected {CKPT_FORMAT!r}). "
            "Delete or move it, or point to a step_*.pt written by jebm_lite.training.trainer."
        )
        err.reason = f"not a jebm_lite checkpoint (format {tag!r})"
        raise err
    if not verified and note_unhashed:
        warnings.warn(f"{path} has no recorded sha256 ({sha256_sidecar(path).name}: written before hashes were "
                      "kept, or copied without it); loaded without an integrity check.", TrainerWarning, stacklevel=2)
    return ckpt


def check_config(ckpt: dict, cfg: ExperimentConfig, path: str | Path) -> None:
    """Raise :class:`CheckpointError` if the checkpoint's config differs from ``cfg`` outside
    :data:`jebm_lite.training.rundir.RESUMABLE_KEYS`."""
    diffs = config_diff(ckpt["config"], cfg)
    if diffs:
        raise CheckpointError(
            f"Checkpoint {path} was written with a different config:\n"
            f"{format_diff(diffs, 'checkpoint', 'now')}\n"
            f"Only {', '.join(sorted(RESUMABLE_KEYS))} may change on resume. "
            "Use a new --out directory for a different config."
        )


def check_shapes(module: nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming every parameter/buffer whose name or shape differs."""
    own = module.state_dict()
    problems = []
    for k in sorted(set(own) | set(state)):
        if k not in state:
            problems.append(f"  {k}: missing from the checkpoint (model has shape {tuple(own[k].shape)})")
        elif k not in own:
            problems.append(f"  {k}: in the checkpoint (shape {tuple(state[k].shape)}) but not in the model")
        elif tuple(own[k].shape) != tuple(state[k].shape):
            problems.append(
                f"  {k}: checkpoint shape {tuple(state[k].shape)} vs model shape {tuple(own[k].shape)}"
            )
    if problems:
        raise CheckpointError(
            f"Checkpoint {path} does not fit this model:\n" + "\n".join(problems) + "\n"
            "It was trained with other sizes (e.g. model.z_dims, channels, ebm.nef). Build the model "
            "with the checkpoint's config, or train into a new --out directory."
        )


def restore_learner(learner: Learner, ckpt: dict, path: str | Path = "<checkpoint>",
                    optimizers: bool = True) -> None:
    """Load networks (strictly, shapes checked first) and, if ``optimizers``, optimiser and scheduler
    states from ``ckpt`` into ``learner``.

    Raises:
        CheckpointError: different parameter names or shapes, or optimiser states that do not fit.
    """
    check_shapes(learner, ckpt["learner"], path)
    learner.load_state_dict(ckpt["learner"], strict=True)
    if not optimizers:
        return
    for kind, own in (("optimizers", learner.optimizers), ("schedulers", learner.schedulers)):
        saved = ckpt.get(kind, {})
        if set(saved) != set(own):
            raise CheckpointError(
                f"Checkpoint {path} has {kind} {sorted(saved)} but the learner has {sorted(own)}."
            )
        for name, obj in own.items():
            try:
                obj.load_state_dict(saved[name])
            except (ValueError, KeyError, RuntimeError) as e:
                raise CheckpointError(f"Checkpoint {path}: the state of {kind[:-1]} {name!r} does not fit ({e}).") from None


# RNG states, stored as tensors / ints / floats / lists only, so that weights_only loading works.


def get_rng_state() -> dict:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": str(np_state[0]),
            "state": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [int(py_version), [int(v) for v in py_internal], py_gauss],
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
    }
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def _reseed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed(seed)


# ----------------------------------------------------------------------------------------------
# Data: a seeded permutation per epoch, sharded over ranks, resumable mid-epoch
# ----------------------------------------------------------------------------------------------


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the ``n`` examples in ``epoch``: ``randperm(n)`` seeded with
    ``seed * 1000003 + epoch`` (independent of the global RNG)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * DATA_SEED_MULT + epoch))


def rank_indices(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> Tensor:
    """This rank's share of the epoch's permutation: ``perm[rank::world]``, cut to ``n // world``
    so that all ranks take the same number of batches. Batch ``i`` of every rank together is exactly
    ``perm[i * B:(i + 1) * B]`` for the global batch size ``B``."""
    perm = epoch_permutation(n, seed, epoch)
    return perm[rank::world][: n // world]


class EpochSampler(Sampler[int]):
    """Yields :func:`rank_indices` of the current epoch from a start position (in examples).

    Call :meth:`set_epoch` before iterating; the DataLoader reads the sampler in the main process,
    so this also works with worker processes."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[int]:
        idx = rank_indices(self.n, self.seed, self.epoch, self.rank, self.world)
        return iter(idx[self.start :].tolist())

    def __len__(self) -> int:
        return self.n // self.world - self.start


def images_only(batch: list) -> Tensor:
    """Collate only the first element of each item (the image), dropping labels."""
    return default_collate([item[0] if isinstance(item, (tuple, list)) else item for item in batch])


# ----------------------------------------------------------------------------------------------
# The Trainer
# ----------------------------------------------------------------------------------------------


def divergence_advice(cfg: ExperimentConfig) -> str:
    """What to try after a divergence, for the method of ``cfg`` (no EBM advice for a method without one)."""
    opt = cfg.optim
    tail = ("clip gradients (optim.grad_clip), or allow more roll-backs with train.guard_max_rollbacks.")
    if cfg.method in ("vlae", "conditional"):  # no energy-based prior: only the generator / inference side
        return f"Try a smaller learning rate (optim.lr_g, now {opt.lr_g:g}), " + tail
    return (f"Try a smaller EBM learning rate (optim.lr_e, now {opt.lr_e:g}) or a smaller Langevin step "
            f"(prior_langevin.step_size, now {cfg.prior_langevin.step_size:g}), keep ebm.spectral_norm=true, "
            f"lower optim.lr_g (now {opt.lr_g:g}), " + tail)


class Trainer:
    """Runs a :class:`Learner` for ``cfg.train.max_steps`` iterations.

    Args:
        cfg: the experiment config (``cfg.train`` drives the loop).
        learner: the method; it is moved to the device.
        data: a ``(N, C, H, W)`` tensor (MNIST family; may already live on the device; moved there
            when ``cfg.data.on_device``) or a Dataset whose items are images or ``(image, ...)``.
        run_dir: where history and checkpoints go; None keeps everything in memory.
        device: overrides ``cfg.train.device`` (default: :func:`jebm_lite.runtime.get_device`).
        fault_hook: ``fault_hook(step, metrics) -> metrics``, called after each ``train_step`` (tests
            inject NaNs with it).

    After :meth:`fit`: :attr:`history` (list of rows), :attr:`step`, :attr:`rollbacks`,
    :attr:`elapsed_s` (training wall time summed over resumed sessions).

    Batches are the same for a tensor and for a Dataset holding the same images. Resume is exact
    for both, except for random augmentation done inside DataLoader worker processes
    (``data.num_workers > 0``), whose RNG is seeded per epoch, not per position.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        learner: Learner,
        data: Tensor | Dataset,
        run_dir: str | Path | None,
        device: str | torch.device | None = None,
        fault_hook: Callable[[int, dict], dict] | None = None,
    ):
        self.cfg = cfg
        self.learner = learner
        self.data = data
        self.run = RunDir(run_dir) if run_dir is not None else None
        self.device = get_device(device if device is not None else cfg.train.device)
        self.fault_hook = fault_hook
        self.history: list[dict] = []
        self.step = 0
        self.rollbacks = 0
        self.lr_scale = 1.0
        self.elapsed_s = 0.0
        self._written = 0  # history rows already in history.jsonl
        self._good: dict | None = None  # the last good state (in memory), for roll-backs
        self._saved_step: int | None = None  # step of the newest checkpoint written or loaded
        self._loader: DataLoader | None = None
        self._sampler: EpochSampler | None = None

    # -- small helpers ---------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return distributed.is_main_process()

    def _n_examples(self) -> int:
        return int(self.data.shape[0]) if isinstance(self.data, Tensor) else len(self.data)

    def steps_per_epoch(self) -> int:
        ws = distributed.world_size()
        bs = self.cfg.train.batch_size
        if bs % ws:
            raise ConfigError(f"train.batch_size={bs} must be divisible by the number of processes ({ws}).")
        n = self._n_examples()
        spe = (n // ws) // (bs // ws)
        if spe < 1:
            raise ConfigError(
                f"The dataset has {n} images, fewer than one batch (train.batch_size={bs}); "
                "lower train.batch_size or use more data (data.subset)."
            )
        return spe

    def _batches(self, epoch: int, offset: int) -> Iterator[Tensor]:
        """Batches ``offset, offset + 1, ...`` of ``epoch`` for this rank (on the device)."""
        ws, rk = distributed.world_size(), distributed.rank()
        b = self.cfg.train.batch_size // ws
        spe = self.steps_per_epoch()
        seed = self.cfg.train.seed
        if isinstance(self.data, Tensor):
            idx = rank_indices(self._n_examples(), seed, epoch, rk, ws)
            if idx.device != self.data.device:
                idx = idx.to(self.data.device)
            for i in range(offset, spe):
                yield self.data[idx[i * b : (i + 1) * b]].to(self.device, non_blocking=True)
            return
        if self._loader is None:
            self._sampler = EpochSampler(self._n_examples(), seed, rk, ws)
            nw = self.cfg.data.num_workers
            self._loader = DataLoader(
                self.data, batch_size=b, sampler=self._sampler, drop_last=True, collate_fn=images_only,
                num_workers=nw, pin_memory=self.device.type == "cuda", persistent_workers=nw > 0,
                # the loader draws a base seed for its workers: from its own generator, so that the
                # global RNG (and hence exact resume) does not depend on when iterators are created
                generator=torch.Generator(),
            )
        self._sampler.set_epoch(epoch, offset * b)
        self._loader.generator.manual_seed(seed * DATA_SEED_MULT + epoch)
        for x in self._loader:
            yield x.to(self.device, non_blocking=True)

    # -- state ------------------------------------------------------------------------------------

    def _collect_state(self) -> dict:
        """Everything needed to continue exactly, as CPU copies (collective under DDP)."""
        spe = self.steps_per_epoch()
        rngs = distributed.all_gather_object(get_rng_state())
        return {
            "format": CKPT_FORMAT,
            "config": to_dict(self.cfg),
            "step": self.step,
            "epoch": self.step // spe,
            "offset": self.step % spe,
            "steps_per_epoch": spe,
            "learner": _clone_to_cpu(self.learner.state_dict()),
            "optimizers": {k: _clone_to_cpu(o.state_dict()) for k, o in self.learner.optimizers.items()},
            "schedulers": {k: _clone_to_cpu(s.state_dict()) for k, s in self.learner.schedulers.items()},
            "rng": rngs,
            "world_size": distributed.world_size(),
            "guard": {"rollbacks": self.rollbacks, "lr_scale": self.lr_scale},
            "history_rows": len(self.history),
            "elapsed_s": self.elapsed_s,
            "torch_version": str(torch.__version__),
        }

    def _restore_state(self, state: dict, path: str | Path, rng: bool = True) -> None:
        state = copy.deepcopy(state)  # optimisers may keep (and later mutate) the tensors they load
        restore_learner(self.learner, state, path)
        self.step = int(state["step"])
        if rng:
            rngs = state.get("rng") or []
            rk = distributed.rank()
            if len(rngs) == distributed.world_size():
                set_rng_state(rngs[rk])
            else:
                warnings.warn(
                    f"{path} was written by {len(rngs)} process(es), now {distributed.world_size()}: "
                    "RNG streams are reseeded, so the continuation is not bit-identical.",
                    TrainerWarning, stacklevel=3)
                _reseed(self.cfg.train.seed + rk + ROLLBACK_SEED_MULT * self.rollbacks)

    # -- files -----------------------------------------------------------------------------------

    def _flush_history(self, fsync: bool = False) -> None:
        if self.run is None or not self.is_main or self._written >= len(self.history):
            return
        with open(self.run.history_path, "a") as f:
            for row in self.history[self._written :]:
                f.write(json.dumps(row) + "\n")
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        self._written = len(self.history)

    def _rewrite_history(self) -> None:
        if self.run is None or not self.is_main:
            return
        write_jsonl_atomic(self.run.history_path, self.history)
        self._written = len(self.history)

    def _checkpoint(self) -> None:
        """Snapshot the state in memory and, with a run dir, write it atomically (rank 0)."""
        state = self._collect_state()
        self._good = state
        self._saved_step = self.step
        if self.run is None or not self.is_main:
            return
        try:
            self._write_checkpoint(state)
        except OSError as e:  # a full disk, a vanished or read-only folder: the previous checkpoint is intact
            prev = [p.name for p in self.run.checkpoints()]
            raise CheckpointError(
                f"Could not write the checkpoint of step {self.step} in {self.run.ckpt_dir} ({e.strerror or e}); "
                f"the run keeps {prev[-1] if prev else 'no checkpoint'}. Free space (or fix the folder) and run "
                "the same command again to resume.") from None

    def _write_checkpoint(self, state: dict) -> None:
        self._flush_history(fsync=True)  # the file must hold every row the checkpoint counts
        ckpt_dir = self.run.ckpt_dir
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        name = ckpt_name(self.step)
        save_checkpoint_atomic(state, ckpt_dir / name)  # its sha256 is recorded before it appears
        atomic_write(ckpt_dir / "latest", lambda f: f.write(name + "\n"))
        keep_n = max(1, self.cfg.train.keep_ckpts)
        for old in self.run.checkpoints()[:-keep_n]:
            old.unlink(missing_ok=True)
            sha256_sidecar(old).unlink(missing_ok=True)
        for side in ckpt_dir.glob("step_*.pt.sha256"):  # a kill between hash and rename leaves a hash alone
            if not side.with_name(side.name[: -len(".sha256")]).exists():
                side.unlink(missing_ok=True)

    def _find_checkpoint(self) -> tuple[dict, Path, list[tuple[Path, str]]] | None:
        """The newest checkpoint that is intact (its sha256 as recorded, loadable) and fits, the corrupt newer
        ones skipped: ``(checkpoint, path, [(corrupt path, why), ...])``; None without checkpoints. Reads only.

        Raises:
            CheckpointError: every checkpoint is corrupt (each named, with why), or the newest intact one does
                not fit the config or the model.
        """
        assert self.run is not None
        bad: list[tuple[Path, str]] = []
        for path in reversed(self.run.checkpoints()):
            try:
                ckpt = load_checkpoint(path, note_unhashed=self.is_main)
            except CheckpointError as e:
                bad.append((path, getattr(e, "reason", None) or str(e).splitlines()[0][:200]))
                continue
            check_config(ckpt, self.cfg, path)
            check_shapes(self.learner, ckpt["learner"], path)
            return ckpt, path, bad
        if bad:
            raise CheckpointError(
                f"No usable checkpoint in {self.run.ckpt_dir}: all are corrupt or truncated: "
                + "; ".join(f"{p.name} ({why})" for p, why in bad)
                + ". Nothing was changed. Delete them to start this run again, or train into a new --out directory."
            )
        return None

    def _set_aside(self, bad: list[tuple[Path, str]], path: Path, step: int) -> None:
        """Rename the corrupt checkpoints ``bad`` (and their recorded hashes) to ``<name>.corrupt`` for inspection
        (they are never loaded, overwritten or pruned) and say so in one line, with the one resumed from."""
        kept = []
        for p, _ in bad:
            keep = p.with_name(p.name + ".corrupt")
            os.replace(p, keep)
            if sha256_sidecar(p).exists():
                os.replace(sha256_sidecar(p), sha256_sidecar(keep))
            kept.append(keep.name)
        warnings.warn(
            "Corrupt checkpoint " + "; ".join(f"{p.name} ({why})" for p, why in bad)
            + f": kept as {', '.join(kept)}; resuming from {path.name} (step {step}).", TrainerWarning, stacklevel=3)

    # -- the guard ---------------------------------------------------------------------------------

    def _energy_matcher(self) -> Callable[[str], bool]:
        keys = tuple(self.learner.energy_keys())
        exact = {k for k in keys if not k.endswith("/")}
        prefixes = tuple(k for k in keys if k.endswith("/"))
        return lambda name: name in exact or (bool(prefixes) and name.startswith(prefixes))

    def _param_flag(self) -> Tensor | None:
        """On the device, without a host sync: a 0-d bool tensor, True when a parameter is non-finite."""
        params = [p.detach() for p in self.learner.parameters()]
        if not params:
            return None
        try:
            norms = torch._foreach_norm(params)
        except (AttributeError, RuntimeError):
            norms = [p.norm() for p in params]
        return ~torch.isfinite(torch.stack([n.float() for n in norms])).all()

    def _metric_reason(self, metrics: dict[str, float]) -> str | None:
        """Why a step with these (host) metrics must be rolled back, or None."""
        limit = self.cfg.train.guard_energy_limit
        any_limit = self.cfg.train.guard_metric_limit
        is_energy = self._energy_matcher()
        for k, v in metrics.items():
            if not math.isfinite(v):
                return f"metric {k} = {v}"
            if is_energy(k) and abs(v) >= limit:
                return f"energy {k} = {v:.4g} exceeds train.guard_energy_limit = {limit:g}"
            if abs(v) >= any_limit:
                return f"metric {k} = {v:.4g} exceeds train.guard_metric_limit = {any_limit:g}"
        return None

    def _settle(self, pending: list[tuple]) -> tuple[int, str] | None:
        """Read back the metrics of the ``pending`` steps in **one** device-to-host transfer, check them
        step by step (the guard) and append the good steps' history rows.

        ``pending``: ``(step, epoch, time_s, metrics, param_flag)`` per step since the last settle; metric
        values are 0-d tensors (left on the device by the learner) or numbers. Returns ``(step, reason)``
        of the first bad step (agreed over all ranks), else None. Called once per log interval and before
        every checkpoint, so a checkpoint never holds an unchecked step and a roll-back reaches back at
        most to the previous checkpoint (as before).
        """
        if not pending:
            return None
        tensors: list[Tensor] = []
        for _, _, _, metrics, flag in pending:
            tensors += [v.detach().reshape(()).float() for v in metrics.values() if isinstance(v, Tensor)]
            if flag is not None:
                tensors.append(flag.float())
        host = iter(torch.stack(tensors).cpu().tolist() if tensors else [])  # the one sync
        bad: tuple[int, str] | None = None
        rows = []
        for step, epoch, time_s, metrics, flag in pending:
            values = {k: float(next(host)) if isinstance(v, Tensor) else float(v) for k, v in metrics.items()}
            param_bad = flag is not None and next(host) > 0
            reason = self._metric_reason(values)
            if reason is None and param_bad:
                names = [n for n, p in self.learner.named_parameters() if not torch.isfinite(p).all()]
                reason = f"non-finite parameter(s) {', '.join(names[:5]) or '(restored since)'}"
            if reason is not None:
                bad = (step, reason)
                break
            rows.append({"step": step, "epoch": epoch, "time_s": round(time_s, 4), **values})
        if distributed.is_distributed():
            flag_t = torch.tensor([0.0 if bad is None else 1.0], device=self.device)
            distributed.all_reduce_sum(flag_t)
            if bad is None and flag_t.item() > 0:
                bad = (pending[-1][0], "another process reported a non-finite value or exploding energy")
        if bad is None:
            self.history += rows
        return bad

    def _rollback(self, step: int, reason: str) -> None:
        if self.rollbacks >= self.cfg.train.guard_max_rollbacks:
            self._flush_history(fsync=True)
            raise TrainingDiverged(
                f"Training diverged at step {step}: {reason}. This happened again after "
                f"{self.rollbacks} roll-back(s) to the last good checkpoint (learning rates were scaled "
                f"by {self.lr_scale:g}). {divergence_advice(self.cfg)}",
                step=step,
            )
        assert self._good is not None
        self.rollbacks += 1
        good = self._good
        self._restore_state(good, "<last good state>", rng=False)
        # the restored optimisers carry the lr of that state; bring them to the new cumulative scale
        new_scale = self.lr_scale * self.cfg.train.guard_lr_factor
        factor = new_scale / float(good["guard"]["lr_scale"])
        for opt in self.learner.optimizers.values():
            for group in opt.param_groups:
                group["lr"] *= factor
                if "initial_lr" in group:
                    group["initial_lr"] *= factor
        for sched in self.learner.schedulers.values():
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [lr * factor for lr in sched.base_lrs]
            if hasattr(sched, "_last_lr"):
                sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
        self.lr_scale = new_scale
        _reseed(self.cfg.train.seed + distributed.rank() + ROLLBACK_SEED_MULT * self.rollbacks)
        cut = int(good["history_rows"])
        # drop the rows of the abandoned steps, keep earlier roll-back events as diagnostics
        self.history[cut:] = [r for r in self.history[cut:] if r.get("event")]
        self.history.append(
            {"step": step, "event": "rollback", "reason": reason, "restored_step": self.step,
             "rollback": self.rollbacks, "lr_scale": self.lr_scale}
        )
        if self.is_main:
            warnings.warn(
                f"Step {step}: {reason}. Rolled back to step {self.step} (roll-back {self.rollbacks} of "
                f"{self.cfg.train.guard_max_rollbacks}); learning rates x{self.cfg.train.guard_lr_factor:g}.",
                TrainerWarning, stacklevel=3)
        self._rewrite_history()

    # -- the loop ----------------------------------------------------------------------------------

    def _progress(self):
        disable = (not self.cfg.train.progress or os.environ.get("TQDM_DISABLE", "") == "1"
                   or not self.is_main)
        return tqdm(total=self.cfg.train.max_steps, initial=self.step, disable=disable,
                    desc=self.cfg.name, dynamic_ncols=True, leave=True)

    def fit(self, resume: bool = True) -> list[dict]:
        """Train to ``cfg.train.max_steps`` and return the history.

        With ``resume`` (default) a run directory that has checkpoints continues from the newest good
        one; a finished run (``result.json``) only loads its final state and returns its history.
        With ``resume=False`` a directory that already has checkpoints is refused (never
        overwritten).

        Raises:
            CheckpointError: a checkpoint that does not fit (other config or shapes) or only corrupt
                ones; the run directory is left untouched.
            ConfigError: the run directory holds another config, or ``resume=False`` with checkpoints.
            TrainingDiverged: the guard ran out of roll-backs.
        """
        tc = self.cfg.train
        distributed.init_from_env(self.device)
        self.device = distributed.local_device(self.device)
        self.learner.to(self.device)
        if isinstance(self.data, Tensor) and self.cfg.data.on_device and self.data.device != self.device:
            self.data = self.data.to(self.device)
        if self.run is not None and self.run.is_finished():
            found = self._find_checkpoint()
            if found is not None and found[2] and self.is_main:
                warnings.warn("Corrupt checkpoint " + "; ".join(f"{p.name} ({why})" for p, why in found[2])
                              + f": loaded {found[1].name} (step {found[0]['step']}) instead.", TrainerWarning,
                              stacklevel=2)
            if found is not None:
                self._restore_state(found[0], found[1])
                self.rollbacks = int(found[0]["guard"]["rollbacks"])
                self.lr_scale = float(found[0]["guard"]["lr_scale"])
                self.elapsed_s = float(found[0].get("elapsed_s", 0.0))
            self.history = self.run.read_history()
            if self.step < tc.max_steps and self.is_main:
                warnings.warn(
                    f"Run {self.run.path} is finished at step {self.step} (< train.max_steps={tc.max_steps}); "
                    "not training further. Delete result.json to continue it.", TrainerWarning, stacklevel=2)
            return self.history
        if self.run is None or not self.is_main:
            return self._fit(resume)
        with RunLock(self.run.path):  # one writer per run directory; a second one is refused, naming us
            for folder in (self.run.path, self.run.ckpt_dir):
                for p in clean_temp_files(folder):  # left by a kill during a checkpoint write
                    warnings.warn(f"Removed {p}, a temporary file left by an interrupted write.", TrainerWarning,
                                  stacklevel=2)
            return self._fit(resume)

    def _fit(self, resume: bool) -> list[dict]:
        cfg, tc = self.cfg, self.cfg.train
        spe = self.steps_per_epoch()
        ckpt = None
        if self.run is not None:
            if self.run.checkpoints() and not resume:
                raise ConfigError(
                    f"Run directory {self.run.path} already has checkpoints; refusing to overwrite them. "
                    "Resume it (omit --no-resume / resume=False) or use a new --out directory."
                )
            found = self._find_checkpoint() if resume else None
            self.run.check_config(cfg)  # raises before anything is written
            if self.is_main:
                self.run.create(cfg)
            distributed.barrier()
            if found is not None:
                ckpt, ckpt_path, bad = found
                if bad and self.is_main:  # only now, when this run is sure to continue: set the bad ones aside
                    self._set_aside(bad, ckpt_path, int(ckpt["step"]))

        seed_everything(tc.seed + distributed.rank(), deterministic=tc.deterministic)
        if ckpt is not None:
            self._restore_state(ckpt, ckpt_path)
            self.rollbacks = int(ckpt["guard"]["rollbacks"])
            self.lr_scale = float(ckpt["guard"]["lr_scale"])
            self.elapsed_s = float(ckpt.get("elapsed_s", 0.0))
            rows = self.run.read_history() if self.is_main else []
            n = int(ckpt["history_rows"])
            if len(rows) < n and self.is_main:
                warnings.warn(f"{self.run.history_path} has {len(rows)} rows, the checkpoint counts {n}.",
                              TrainerWarning, stacklevel=2)
            self.history = rows[:n]
            if self.is_main:
                self._rewrite_history()  # drop rows after the checkpoint (and a torn last line)
            self._written = len(self.history)
            self._good = ckpt
            self._saved_step = self.step
        else:
            self.step = 0
            self.history = []
            if self.run is not None and self.is_main and self.run.history_path.exists():
                self._rewrite_history()  # a run killed before its first checkpoint starts over
            self._written = len(self.history)
        distributed.broadcast_module(self.learner)
        if ckpt is None:
            self._good = self._collect_state()

        pbar = self._progress()
        t_start = time.perf_counter() - self.elapsed_s
        self._signal = None
        restore = self._catch_signals()
        try:
            pending: list[tuple] = []  # steps whose metrics are still on the device, not yet checked
            while self.step < tc.max_steps:
                epoch, offset = divmod(self.step, spe)
                for x in self._batches(epoch, offset):
                    step = self.step + 1
                    metrics = self.learner.train_step(x, step)
                    if self.fault_hook is not None:
                        hooked = self.fault_hook(step, metrics)
                        metrics = metrics if hooked is None else hooked
                    self.step = step
                    self.elapsed_s = time.perf_counter() - t_start
                    pending.append((step, epoch, self.elapsed_s, metrics, self._param_flag()))
                    pbar.update(1)
                    if step % spe == 0:
                        self.learner.on_epoch_end(epoch)
                    due_ckpt = step % tc.ckpt_every == 0 or step >= tc.max_steps
                    if step % tc.log_every == 0 or due_ckpt or self._signal is not None:
                        bad = self._settle(pending)  # the loop's one host sync per log interval
                        pending = []
                        if bad is not None:
                            self._rollback(*bad)
                            pbar.n = self.step
                            pbar.refresh()
                            break
                        if not pbar.disable and self.history:
                            last = {k: v for k, v in self.history[-1].items() if k not in ("step", "epoch", "time_s")}
                            pbar.set_postfix({k: f"{v:.3g}" for k, v in list(last.items())[:4]}, refresh=False)
                        if step % tc.log_every == 0:
                            self._flush_history()
                    if due_ckpt:
                        self._checkpoint()
                    if self._signal is not None:
                        self._stop_on_signal()
                    if step >= tc.max_steps:
                        break
            if self.run is not None and self._saved_step != self.step:
                self._checkpoint()  # e.g. max_steps = 0
            self._flush_history(fsync=True)
        finally:
            restore()
            pbar.close()
        return self.history

    # -- signals -------------------------------------------------------------------------------------

    def _catch_signals(self) -> Callable[[], None]:
        """Turn the first SIGINT / SIGTERM into a checkpoint and :class:`TrainingInterrupted` at the end of the
        current step (a second one stops at once). Only in the main thread of a single process; returns the
        function that restores the previous handlers."""
        if threading.current_thread() is not threading.main_thread() or distributed.is_distributed():
            return lambda: None
        old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self._signal is not None:  # the second signal: stop now (the last checkpoint stays valid)
                raise KeyboardInterrupt
            self._signal = signum

        for sig in old:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, h in old.items():
                signal.signal(sig, h)

        return restore

    def _stop_on_signal(self) -> None:
        name = signal.Signals(self._signal).name
        if self.run is not None and self._saved_step != self.step:
            self._checkpoint()
        self._flush_history(fsync=True)
        where = f"checkpoint saved in {self.run.path}; run the same command again to resume" if self.run is not None \
            else "no run directory, so nothing was saved"
        raise TrainingInterrupted(f"{name} received: stopped at step {self.step} ({where}).", self.step,
                                  int(self._signal))
