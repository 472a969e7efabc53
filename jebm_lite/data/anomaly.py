"""The anomaly-detection split of MNIST (paper Sec. 5.4, Tab. 3; protocol of MEG / LEBM, report 1.9).

Pool MNIST train + test (70,000 images), drop the held-out digit k, shuffle the normal images with numpy
``RandomState(42)``, train on the first 80 %; the test set is the other 20 % of the normal images plus every
image of digit k (label 1 = anomaly). ``cfg.data.hold_out`` (presets ``mnist_anomaly_*``) selects k, and
:func:`jebm_lite.training.load.training_data` reads the training images through :func:`anomaly_training_data`.
The scores live in :mod:`jebm_lite.analysis.anomaly`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from jebm_lite.data import get_dataset
from jebm_lite.data._common import TensorImageDataset
from jebm_lite.runtime import ConfigError, get_device

__all__ = ["AnomalySplit", "anomaly_split", "anomaly_training_data"]


# ----------------------------------------------------------------------------------------------
# The split
# ----------------------------------------------------------------------------------------------


@dataclass
class AnomalySplit:
    """One held-out-digit split of the pooled MNIST (70,000 images; train first, then test).

    Attributes:
        held_out: the anomalous digit k.
        train: normal training images, a uint8 :class:`TensorImageDataset` (N_train items).
        test: test images (normal first, then every image of digit k), :class:`TensorImageDataset`.
        test_labels: ``(N_test,)`` int64, 1 = anomaly (digit k), 0 = normal.
        train_index, test_index: ``(N,)`` int64 row indices into the pooled 70,000 (0..59,999 = the
            MNIST train split, 60,000..69,999 = its test split): the split, checkable for disjointness.
        counts: ``n_pooled, n_normal, n_anomalous, n_train, n_test_normal, n_test`` (ints).
    """

    held_out: int
    train: TensorImageDataset
    test: TensorImageDataset
    test_labels: Tensor
    train_index: Tensor
    test_index: Tensor
    counts: dict[str, int] = field(default_factory=dict)

    def train_images(self, device: torch.device | str | None = None) -> Tensor:
        """Training images ``(N_train, 1, 28, 28)`` float32 in [-1, 1] on ``device``."""
        return self.train.tensors(device)[0]

    def test_images(self, device: torch.device | str | None = None) -> Tensor:
        """Test images ``(N_test, 1, 28, 28)`` float32 in [-1, 1] on ``device``."""
        return self.test.tensors(device)[0]


def _pooled_mnist(root: str | Path | None, download: bool = False) -> tuple[Tensor, Tensor]:
    """uint8 images ``(70000, 1, 28, 28)`` and labels ``(70000,)``: MNIST train then test."""
    tr = get_dataset("mnist", "train", root=root, download=download)
    te = get_dataset("mnist", "test", root=root, download=download)
    return torch.cat([tr.images, te.images]), torch.cat([tr.targets, te.targets])


def anomaly_split(
    held_out_digit: int,
    root: str | Path | None = None,
    seed: int = 42,
    train_frac: float = 0.8,
    download: bool = False,
) -> AnomalySplit:
    """The MNIST anomaly split of Kumar et al. (2019) / Pang et al. (2020) used by paper Tab. 3.

    Pool train + test (70,000), drop digit ``held_out_digit``, permute the normal images with
    ``np.random.RandomState(seed).permutation``, train on the first ``int(train_frac * n_normal)``; test on
    the rest of the normal images plus all images of the held-out digit (label 1). For digit 1:
    7,877 anomalies, 62,123 normal -> 49,698 train, 12,425 + 7,877 = 20,302 test.

    Args:
        held_out_digit: 0 ... 9.
        root: data folder (``$JEBM_DATA`` by default).
        seed: RandomState seed of the shuffle (42 in the protocol).
        train_frac: fraction of the normal images used for training.
        download: let torchvision download missing files.

    Raises:
        ConfigError: digit not in 0..9 or ``train_frac`` not in (0, 1).
        DataNotFoundError: the MNIST files are missing.
    """
    if isinstance(held_out_digit, bool) or int(held_out_digit) != held_out_digit or not 0 <= held_out_digit <= 9:
        raise ConfigError(f"held-out digit must be an integer 0..9 (data.hold_out), got {held_out_digit!r}")
    if not 0.0 < train_frac < 1.0:
        raise ConfigError(f"train_frac must be in (0, 1), got {train_frac}")
    k = int(held_out_digit)
    images, labels = _pooled_mnist(root, download)
    lab = labels.numpy()
    normal = np.flatnonzero(lab != k)
    anomalous = np.flatnonzero(lab == k)
    normal = normal[np.random.RandomState(seed).permutation(normal.shape[0])]
    n_train = int(train_frac * normal.shape[0])
    train_idx = torch.from_numpy(normal[:n_train].astype(np.int64))
    test_idx = torch.from_numpy(np.concatenate([normal[n_train:], anomalous]).astype(np.int64))
    test_labels = torch.cat([torch.zeros(normal.shape[0] - n_train, dtype=torch.int64),
                             torch.ones(anomalous.shape[0], dtype=torch.int64)])
    counts = {
        "n_pooled": int(lab.shape[0]), "n_normal": int(normal.shape[0]), "n_anomalous": int(anomalous.shape[0]),
        "n_train": n_train, "n_test_normal": int(normal.shape[0] - n_train), "n_test": int(test_idx.shape[0]),
    }
    return AnomalySplit(
        held_out=k,
        train=TensorImageDataset(images[train_idx], labels[train_idx]),
        test=TensorImageDataset(images[test_idx], labels[test_idx]),
        test_labels=test_labels,
        train_index=train_idx,
        test_index=test_idx,
        counts=counts,
    )


def anomaly_training_data(cfg, device: torch.device | str | None = None, split: AnomalySplit | None = None):
    """The training images of an anomaly config (``cfg.data.hold_out`` set), for ``load_or_train(data=...)``.

    The split's normal training images, then the first ``cfg.data.subset`` of them (the ``ci`` profile);
    a ``(N, 1, 28, 28)`` tensor on the device when ``cfg.data.on_device`` (as ``runs.training_data``), else
    a :class:`TensorImageDataset`. ``split`` reuses an already built :func:`anomaly_split`.

    Raises:
        ConfigError: ``data.hold_out`` unset, a dataset other than MNIST, or ``data.classes`` also set.
    """
    d = cfg.data
    if d.hold_out is None:
        raise ConfigError("anomaly_training_data needs data.hold_out=<digit> (e.g. preset mnist_anomaly_joint)")
    if d.name.strip().lower() != "mnist":
        raise ConfigError(f"the anomaly protocol is defined on MNIST; got data.name={d.name!r}")
    if d.classes is not None:
        raise ConfigError("data.hold_out and data.classes cannot both be set; unset data.classes")
    if split is None or split.held_out != d.hold_out:
        split = anomaly_split(d.hold_out, root=d.root, download=d.download)
    ds = split.train
    if d.subset is not None:
        if d.subset < 1:
            raise ConfigError(f"data.subset={d.subset} must be >= 1")
        ds = ds.select(torch.arange(min(d.subset, len(ds))))
    if d.on_device:
        return ds.tensors(get_device(device if device is not None else cfg.train.device))[0]
    return ds
