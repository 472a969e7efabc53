"""Datasets for the book: one module per family, one entry point :func:`get_dataset`.

Every dataset yields ``(image, label)`` with ``image`` a float32 tensor (C, H, W) in [-1, 1] and ``label``
an int. Files are looked for under :func:`data_root` (argument, else ``$JEBM_DATA``, else
``~/.cache/jebm_lite/data``); nothing is downloaded unless ``download=True``. Missing files raise
:class:`DataNotFoundError` with the exact files, folders and original URLs.

==================  ==============  ======================  =====================================
name                image shape     splits                  files (under the data root)
==================  ==============  ======================  =====================================
``mnist``           (1, 28, 28)     train, test, fit, val   ``mnist/*.gz`` or ``MNIST/raw/``
``fashion_mnist``   (1, 28, 28)     train, test, fit, val   ``fashion-mnist/*.gz`` or ``FashionMNIST/raw/``
``svhn``            (3, 32, 32)     train, test, extra      ``svhn/{split}_32x32.mat`` (or in the root)
``celeba64``        (3, 64, 64)     train, valid, test, all ``celeba/img_align_celeba/`` or ``celeba64/{split}/``
``cifar10``         (3, 32, 32)     train, test             ``cifar-10-batches-py/``
``colour_mnist``    (3, 32, 32)     train, test             MNIST's files (a generated **stand-in**)
``factors``         (3, 32, 32)     train, test             none: rendered shapes with known factors
==================  ==============  ======================  =====================================

``colour_mnist`` is not a real data set: an SVHN-like stand-in rendered from MNIST with recorded
factors (colours, lighting, stroke, pose, neighbour fragments); see :mod:`jebm_lite.data.colour_digits`.
``factors`` renders flat shapes with seven known factors (shape, scale, orientation, position x / y,
object and background colour; :mod:`jebm_lite.data.factors`) for the disentanglement metrics; its
"label" is the factor vector. Both are listed in :data:`STANDINS`, not in :data:`DATASETS`.

Example::

    ds = get_dataset("mnist", classes=(0, 1, 2), subset=512)
    loader = get_loader(ds, batch_size=64, seed=0)
    x, y = as_tensors(ds, device="cuda")  # (512, 1, 28, 28) in [-1, 1], (512,)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from jebm_lite.data import celeba, cifar, colour_digits, mnist, svhn
from jebm_lite.data._common import DataNotFoundError, TensorImageDataset, data_root, filter_indices
from jebm_lite.data.celeba import ImageFileDataset
from jebm_lite.data.factors import FactorDataset
from jebm_lite.data.toy2d import gaussian_mixture_2d, mixture_centres, mode_coverage
from jebm_lite.runtime import ConfigError, downloads_allowed

DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "svhn", "celeba64", "cifar10")
#: Generated stand-ins for data sets that may be unavailable (accepted by :func:`get_dataset` too).
STANDINS: tuple[str, ...] = ("colour_mnist", "factors")

_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "svhn": (3, 32, 32),
    "celeba64": (3, 64, 64),
    "cifar10": (3, 32, 32),
    "colour_mnist": (3, 32, 32),
    "factors": (3, 32, 32),
}
_SPLITS: dict[str, tuple[str, ...]] = {
    "mnist": mnist.SPLITS,
    "fashion_mnist": mnist.SPLITS,
    "svhn": svhn.SPLITS,
    "celeba64": celeba.SPLITS,
    "cifar10": cifar.SPLITS,
    "colour_mnist": colour_digits.SPLITS,
    "factors": ("train", "test"),
}
_ALIASES = {"fashion-mnist": "fashion_mnist", "fmnist": "fashion_mnist", "celeba": "celeba64", "cifar": "cifar10",
            "colour-mnist": "colour_mnist", "color_mnist": "colour_mnist"}

__all__ = [
    "DATASETS",
    "STANDINS",
    "DataNotFoundError",
    "ImageFileDataset",
    "TensorImageDataset",
    "as_tensors",
    "data_root",
    "gaussian_mixture_2d",
    "get_dataset",
    "get_loader",
    "image_shape",
    "mixture_centres",
    "mode_coverage",
]


def _canonical(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS + STANDINS:
        raise ConfigError(f"Unknown dataset {name!r}; use one of {', '.join(DATASETS + STANDINS)}")
    return key


def image_shape(name: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images of dataset ``name``, e.g. ``(1, 28, 28)`` for ``mnist``."""
    return _SHAPES[_canonical(name)]


