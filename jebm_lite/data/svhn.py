"""SVHN cropped digits (3 x 32 x 32) through ``torchvision.datasets.SVHN``.

The files are the original MATLAB ``.mat`` files (``train_32x32.mat``, ``test_32x32.mat``,
``extra_32x32.mat``: ``X`` uint8 (32, 32, 3, N), ``y`` (N, 1) with 1..10, where 10 is the digit 0).
They are looked for in ``<root>/svhn/`` and then ``<root>/`` (torchvision's own layout).
torchvision maps label 10 to 0. Without ``download`` only the files' presence is checked (no md5),
so a partial or re-saved copy loads too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torchvision

from jebm_lite.data._common import DataNotFoundError, TensorImageDataset, missing_message

SPLITS: tuple[str, ...] = ("train", "test", "extra")
URL = "http://ufldl.stanford.edu/housenumbers/"


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
        ds = _SVHNPresent(str(folder), split=split, download=False)
    images = torch.from_numpy(np.ascontiguousarray(ds.data, dtype=np.uint8))  # (N, 3, 32, 32)
    return TensorImageDataset(images, torch.from_numpy(ds.labels).to(torch.int64).reshape(-1),
                              [str(d) for d in range(10)])
