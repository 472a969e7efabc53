"""CIFAR-10 (3 x 32 x 32) from the original python batches (``cifar-10-batches-py/``).

Layout: ``<root>/cifar-10-batches-py/`` (torchvision's) or ``<root>/cifar10/cifar-10-batches-py/``, holding
``data_batch_1`` ... ``data_batch_5`` (train, 50000), ``test_batch`` (test, 10000) and ``batches.meta``.
Each batch is a pickled dict with ``data`` uint8 (N, 3072) (channel-major 3 x 32 x 32 rows) and
``labels`` (list of N ints). Without ``download`` the batches are read here (only their presence is
checked, no md5; unpickled by :func:`~jebm_lite.io.load_array_pickle`, which can build arrays and nothing
else; keys may be ``str`` as in the Python-2 originals or ``bytes``), so small or re-written
batches load as well; ``download=True`` goes through ``torchvision.datasets.CIFAR10``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from jebm_lite.data._common import DataNotFoundError, TensorImageDataset, missing_message
from jebm_lite.io import load_array_pickle

FOLDER = "cifar-10-batches-py"
TRAIN_FILES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES: tuple[str, ...] = ("test_batch",)
META_FILE = "batches.meta"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SPLITS: tuple[str, ...] = ("train", "test")


def _str_keys(d: dict[Any, Any]) -> dict[str, Any]:
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


_FIX = "delete the cifar-10-batches-py folder and download it again (get_dataset(..., download=True))"


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images uint8 (N, 3, 32, 32) and labels int64 (N,)."""
    entry = _str_keys(load_array_pickle(path, "CIFAR-10 batch", _FIX))
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
    return data, np.asarray(labels, dtype=np.int64).reshape(-1)


def read_meta(folder: Path) -> list[str] | None:
    """Class names from ``batches.meta`` (None when the file is absent)."""
    path = folder / META_FILE
    if not path.is_file():
        return None
    meta = _str_keys(load_array_pickle(path, "CIFAR-10 class list", _FIX))
    names = meta.get("label_names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else None


def _folder(root: Path) -> Path:
    for d in (root / FOLDER, root / "cifar10" / FOLDER):
        if d.is_dir():
            return d
    return root / FOLDER


def load(split: str, root: Path, download: bool = False) -> TensorImageDataset:
    """CIFAR-10 ``split`` (``train`` | ``test``): images (N, 3, 32, 32) in [-1, 1], labels 0..9.

    Raises:
        DataNotFoundError: when a batch file is missing and ``download`` is False.
    """
    files = TRAIN_FILES if split == "train" else TEST_FILES
    folder = _folder(root)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        if not download:
            msg = missing_message(
                "CIFAR-10",
                folder,
                [*TRAIN_FILES, *TEST_FILES, META_FILE],
                missing,
                f"{URL} (extract it in {root}; it unpacks to {FOLDER}/)",
            )
            raise DataNotFoundError(msg)
        ds = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True)
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        targets = torch.as_tensor(ds.targets, dtype=torch.int64)
        return TensorImageDataset(images, targets, ds.classes)
    parts = [read_batch(folder / f) for f in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    targets = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorImageDataset(images, targets, read_meta(folder))
