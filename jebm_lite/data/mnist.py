"""MNIST and Fashion-MNIST (1 x 28 x 28) through ``torchvision.datasets.MNIST`` / ``FashionMNIST``.

Accepted layouts under the data root (first match wins):

* ``MNIST/raw/train-images-idx3-ubyte`` ... (torchvision's own layout, decompressed) — read in place;
* ``MNIST/raw/*.gz`` or ``mnist/*.gz`` (``FashionMNIST/raw``, ``fashion-mnist``, ``fashion_mnist`` for
  Fashion-MNIST): the standard gzip'd idx files as distributed. They are decompressed once into the
  cache (``$JEBM_CACHE``, else ``~/.cache/jebm_lite``, key = path + size + mtime of the ``.gz`` files);
  the source folder is never written, so it may be read-only.

The images are kept as one uint8 tensor and scaled to [-1, 1] on access (no PIL per item).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import torchvision

from jebm_lite.data._common import (
    DataNotFoundError,
    TensorImageDataset,
    cache_dir,
    files_key,
    missing_message,
)

IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

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


def _cache_raw_dir(cls_name: str, files: dict[str, Path]) -> tuple[Path, Path]:
    """``(root, root/<cls_name>/raw)`` in the cache, keyed on the source files; ``raw`` is created."""
    root = cache_dir("idx", f"{cls_name}-{files_key(list(files.values()))}")
    raw = root / cls_name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    return root, raw


def _refetch_hint(cls_name: str) -> str:
    name = "mnist" if cls_name == "MNIST" else "fashion_mnist"
    return (f"delete it and fetch it again from {_FAMILY[name][3]} (or set data.download=true on a machine that is "
            "online)")


def _decompress_to_cache(cls_name: str, gz: dict[str, Path]) -> Path:
    """Gunzip the four files into ``<cache>/idx/<key>/<cls_name>/raw``; returns the torchvision root."""
    root, raw = _cache_raw_dir(cls_name, gz)
    for name, src in gz.items():
        dst = raw / name
        if dst.is_file():
            continue
        fd, tmp = tempfile.mkstemp(dir=raw, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, length=1 << 22)
            os.replace(tmp, dst)  # atomic: concurrent loaders never see a partial file
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            Path(tmp).unlink(missing_ok=True)
            raise DataNotFoundError(f"{src} is truncated or corrupt ({type(e).__name__}: {e}); "
                                    f"{_refetch_hint(cls_name)}.") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return root


def resolve_root(name: str, root: Path) -> Path | None:
    """The folder to hand to torchvision for ``name`` (``mnist`` | ``fashion_mnist``), or None."""
    cls, folders, _, _ = _FAMILY[name]
    raw = root / cls.__name__ / "raw"
    if _find(raw, compressed=False) is not None:
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
    """Expose decompressed idx files found outside ``<Class>/raw`` in torchvision's layout (symlinks)."""
    root, raw = _cache_raw_dir(cls_name, plain)
    for name, src in plain.items():
        dst = raw / name
        if not dst.exists():
            try:
                os.symlink(src.resolve(), dst)
            except FileExistsError:  # another process linked it first: same target, nothing to do
                pass
            except OSError:
                shutil.copyfile(src, dst)
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
