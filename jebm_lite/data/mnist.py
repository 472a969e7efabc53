"""MNIST and Fashion-MNIST (1 x 28 x 28) through ``torchvision.datasets.MNIST`` / ``FashionMNIST``.

Accepted layouts under the data root (first match wins):

* ``MNIST/raw/train-images-idx3-ubyte`` ... (torchvision's own layout, decompressed) — read in place;
* ``MNIST/raw/*.gz`` or ``mnist/*.gz`` (``FashionMNIST/raw``, ``fashion-mnist``, ``fashion_mnist`` for
  Fashion-MNIST): the standard gzip'd idx files as distributed. They are decompressed once into the
  cache (``$JEBM_CACHE``, else ``~/.cache/jebm_lite``, key = path + size + mtime of the ``.gz`` files);
  the source folder is never written, so it may be read-only.

Bounded reads. Each file's idx header gives the exact size it must have, and :data:`IDX_SHAPES` (the data set's
own sizes) caps the header: a header that claims more is refused before anything is inflated, and a ``.gz``
file is inflated only up to its announced size (:func:`jebm_lite.data._common.inflate_bounded`), so a gzip bomb
is refused in about a second, having written at most that size. The cache folder is built under a temporary
name and renamed only when all four files are complete and valid (:func:`jebm_lite.io.staged_dir`); a refused
file leaves no cache behind, and the folder of a killed process is removed on the next start.

The images are kept as one uint8 tensor and scaled to [-1, 1] on access (no PIL per item).
"""

from __future__ import annotations

import math
import os
import shutil
import struct
from pathlib import Path

import torchvision

from jebm_lite.data._common import (
    DataNotFoundError,
    TensorImageDataset,
    cache_dir,
    files_key,
    inflate_bounded,
    missing_message,
)
from jebm_lite.io import clean_temp_files, staged_dir

IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

IDX_SHAPES: dict[str, tuple[int, ...]] = {
    # the largest shape each file may announce (MNIST and Fashion-MNIST alike): as many images, 28 x 28 each
    "train-images-idx3-ubyte": (60_000, 28, 28),
    "train-labels-idx1-ubyte": (60_000,),
    "t10k-images-idx3-ubyte": (10_000, 28, 28),
    "t10k-labels-idx1-ubyte": (10_000,),
}

_FAMILY = {
    # name: (torchvision class, folder names checked besides <Class>/raw, title, where to get the files)
    "mnist": (
        torchvision.datasets.MNIST,
        ("mnist",),
        "MNIST",
        "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of http://yann.lecun.com/exdb/mnist/)",
    ),
    "fashion_mnist": (
        torchvision.datasets.FashionMNIST,
        ("fashion-mnist", "fashion_mnist"),
        "Fashion-MNIST",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ "
        "(or github.com/zalandoresearch/fashion-mnist, data/fashion/)",
    ),
}


def _find(folder: Path, compressed: bool) -> dict[str, Path] | None:
    """The four idx files in ``folder`` (``.gz`` or decompressed), or None if any is missing."""
    found = {}
    for f in IDX_FILES:
        p = folder / (f + ".gz" if compressed else f)
        if not p.is_file():
            return None
        found[f] = p
    return found


def _refetch_hint(cls_name: str) -> str:
    name = "mnist" if cls_name == "MNIST" else "fashion_mnist"
    return (f"delete it and fetch it again from {_FAMILY[name][3]} (or set data.download=true on a machine that is "
            "online)")


def _shape(dims: tuple[int, ...]) -> str:
    return " x ".join(str(d) for d in dims)


def idx_size(head: bytes, name: str, src: Path, cls_name: str) -> int:
    """The exact size of the idx file ``name`` whose first ``4 + 4 * ndim`` bytes are ``head``: its header, checked
    against :data:`IDX_SHAPES` (unsigned bytes, the data set's dimensions, no more examples than it has).

    Raises:
        DataNotFoundError: a header of another kind or one that claims more than the data set holds; the message
            names ``src`` and the largest size the file may have.
    """
    cap = IDX_SHAPES[name]
    most = 4 + 4 * len(cap) + math.prod(cap)
    fix = _refetch_hint(cls_name)
    if len(head) < 4 + 4 * len(cap) or head[:3] != b"\0\0\x08" or head[3] != len(cap):
        raise DataNotFoundError(f"{src} is not an idx file of bytes with {len(cap)} dimension(s) (header "
                                f"{head[:4].hex()}); {fix}.")
    dims = struct.unpack(f">{len(cap)}I", head[4:4 + 4 * len(cap)])
    if dims[0] > cap[0] or dims[1:] != cap[1:]:
        raise DataNotFoundError(f"{src}: its idx header claims {_shape(dims)}, more than {cls_name} {name} holds "
                                f"({_shape(cap)}, {most:,} bytes at most); it is refused; {fix}.")
    return 4 + 4 * len(cap) + math.prod(dims)


def check_idx_file(path: Path, name: str, cls_name: str) -> None:
    """Refuse a decompressed idx file whose size is not the one its (capped) header announces: torchvision would
    read all of it into memory."""
    with open(path, "rb") as f:
        head = f.read(4 + 4 * len(IDX_SHAPES[name]))
    size = idx_size(head, name, path, cls_name)
    have = path.stat().st_size
    if have != size:
        raise DataNotFoundError(f"{path} has {have:,} bytes, its idx header announces {size:,}; it is refused; "
                                f"{_refetch_hint(cls_name)}.")


