"""Colour digits: an SVHN-like **stand-in** built from MNIST (3 x 32 x 32, [-1, 1]).

This is *not* SVHN. It exists so that the SVHN chapters run (and their factor analysis can be
checked) where the SVHN files are not available. Each image is one MNIST digit rendered with
separate, recorded factors of variation:

* **background**: an RGB colour plus a lighting gradient (a linear shadow of a direction and strength
  across the whole image, ``shade = 1 - strength * (1 + ramp) / 2``, ``ramp`` in [-1, 1]);
* **stroke**: an RGB colour whose luminance differs from the background's by at least ``min_contrast``;
* **shape**: stroke thickness (continuous, by erosion / dilation of the MNIST mask), rotation, scale
  and shift;
* **identity**: the digit, i.e. the MNIST label;
* optionally **distractors**: fragments of two other MNIST digits at the left / right edges, in the
  same stroke colour (SVHN crops show the neighbouring house-number digits).

Every random draw for item ``i`` is a hash of ``(seed, split, MNIST index i, draw number)``
(counter-based, no RNG state), so item ``i`` is the same image whatever the class filter, subset,
batch order or worker; all images are generated at once with vectorised torch ops and kept in
memory as uint8 (~3 kB per image).

Example::

    ds = get_dataset("colour_mnist", "train", classes=(0, 1))  # items: (image (3, 32, 32), label)
    ds.factors[0]                        # {"label": 0, "background": (r, g, b), "light_angle": ..., ...}
    ds = load("test", root, return_factors=True)  # items: (image, label, factors dict)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from jebm_lite.data._common import TensorImageDataset, filter_indices
from jebm_lite.data.mnist import load as load_mnist

SPLITS: tuple[str, ...] = ("train", "test")
SIZE = 32  # output images are SIZE x SIZE
_MNIST = 28
_PAD = 24  # canvas margin for neighbour digits (MNIST pixels); gaps must stay below it
_M32 = 0xFFFFFFFF

# Slots of the per-item uniform draws (the draw number k in the hash).
_DRAWS = (
    "bg_r", "bg_g", "bg_b", "fg_r", "fg_g", "fg_b", "light_angle", "light_strength", "thickness",
    "rotation", "scale", "shift_x", "shift_y", "left_on", "left_pick", "left_gap", "right_on",
    "right_pick", "right_gap",
)


@dataclass
class RenderOptions:
    """Ranges of the factors (all uniform). Lengths are in pixels of the 32 x 32 image, angles in degrees."""

    min_contrast: float = 0.3  # |luminance(stroke) - luminance(background)| >= this, in [0, 0.5]
    max_light: float = 0.5  # lighting strength in [0, max_light] (1 = black on the dark side)
    thickness: tuple[float, float] = (-0.3, 1.2)  # < 0 erodes, 1 = one 3x3 dilation, 2 = two (output px)
    max_rotation: float = 15.0
    scale: tuple[float, float] = (0.9, 1.15)  # relative to MNIST's own size
    max_shift: float = 2.0
    distractors: bool = True
    distractor_prob: float = 0.5  # per side
    distractor_gap: tuple[float, float] = (18.0, 22.0)  # centre distance to a neighbour, MNIST px (<= 24)


# ----------------------------------------------------------------------------------------------
# Counter-based random numbers: u(seed, index, k) in (0, 1), vectorised
# ----------------------------------------------------------------------------------------------


def _mulmod32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in [0, 2**32) without int64 overflow (16-bit halves of c)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + ((x * hi) & 0xFFFF) * 65536) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply finaliser) of int64 values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mulmod32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mulmod32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniforms(seed: int, index: torch.Tensor, n_draws: int) -> torch.Tensor:
    """Uniform (0, 1) numbers that depend only on ``(seed, index, k)``: ``index`` (N,) -> (N, n_draws) float64."""
    s = _mix32(torch.tensor(seed & _M32, dtype=torch.int64) ^ 0x9E3779B9)
    x = _mix32(s ^ (index.to(torch.int64) & _M32))
    k = torch.arange(n_draws, dtype=torch.int64)
    x = _mix32(x[:, None] ^ _mix32(k + 0x632BE5AB)[None, :])
    return (x.to(torch.float64) + 0.5) / 2.0**32


# ----------------------------------------------------------------------------------------------
# Factors and rendering
# ----------------------------------------------------------------------------------------------


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of RGB values in [0, 1]: ``(..., 3) -> (...)``."""
    return rgb @ torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype)


