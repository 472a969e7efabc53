"""A 2-D Gaussian mixture with modes on a circle, and a mode-coverage score (for EBM tests)."""

from __future__ import annotations

import math

import torch


def mixture_centres(n_modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """``n_modes`` points evenly spaced on the circle of ``radius``: (n_modes, 2) float32."""
    angles = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).to(torch.float32)


def gaussian_mixture_2d(
    n: int, n_modes: int = 8, radius: float = 2.0, std: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of an equal-weight mixture of isotropic Gaussians N(c_k, std^2 I).

    The centres ``c_k`` lie evenly on a circle of ``radius`` around the origin.

    Returns:
        ``(samples (n, 2), centres (n_modes, 2))``, float32; the same ``seed`` gives the same samples.
    """
    if n_modes < 1 or n < 0:
        raise ValueError(f"need n_modes >= 1 and n >= 0, got n_modes={n_modes}, n={n}")
    gen = torch.Generator().manual_seed(seed)
    centres = mixture_centres(n_modes, radius)
    which = torch.randint(0, n_modes, (n,), generator=gen)
    noise = torch.randn(n, 2, generator=gen) * std
    return centres[which] + noise, centres


def mode_coverage(
    samples: torch.Tensor, centres: torch.Tensor, radius: float
) -> tuple[float, torch.Tensor]:
    """How many modes the samples cover.

    Each sample counts for its nearest centre if it lies within ``radius`` of it (else for none).
    A mode is covered when it receives at least ``1 / (4 n_modes)`` of all samples.

    Args:
        samples: (n, 2).
        centres: (n_modes, 2).
        radius: capture radius around each centre (e.g. 3 std of the mixture).

    Returns:
        ``(coverage, counts)``: the fraction of covered modes in [0, 1], and the per-mode sample
        counts, int64 (n_modes,).
    """
    samples = samples.detach().to(torch.float32).cpu().reshape(-1, centres.shape[-1])
    centres = centres.detach().to(torch.float32).cpu()
    n_modes = centres.shape[0]
    if samples.shape[0] == 0:
        return 0.0, torch.zeros(n_modes, dtype=torch.int64)
    dist = torch.cdist(samples, centres)  # (n, n_modes)
    d_min, nearest = dist.min(dim=1)
    counts = torch.bincount(nearest[d_min <= radius], minlength=n_modes)
    covered = counts >= samples.shape[0] / (4 * n_modes)
    return covered.float().mean().item(), counts
