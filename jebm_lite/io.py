"""Files, safely: atomic writes, JSON (lines), torch files loaded without code execution, one writer per run.

The bottom of the package (it imports nothing from ``jebm_lite`` but :mod:`jebm_lite.runtime`'s errors):

* :func:`atomic_write` and the JSON helpers never leave a half-written file behind; :func:`clean_temp_files`
  removes the temporary files of a process killed mid-write. With ``record_sha256=True`` the sha256 of the bytes
  written goes to a sidecar ``<name>.sha256`` (``sha256sum`` format) before the file appears under its name, and
  :func:`check_sha256` compares a file with it: a flipped byte is caught, never used. :func:`staged_dir` does for
  a folder (a cache) what :func:`atomic_write` does for a file.
* :func:`safe_torch_load` reads tensors, numbers, strings and containers only (``weights_only=True``): a
  crafted pickle is refused with a message naming the file, and nothing in it runs; a file whose bytes differ from
  its recorded sha256 is refused before it is unpickled.
* :func:`load_array_pickle` reads a pickle of plain containers and numpy arrays (the CIFAR-10 batches) with
  an unpickler that can build nothing else: a pickle that names any other global is refused, and nothing in
  it runs.
* :class:`RunLock` lets one process at a time write a run directory (an advisory ``flock`` that dies with
  its process, so a stale lock never blocks a resume).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import pickle
import re
import secrets
import shutil
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from .runtime import CheckpointError, ConfigError

_TMP_RE = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")


# ----------------------------------------------------------------------------------------------
# Atomic writes
# ----------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


SHA256_SUFFIX = ".sha256"


def sha256_file(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_sidecar(path: str | Path) -> Path:
    """Where the sha256 of ``path`` is recorded: ``<path>.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + SHA256_SUFFIX)


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "w",
                 record_sha256: bool = False) -> str | None:
    """Write ``path`` atomically: ``write(f)`` fills a temporary file ``.<name>.<pid>.<hex>.tmp`` in the same
    directory, which is flushed, fsync'ed and renamed over ``path`` (:func:`os.replace`). If ``write`` raises
    (a full disk included), the temporary file is removed and ``path`` is untouched.

    With ``record_sha256`` the sha256 of the written bytes is recorded in :func:`sha256_sidecar` (itself written
    atomically) *before* the rename, so a file under its final name always has its hash recorded; a kill in
    between leaves an old file beside a new hash, which :func:`check_sha256` reports as corrupt (never a wrong
    file accepted). Returns the sha256 (hex), or None without ``record_sha256``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode 0666 & ~umask, like open()
    digest = None
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if record_sha256:
            digest = sha256_file(tmp)  # the bytes as they are on disk, not as we meant them
            line = f"{digest}  {path.name}\n"
            atomic_write(sha256_sidecar(path), lambda f: f.write(line))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:  # the temp file was never created: nothing to clean up
            pass
        raise
    _fsync_dir(path.parent)
    return digest


def recorded_sha256(path: str | Path) -> str | None:
    """The sha256 recorded beside ``path`` (None when there is no sidecar; ``""`` when it is unreadable)."""
    side = sha256_sidecar(path)
    if not side.is_file():
        return None
    try:
        word = side.read_text(errors="replace").split(maxsplit=1)[0].lower()
    except (OSError, IndexError):
        return ""
    return word if re.fullmatch(r"[0-9a-f]{64}", word) else ""


def check_sha256(path: str | Path, data: bytes | None = None) -> tuple[bool, str | None]:
    """Compare ``path`` (or its bytes ``data``, already read) with its recorded sha256.

    Returns ``(verified, problem)``: ``(True, None)`` the bytes match; ``(False, None)`` nothing is recorded (a
    file written before hashes were kept, or copied without its sidecar); ``(False, "...")`` they differ or the
    record is unreadable, ``problem`` saying how in a few words (for a one-line message).
    """
    want = recorded_sha256(path)
    if want is None:
        return False, None
    if want == "":
        return False, f"its recorded sha256 ({sha256_sidecar(path).name}) is unreadable"
    got = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(path)
    if got != want:
        return False, f"sha256 {got[:12]}... differs from the {want[:12]}... recorded when it was written"
    return True, None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _temp_name(path: Path) -> Path:
    """``.<name>.<pid>.<hex>.tmp`` beside ``path``: what :func:`clean_temp_files` recognises."""
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"


def clean_temp_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` (and folders of :func:`staged_dir`) left in ``folder``
    by processes that are gone (a kill during a checkpoint write or a cache build). Those of live processes are
    left alone. Returns the removed paths."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP_RE.match(p.name)
        if m and not _pid_alive(int(m.group(1))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@contextlib.contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``final`` (``.<name>.<pid>.<hex>.tmp``) and rename it to
    ``final`` only when the block ends without an error; on any error (or a kill: see :func:`clean_temp_files`)
    it is removed and ``final`` never exists half-built. If another process completed ``final`` meanwhile,
    that one is kept and ours removed. Yields the temporary folder."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(final)
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished it first: theirs is as good
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final.parent)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda f: f.write(text))


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    with open(path) as f:
        return json.load(f)


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    """Write ``rows`` as JSON lines to ``path`` atomically."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    atomic_write(path, lambda f: f.write(text))