def get_dataset(
    name: str,
    split: str = "train",
    root: str | Path | None = None,
    classes: Sequence[int] | None = None,
    subset: int | None = None,
    download: bool | None = None,
    augment: bool = False,
) -> Dataset:
    """Load a dataset split: items are ``(image (C, H, W) float32 in [-1, 1], label int)``.

    Args:
        name: one of :data:`DATASETS` or :data:`STANDINS`.
        split: ``train`` | ``test`` (``fit`` / ``val`` for MNIST-family: the training set cut 50000 / 10000;
            ``extra`` for SVHN; ``valid`` and ``all`` for CelebA).
        root: the data folder (see :func:`data_root`).
        classes: keep only these labels, e.g. ``(0, 1, 2)`` (not for ``celeba64``, which has no labels).
        subset: keep the first ``subset`` examples, after the class filter.
        download: let torchvision download missing files (needs internet). ``None`` (default): only the small
            MNIST-family files, and only where :func:`jebm_lite.runtime.downloads_allowed` (a reader's
            machine or Colab; never in CI or tests). SVHN, CelebA and CIFAR-10 are fetched only when asked.
        augment: random horizontal flips for the ``train`` split of ``celeba64`` and ``cifar10``
            (ignored for digits); off by default for determinism.

    Returns:
        A :class:`TensorImageDataset` (MNIST, Fashion-MNIST, SVHN, CIFAR-10, and the ``colour_mnist``
        stand-in, a :class:`~jebm_lite.data.colour_digits.ColourDigits` with ``.factors``; held in memory
        as uint8) or an :class:`ImageFileDataset` (CelebA; decoded per item).

    Raises:
        DataNotFoundError: files missing and ``download`` is False (the message says what to put where).
        ConfigError: unknown name or split, bad ``subset``, or no example with one of ``classes``.
    """
    key = _canonical(name)
    if download is None:
        download = key in ("mnist", "fashion_mnist", "colour_mnist") and downloads_allowed()
    split = split.strip().lower()
    if split not in _SPLITS[key]:
        raise ConfigError(f"{key} has no split {split!r}; use one of {', '.join(_SPLITS[key])}")
    folder = data_root(root)
    if key == "colour_mnist":  # filters before rendering, so that only the kept rows are generated
        return colour_digits.load(split, folder, classes=classes, subset=subset, download=download)
    if key == "factors":  # rendered on demand; train and test use different seeds
        if classes is not None:
            raise ConfigError("factors has no classes (its label is the factor vector); use classes=None")
        return FactorDataset(subset or (60_000 if split == "train" else 10_000), seed=0 if split == "train" else 1)
    ds: TensorImageDataset | ImageFileDataset
    if key in ("mnist", "fashion_mnist"):
        ds = mnist.load(key, split, folder, download=download)
    elif key == "svhn":
        ds = svhn.load(split, folder, download=download)
    elif key == "cifar10":
        ds = cifar.load(split, folder, download=download)
        if augment and split == "train":
            ds = _FlipDataset(ds)
    else:
        if classes is not None:
            raise ConfigError("celeba64 has no class labels; use classes=None")
        ds = celeba.load(split, folder, download=download, augment=augment)
    idx = filter_indices(ds.targets, classes, subset, key)
    return ds if idx is None else ds.select(idx)


class _FlipDataset(TensorImageDataset):
    """A :class:`TensorImageDataset` whose items are flipped horizontally at random (p = 0.5)."""

    def __init__(self, base: TensorImageDataset) -> None:
        super().__init__(base.images, base.targets, base.classes)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = super().__getitem__(index)
        return (x.flip(-1) if bool(torch.rand(()) < 0.5) else x), y

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        return [self[i] for i in indices]

    def select(self, indices: torch.Tensor) -> _FlipDataset:
        return _FlipDataset(TensorImageDataset(self.images[indices], self.targets[indices], self.classes))


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # set per worker by the DataLoader from its generator
    np.random.seed(seed)
    random.seed(seed)


def get_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader with a seeded ``torch.Generator`` (same seed, same order of batches).

    Batches are ``(x (B, C, H, W), y (B,))``. Worker processes seed NumPy and ``random`` too.

    Raises:
        ConfigError: ``drop_last`` with fewer examples than ``batch_size`` (the loader would be empty).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    n = len(dataset)  # type: ignore[arg-type]
    if drop_last and n < batch_size:
        raise ConfigError(
            f"The dataset has {n} examples, fewer than batch_size={batch_size}, so drop_last=True gives no "
            f"batch; lower the batch size or pass drop_last=False"
        )
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=gen,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
    )


def as_tensors(
    dataset: Dataset, device: torch.device | str | None = None, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole (small) dataset in memory: images (N, C, H, W) float32 in [-1, 1], labels (N,) int64.

    In-memory datasets (MNIST family, SVHN, CIFAR-10, and ``Subset``s of them) are converted in one
    vectorised step, on ``device`` (the uint8 tensor is moved first); others are read item by item.
    Random augmentation is not applied on the fast path.
    """
    if isinstance(dataset, Subset):
        inner = dataset.dataset
        if isinstance(inner, TensorImageDataset):
            idx = torch.as_tensor(list(dataset.indices), dtype=torch.long)
            return TensorImageDataset(inner.images[idx], inner.targets[idx]).tensors(device)
    if isinstance(dataset, TensorImageDataset):
        return TensorImageDataset.tensors(dataset, device)
    xs, ys = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        xs.append(x)
        ys.append(torch.as_tensor(y, dtype=torch.int64))
    if not xs:
        raise ConfigError("as_tensors: the dataset is empty")
    x, y = torch.cat(xs), torch.cat(ys)
    return (x.to(device), y.to(device)) if device is not None else (x, y)
