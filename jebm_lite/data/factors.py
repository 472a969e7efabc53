"""A procedurally rendered image set with known generative factors (dSprites / 3D-shapes-like).

The disentanglement appendix of the paper (Tab. 8, Fig. 11) trains on 3D Shapes (Burgess & Kim 2018)
and scores the codes with MIG and MIG-sup (:mod:`jebm_lite.analysis.disentangle`). This module is a small,
download-free stand-in: 32x32 RGB images in [-1, 1] of one flat object on a plain background, with
seven independent factors (default number of values in brackets)::

    shape (4: square, ellipse, triangle, cross)   scale (6)   orientation (12)
    pos_x (8)   pos_y (8)   object_color (6)   bg_color (4)

Each factor takes ``K`` equally spaced values (``K = 1`` fixes it at the middle of its range):

* scale: object size ``r = 0.42 * s`` (image half-width = 1), ``s`` in [0.5, 1];
* orientation: in [-40, 40] degrees (less than the square's and cross's 90-degree symmetry, so no two
  values give the same image);
* position: the centre in [-0.35, 0.35]^2 (x to the right, y downwards), so the object never reaches the
  image border: the corner pixels always show the background;
* object colours: ``K`` hues evenly spaced on the HSV circle at full saturation and value (bright);
  background colours: ``K`` hues half a step apart, saturation 0.5, value 0.3 (dark).

Rendering is vectorised over a batch: pixel centres are mapped into each object's frame (translate,
rotate, divide by ``r``), a signed distance to the shape is computed there and turned into an
anti-aliased coverage ``clamp(0.5 - d_pixels, 0, 1)``. 10 000 images take about a second on one CPU core.

Factor vectors are drawn independently and uniformly per index from a counter-based integer hash of
``(seed, factor, index)``: ``FactorDataset(n, seed)[i]`` is the same for every ``n > i``, no random
state is consumed, and nothing is stored but the (n, 7) factor table.

Example::

    ds = FactorDataset(10_000, seed=0)                 # default sizes
    x, v = ds[3]                                       # (3, 32, 32) in [-1, 1], (7,) int64
    x_all, v_all = ds.tensors()                        # (10000, 3, 32, 32), (10000, 7)
    sweep = render_factors(traverse_factor(v, "pos_x", ds.factor_sizes), ds.factor_sizes)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from jebm_lite.runtime import ConfigError

FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "pos_x", "pos_y", "object_color", "bg_color")
DEFAULT_FACTOR_SIZES: dict[str, int] = {
    "shape": 4,
    "scale": 6,
    "orientation": 12,
    "pos_x": 8,
    "pos_y": 8,
    "object_color": 6,
    "bg_color": 4,
}
SHAPES: tuple[str, ...] = ("square", "ellipse", "triangle", "cross")

BASE_RADIUS = 0.42
SCALE_RANGE = (0.5, 1.0)
ORIENTATION_RANGE_DEG = (-40.0, 40.0)
POSITION_RANGE = (-0.35, 0.35)
_OBJ_SV = (1.0, 1.0)
_BG_SV = (0.5, 0.3)
_MASK32 = 0xFFFFFFFF


def factor_sizes(factors: Mapping[str, int] | Sequence[int] | None = None) -> tuple[int, ...]:
    """Number of values per factor, in :data:`FACTOR_NAMES` order.

    ``factors``: ``None`` (the defaults, :data:`DEFAULT_FACTOR_SIZES`), a mapping overriding some sizes
    (``{"orientation": 16, "bg_color": 1}``; size 1 fixes a factor), or a full sequence of 7 sizes.

    Raises:
        ConfigError: unknown factor name, a size < 1, more than 4 shapes, or a sequence of the wrong length.
    """
    if factors is None:
        sizes = dict(DEFAULT_FACTOR_SIZES)
    elif isinstance(factors, Mapping):
        unknown = set(factors) - set(FACTOR_NAMES)
        if unknown:
            raise ConfigError(f"unknown factor(s) {sorted(unknown)}; valid names: {', '.join(FACTOR_NAMES)}")
        sizes = {**DEFAULT_FACTOR_SIZES, **{k: int(v) for k, v in factors.items()}}
    else:
        seq = [int(s) for s in factors]
        if len(seq) != len(FACTOR_NAMES):
            raise ConfigError(f"factor sizes need {len(FACTOR_NAMES)} entries ({', '.join(FACTOR_NAMES)}), got {seq}")
        sizes = dict(zip(FACTOR_NAMES, seq))
    if any(v < 1 for v in sizes.values()):
        raise ConfigError(f"every factor needs at least one value, got {sizes}")
    if sizes["shape"] > len(SHAPES):
        raise ConfigError(f"shape has at most {len(SHAPES)} values ({', '.join(SHAPES)}), got {sizes['shape']}")
    return tuple(sizes[k] for k in FACTOR_NAMES)


# ----------------------------------------------------------------------------------------------
# Deterministic factor draws
# ----------------------------------------------------------------------------------------------


def _mul32(x: Tensor, c: int) -> Tensor:
    """``(x * c) mod 2^32`` for int64 ``x`` in [0, 2^32), without int64 overflow (c split in 16-bit halves)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: Tensor) -> Tensor:
    """A 32-bit integer bijection with good avalanche (the "lowbias32" xorshift-multiply mixer)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def sample_factors(
    n: int, seed: int = 0, factors: Mapping[str, int] | Sequence[int] | None = None, start: int = 0
) -> Tensor:
    """Factor vectors of indices ``start .. start + n - 1``: ``(n, 7)`` int64, column k uniform on {0..K_k - 1}.

    Entry ``(i, k)`` is ``hash(hash(start + i) xor key(seed, k)) mod K_k``: a pure function of
    ``(seed, k, index)``, so it does not depend on ``n`` and consumes no global random state.
    """
    sizes = factor_sizes(factors)
    idx = torch.arange(start, start + n, dtype=torch.int64)
    base = _hash32(idx)
    cols = []
    for k, size in enumerate(sizes):
        key = _hash32(torch.tensor((int(seed) & _MASK32) ^ (((k + 1) * 0x9E3779B1) & _MASK32)))
        cols.append(_hash32(base ^ key) % size)
    return torch.stack(cols, dim=1)


def traverse_factor(
    base: Tensor, name: str, factors: Mapping[str, int] | Sequence[int] | None = None
) -> Tensor:
    """All ``K`` values of factor ``name`` with the others held at ``base`` (7,): ``(K, 7)`` int64."""
    if name not in FACTOR_NAMES:
        raise ConfigError(f"unknown factor {name!r}; valid names: {', '.join(FACTOR_NAMES)}")
    sizes = factor_sizes(factors)
    k = FACTOR_NAMES.index(name)
    out = base.detach().to(torch.int64).reshape(1, -1).repeat(sizes[k], 1)
    out[:, k] = torch.arange(sizes[k])
    return out


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _level(idx: Tensor, size: int, lo: float, hi: float) -> Tensor:
    """Index in {0..size-1} -> ``size`` equally spaced values in [lo, hi] (the middle for size 1)."""
    if size == 1:
        return torch.full_like(idx, (lo + hi) / 2, dtype=torch.float32)
    return lo + (hi - lo) * idx.to(torch.float32) / (size - 1)


def _hsv_to_rgb(h: Tensor, s: float, v: float) -> Tensor:
    """Hue ``h`` in [0, 1) (B,) at fixed saturation / value -> RGB in [0, 1], (B, 3)."""
    k = (torch.tensor([5.0, 3.0, 1.0], device=h.device) + 6 * h[:, None]) % 6
    return v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def palette(kind: str, size: int) -> Tensor:
    """The ``size`` colours of ``kind`` in {"object", "background"}: RGB in [0, 1], (size, 3)."""
    steps = torch.arange(size, dtype=torch.float32)
    if kind == "object":
        return _hsv_to_rgb(steps / size, *_OBJ_SV)
    if kind == "background":
        return _hsv_to_rgb((steps + 0.5) / size, *_BG_SV)
    raise ValueError("kind must be 'object' or 'background'")


def _box(px: Tensor, py: Tensor, a: float, b: float) -> Tensor:
    """Signed distance to the axis-aligned box |x| <= a, |y| <= b (exact inside and along the sides)."""
    qx, qy = px.abs() - a, py.abs() - b
    outside = torch.sqrt(qx.clamp_min(0) ** 2 + qy.clamp_min(0) ** 2)
    return outside + torch.clamp(torch.maximum(qx, qy), max=0)


def _shape_sdf(shape: Tensor, px: Tensor, py: Tensor) -> Tensor:
    """Signed distance (object units, negative inside) to each image's shape; ``shape: (B,)``, ``px, py: (B, H, W)``.

    square: half-side 0.9; ellipse: semi-axes 1.3 x 0.75 (approximate distance); triangle: equilateral,
    vertex up, circumradius 1.5; cross: two 2.4 x 0.8 bars. Areas are 2.4-3.2, extents at most 1.5.
    """
    out = torch.empty_like(px)
    for k in shape.unique().tolist():
        m = shape == k
        x, y = px[m], py[m]
        if k == 0:
            d = _box(x, y, 0.9, 0.9)
        elif k == 1:
            d = (torch.sqrt((x / 1.3) ** 2 + (y / 0.75) ** 2) - 1) * 0.75
        elif k == 2:
            d = torch.maximum(torch.maximum(y, 0.866025 * x - 0.5 * y), -0.866025 * x - 0.5 * y) - 0.75
        else:
            d = torch.minimum(_box(x, y, 1.2, 0.4), _box(x, y, 0.4, 1.2))
        out[m] = d
    return out


def factor_values(factors: Tensor, sizes: Sequence[int] | None = None) -> dict[str, Tensor]:
    """Physical parameters of factor vectors ``(B, 7)``: shape index, radius, angle (rad), centre x / y,
    object and background RGB in [0, 1] ``(B, 3)``."""
    sizes = factor_sizes(sizes)
    f = factors.to(torch.int64)
    dev = f.device
    ang_lo, ang_hi = (math.radians(a) for a in ORIENTATION_RANGE_DEG)
    return {
        "shape": f[:, 0],
        "radius": BASE_RADIUS * _level(f[:, 1], sizes[1], *SCALE_RANGE),
        "angle": _level(f[:, 2], sizes[2], ang_lo, ang_hi),
        "cx": _level(f[:, 3], sizes[3], *POSITION_RANGE),
        "cy": _level(f[:, 4], sizes[4], *POSITION_RANGE),
        "object_rgb": palette("object", sizes[5]).to(dev)[f[:, 5]],
        "bg_rgb": palette("background", sizes[6]).to(dev)[f[:, 6]],
    }


def render_factors(
    factors: Tensor,
    sizes: Mapping[str, int] | Sequence[int] | None = None,
    image_size: int = 32,
    chunk: int = 2048,
) -> Tensor:
    """Render factor vectors into images: ``(B, 7)`` or ``(7,)`` int -> ``(B, 3, S, S)`` or ``(3, S, S)`` in [-1, 1].

    Runs on ``factors``' device; ``sizes`` must be the sizes the factor indices refer to (see
    :func:`factor_sizes`). Deterministic: the same factors always give the same pixels.
    """
    sizes_t = factor_sizes(sizes)
    single = factors.dim() == 1
    f = factors.reshape(-1, len(FACTOR_NAMES)).to(torch.int64)
    hi = torch.tensor(sizes_t, device=f.device)
    if bool(((f < 0) | (f >= hi)).any()):
        raise ConfigError(f"factor indices out of range for sizes {dict(zip(FACTOR_NAMES, sizes_t))}")
    coords = (torch.arange(image_size, dtype=torch.float32, device=f.device) + 0.5) * (2.0 / image_size) - 1.0
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")  # pixel centres, x right, y down
    px_per_unit = image_size / 2.0
    out = []
    for i in range(0, f.shape[0], chunk):
        v = factor_values(f[i:i + chunk], sizes_t)
        r = v["radius"].view(-1, 1, 1)
        c, s = torch.cos(v["angle"]).view(-1, 1, 1), torch.sin(v["angle"]).view(-1, 1, 1)
        dx, dy = gx - v["cx"].view(-1, 1, 1), gy - v["cy"].view(-1, 1, 1)
        lx, ly = (c * dx + s * dy) / r, (-s * dx + c * dy) / r  # rotate by -angle, scale to object units
        dist = _shape_sdf(v["shape"], lx, ly) * r * px_per_unit  # signed distance in pixels
        cover = torch.clamp(0.5 - dist, 0.0, 1.0).unsqueeze(1)  # (B, 1, S, S)
        img = v["bg_rgb"][:, :, None, None] * (1 - cover) + v["object_rgb"][:, :, None, None] * cover
        out.append(img * 2 - 1)
    x = torch.cat(out) if out else torch.empty(0, 3, image_size, image_size, device=f.device)
    return x[0] if single else x


class FactorDataset(Dataset):
    """``n`` images with known factors: ``dataset[i] = (image (3, S, S) float32 in [-1, 1], factors (7,) int64)``.

    Args:
        n: number of examples.
        seed: selects the factor draws (index i's factors depend only on ``seed`` and ``i``); use different
            seeds for training and test sets.
        factors: factor sizes, see :func:`factor_sizes` (``None``: :data:`DEFAULT_FACTOR_SIZES`).
        image_size: side length S in pixels.

    Only the factor table ``self.factors (n, 7)`` is stored; images are rendered on access
    (``__getitems__`` renders a whole batch at once) or all together by :meth:`tensors`.
    """

    def __init__(
        self,
        n: int,
        seed: int = 0,
        factors: Mapping[str, int] | Sequence[int] | None = None,
        image_size: int = 32,
    ) -> None:
        if n < 0 or image_size < 4:
            raise ConfigError(f"need n >= 0 and image_size >= 4, got n={n}, image_size={image_size}")
        self.factor_sizes: tuple[int, ...] = factor_sizes(factors)
        self.factor_names = FACTOR_NAMES
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.factors = sample_factors(n, seed, self.factor_sizes)
        self.targets = self.factors  # (n, 7): the "labels" of this set

    def __len__(self) -> int:
        return self.factors.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        v = self.factors[index]
        return render_factors(v, self.factor_sizes, self.image_size), v.clone()

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        v = self.factors[torch.as_tensor(indices, dtype=torch.long)]
        x = render_factors(v, self.factor_sizes, self.image_size)
        return list(zip(x.unbind(0), v.unbind(0)))

    def render(self, factors: Tensor) -> Tensor:
        """:func:`render_factors` with this set's sizes and image size."""
        return render_factors(factors, self.factor_sizes, self.image_size)

    def tensors(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """All images ``(n, 3, S, S)`` in [-1, 1] and factors ``(n, 7)`` int64, rendered on ``device``."""
        v = self.factors.to(device) if device is not None else self.factors.clone()
        return render_factors(v, self.factor_sizes, self.image_size), v
