"""Tests of jebm_lite.data: real MNIST / Fashion-MNIST from ../shared/data, small files in the real
formats (idx .gz, SVHN .mat, CelebA images, CIFAR-10 pickles) written here, errors, loaders, toy2d."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jebm_lite.data import (
    DATASETS,
    DataNotFoundError,
    as_tensors,
    data_root,
    gaussian_mixture_2d,
    get_dataset,
    get_loader,
    image_shape,
    mode_coverage,
)
from jebm_lite.data import celeba as celeba_mod
from jebm_lite.runtime import CheckpointError, ConfigError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module", autouse=True)
def _tmp_cache(tmp_jebm_cache):
    """Derived files (decompressed idx) go to a temporary cache, not the user's home (conftest)."""
    yield


@pytest.fixture(scope="module")
def mnist_sets(shared_data):
    return {s: get_dataset("mnist", s, root=shared_data) for s in ("train", "test")}


# ---------------------------------------------------------------------------------------------
# Real MNIST / Fashion-MNIST
# ---------------------------------------------------------------------------------------------


def _check_digits(ds, n, counts=None):
    assert len(ds) == n
    x, y = as_tensors(ds)
    assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    hist = torch.bincount(y, minlength=10)
    assert hist.numel() == 10 and (hist > 0).all()
    if counts is not None:
        assert hist.tolist() == counts
    img, label = ds[0]
    assert img.shape == (1, 28, 28) and img.dtype == torch.float32 and isinstance(label, int)
    assert torch.equal(img, x[0]) and label == int(y[0])


def test_mnist_real_counts(mnist_sets):
    _check_digits(mnist_sets["train"], 60000, MNIST_TRAIN_COUNTS)
    _check_digits(mnist_sets["test"], 10000, MNIST_TEST_COUNTS)
    # a stroke pixel is bright and the border is background
    x0, _ = mnist_sets["train"][0]
    assert x0[0, 0, 0] == -1.0 and x0.max() == 1.0


