"""CelebA at 64 x 64 (3 x 64 x 64): the reference crop of the aligned faces, then a resize.

Each aligned 178 x 218 image is cropped to the box ``CROP_BOX = (15, 40, 163, 188)`` in PIL ``crop``
coordinates (left, upper, right, lower; a 148 x 148 square around the face) and resized to 64 x 64
(bilinear, antialiased). Images of any other size are taken as already cropped: a centre square crop
(a no-op for square images) and the resize.

Accepted layouts under the data root (first match wins):

1. ``celeba64/<split>/*.jpg|*.jpeg|*.png`` — a plain folder per split (``train``, ``valid``, ``test``);
2. ``celeba/img_align_celeba/*.jpg`` with ``celeba/list_eval_partition.txt`` — torchvision's layout;
   the partition file ("000001.jpg 0" per line; 0 train, 1 valid, 2 test) gives the splits;
3. ``celeba/img_align_celeba/`` without the partition file — the files sorted by name, the first 80 %
   are ``train`` and the last 20 % are both ``valid`` and ``test`` (deterministic, documented fallback).

``split="all"`` takes every image. CelebA has no class labels here: every label is 0.
With ``augment=True`` the ``train`` split is flipped horizontally at random (p = 0.5); default off.

Bounded reads. An image file over :data:`MAX_FILE_BYTES` on disk, or whose header announces more than
:data:`MAX_PIXELS` pixels (a decompression bomb: a small PNG that decodes to gigabytes), is refused when it is
opened, before it is decoded (:func:`open_image`), with a one-line :class:`DataNotFoundError` naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from jebm_lite.data._common import DataNotFoundError, to_unit_range

CROP_BOX: tuple[int, int, int, int] = (15, 40, 163, 188)
ALIGNED_SIZE: tuple[int, int] = (178, 218)  # PIL (width, height) of img_align_celeba
SIZE = 64
SPLITS: tuple[str, ...] = ("train", "valid", "test", "all")
EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
MAX_FILE_BYTES = 16 << 20  # an aligned CelebA JPEG has about 10 kB
MAX_PIXELS = 4096 * 4096  # CelebA's are 178 x 218; in-the-wild photos stay well below this
URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
_PARTITION = {"train": 0, "valid": 1, "test": 2}


def preprocess(img: Image.Image, size: int = SIZE) -> torch.Tensor:
    """PIL image -> uint8 (3, size, size): the reference crop (aligned 178x218 input) and resize."""
    img = img.convert("RGB")
    if img.size == ALIGNED_SIZE:
        img = img.crop(CROP_BOX)
    elif img.size[0] != img.size[1]:
        img = TF.center_crop(img, [min(img.size)])
    if img.size != (size, size):
        img = TF.resize(img, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    return TF.pil_to_tensor(img)


def open_image(path: Path, size: int = SIZE) -> torch.Tensor:
    """One image file -> uint8 (3, size, size) (:func:`preprocess`), refused before decoding when it is too large.

    Raises:
        DataNotFoundError: over :data:`MAX_FILE_BYTES` or :data:`MAX_PIXELS`, or not a readable image; the message
            names the file.
    """
    nbytes = path.stat().st_size
    if nbytes > MAX_FILE_BYTES:
        raise DataNotFoundError(f"{path} has {nbytes:,} bytes, more than an image here may have "
                                f"({MAX_FILE_BYTES:,}); it is refused; remove it from the folder.")
    try:
        with Image.open(path) as img:
            w, h = img.size  # from the header: nothing is decoded yet
            if w * h > MAX_PIXELS:
                raise DataNotFoundError(f"{path} announces {w} x {h} pixels, more than the {MAX_PIXELS:,} an image "
                                        "here may have (a decompression bomb?); it is refused; remove it from the "
                                        "folder.")
            return preprocess(img, size)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, DataNotFoundError):
            raise
        raise DataNotFoundError(f"{path} cannot be read as an image ({type(e).__name__}: {str(e)[:120]}); it is "
                                "refused; remove or replace it.") from None


class ImageFileDataset(Dataset):
    """A list of image files -> ``(image (3, 64, 64) float32 in [-1, 1], 0)``.

    Args:
        files: image paths, in order.
        augment: random horizontal flip (p = 0.5) per access.
    """

    def __init__(self, files: Sequence[Path], augment: bool = False, size: int = SIZE) -> None:
        self.files = [Path(f) for f in files]
        self.augment = augment
        self.size = size
        self.targets = torch.zeros(len(self.files), dtype=torch.int64)
        self.classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = open_image(self.files[index], self.size)
        if self.augment and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return to_unit_range(x), 0

    def select(self, indices: torch.Tensor) -> ImageFileDataset:
        """A new dataset of the files at ``indices``."""
        return ImageFileDataset([self.files[i] for i in indices.tolist()], self.augment, self.size)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _read_partition(path: Path) -> dict[str, int]:
    parts = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2:
            parts[fields[0]] = int(fields[1])
    return parts


def list_files(split: str, root: Path) -> list[Path] | None:
    """The image files of ``split`` found under ``root`` (see the module docstring), or None."""
    per_split = root / "celeba64"
    if per_split.is_dir():
        names = SPLITS[:3] if split == "all" else (split,)
        files = [f for s in names if (per_split / s).is_dir() for f in _images_in(per_split / s)]
        if files:
            return files
    img_dir = root / "celeba" / "img_align_celeba"
    if not img_dir.is_dir():
        return None
    partition = root / "celeba" / "list_eval_partition.txt"
    if partition.is_file():
        parts = _read_partition(partition)
        keep = sorted(n for n, s in parts.items() if split == "all" or s == _PARTITION[split])
        return [img_dir / n for n in keep] or None
    files = _images_in(img_dir)
    if not files:
        return None
    n_train = int(round(0.8 * len(files)))
    if split == "all":
        return files
    return files[:n_train] if split == "train" else files[n_train:]


def not_found(split: str, root: Path) -> DataNotFoundError:
    return DataNotFoundError(
        f"CelebA ({split}) not found under {root}: looked for images in {root / 'celeba64' / split} "
        f"and in {root / 'celeba' / 'img_align_celeba'}. Unzip img_align_celeba.zip (the aligned 178x218 "
        f"JPEGs 000001.jpg ...) into {root / 'celeba'} and put list_eval_partition.txt at "
        f"{root / 'celeba' / 'list_eval_partition.txt'} (without it: sorted 80/20 train/test split), "
        f"or put image files in {root / 'celeba64'}/<train|valid|test>/, or set JEBM_DATA (or pass root=) to a folder that "
        f"has them, or pass download=True when online (torchvision's CelebA, needs gdown). "
        f"Original files: {URL} (Align&Cropped Images: img_align_celeba.zip; Eval: list_eval_partition.txt)"
    )


def load(split: str, root: Path, download: bool = False, augment: bool = False) -> ImageFileDataset:
    """CelebA-64 ``split`` (``train`` | ``valid`` | ``test`` | ``all``): images (3, 64, 64) in [-1, 1].

    Raises:
        DataNotFoundError: when no image is found and ``download`` is False.
    """
    files = list_files(split, root)
    if files is None:
        if not download:
            raise not_found(split, root)
        torchvision.datasets.CelebA(str(root), split=split, target_type=[], download=True)
        files = list_files(split, root)
        if files is None:
            raise not_found(split, root)
    return ImageFileDataset(files, augment=augment and split == "train")