@dataclass
class ColourFactors:
    """The factors of N images, one tensor per factor (row i belongs to image i).

    ``factors[i]`` is a dict of Python values for image i; ``factors.select(idx)`` keeps some rows.

    Fields (shapes): ``mnist_index`` (N,) int64; ``label`` (N,) int64; ``background`` (N, 3) and
    ``stroke`` (N, 3) RGB in [0, 1] before lighting; ``contrast`` (N,) |luma difference|;
    ``light_angle`` (N,) radians (direction in which the image gets darker, 0 = towards +x);
    ``light_strength`` (N,); ``thickness`` (N,); ``rotation`` (N,) degrees; ``scale`` (N,);
    ``shift`` (N, 2) pixels (dx, dy); ``left_index`` / ``right_index`` (N,) MNIST index of the neighbour
    fragment or -1; ``left_label`` / ``right_label`` (N,) its label or -1; ``left_gap`` / ``right_gap``
    (N,) distance between the centres of the digit and that neighbour along the (rotated) baseline, in
    MNIST pixels (an integer; times ``scale`` in image pixels).
    """

    mnist_index: torch.Tensor
    label: torch.Tensor
    background: torch.Tensor
    stroke: torch.Tensor
    contrast: torch.Tensor
    light_angle: torch.Tensor
    light_strength: torch.Tensor
    thickness: torch.Tensor
    rotation: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    left_index: torch.Tensor
    left_label: torch.Tensor
    left_gap: torch.Tensor
    right_index: torch.Tensor
    right_label: torch.Tensor
    right_gap: torch.Tensor

    def __len__(self) -> int:
        return self.label.shape[0]

    def names(self) -> list[str]:
        return [f.name for f in fields(self)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {n: getattr(self, n)[i].tolist() for n in self.names()}

    def select(self, idx: torch.Tensor) -> ColourFactors:
        return ColourFactors(**{n: getattr(self, n)[idx] for n in self.names()})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n) for n in self.names()}

    @staticmethod
    def cat(parts: Sequence[ColourFactors]) -> ColourFactors:
        names = [f.name for f in fields(ColourFactors)]
        return ColourFactors(**{n: torch.cat([getattr(p, n) for p in parts]) for n in names})