def test_fashion_mnist_real(shared_data):
    for split, n in (("train", 60000), ("test", 10000)):
        ds = get_dataset("fashion_mnist", split, root=shared_data)
        _check_digits(ds, n, [n // 10] * 10)
        assert ds.classes[0] == "T-shirt/top"


def test_mnist_classes_and_subset(shared_data):
    ds = get_dataset("mnist", "train", root=shared_data, classes=(0, 1, 2))
    assert len(ds) == 5923 + 6742 + 5958
    _, y = as_tensors(ds)
    assert set(y.unique().tolist()) == {0, 1, 2}
    small = get_dataset("mnist", "train", root=shared_data, classes=(0, 1, 2), subset=100)
    xs, ys = as_tensors(small)
    x_all, _ = as_tensors(ds)
    assert len(small) == 100 and set(ys.tolist()) <= {0, 1, 2}
    assert torch.equal(xs, x_all[:100])  # the first 100 after filtering
    with pytest.raises(ConfigError, match="no examples"):
        get_dataset("mnist", "test", root=shared_data, classes=(42,))
    with pytest.raises(ConfigError, match="subset"):
        get_dataset("mnist", "test", root=shared_data, subset=0)


def test_mnist_loads_fast(shared_data):
    import time

    get_dataset("mnist", "train", root=shared_data)  # cache warm
    t0 = time.perf_counter()
    ds = get_dataset("mnist", "train", root=shared_data)
    as_tensors(ds)
    assert time.perf_counter() - t0 < 3.0


# ---------------------------------------------------------------------------------------------
# Small idx files: the accepted layouts, and the source folder is never written
# ---------------------------------------------------------------------------------------------


def _idx_bytes(kind: str, arr: np.ndarray) -> bytes:
    if kind == "images":
        return struct.pack(">IIII", 2051, *arr.shape) + arr.astype(np.uint8).tobytes()
    return struct.pack(">II", 2049, arr.shape[0]) + arr.astype(np.uint8).tobytes()


def _write_idx(folder: Path, n_train=30, n_test=20, compressed=True, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        imgs[0, 0, 0], imgs[0, 0, 1] = 0, 255
        labels = np.arange(n) % 10
        data[prefix] = (imgs, labels)
        for kind, arr, stem in (("images", imgs, "images-idx3-ubyte"), ("labels", labels, "labels-idx1-ubyte")):
            raw = _idx_bytes(kind, arr)
            name = f"{prefix}-{stem}"
            if compressed:
                (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
    return data


@pytest.mark.parametrize(
    "name,sub,compressed",
    [
        ("mnist", "mnist", True),
        ("mnist", "MNIST/raw", True),
        ("mnist", "MNIST/raw", False),
        ("mnist", "mnist", False),
        ("fashion_mnist", "fashion-mnist", True),
        ("fashion_mnist", "FashionMNIST/raw", True),
    ],
)
def test_idx_layouts(tmp_path, name, sub, compressed):
    folder = tmp_path / sub
    data = _write_idx(folder, compressed=compressed)
    before = sorted(p.name for p in folder.iterdir())
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = get_dataset(name, split, root=tmp_path)
        imgs, labels = data[prefix]
        x, y = as_tensors(ds)
        assert x.shape == (len(labels), 1, 28, 28)
        expected = torch.from_numpy(imgs).float().div(127.5).sub(1).unsqueeze(1)
        assert torch.allclose(x, expected)
        assert y.tolist() == labels.tolist()
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written next to the sources


def test_idx_partial_raises(tmp_path):
    _write_idx(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError) as err:
        get_dataset("mnist", "train", root=tmp_path)
    msg = str(err.value)
    assert "missing t10k-labels-idx1-ubyte.gz" in msg and "train-labels-idx1-ubyte.gz" in msg


# ---------------------------------------------------------------------------------------------
# SVHN: small .mat files in the real format
# ---------------------------------------------------------------------------------------------


def _write_svhn(folder: Path, split: str, n: int, seed: int = 0):
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    X[0, 0, 0, 0], X[0, 1, 0, 0] = 0, 255
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 is the digit 0
    scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": X, "y": y})
    return X, y


@pytest.mark.parametrize("sub", ["svhn", "."])
def test_svhn_mat(tmp_path, sub):
    for split, n in (("train", 12), ("test", 11), ("extra", 10)):
        X, y = _write_svhn(tmp_path / sub, split, n)
        ds = get_dataset("svhn", split, root=tmp_path)
        assert len(ds) == n
        x, labels = as_tensors(ds)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.float32
        assert x.min() == -1.0 and x.max() == 1.0
        expected_labels = [v % 10 for v in y[:, 0].tolist()]
        assert labels.tolist() == expected_labels  # label 10 -> 0
        assert 0 in labels.tolist() and 10 not in labels.tolist()
        expected = torch.from_numpy(X).permute(3, 2, 0, 1).float().div(127.5).sub(1)
        assert torch.allclose(x, expected)
        img, lab = ds[9]
        assert img.shape == image_shape("svhn") and lab == 0
    assert len(get_dataset("svhn", "train", root=tmp_path, classes=(0, 1))) == 3


# ---------------------------------------------------------------------------------------------
# CelebA: aligned 178x218 images; the crop box is applied
# ---------------------------------------------------------------------------------------------

INSIDE = (0, 200, 0)  # green inside the crop box
OUTSIDE = (255, 0, 0)  # red outside it
MARK = (0, 0, 255)  # blue 10x10 square at the box's top-left corner


def _face(i: int) -> Image.Image:
    left, upper, right, lower = celeba_mod.CROP_BOX
    arr = np.zeros((218, 178, 3), dtype=np.uint8)
    arr[:] = OUTSIDE
    arr[upper:lower, left:right] = INSIDE
    arr[upper : upper + 10, left : left + 10] = MARK
    arr[lower - 1, right - 1] = (i, i, i)
    return Image.fromarray(arr)


def _write_faces(folder: Path, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        _face(i).save(folder / n)  # png: lossless, so colours are exact


def _check_faces(ds, n):
    assert len(ds) == n
    x, y = as_tensors(ds)
    assert x.shape == (n, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and (y == 0).all()
    # no red from outside the box survives the crop; the inside colour fills the image
    assert x[:, 0].max().item() < -0.9
    # the blue mark at the box's top-left corner lands in the top-left of the 64x64 image (10/148*64 ~ 4 px)
    assert (x[:, 2, :3, :3] > 0.9).all() and (x[:, 2, 8:, 8:] < -0.9).all()
    assert (x[:, 1, 8:-8, 8:-8] > 0.5).all()


def test_celeba_per_split_folder(tmp_path):
    _write_faces(tmp_path / "celeba64" / "train", [f"{i:06d}.png" for i in range(5)])
    _write_faces(tmp_path / "celeba64" / "test", [f"{i:06d}.png" for i in range(5, 8)])
    _check_faces(get_dataset("celeba64", "train", root=tmp_path), 5)
    _check_faces(get_dataset("celeba64", "test", root=tmp_path), 3)
    assert len(get_dataset("celeba64", "train", root=tmp_path, subset=2)) == 2


def test_celeba_torchvision_layout_partition(tmp_path):
    names = [f"{i:06d}.jpg" for i in range(1, 11)]
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for i, n in enumerate(names):
        _face(i).save(folder / n, quality=100, subsampling=0)
    parts = [0] * 6 + [1] * 2 + [2] * 2
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text(
        "".join(f"{n} {p}\n" for n, p in zip(names, parts))
    )
    for split, n in (("train", 6), ("valid", 2), ("test", 2), ("all", 10)):
        ds = get_dataset("celeba", split, root=tmp_path)
        assert len(ds) == n
    x, _ = as_tensors(get_dataset("celeba64", "valid", root=tmp_path))
    assert x.shape == (2, 3, 64, 64) and x[:, 0].max() < -0.8  # JPEG: near, not exactly, the colours


def test_celeba_fallback_80_20_and_augment(tmp_path):
    _write_faces(tmp_path / "celeba" / "img_align_celeba", [f"{i:06d}.png" for i in range(10)])
    train = get_dataset("celeba64", "train", root=tmp_path)
    test = get_dataset("celeba64", "test", root=tmp_path)
    assert [f.name for f in train.files] == [f"{i:06d}.png" for i in range(8)]
    assert [f.name for f in test.files] == ["000008.png", "000009.png"]
    _check_faces(train, 8)
    assert torch.equal(train[0][0], train[0][0])  # deterministic by default
    aug = get_dataset("celeba64", "train", root=tmp_path, augment=True)
    torch.manual_seed(0)
    flips = {bool((aug[0][0][2, :3, :3] > 0.9).all()) for _ in range(20)}
    assert flips == {True, False}  # the corner mark is sometimes mirrored to the right
    with pytest.raises(ConfigError, match="no class labels"):
        get_dataset("celeba64", "train", root=tmp_path, classes=(0,))


# ---------------------------------------------------------------------------------------------
# CIFAR-10: small pickled batches in the real format
# ---------------------------------------------------------------------------------------------


def _write_cifar(root: Path, bytes_keys: bool, n_per_batch=4, n_test=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    written = {"train": ([], []), "test": ([], [])}
    files = [(f"data_batch_{i}", "train", n_per_batch) for i in range(1, 6)] + [("test_batch", "test", n_test)]
    for j, (fname, split, n) in enumerate(files):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        data[0, 0], data[0, 1] = 0, 255
        labels = [(j + i) % 10 for i in range(n)]
        entry = {k("batch_label"): k(f"batch {j}"), k("labels"): labels, k("data"): data,
                 k("filenames"): [k(f"img_{j}_{i}.png") for i in range(n)]}
        with open(folder / fname, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[split][0].append(data)
        written[split][1].extend(labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {k("num_cases_per_batch"): n_per_batch, k("label_names"): [k(s) for s in names], k("num_vis"): 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return {s: (np.concatenate(d), lab) for s, (d, lab) in written.items()}


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar_batches(tmp_path, bytes_keys):
    written = _write_cifar(tmp_path, bytes_keys)
    for split, n in (("train", 20), ("test", 3)):
        ds = get_dataset("cifar10", split, root=tmp_path)
        assert len(ds) == n and ds.classes[0] == "airplane"
        x, y = as_tensors(ds)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.float32
        assert x.min() == -1.0 and x.max() == 1.0
        data, labels = written[split]
        assert y.tolist() == labels
        # rows are channel-major: R plane (1024), then G, then B; each plane row by row
        expected = torch.from_numpy(data).reshape(n, 3, 32, 32).float().div(127.5).sub(1)
        assert torch.allclose(x, expected)
    assert len(get_dataset("cifar10", "train", root=tmp_path, classes=(1,))) == 2
    aug = get_dataset("cifar10", "train", root=tmp_path, augment=True)
    x0 = as_tensors(get_dataset("cifar10", "train", root=tmp_path))[0][0]
    outs = {bool(torch.equal(aug[0][0], x0)) for _ in range(20)}
    assert outs == {True, False}


class _Exploit:
    """A crafted object whose pickle names ``os.system``: the batch reader must refuse it, never call it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_batches_are_unpickled_without_running_code(tmp_path):
    written = _write_cifar(tmp_path, bytes_keys=False)
    folder = tmp_path / "cifar-10-batches-py"
    # numpy 2's protocol-5 arrays (another global for the same data) load as well
    entry = {"data": written["test"][0], "labels": written["test"][1]}
    (folder / "test_batch").write_bytes(pickle.dumps(entry, protocol=5))
    assert as_tensors(get_dataset("cifar10", "test", root=tmp_path))[1].tolist() == written["test"][1]
    # a crafted batch is refused, naming the file, and its command never runs
    marker = tmp_path / "ran"
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _Exploit(marker), "labels": [0]}, protocol=2))
    with pytest.raises(CheckpointError, match=r"test_batch is not a plain pickle of arrays \(it names (posix|os)\.system"):
        get_dataset("cifar10", "test", root=tmp_path)
    assert not marker.exists()
    # a truncated batch: one line naming the file and the fix
    good = pickle.dumps(entry, protocol=2)
    (folder / "test_batch").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="test_batch.*download it again"):
        get_dataset("cifar10", "test", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# Missing data: a DataNotFoundError naming the files and the folder
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,split,files,where",
    [
        ("mnist", "train", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"], "MNIST/raw"),
        ("fashion_mnist", "test", ["t10k-images-idx3-ubyte.gz"], "FashionMNIST/raw"),
        ("svhn", "extra", ["extra_32x32.mat"], "svhn"),
        ("cifar10", "train", ["data_batch_1", "data_batch_5"], "cifar-10-batches-py"),
        ("celeba64", "train", ["img_align_celeba", "list_eval_partition.txt"], "celeba"),
    ],
)
def test_missing_raises(tmp_path, name, split, files, where):
    with pytest.raises(DataNotFoundError) as err:
        get_dataset(name, split, root=tmp_path)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / where) in msg
    for f in files:
        assert f in msg
    assert "JEBM_DATA" in msg and "download=True" in msg and "http" in msg
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing downloaded


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("JEBM_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "jebm_lite" / "data"
    monkeypatch.setenv("JEBM_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root(str(tmp_path / "arg")) == tmp_path / "arg"


def test_names_shapes_and_errors():
    assert DATASETS == ("mnist", "fashion_mnist", "svhn", "celeba64", "cifar10")
    assert [image_shape(n) for n in DATASETS] == [(1, 28, 28), (1, 28, 28), (3, 32, 32), (3, 64, 64), (3, 32, 32)]
    with pytest.raises(ConfigError, match="Unknown dataset"):
        get_dataset("imagenet")
    with pytest.raises(ConfigError, match="extra"):
        get_dataset("mnist", "extra")


# ---------------------------------------------------------------------------------------------
# Loaders and as_tensors
# ---------------------------------------------------------------------------------------------


def test_loader_seeded(tmp_path):
    _write_idx(tmp_path / "mnist", n_train=50)
    ds = get_dataset("mnist", "train", root=tmp_path)

    def labels(seed):
        return torch.cat([y for _, y in get_loader(ds, 8, seed=seed)]).tolist()

    first = labels(0)
    assert len(first) == 48  # drop_last
    assert labels(0) == first and labels(1) != first
    xb, yb = next(iter(get_loader(ds, 8, shuffle=False)))
    x_all, y_all = as_tensors(ds)
    assert torch.equal(xb, x_all[:8]) and torch.equal(yb, y_all[:8])
    with pytest.raises(ConfigError, match="batch_size"):
        get_loader(ds, 64)
    assert len(get_loader(ds, 64, drop_last=False)) == 1


def test_as_tensors_subset_and_generic(tmp_path):
    _write_idx(tmp_path / "mnist", n_train=20)
    ds = get_dataset("mnist", "train", root=tmp_path)
    sub = torch.utils.data.Subset(ds, [3, 1, 4])
    x, y = as_tensors(sub)
    assert x.shape == (3, 1, 28, 28) and torch.equal(x[1], ds[1][0]) and y.tolist() == [3, 1, 4]

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return ds[i]

    xp, yp = as_tensors(Plain())
    assert torch.equal(xp, as_tensors(ds)[0][:5]) and yp.tolist() == list(range(5))


# ---------------------------------------------------------------------------------------------
# toy2d
# ---------------------------------------------------------------------------------------------


def test_toy2d_mixture_and_coverage():
    samples, centres = gaussian_mixture_2d(4000, n_modes=8, radius=2.0, std=0.1, seed=0)
    assert samples.shape == (4000, 2) and centres.shape == (8, 2)
    assert torch.allclose(centres.norm(dim=1), torch.full((8,), 2.0))
    # every sample is near one of the 8 centres, and all 8 are used about equally
    nearest = torch.cdist(samples, centres).argmin(1)
    counts = torch.bincount(nearest, minlength=8)
    assert (counts > 400).all() and (counts < 600).all()
    cov, per_mode = mode_coverage(samples, centres, radius=0.5)
    assert cov == 1.0 and per_mode.sum() == 4000
    one = samples[nearest == 3]
    cov1, per_mode1 = mode_coverage(one, centres, radius=0.5)
    assert cov1 == pytest.approx(1 / 8) and per_mode1[3] == len(one)
    far, _ = gaussian_mixture_2d(100, seed=0)
    assert mode_coverage(far * 10, centres, radius=0.5)[0] == 0.0
    again, _ = gaussian_mixture_2d(4000, n_modes=8, radius=2.0, std=0.1, seed=0)
    assert torch.equal(samples, again)
