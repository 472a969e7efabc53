"""Where and how code runs: the profile switch, device choice, seeding and the run card.

Every chapter's first code cell calls :func:`start_run`, which seeds everything and prints a
:class:`RunCard` (profile, device, torch version, git commit, seed). The card's wall time is
filled in by :meth:`RunCard.finish` at the end of the notebook.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import json
import os
import platform
import random
import subprocess
import time
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

Profile = Literal["ci", "cpu", "full"]
PROFILES: tuple[str, ...] = ("ci", "cpu", "full")
PROFILE_ENV = "JEBM_PROFILE"
DEVICE_ENV = "JEBM_DEVICE"


class ConfigError(ValueError):
    """A configuration, profile or override that cannot be used; the message names the fix."""


class CheckpointError(RuntimeError):
    """A checkpoint or stored file that is missing, corrupt, unsafe or does not fit (the message names it)."""


def downloads_allowed() -> bool:
    """May a loader fetch a small missing data set (MNIST, Fashion-MNIST) on its own? Yes for a reader (a fresh
    Colab session, a laptop), never in CI or tests: not in the ``ci`` profile, not under pytest, not when ``CI``
    or ``JEBM_NO_DOWNLOAD`` is set. Without a network the loader's error says which files to put where."""
    env = os.environ
    if env.get(PROFILE_ENV, "").strip().lower() == "ci" or "PYTEST_CURRENT_TEST" in env:
        return False
    return not any(env.get(k, "").strip().lower() not in ("", "0", "false", "no") for k in ("CI", "JEBM_NO_DOWNLOAD"))


def default_profile() -> str:
    """``full`` when CUDA is available, ``cpu`` otherwise."""
    return "full" if torch.cuda.is_available() else "cpu"


def get_profile(profile: str | None = None) -> str:
    """Resolve the profile: the argument, else ``$JEBM_PROFILE``, else :func:`default_profile`.

    Raises:
        ConfigError: for a name that is not one of ``ci``, ``cpu``, ``full``.
    """
    name = profile if profile is not None else os.environ.get(PROFILE_ENV) or default_profile()
    name = name.strip().lower()
    if name not in PROFILES:
        raise ConfigError(
            f"Unknown profile {name!r}. Use one of {', '.join(PROFILES)} "
            f"(argument `profile=` or environment variable {PROFILE_ENV})."
        )
    return name


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Pick the device: an explicit argument, else ``$JEBM_DEVICE``, else CUDA, else CPU.

    Raises:
        ConfigError: when CUDA is asked for but not available.
    """
    if device is None:
        device = os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"Device {str(dev)!r} was requested but CUDA is not available on this machine; "
            f"use device='cpu' (or unset {DEVICE_ENV})."
        )
    return dev


_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=4)
def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux ``/proc/cpuinfo``); empty where unreadable."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:  # no /proc/cpuinfo (macOS, Windows, a sandbox): no flags known, so bf16 counts as not native
        return frozenset()
    return frozenset()


def bf16_native(device: torch.device | str, flags: frozenset[str] | None = None) -> bool:
    """Does ``device`` compute bfloat16 matrix products natively (so that bf16 autocast is faster, not
    emulated)? CUDA: :func:`torch.cuda.is_bf16_supported`. CPU: the ``avx512_bf16`` or ``amx_bf16``
    flag (``flags`` defaults to :func:`cpu_flags`); other devices: no."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        return any(f in flags for f in _BF16_CPU_FLAGS)
    return False


_BF16_WARNED: set[str] = set()


def bf16_autocast(device: torch.device | str, requested: bool, flags: frozenset[str] | None = None):
    """The autocast context of ``train.amp_bf16``: bfloat16 autocast on ``device`` when ``requested``
    and :func:`bf16_native`; otherwise float32 (a disabled context), with one warning per device type
    when bf16 was requested on a device without it (emulated bf16 would be slower than float32)."""
    dev = torch.device(device)
    on = bool(requested) and bf16_native(dev, flags)
    if requested and not on and dev.type not in _BF16_WARNED:
        _BF16_WARNED.add(dev.type)
        warnings.warn(f"train.amp_bf16: {dev.type} has no native bfloat16; training in float32", stacklevel=2)
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=on)


