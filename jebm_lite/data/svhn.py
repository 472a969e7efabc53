"""SVHN cropped digits (3 x 32 x 32) through ``torchvision.datasets.SVHN``.

The files are the original MATLAB ``.mat`` files (``train_32x32.mat``, ``test_32x32.mat``,
``extra_32x32.mat``: ``X`` uint8 (32, 32, 3, N), ``y`` (N, 1) with 1..10, where 10 is the digit 0).
They are looked for in ``<root>/svhn/`` and then ``<root>/`` (torchvision's own layout).
torchvision maps label 10 to 0. Without ``download`` only the files' presence is checked (no md5),
so a partial or re-saved copy loads too.

Bounded reads. A split holds at most :data:`MAX_IMAGES` images, so its file can hold at most
:func:`mat_limit` bytes of data (the images as bytes, the labels as doubles, 1 MiB of headers). Before scipy
reads a file, :func:`check_mat` refuses one that is larger on disk, or whose compressed variables inflate past
that size (counted while streaming, nothing kept): a ``.mat`` bomb is refused without filling the memory.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
import torchvision

from jebm_lite.data._common import DataNotFoundError, TensorImageDataset, missing_message

SPLITS: tuple[str, ...] = ("train", "test", "extra")
URL = "http://ufldl.stanford.edu/housenumbers/"
MAX_IMAGES: dict[str, int] = {"train": 73_257, "test": 26_032, "extra": 531_131}
_MI_COMPRESSED = 15  # the MAT-file v5 data type of a zlib-compressed variable


def mat_limit(split: str) -> int:
    """The most bytes of data an SVHN ``split`` file may hold: its images (3072 bytes each), labels as doubles and
    1 MiB for headers and names."""
    return MAX_IMAGES[split] * (32 * 32 * 3 + 8) + (1 << 20)


def _inflated(f, nbytes: int, budget: int) -> int:
    """Inflate the next ``nbytes`` of ``f`` (one zlib stream), counting, never more than ``budget + 1`` bytes."""
    d, out, left = zlib.decompressobj(), 0, nbytes
    while left > 0 and out <= budget:
        chunk = f.read(min(1 << 20, left))
        if not chunk:
            break
        left -= len(chunk)
        while chunk and out <= budget:
            out += len(d.decompress(chunk, budget + 1 - out))
            chunk = d.unconsumed_tail
    return out


def check_mat(path: Path, split: str) -> None:
    """Refuse an SVHN ``.mat`` file larger than :func:`mat_limit` on disk or once its variables are inflated.

    Raises:
        DataNotFoundError: the file is too large, inflates too far, or is not valid; the message names it and
            the limit.
    """
    limit = mat_limit(split)
    fix = f"delete it and fetch it again from {URL}{filename(split)}"
    size = path.stat().st_size
    if size > limit:
        raise DataNotFoundError(f"{path} has {size:,} bytes, more than SVHN {split} can hold ({limit:,} bytes); it is "
                                f"refused; {fix}.")
    with open(path, "rb") as f:
        head = f.read(128)
        if len(head) < 128 or head[126:128] not in (b"IM", b"MI"):
            return  # not a MAT-file v5 (e.g. v7.3 / HDF5): scipy refuses it with its own message
        endian = "<" if head[126:128] == b"IM" else ">"
        total = 0
        while len(tag := f.read(8)) == 8:
            mdtype, nbytes = struct.unpack(endian + "II", tag)
            try:
                total += _inflated(f, nbytes, limit - total) if mdtype == _MI_COMPRESSED else nbytes
            except zlib.error as e:
                raise DataNotFoundError(f"{path} is corrupt (zlib: {e}); {fix}.") from None
            if mdtype != _MI_COMPRESSED:
                f.seek(nbytes + (-nbytes % 8), os.SEEK_CUR)
            if total > limit:
                raise DataNotFoundError(f"{path} inflates past the {limit:,} bytes SVHN {split} can hold (a bomb or a "
                                        f"corrupt file); it is refused; {fix}.")


class _SVHNPresent(torchvision.datasets.SVHN):
    """torchvision's SVHN with the md5 check replaced by an existence check (files already local)."""

    def _check_integrity(self) -> bool:
        return os.path.isfile(os.path.join(self.root, self.filename))


def filename(split: str) -> str:
    return f"{split}_32x32.mat"


def not_found(split: str, root: Path) -> DataNotFoundError:
    f = filename(split)
    msg = missing_message(
        "SVHN",
        root / "svhn",
        [f],
        [f],
        f"{URL}{f} (one file per split: train_32x32.mat, test_32x32.mat, extra_32x32.mat)",
        extra=f" (or directly in {root})",
    )
    return DataNotFoundError(msg)


def load(split: str, root: Path, download: bool = False) -> TensorImageDataset:
    """SVHN ``split`` (``train`` | ``test`` | ``extra``): images (N, 3, 32, 32) in [-1, 1], labels 0..9.

    Raises:
        DataNotFoundError: when the ``.mat`` file is missing and ``download`` is False.
    """
    f = filename(split)
    folder = next((d for d in (root / "svhn", root) if (d / f).is_file()), None)
    if folder is None:
        if not download:
            raise not_found(split, root)
        ds = torchvision.datasets.SVHN(str(root / "svhn"), split=split, download=True)
    else:
        check_mat(folder / f, split)
        ds = _SVHNPresent(str(folder), split=split, download=False)
    images = torch.from_numpy(np.ascontiguousarray(ds.data, dtype=np.uint8))  # (N, 3, 32, 32)
    return TensorImageDataset(images, torch.from_numpy(ds.labels).to(torch.int64).reshape(-1),
                              [str(d) for d in range(10)])