def read_jsonl(path: str | Path) -> list[dict]:
    """Read JSON lines. A line that is not a JSON object (a torn last line after a kill, a corrupted line
    anywhere) is skipped with one warning that names the file and the line numbers."""
    path = Path(path)
    if not path.exists():
        return []
    rows, bad = [], []
    with open(path, errors="replace") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad.append(i)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        warnings.warn(f"{path}: skipped {len(bad)} unreadable line(s) ({shown})", RuntimeWarning, stacklevel=2)
    return rows


# ----------------------------------------------------------------------------------------------
# Loading torch files without code execution
# ----------------------------------------------------------------------------------------------


def read_verified(path: str | Path, what: str, fix: str) -> tuple[bytes, bool]:
    """The bytes of ``path``, checked against its recorded sha256 (see :func:`check_sha256`).

    Returns ``(data, verified)``; ``verified`` is False when no hash is recorded (the caller decides whether to
    say so). Reading once and loading from these bytes means the bytes checked are the bytes used.

    Raises:
        CheckpointError: the file is missing, or its bytes differ from the recorded hash (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No {what} {path}.")
    data = path.read_bytes()
    verified, problem = check_sha256(path, data)
    if problem is not None:
        err = CheckpointError(f"{what} {path} is corrupt or truncated ({problem}); {fix}.")
        err.reason = problem  # the few words a caller lists beside other files
        raise err
    return data, verified


def safe_torch_load(path: str | Path, what: str, fix: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors, numbers, strings, lists, tuples and dicts only.

    Any other content (a pickle that would build objects or call functions, a truncated or junk file) is
    refused before anything in it runs. A file with a recorded sha256 (:func:`sha256_sidecar`) is checked
    against it first; a file without one is loaded as it is.

    Args:
        path: the file.
        what: what the file should be, for the message (e.g. "FID state file").
        fix: what the user should do, for the message (e.g. "delete it to start the FID afresh").

    Raises:
        CheckpointError: the file is missing, unreadable, differs from its recorded sha256, or is not a plain
            tensor file; the message names it.
    """
    data, _ = read_verified(path, what, fix)
    return torch_load_bytes(data, path, what, fix, map_location)