def draw_factors(
    index: torch.Tensor, mnist_labels: torch.Tensor, seed: int, opts: RenderOptions
) -> ColourFactors:
    """The factors of the images of MNIST rows ``index`` (N,), from the counter-based hash only."""
    u = uniforms(seed, index, len(_DRAWS))
    d = {name: u[:, k] for k, name in enumerate(_DRAWS)}
    n_src = mnist_labels.shape[0]
    bg = torch.stack([d["bg_r"], d["bg_g"], d["bg_b"]], 1)
    fg = torch.stack([d["fg_r"], d["fg_g"], d["fg_b"]], 1)
    # push the stroke towards white (dark background) or black (light background) until the luma
    # difference is at least min_contrast; colours that already contrast enough are kept
    c = min(max(opts.min_contrast, 0.0), 0.5)
    y_bg, y_fg = luminance(bg), luminance(fg)
    dark = y_bg < 0.5
    t_white = ((y_bg + c - y_fg) / (1 - y_fg).clamp_min(1e-6)).clamp(0, 1)
    t_black = (1 - (y_bg - c) / y_fg.clamp_min(1e-6)).clamp(0, 1)
    fg = torch.where(dark[:, None], fg + t_white[:, None] * (1 - fg), fg * (1 - t_black[:, None]))
    lo_t, hi_t = opts.thickness
    lo_s, hi_s = opts.scale

    def neighbour(on: torch.Tensor, pick: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        present = (on < opts.distractor_prob) & torch.tensor(opts.distractors)
        j = (pick * n_src).long().clamp_max(n_src - 1)
        j = torch.where(present, j, torch.full_like(j, -1))
        lab = torch.where(present, mnist_labels[j.clamp_min(0)], torch.full_like(j, -1))
        return j, lab

    left, left_lab = neighbour(d["left_on"], d["left_pick"])
    right, right_lab = neighbour(d["right_on"], d["right_pick"])
    lo_g, hi_g = opts.distractor_gap
    f32 = torch.float32
    return ColourFactors(
        mnist_index=index.to(torch.int64),
        label=mnist_labels[index].to(torch.int64),
        background=bg.to(f32),
        stroke=fg.to(f32),
        contrast=(luminance(fg) - y_bg).abs().to(f32),
        light_angle=(2 * math.pi * d["light_angle"]).to(f32),
        light_strength=(opts.max_light * d["light_strength"]).to(f32),
        thickness=(lo_t + (hi_t - lo_t) * d["thickness"]).to(f32),
        rotation=(opts.max_rotation * (2 * d["rotation"] - 1)).to(f32),
        scale=(lo_s + (hi_s - lo_s) * d["scale"]).to(f32),
        shift=(opts.max_shift * (2 * torch.stack([d["shift_x"], d["shift_y"]], 1) - 1)).to(f32),
        left_index=left,
        left_label=left_lab,
        left_gap=(lo_g + (hi_g - lo_g) * d["left_gap"]).round().clamp(0, _PAD).to(f32),
        right_index=right,
        right_label=right_lab,
        right_gap=(lo_g + (hi_g - lo_g) * d["right_gap"]).round().clamp(0, _PAD).to(f32),
    )


def _max3(m: torch.Tensor, op) -> torch.Tensor:
    """3 x 3 max (``op=torch.maximum``) or min (``torch.minimum``) filter of (N, 1, H, W), zero padding."""
    p = F.pad(m, (1, 1, 1, 1))
    h = op(op(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return op(op(h[..., :-2, :], h[..., 1:-1, :]), h[..., 2:, :])


def stroke_width(m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Thicken (t > 0) or thin (t < 0) masks ``m`` (N, 1, H, W) in [0, 1]; ``t`` (N,) in [-1, 2].

    Interpolates between the 3 x 3 erosion (t = -1), the mask (0), one (1) and two (2) 3 x 3 dilations.
    """
    dil1 = _max3(m, torch.maximum)
    dil2 = _max3(dil1, torch.maximum)
    ero = _max3(m, torch.minimum)
    t = t.view(-1, 1, 1, 1)
    out = torch.where(t < 0, torch.lerp(m, ero, -t.clamp_max(0)), torch.lerp(m, dil1, t.clamp(0, 1)))
    return torch.where(t > 1, torch.lerp(dil1, dil2, (t - 1).clamp(0, 1)), out)


def _canvas(mnist_images: torch.Tensor, f: ColourFactors, sl: slice) -> torch.Tensor:
    """The digit with its neighbours side by side, (n, 1, 28, 28 + 2 PAD) float in [0, 1].

    A neighbour's centre sits ``round(gap)`` MNIST pixels left / right of the digit's; overlaps take
    the maximum. Pose is applied to the whole strip afterwards (a slanted plate slants all its digits).
    """
    pad = _PAD
    main = mnist_images[f.mnist_index[sl]].float().div_(255)
    n = main.shape[0]
    canvas = main.new_zeros(n, 1, _MNIST, _MNIST + 2 * pad)
    canvas[..., pad:pad + _MNIST] = main
    for side, sign in (("left", -1), ("right", 1)):
        j = getattr(f, side + "_index")[sl]
        gap = getattr(f, side + "_gap")[sl].round().long()
        for g in gap[j >= 0].unique().tolist():  # a handful of integer gaps: one slice write each
            rows = torch.nonzero((j >= 0) & (gap == g)).squeeze(1)
            x0 = pad + sign * int(g)
            nb = mnist_images[j[rows]].float().div_(255)
            part = canvas[rows, :, :, x0:x0 + _MNIST]
            canvas[rows, :, :, x0:x0 + _MNIST] = torch.maximum(part, nb)
    return canvas


def place(canvas: torch.Tensor, rot_deg: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate, scale and shift a strip (N, 1, 28, W) about its centre into 32 x 32 frames (N, 1, 32, 32).

    At scale 1 a pixel stays a pixel (a 28 x 28 digit is centred with a 2-pixel margin); ``rot_deg``,
    ``scale`` (N,); ``shift`` (N, 2) is in output pixels (dx, dy). Bilinear, zero outside.
    """
    a = torch.deg2rad(rot_deg)
    cos, sin = torch.cos(a), torch.sin(a)
    # input normalised coords = diag(32 / W, 32 / 28) R(-a) / scale (output normalised coords - t)
    sx, sy = SIZE / canvas.shape[-1], SIZE / canvas.shape[-2]
    k = 1 / scale
    r = torch.stack([torch.stack([sx * cos * k, sx * sin * k], -1), torch.stack([-sy * sin * k, sy * cos * k], -1)], -2)
    t = 2 * shift / SIZE
    off = -(r @ t.unsqueeze(-1)).squeeze(-1)  # (N, 2)
    c = (torch.arange(SIZE, dtype=torch.float32) + 0.5) * (2 / SIZE) - 1  # output pixel centres
    # the grid of F.affine_grid, built by broadcasting (much faster on CPU than its batched matmul)
    gx = (r[:, 0, 0, None, None] * c[None, None, :] + r[:, 0, 1, None, None] * c[None, :, None]
          + off[:, 0, None, None])
    gy = (r[:, 1, 0, None, None] * c[None, None, :] + r[:, 1, 1, None, None] * c[None, :, None]
          + off[:, 1, None, None])
    grid = torch.stack([gx, gy], -1)  # (N, 32, 32, 2): (x, y) input coords per output pixel
    return F.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _shade(angle: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """The lighting field (N, 1, 32, 32): ``1 - strength * (1 + ramp) / 2``, ramp in [-1, 1] along ``angle``."""
    c = (torch.arange(SIZE, dtype=torch.float32) + 0.5) / SIZE * 2 - 1  # pixel centres in (-1, 1)
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    ramp = (xx * cos + yy * sin) / ((cos.abs() + sin.abs()) * c[-1])
    return (1 - strength.view(-1, 1, 1) * (1 + ramp) / 2).unsqueeze(1)


def render(mnist_images: torch.Tensor, f: ColourFactors, chunk: int = 1024) -> torch.Tensor:
    """Render the images of factors ``f`` from MNIST ``mnist_images`` (M, 1, 28, 28) uint8.

    Steps per image: digit + neighbour strip, pose (:func:`place`), stroke width on the 32 x 32 mask
    (:func:`stroke_width`, so thickness is in output pixels), colours ``lerp(background, stroke, mask)``,
    lighting. Returns uint8 (N, 3, 32, 32) with N = ``len(f)``; image i depends on row i of ``f`` only.
    """
    out = torch.empty(len(f), 3, SIZE, SIZE, dtype=torch.uint8)
    for s in range(0, len(f), chunk):
        sl = slice(s, s + chunk)
        m = place(_canvas(mnist_images, f, sl), f.rotation[sl], f.scale[sl], f.shift[sl])
        m = stroke_width(m, f.thickness[sl]).clamp_(0, 1)
        rgb = torch.lerp(f.background[sl].view(-1, 3, 1, 1), f.stroke[sl].view(-1, 3, 1, 1), m)
        rgb.mul_(_shade(f.light_angle[sl], f.light_strength[sl]))
        out[sl] = rgb.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return out


# ----------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------


class ColourDigits(TensorImageDataset):
    """The colour-digit stand-in (see the module docstring): items ``(image (3, 32, 32) in [-1, 1], label)``.

    With ``return_factors=True`` items are ``(image, label, factors dict)`` (the dict of ``factors[i]``
    with tensor values, so that the default collate stacks them).

    Attributes:
        images: uint8 (N, 3, 32, 32).
        targets: int64 (N,), the MNIST labels.
        factors: :class:`ColourFactors` with N rows.
    """

    def __init__(self, images: torch.Tensor, factors: ColourFactors, return_factors: bool = False) -> None:
        super().__init__(images, factors.label, [str(d) for d in range(10)])
        self.factors = factors
        self.return_factors = return_factors

    def __getitem__(self, index: int):
        x, y = super().__getitem__(index)
        if not self.return_factors:
            return x, y
        return x, y, {k: v[index] for k, v in self.factors.as_dict().items()}

    def __getitems__(self, indices: Sequence[int]):
        if not self.return_factors:
            return super().__getitems__(indices)
        return [self[i] for i in indices]

    def select(self, indices: torch.Tensor) -> ColourDigits:
        return ColourDigits(self.images[indices], self.factors.select(indices), self.return_factors)


def make(
    mnist_images: torch.Tensor,
    mnist_labels: torch.Tensor,
    index: torch.Tensor | None = None,
    seed: int = 0,
    options: RenderOptions | None = None,
    return_factors: bool = False,
) -> ColourDigits:
    """Colour digits of the MNIST rows ``index`` (default: all) of ``mnist_images`` (M, 1, 28, 28) uint8.

    ``seed`` should differ between splits (:func:`load` folds the split in).
    """
    opts = options or RenderOptions()
    if index is None:
        index = torch.arange(mnist_images.shape[0])
    index = index.to(torch.int64)
    f = draw_factors(index, mnist_labels, seed, opts)
    return ColourDigits(render(mnist_images, f), f, return_factors)


_CACHE: dict[tuple, ColourDigits] = {}
_CACHE_SIZE = 2


def load(
    split: str,
    root: Path,
    classes: Sequence[int] | None = None,
    subset: int | None = None,
    download: bool = False,
    seed: int = 0,
    options: RenderOptions | None = None,
    return_factors: bool = False,
) -> ColourDigits:
    """The stand-in built from MNIST ``split`` (``train`` 60000 | ``test`` 10000), filtered like
    :func:`jebm_lite.data.get_dataset` (``classes``, then the first ``subset``).

    Only the kept rows are rendered (a 64-image CI subset costs milliseconds); the last two results
    are cached in memory. Item i is the same image whatever the filter.

    Raises:
        DataNotFoundError: the MNIST files are missing (the message says which files to put where).
        ConfigError: bad ``subset`` or no example with one of ``classes``.
    """
    mnist = load_mnist("mnist", split, root, download=download)
    idx = filter_indices(mnist.targets, classes, subset, "colour_mnist")
    opts = options or RenderOptions()
    split_seed = seed * 2 + SPLITS.index(split)
    key = (str(root.resolve()), split, seed, repr(opts), None if idx is None else hash(idx.numpy().tobytes()))
    ds = _CACHE.get(key)
    if ds is None:
        ds = make(mnist.images, mnist.targets, idx, split_seed, opts)
        _CACHE[key] = ds
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    # a fresh object sharing the cached tensors (callers may set return_factors)
    return ColourDigits(ds.images, ds.factors, return_factors)


# ----------------------------------------------------------------------------------------------
# Reading factors back off images (real or generated): what a hierarchy's layers control
# ----------------------------------------------------------------------------------------------


def estimate_colours(x: torch.Tensor, stroke_frac: float = 0.08) -> tuple[torch.Tensor, torch.Tensor]:
    """Background and stroke colour read off images, e.g. a generator's samples.

    ``x``: (B, 3, 32, 32) in [-1, 1]. The background is the mean colour of the top and bottom rows (the
    neighbour fragments touch only the left / right edges); the stroke is the mean colour of the
    ``stroke_frac`` of pixels farthest (RGB distance) from that background. Both are *lit* colours in [0, 1]
    (the lighting is not divided out): on the real images the background is close to
    ``background * (1 - light_strength / 2)`` (the ramp averages out along a row pair), the stroke to the
    recorded stroke colour times the lighting at the digit. Returns ``(background (B, 3), stroke (B, 3))``.
    """
    x01 = (x.float().clamp(-1, 1) + 1) / 2
    bg = torch.cat([x01[..., 0, :], x01[..., -1, :]], -1).mean(-1)  # (B, 3)
    flat = x01.flatten(2)  # (B, 3, P)
    dist = (flat - bg[:, :, None]).pow(2).sum(1)  # (B, P)
    k = max(1, int(round(stroke_frac * flat.shape[2])))
    idx = dist.topk(k, dim=1).indices  # (B, k)
    stroke = torch.gather(flat, 2, idx[:, None, :].expand(-1, 3, -1)).mean(-1)
    return bg, stroke


class Ink28(torch.nn.Module):
    """(B, 3, 32, 32) colour digits in [-1, 1] -> (B, 1, 28, 28) "ink" maps in [-1, 1], MNIST-like.

    Per image: luminance (Rec. 601), bilinear resize to 28 x 28, absolute difference from the mean
    luminance of the top and bottom rows (the background), divided by its maximum, mapped to [-1, 1].
    Background and stroke colours and the polarity (light on dark or dark on light) drop out; the digit
    (and neighbour fragments) stay, since the stroke's luminance differs from the background's by at
    least ``min_contrast``. It puts the stand-in into the input shape of :class:`jebm_lite.analysis.metrics.DigitCNN`:
    a stand-in digit classifier is ``train_digit_classifier(Ink28()(x), y)``, applied as ``net(Ink28()(x))``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        y = F.interpolate((x * w).sum(1, keepdim=True), size=(_MNIST, _MNIST), mode="bilinear",
                          align_corners=False, antialias=True)
        bg = torch.cat([y[..., 0, :], y[..., -1, :]], -1).mean(-1)[..., None, None]
        d = (y - bg).abs()
        return d / (d.amax(dim=(2, 3), keepdim=True) + 1e-3) * 2 - 1
