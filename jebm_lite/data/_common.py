"""Pieces shared by the dataset modules: the data root, the error type, the in-memory dataset, and
:func:`inflate_bounded`, which stops a ``.gz`` file at the size its own header allows (a bomb is refused in
seconds, never written out)."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from jebm_lite.runtime import ConfigError

DATA_ENV = "JEBM_DATA"
CACHE_ENV = "JEBM_CACHE"


class DataNotFoundError(FileNotFoundError):
    """Dataset files are missing; the message says which files to put where (and where to get them)."""


def data_root(root: str | Path | None = None) -> Path:
    """The data folder: ``root`` if given, else ``$JEBM_DATA``, else ``~/.cache/jebm_lite/data``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/jebm_lite/data").expanduser()


def cache_dir(*parts: str) -> Path:
    """A writable cache folder: ``$JEBM_CACHE``, else ``~/.cache/jebm_lite``, else the temp dir.

    Used for derived files only (e.g. decompressed idx files); dataset folders are never written.
    """
    candidates = []
    env = os.environ.get(CACHE_ENV)
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(Path("~/.cache/jebm_lite").expanduser())
    candidates.append(Path(tempfile.gettempdir()) / f"jebm_lite_cache_{os.getuid() if hasattr(os, 'getuid') else 0}")
    for base in candidates:
        path = base.joinpath(*parts)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise DataNotFoundError(
        f"No writable cache folder: tried {', '.join(str(c) for c in candidates)}. "
        f"Set {CACHE_ENV} to a writable folder."
    )


def inflate_bounded(src: Path, dst: Path, head_len: int, size_of: Callable[[bytes], int], fix: str) -> int:
    """Gunzip ``src`` into ``dst``, never past the size the file's own header allows.

    ``size_of(head)`` gets the first ``head_len`` decompressed bytes and returns the exact size the whole
    decompressed file must have (it raises :class:`DataNotFoundError` for a header that claims more than the data
    set can hold). Inflating stops one block after that size: a gzip bomb costs at most the announced size on disk
    (the caller removes ``dst``) and about a second. Returns the size.

    Raises:
        DataNotFoundError: the header is refused, the stream inflates past its size or ends short of it, or it is
            not valid gzip; the message names ``src``, the expected size and ``fix``.
    """
    try:
        with gzip.open(src, "rb") as inp, open(dst, "wb") as out:
            head = inp.read(head_len)
            if len(head) < head_len:
                raise DataNotFoundError(f"{src} is truncated or corrupt: it inflates to {len(head)} bytes, not even a "
                                        f"{head_len}-byte header; {fix}.")
            size = size_of(head)
            out.write(head)
            n = len(head)
            while block := inp.read(min(1 << 22, size - n + 1)):
                n += len(block)
                if n > size:
                    raise DataNotFoundError(f"{src} inflates past the {size:,} bytes its header announces (a gzip bomb "
                                            f"or a corrupt file); it is refused and nothing of it is kept; {fix}.")
                out.write(block)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataNotFoundError(f"{src} is truncated or corrupt ({type(e).__name__}: {e}); {fix}.") from None
    if n < size:
        raise DataNotFoundError(f"{src} is truncated or corrupt: it inflates to {n:,} of the {size:,} bytes its header "
                                f"announces; {fix}.")
    return size


def files_key(paths: Sequence[Path]) -> str:
    """A short hash of the files' absolute paths, sizes and modification times (a cache key)."""
    h = hashlib.sha1()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def missing_message(
    title: str,
    folder: Path,
    files: Sequence[str],
    missing: Sequence[str],
    source: str,
    extra: str = "",
) -> str:
    """The standard "not found" message: what is missing, where to put which files, the alternatives."""
    return (
        f"{title} not found under {folder}: missing {', '.join(missing)}. "
        f"Put {', '.join(files)} there{extra}, or set {DATA_ENV} (or pass root=) to a folder that has them, "
        f"or pass download=True when online. Original files: {source}"
    )


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1] (0 -> -1, 255 -> 1); any shape."""
    return images.to(torch.float32).div_(127.5).sub_(1.0)


class TensorImageDataset(Dataset):
    """Images held in memory as uint8, returned as float32 in [-1, 1].

    Args:
        images: uint8 tensor (N, C, H, W).
        targets: int64 tensor (N,).
        classes: optional class names, ``classes[label]``.

    ``dataset[i]`` is ``(image (C, H, W) float32 in [-1, 1], label int)``. Conversion happens per item
    (or per batch through ``__getitems__``), so large sets such as SVHN ``extra`` stay uint8 in memory;
    :func:`jebm_lite.data.as_tensors` converts all of it in one vectorised step.
    """

    def __init__(
        self, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str] | None = None
    ) -> None:
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if targets.shape != (images.shape[0],):
            raise ValueError(f"targets must have shape ({images.shape[0]},), got {tuple(targets.shape)}")
        self.images = images
        self.targets = targets.to(torch.int64)
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_unit_range(self.images[index]), int(self.targets[index])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        x = to_unit_range(self.images[idx])
        y = self.targets[idx].tolist()
        return list(zip(x.unbind(0), y))

    def select(self, indices: torch.Tensor) -> TensorImageDataset:
        """A new dataset holding the rows ``indices`` (int64 (M,))."""
        return TensorImageDataset(self.images[indices], self.targets[indices], self.classes)

    def tensors(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All images (N, C, H, W) float32 in [-1, 1] and labels (N,) int64, on ``device``."""
        x = self.images.to(device) if device is not None else self.images
        return to_unit_range(x), self.targets.to(device) if device is not None else self.targets.clone()


def filter_indices(
    targets: torch.Tensor, classes: Sequence[int] | None, subset: int | None, name: str
) -> torch.Tensor | None:
    """Row indices keeping labels in ``classes`` then the first ``subset`` rows; None means keep all.

    Raises:
        ConfigError: for ``subset < 1`` or when no example has one of ``classes``.
    """
    if subset is not None and subset < 1:
        raise ConfigError(f"subset={subset} must be >= 1 (or None for the whole split)")
    idx: torch.Tensor | None = None
    if classes is not None:
        wanted = torch.as_tensor(list(classes), dtype=torch.int64)
        idx = torch.nonzero(torch.isin(targets, wanted), as_tuple=False).squeeze(1)
        if idx.numel() == 0:
            present = sorted(set(targets.unique().tolist()))
            raise ConfigError(f"{name}: no examples with labels {tuple(classes)}; labels present: {present}")
    if subset is not None:
        if idx is None:
            if subset < targets.shape[0]:
                idx = torch.arange(subset)
        else:
            idx = idx[:subset]
    return idx
