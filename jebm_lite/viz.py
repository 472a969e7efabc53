"""Figures for the book: one style, one colour for prior and one for posterior, everywhere.

Helpers return the matplotlib ``Figure`` so notebooks can ``plt.show()`` it (PNG output) and tests
can inspect it. Interactive pieces (ipywidgets) have a static stand-in for the rendered book:
:func:`animate` makes a self-contained ``to_jshtml`` animation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

#: Colours used by every chapter (seaborn "colorblind" palette).
PRIOR_COLOR = "#0173B2"  # blue: prior samples / chains
POSTERIOR_COLOR = "#DE8F05"  # orange: posterior codes
ACCENT_COLOR = "#029E73"
LAYER_COLORS = ("#0173B2", "#DE8F05", "#029E73", "#D55E00", "#CC78BC", "#CA9161")


def set_style() -> None:
    """The book's plotting style: seaborn's whitegrid theme, PNG-friendly sizes."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({
        "figure.dpi": 90,
        "savefig.dpi": 90,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "figure.autolayout": False,
        "image.cmap": "gray",
    })


def to_numpy_images(x: Tensor) -> np.ndarray:
    """(B, C, H, W) images in [-1, 1] -> (B, H, W, C) float array in [0, 1]."""
    x = x.detach().float().cpu().clamp(-1, 1)
    return ((x + 1) / 2).permute(0, 2, 3, 1).numpy()


def image_grid(x: Tensor, nrow: int, pad: int = 1) -> np.ndarray:
    """Tile (B, C, H, W) images in [-1, 1] into one (rows*H, nrow*W, C) array in [0, 1]."""
    imgs = to_numpy_images(x)
    b, h, w, c = imgs.shape
    ncol = nrow
    nrows = int(np.ceil(b / ncol))
    grid = np.ones((nrows * (h + pad) + pad, ncol * (w + pad) + pad, c), dtype=np.float32)
    for i in range(b):
        r, k = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = imgs[i]
    return grid


def show_grid(x: Tensor, nrow: int, title: str | None = None, ax: plt.Axes | None = None,
              figsize: tuple[float, float] | None = None) -> plt.Figure:
    """Show a grid of images on ``ax`` (or a new figure)."""
    grid = image_grid(x, nrow)
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize or (min(12, 0.5 * nrow + 1), min(12, 0.5 * grid.shape[0] / 29 + 1)))
    else:
        fig = ax.figure
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return fig


def grid_2d(lim: float = 3.0, n: int = 100, device: torch.device | str = "cpu") -> tuple[Tensor, np.ndarray, np.ndarray]:
    """A regular 2-D grid: points (n*n, 2) and the meshgrid arrays for contour plots."""
    a = np.linspace(-lim, lim, n)
    xx, yy = np.meshgrid(a, a)
    pts = torch.tensor(np.stack([xx.ravel(), yy.ravel()], 1), dtype=torch.float32, device=device)
    return pts, xx, yy


def plot_density_2d(log_density: Callable[[Tensor], Tensor], lim: float = 3.0, n: int = 120,
                    ax: plt.Axes | None = None, title: str | None = None,
                    device: torch.device | str = "cpu") -> plt.Axes:
    """Filled contours of a normalised-on-the-grid 2-D density exp(log_density)."""
    pts, xx, yy = grid_2d(lim, n, device)
    with torch.no_grad():
        lp = log_density(pts).float().cpu().numpy().reshape(xx.shape)
    p = np.exp(lp - lp.max())
    p /= p.sum()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.contourf(xx, yy, p, levels=30, cmap="Blues")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def scatter_codes(ax: plt.Axes, z: Tensor, kind: str = "posterior", label: str | None = None,
                  s: float = 4, alpha: float = 0.5, c=None) -> None:
    """Scatter 2-D codes in the book's prior / posterior colour."""
    z = z.detach().float().cpu().numpy()
    color = c if c is not None else (PRIOR_COLOR if kind == "prior" else POSTERIOR_COLOR)
    ax.scatter(z[:, 0], z[:, 1], s=s, alpha=alpha, c=color, label=label or kind, linewidths=0)


def plot_history(history: Sequence[dict], keys: Sequence[str], smooth: int = 20,
                 axes: Sequence[plt.Axes] | None = None, title: str | None = None) -> plt.Figure:
    """Plot metrics from a trainer history (one panel per key, moving-average smoothed)."""
    rows = [h for h in history if "event" not in h]
    if axes is None:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.6))
        axes = np.atleast_1d(axes)
    fig = axes[0].figure
    for ax, key in zip(axes, keys):
        steps = np.array([h["step"] for h in rows if key in h])
        vals = np.array([h[key] for h in rows if key in h], dtype=float)
        if len(vals) == 0:
            ax.set_title(f"{key} (not logged)")
            continue
        k = max(1, min(smooth, len(vals) // 5 or 1))
        sm = np.convolve(vals, np.ones(k) / k, mode="valid")
        ax.plot(steps, vals, alpha=0.25, color="gray")
        ax.plot(steps[k - 1:], sm, color=ACCENT_COLOR)
        ax.set_title(key)
        ax.set_xlabel("iteration")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def animate(frames: Sequence[Callable[[plt.Axes], None]] | int, draw: Callable[[plt.Axes, int], None] | None = None,
            figsize: tuple[float, float] = (4, 4), interval: int = 200) -> str:
    """Self-contained HTML animation (``to_jshtml``) — the rendered book's stand-in for a widget.

    Args:
        frames: number of frames.
        draw: ``draw(ax, i)`` draws frame ``i`` on a cleared axis.
    Returns:
        HTML text; display it with ``IPython.display.HTML``.
    """
    from matplotlib import animation

    n = frames if isinstance(frames, int) else len(frames)
    fig, ax = plt.subplots(figsize=figsize)

    def update(i: int):
        ax.clear()
        draw(ax, i)
        return []

    anim = animation.FuncAnimation(fig, update, frames=n, interval=interval, blit=False)
    html = anim.to_jshtml(default_mode="once")
    plt.close(fig)
    return html


def interactive() -> bool:
    """Whether to build ipywidgets: True in a live Jupyter session.

    False when ``JEBM_STATIC=1`` (set it when executing a chapter to store its outputs, so that no
    widget state is stored and the rendered book shows the static stand-in) or in the ``ci``
    profile.
    """
    import os

    if os.environ.get("JEBM_STATIC", "0") not in ("", "0", "false", "False"):
        return False
    return os.environ.get("JEBM_PROFILE", "") != "ci"