def adam_fused_ok(params: list[torch.Tensor]) -> bool:
    """Can :class:`torch.optim.Adam` use its fused kernel (one kernel for all tensors) on ``params``:
    floating-point tensors, all on CPU or all on one CUDA device."""
    if not params:
        return False
    types = {p.device.type for p in params}
    return len(types) == 1 and types <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device).

    Args:
        seed: the seed.
        deterministic: also ask torch for deterministic kernels
            (``torch.use_deterministic_algorithms``, cuDNN deterministic, no cuDNN benchmark).
            On CUDA this sets ``CUBLAS_WORKSPACE_CONFIG`` as cuBLAS requires.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False


def git_commit(root: str | Path | None = None) -> str:
    """The short commit hash of the repository holding ``root`` (``+dirty`` if modified)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    """A human-readable device name, e.g. ``cuda:0 (NVIDIA H100)`` or ``cpu (2 threads)``."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''}, {platform.machine()})"


@dataclasses.dataclass
class RunCard:
    """What a reader needs to know about the run that produced a page's outputs."""

    title: str
    profile: str
    device: str
    torch_version: str
    commit: str
    seed: int
    started: str
    wall_time_s: float | None = None
    _t0: float = dataclasses.field(default=0.0, repr=False)

    def finish(self) -> RunCard:
        """Record the wall time since :func:`start_run` and print the final card."""
        self.wall_time_s = round(time.perf_counter() - self._t0, 1)
        print(self.render())
        return self

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("_t0")
        return d

    def render(self) -> str:
        # before finish(): the card printed at the top of a chapter points to the final one (a stored notebook
        # shows both, and a stored card should not say "running")
        wall = "in the final run card" if self.wall_time_s is None else f"{self.wall_time_s:.1f} s"
        rows = [
            ("chapter", self.title),
            ("profile", self.profile),
            ("device", self.device),
            ("torch", self.torch_version),
            ("commit", self.commit),
            ("seed", str(self.seed)),
            ("started", self.started),
            ("wall time", wall),
        ]
        width = max(len(k) for k, _ in rows)
        return "RUN CARD\n" + "\n".join(f"  {k:<{width}} : {v}" for k, v in rows)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)


def start_run(
    title: str,
    seed: int = 0,
    profile: str | None = None,
    device: str | torch.device | None = None,
    deterministic: bool = False,
    quiet: bool = False,
) -> tuple[RunCard, str, torch.device]:
    """Resolve profile and device, seed everything and print the run card.

    Returns:
        ``(card, profile, device)``; call ``card.finish()`` at the end of the chapter.
    """
    prof = get_profile(profile)
    dev = get_device(device)
    seed_everything(seed, deterministic=deterministic)
    card = RunCard(
        title=title,
        profile=prof,
        device=device_name(dev),
        torch_version=torch.__version__,
        commit=git_commit(),
        seed=seed,
        started=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        _t0=time.perf_counter(),
    )
    if not quiet:
        print(card.render())
    return card, prof, dev


class SectionTimer:
    """CPU seconds of this process and wall seconds per named section of a chapter.

    ``timed = SectionTimer()``, then ``with timed("1. samples"): ...``; :meth:`rows` gives
    ``{section: {"CPU (s)", "wall (s)"}}`` for the chapter's cost table (a section timed twice adds up).
    """

    def __init__(self) -> None:
        self.cost: dict[str, tuple[float, float]] = {}

    @contextlib.contextmanager
    def __call__(self, section: str):
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            c, w = self.cost.get(section, (0.0, 0.0))
            self.cost[section] = (c + time.process_time() - c0, w + time.perf_counter() - w0)

    def rows(self) -> dict[str, dict[str, float]]:
        return {k: {"CPU (s)": c, "wall (s)": w} for k, (c, w) in self.cost.items()}

