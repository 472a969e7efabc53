"""Small building blocks shared by the generator / inference networks.

The conventions follow the reference code (``hre@cbb7a97:nets.py``, report section 1.3):

* inference-side convolutions have **no bias** and use ``leaky_relu`` with the PyTorch default slope
  0.01 (:data:`INF_SLOPE`); fully connected inference layers (``fc_relu``) keep their bias;
* generator-side layers use ``LeakyReLU(0.2)`` (:data:`GEN_SLOPE`) and ``ConvTranspose2d(bias=False)``;
* :func:`xavier_init_` puts xavier-normal weights on every Conv / ConvTranspose module; Linear layers
  keep the PyTorch default initialisation.

Shapes: conv blocks map ``(B, C_in, H, W) -> (B, C_out, H', W')`` with ``H' = H / 2`` for a 4x4 stride-2
("down") convolution and ``H' = H`` for a 3x3 stride-1 one; the transposed blocks do the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

INF_SLOPE = 0.01  # F.leaky_relu default, used by hre's conv2d_relu / fc_relu (inference network)
GEN_SLOPE = 0.2  # nn.LeakyReLU(0.2), used by hre's generators


def conv_block(
    c_in: int, c_out: int, down: bool, slope: float | None = INF_SLOPE, bias: bool = False, norm: bool = False
) -> nn.Sequential:
    """``hre``'s ``conv2d_relu``: Conv 4x4/s2/p1 if ``down`` else Conv 3x3/s1/p1, then LeakyReLU(slope).

    ``slope=None`` leaves the activation out; ``norm`` puts a per-sample layer norm
    (``GroupNorm(1, c_out)``: over C, H, W of each image) between the two.
    ``(B, c_in, H, W) -> (B, c_out, H/2 or H, W/2 or W)``.
    """
    if down:
        conv = nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias)
    else:
        conv = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)
    mods: list[nn.Module] = [conv]
    if norm:
        mods.append(nn.GroupNorm(1, c_out))
    if slope is not None:
        mods.append(nn.LeakyReLU(slope))
    return nn.Sequential(*mods)


def deconv_block(
    c_in: int, c_out: int, up: bool, slope: float | None = GEN_SLOPE, bias: bool = False, norm: bool = False
) -> nn.Sequential:
    """ConvTranspose 4x4/s2/p1 if ``up`` else ConvTranspose 3x3/s1/p1, then LeakyReLU(slope) (or none).

    ``norm``: per-sample ``GroupNorm(1, c_out)`` before the activation. ``(B, c_in, H, W) -> (B, c_out, 2H or H, 2W or W)``.
    """
    if up:
        conv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)
    else:
        conv = nn.ConvTranspose2d(c_in, c_out, 3, 1, 1, bias=bias)
    mods: list[nn.Module] = [conv]
    if norm:
        mods.append(nn.GroupNorm(1, c_out))
    if slope is not None:
        mods.append(nn.LeakyReLU(slope))
    return nn.Sequential(*mods)


def fc_block(d_in: int, d_out: int, slope: float | None = INF_SLOPE, norm: bool = False) -> nn.Sequential:
    """``hre``'s ``fc_relu``: Linear (with bias), [LayerNorm if ``norm``], then LeakyReLU(slope) (or none).

    ``(B, d_in) -> (B, d_out)``.
    """
    mods: list[nn.Module] = [nn.Linear(d_in, d_out)]
    if norm:
        mods.append(nn.LayerNorm(d_out))
    if slope is not None:
        mods.append(nn.LeakyReLU(slope))
    return nn.Sequential(*mods)


def mlp(dims: Sequence[int], slope: float = GEN_SLOPE, final_act: bool = False, norm: bool = False) -> nn.Sequential:
    """Linear layers ``dims[0] -> dims[1] -> ... -> dims[-1]`` with LeakyReLU(slope) in between.

    ``final_act`` also puts the activation after the last layer; ``norm`` puts a LayerNorm before every
    activation. ``(B, dims[0]) -> (B, dims[-1])``.
    """
    mods: list[nn.Module] = []
    n = len(dims) - 1
    for k in range(n):
        mods.append(nn.Linear(dims[k], dims[k + 1]))
        if k < n - 1 or final_act:
            if norm:
                mods.append(nn.LayerNorm(dims[k + 1]))
            mods.append(nn.LeakyReLU(slope))
    return nn.Sequential(*mods)


class Reshape(nn.Module):
    """``(B, prod(shape)) -> (B, *shape)``."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class GaussianHead(nn.Module):
    """Two Linear layers giving the mean and log-variance of a diagonal Gaussian.

    ``features`` (any module) maps the input to ``(B, n_features)`` (flattened if needed), then
    ``mu = Linear(n_features, d)``, ``logvar = Linear(n_features, d)`` clamped to ``logvar_range``
    (``None``: unclamped). ``forward(x) -> (mu, logvar)``, each ``(B, d)``.
    """

    def __init__(
        self,
        features: nn.Module,
        n_features: int,
        d: int,
        logvar_range: tuple[float, float] | None = (-10.0, 5.0),
    ) -> None:
        super().__init__()
        self.features = features
        self.mu = nn.Linear(n_features, d)
        self.logvar = nn.Linear(n_features, d)
        self.logvar_range = logvar_range

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x).flatten(1)
        mu, logvar = self.mu(h), self.logvar(h)
        if self.logvar_range is not None:
            logvar = logvar.clamp(*self.logvar_range)
        return mu, logvar


class Gate(nn.Module):
    """Per-unit gate ``gate * x`` (VLAE's gated add, ``vlae:vladder_small.py``); ``gate`` starts at ``init``.

    Shapes: ``x: (B, *shape)`` -> ``(B, *shape)``; ``gate: shape`` (one scalar per unit / channel map).
    """

    def __init__(self, shape: Sequence[int], init: float = 0.1) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.full(tuple(int(s) for s in shape), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate


def xavier_init_(module: nn.Module) -> nn.Module:
    """``hre``'s ``weights_init``: xavier-normal weights (and zero biases) on every Conv / ConvTranspose.

    Linear layers keep the PyTorch default initialisation. Returns ``module`` (modified in place).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