def _cache_root(cls_name: str, files: dict[str, Path]) -> Path:
    """``<cache>/idx/<cls_name>-<key>`` (keyed on the source files), after removing the half-built folders of
    processes that were killed. Nothing is created but ``<cache>/idx``."""
    base = cache_dir("idx")
    clean_temp_files(base)
    return base / f"{cls_name}-{files_key(list(files.values()))}"


def _complete(root: Path, cls_name: str) -> bool:
    raw = root / cls_name / "raw"
    if all((raw / f).is_file() for f in IDX_FILES):
        return True
    if root.exists():  # half-built by an older version, or edited by hand: build it again
        shutil.rmtree(root, ignore_errors=True)
    return False


def _decompress_to_cache(cls_name: str, gz: dict[str, Path]) -> Path:
    """Gunzip the four files (each bounded by its header, see the module docstring) into
    ``<cache>/idx/<key>/<cls_name>/raw``; returns the torchvision root. Nothing is left behind on an error."""
    root = _cache_root(cls_name, gz)
    if _complete(root, cls_name):
        return root
    with staged_dir(root) as tmp:
        raw = tmp / cls_name / "raw"
        raw.mkdir(parents=True)
        for name, src in gz.items():
            inflate_bounded(src, raw / name, 4 + 4 * len(IDX_SHAPES[name]),
                            lambda head, name=name, src=src: idx_size(head, name, src, cls_name),
                            _refetch_hint(cls_name))
    return root


def resolve_root(name: str, root: Path) -> Path | None:
    """The folder to hand to torchvision for ``name`` (``mnist`` | ``fashion_mnist``), or None."""
    cls, folders, _, _ = _FAMILY[name]
    raw = root / cls.__name__ / "raw"
    in_place = _find(raw, compressed=False)
    if in_place is not None:
        for name, path in in_place.items():
            check_idx_file(path, name, cls.__name__)
        return root
    for folder in (raw, *(root / f for f in folders)):
        gz = _find(folder, compressed=True)
        if gz is not None:
            return _decompress_to_cache(cls.__name__, gz)
        plain = _find(folder, compressed=False)
        if plain is not None:  # decompressed files in e.g. root/mnist/: link them into the cache layout
            return _link_to_cache(cls.__name__, plain)
    return None


def _link_to_cache(cls_name: str, plain: dict[str, Path]) -> Path:
    """Expose decompressed idx files found outside ``<Class>/raw`` in torchvision's layout (symlinks), each
    checked against its header first."""
    for name, src in plain.items():
        check_idx_file(src, name, cls_name)
    root = _cache_root(cls_name, plain)
    if _complete(root, cls_name):
        return root
    with staged_dir(root) as tmp:
        raw = tmp / cls_name / "raw"
        raw.mkdir(parents=True)
        for name, src in plain.items():
            try:
                os.symlink(src.resolve(), raw / name)
            except OSError:
                shutil.copyfile(src, raw / name)
    return root


def not_found(name: str, root: Path) -> DataNotFoundError:
    """The error for a missing MNIST-family dataset, naming every file and folder.

    The folder named first is the candidate holding most of the files (``<Class>/raw`` when none has any).
    """
    cls, folders, title, source = _FAMILY[name]
    candidates = [root / cls.__name__ / "raw", *(root / f for f in folders)]

    def present(folder: Path) -> list[str]:
        return [f for f in IDX_FILES if (folder / f).is_file() or (folder / (f + ".gz")).is_file()]

    best = max(candidates, key=lambda d: len(present(d)))  # first one on ties
    missing = [f + ".gz" for f in IDX_FILES if f not in present(best)]
    alt = " or ".join(str(d) for d in candidates if d != best)
    msg = missing_message(
        title,
        best,
        [f + ".gz" for f in IDX_FILES],
        missing,
        source,
        extra=f" (the .gz files work as they are; decompressed files too), or in {alt}",
    )
    return DataNotFoundError(msg)


SPLITS: tuple[str, ...] = ("train", "test", "fit", "val")
"""``train`` (60000) and ``test`` (10000) as distributed; ``fit`` (the first 50000 training images) and ``val``
(the last 10000) carve a validation split out of ``train`` for choosing hyper-parameters without the test set."""
N_FIT = 50_000


def load(name: str, split: str, root: Path, download: bool = False) -> TensorImageDataset:
    """MNIST / Fashion-MNIST ``split`` (see :data:`SPLITS`) as a :class:`TensorImageDataset`.

    Returns images (N, 1, 28, 28) in [-1, 1] and labels 0..9.

    Raises:
        DataNotFoundError: when the files are missing and ``download`` is False.
    """
    cls = _FAMILY[name][0]
    train = split != "test"
    tv_root = resolve_root(name, root)
    if tv_root is None:
        if not download:
            raise not_found(name, root)
        tv_root = root
    fetch = download and tv_root == root
    try:
        ds = cls(str(tv_root), train=train, download=fetch)
    except DataNotFoundError:
        raise
    except Exception as e:  # offline download (URLError / RuntimeError), or idx files of the wrong size
        detail = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        if fetch:
            raise DataNotFoundError(f"{_FAMILY[name][2]} is not under {root} and the download failed ({detail}). "
                                    f"{not_found(name, root)}") from None
        raise DataNotFoundError(f"The {_FAMILY[name][2]} files under {tv_root} cannot be read ({detail}); "
                                f"{_refetch_hint(cls.__name__)}.") from None
    images, targets = ds.data, ds.targets
    if split == "fit":
        images, targets = images[:N_FIT], targets[:N_FIT]
    elif split == "val":
        images, targets = images[N_FIT:], targets[N_FIT:]
    images = images.unsqueeze(1).contiguous()  # (N, 28, 28) uint8 -> (N, 1, 28, 28)
    return TensorImageDataset(images, targets, ds.classes)