def torch_load_bytes(data: bytes, path: str | Path, what: str, fix: str,
                     map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` of bytes already read (and checked) from ``path``, ``weights_only=True``; see
    :func:`safe_torch_load`."""
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ... for bad or unsafe files
        detail = f"{type(e).__name__}: {e}".strip().splitlines()[0][:200]
        raise CheckpointError(f"{what} {path} cannot be loaded safely ({detail}); {fix}.") from None


# ----------------------------------------------------------------------------------------------
# One writer per run directory
# ----------------------------------------------------------------------------------------------


_HELD: dict[str, tuple[int, int]] = {}  # resolved lock path -> (fd, depth): re-entrant within a process


# The globals a pickle of numpy arrays needs (numpy 1.x and 2.x paths, protocols 2-5): array and dtype
# reconstruction and latin-1 bytes. Each builds data only; nothing else can be named.
_ARRAY_PICKLE_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
})


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ARRAY_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a pickle of arrays does not need")
        return super().find_class(module, name)


def load_array_pickle(path: str | Path, what: str, fix: str, encoding: str = "latin1") -> Any:
    """A pickle of dicts, lists, strings, numbers and numpy arrays (e.g. a CIFAR-10 batch), read without
    running code: the unpickler resolves only the numpy globals that rebuild arrays.

    Raises:
        CheckpointError: the file is missing, truncated, or names any other global (a crafted pickle);
            the message names the file and ``fix``.
    """
    try:
        with open(path, "rb") as f:
            return _ArrayUnpickler(f, encoding=encoding).load()
    except OSError as e:
        raise CheckpointError(f"{what} {path} cannot be read ({e.strerror or e}); {fix}.") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{what} {path} is not a plain pickle of arrays ({e}); {fix}.") from e


class RunLock:
    """An exclusive, advisory lock on a run directory (``<dir>/.lock``), re-entrant within one process.

    The lock is an ``flock`` on the file, so the kernel drops it when its process dies: a stale ``.lock``
    file never blocks a resume. The file is removed on release, so a run directory holds it only while written. The file records who holds it (pid, host, command, start time), which the
    refusal message of a second writer names. Use as a context manager::

        with RunLock(run_dir):
            ...  # write checkpoints, history, result.json

    Raises:
        ConfigError: another process holds the lock (the message names it), or the directory cannot be
            created or written.
    """

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.path = self.dir / ".lock"
        self._key: str | None = None
        self._created = False

    def holder(self) -> str:
        """Who holds (or last held) the lock, as written in the lock file."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return "another process"
        return (f"process {info.get('pid', '?')} on {info.get('host', '?')} (started {info.get('started', '?')}: "
                f"{info.get('command', '?')})")

    def acquire(self) -> RunLock:
        check_writable_dir(self.dir)
        created = not self.dir.exists()
        self.dir.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _HELD:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth + 1)
            self._key = key
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if created:
                    self._remove_if_empty()
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ConfigError(
                        f"Run directory {self.dir} is being written by {self.holder()}. Wait for it to finish "
                        "(then rerun to resume or load it), or train into another --out directory."
                    ) from None
                raise
            try:  # the holder before us may have removed the file after we opened it: lock the file at the path
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:200],
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        _HELD[key] = (fd, 1)
        self._key = key
        self._created = created
        return self

    def release(self) -> None:
        if self._key is None or self._key not in _HELD:
            return
        fd, depth = _HELD[self._key]
        if depth > 1:
            _HELD[self._key] = (fd, depth - 1)
        else:
            del _HELD[self._key]
            self.path.unlink(missing_ok=True)  # while still locked: the next writer makes (and checks) a new one
            if self._created:  # nothing was written (e.g. the data were missing): leave no empty run behind
                self._remove_if_empty()
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._key = None

    def _remove_if_empty(self) -> None:
        try:
            if {p.name for p in self.dir.iterdir()} <= {".lock"}:
                self.path.unlink(missing_ok=True)
                self.dir.rmdir()
        except OSError:  # someone wrote into it meanwhile (or it is gone): then it is not ours to remove
            pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_writable_dir(path: str | Path) -> None:
    """Raise :class:`ConfigError` unless ``path`` is (or can be created as) a writable directory.

    Catches the usual mistakes before anything is written: ``--out`` naming a file, a folder under a file,
    or a read-only place.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a directory; choose a directory for the run.")
    probe = path
    while not probe.exists():
        parent = probe.parent
        if parent == probe:
            break
        probe = parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"--out {path} lies under {probe}, which is a file; choose a directory for the run.")
    try:  # a real write: os.access says yes to root even on a read-only mount
        fd, name = tempfile.mkstemp(dir=probe, prefix=".jebm-write-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise ConfigError(f"--out {path}: cannot write in {probe} ({e.strerror}); choose a directory you can "
                          "write.") from None


# ----------------------------------------------------------------------------------------------
# Temporary run directories (the ci profile), removed when the process ends
# ----------------------------------------------------------------------------------------------

_TEMP_PREFIX = "jebm-tmp-"
_temp_root: Path | None = None


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def clean_temp_roots() -> list[Path]:
    """Remove the temporary roots of processes that are gone (a killed notebook kernel does not run its exit
    handlers). Returns the removed folders."""
    removed = []
    for old in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*"):
        m = re.match(rf"^{_TEMP_PREFIX}(\d+)-", old.name)
        if m and old.is_dir() and not _pid_alive(int(m.group(1))):
            _remove_tree(old)
            removed.append(old)
    return removed


def temp_dir(prefix: str) -> Path:
    """A fresh temporary directory for a throw-away run (the ``ci`` profile's runs, tests).

    All of a process's temporary directories live under one root, ``$TMPDIR/jebm-tmp-<pid>-*``, removed
    when the process exits (a notebook kernel or a test session ending normally). Roots left behind by
    processes that were killed are removed the next time any process asks for a temporary directory.
    """
    global _temp_root
    if _temp_root is None or not _temp_root.is_dir():
        clean_temp_roots()
        _temp_root = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}-"))
        atexit.register(_remove_tree, _temp_root)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_temp_root))
