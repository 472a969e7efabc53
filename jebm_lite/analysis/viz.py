"""Figures for the book: one style, one colour for prior and one for posterior, everywhere.

Helpers return the matplotlib ``Figure`` so notebooks can ``plt.show()`` it (PNG output) and tests
can inspect it. Interactive pieces (ipywidgets) have a static stand-in for the rendered book:
:func:`animate` makes a self-contained ``to_jshtml`` animation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation, patheffects
from torch import Tensor

#: Colours used by every chapter (seaborn "colorblind" palette).
PRIOR_COLOR = "#0173B2"  # blue: prior samples / chains
POSTERIOR_COLOR = "#DE8F05"  # orange: posterior codes
ACCENT_COLOR = "#029E73"
LAYER_COLORS = ("#0173B2", "#DE8F05", "#029E73", "#D55E00", "#CC78BC", "#CA9161")


COLUMN_WIDTH_IN = 7.0
"""The widest figure the book draws, in inches: the content column is about 690 CSS px at a desktop width, so a
figure of this width is shown at about 1.4 CSS px per point of its fonts (at any dpi)."""
MIN_FONT_PT = 8.0
"""The smallest font a figure may use: at :data:`COLUMN_WIDTH_IN` it renders at about 11 CSS px in the page
(the browser test's floor is 9)."""
DPI = 130
"""Saved resolution: a full-width figure is 910 px wide, sharp on high-density screens and shown at 0.75x."""


def set_style() -> None:
    """The book's plotting style: seaborn's whitegrid theme, fonts readable at the column width."""
    # imported on use: a heavy import (~1 s)
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams.update({
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "figure.figsize": (COLUMN_WIDTH_IN, 3.2),
        "font.size": 10,
        "axes.titlesize": 10.5,
        "axes.labelsize": 10,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "legend.fontsize": 9,
        "legend.title_fontsize": 9,
        "figure.autolayout": False,
        "image.cmap": "gray",
    })


def readability_problems(fig: plt.Figure) -> list[str]:
    """What would make ``fig`` hard to read in the book's column: wider than :data:`COLUMN_WIDTH_IN`, or any
    visible text smaller than :data:`MIN_FONT_PT` (an empty list when it is fine). Chapters assert on it."""
    out = []
    w = fig.get_figwidth()
    if w > COLUMN_WIDTH_IN + 1e-6:
        out.append(f"figure {w:.1f} in wide (at most {COLUMN_WIDTH_IN})")
    for t in fig.findobj(matplotlib.text.Text):
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < MIN_FONT_PT - 1e-6:
            out.append(f"text {t.get_text()[:30]!r} at {t.get_fontsize():.1f} pt")
    return out


def plot_paired_differences(ax: plt.Axes, groups: Sequence[dict], ylabel: str = "joint − VLAE (points)") -> None:
    """One column per group: a dot per pair (its paired difference), the mean with its confidence interval,
    and the paper's difference as a star. ``groups``: ``{"label", "diffs", "low", "high", "paper"}`` each
    (``low`` / ``high`` None with fewer than two pairs; ``paper`` None where the paper has no number)."""
    rng = np.random.default_rng(0)
    for i, g in enumerate(groups):
        d = np.asarray(g["diffs"], dtype=float)
        jitter = rng.uniform(-0.12, 0.12, len(d))
        ax.scatter(i + jitter, d, s=22, color=LAYER_COLORS[i % len(LAYER_COLORS)], alpha=0.8, zorder=3,
                   label="one pair (seed)" if i == 0 else None)
        if len(d):
            ax.plot([i + 0.25, i + 0.45], [d.mean()] * 2, color="black", lw=2, zorder=4,
                    label="mean, 95 % CI" if i == 0 else None)
        if g.get("low") is not None:
            ax.plot([i + 0.35] * 2, [g["low"], g["high"]], color="black", lw=1.2, zorder=4)
        if g.get("paper") is not None:
            ax.scatter([i + 0.35], [g["paper"]], marker="*", s=140, color=ACCENT_COLOR, edgecolor="black",
                       linewidth=0.5, zorder=5, label="paper" if i == 0 else None)
    ax.axhline(0, color="grey", lw=1, ls="--", zorder=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g["label"] for g in groups])
    ax.set_xlim(-0.5, len(groups) - 0.3)
    ax.set_ylabel(ylabel)


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
        w = min(COLUMN_WIDTH_IN, 0.5 * nrow + 1)
        fig, ax = plt.subplots(figsize=figsize or (w, w * grid.shape[0] / grid.shape[1] + 0.4))
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
                 axes: Sequence[plt.Axes] | None = None, title: str | None = None,
                 color: str | None = None, label: str | None = None) -> plt.Figure:
    """Plot metrics from a trainer history (one panel per key, moving-average smoothed).

    With ``color`` / ``label`` only the smoothed curve is drawn, in that colour and with that legend label, so
    that several runs can share the same axes (call once per run)."""
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
        if color is None:
            ax.plot(steps, vals, alpha=0.25, color="gray")
        ax.plot(steps[k - 1:], sm, color=color or ACCENT_COLOR, label=label)
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
    if os.environ.get("JEBM_STATIC", "0") not in ("", "0", "false", "False"):
        return False
    return os.environ.get("JEBM_PROFILE", "") != "ci"


# ----------------------------------------------------------------------------------------------
# Chapter 1 (single-layer LEBM): class colours, the energy diagnostic, 2-D chains, unit sweeps
# ----------------------------------------------------------------------------------------------


def class_palette(n: int) -> list[str]:
    """``n`` colours for class labels that never use :data:`PRIOR_COLOR` (so prior chains stay distinct).

    The first is :data:`POSTERIOR_COLOR` (class codes are posterior codes), then the rest of the seaborn
    "colorblind" palette; at most 9 colours.
    """
    palette = [POSTERIOR_COLOR, ACCENT_COLOR, "#CC78BC", "#D55E00", "#CA9161", "#949494", "#ECE133",
               "#56B4E9", "#FBAFE4"]
    if not 1 <= n <= len(palette):
        raise ValueError(f"class_palette supports 1 to {len(palette)} classes, got {n}")
    return palette[:n]


def plot_energy_diagnostic(history: Sequence[dict], ax: plt.Axes | None = None, smooth: int = 20,
                           title: str | None = "f at posterior vs prior samples") -> plt.Axes:
    """The EBM-anatomy diagnostic (Nijkamp et al. 2020): mean f on posterior codes and on prior samples.

    Reads the ``energy/post`` and ``energy/prior`` rows of a trainer history (roll-back ``event`` rows are
    skipped), draws both (raw, faint, and a moving average of ``smooth`` steps) in
    :data:`POSTERIOR_COLOR` / :data:`PRIOR_COLOR`. Their difference is minus the EBM loss
    (``objectives.ebm_loss``); a gap that stays near 0 means the short-run prior samples score like the
    posterior codes, a gap that grows without bound means the EBM has left its samplers behind.

    Returns the axes.
    """
    rows = [h for h in history if "event" not in h and "energy/post" in h and "energy/prior" in h]
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3))
    if not rows:
        ax.set_title("energy/post, energy/prior (not logged)")
        return ax
    steps = np.array([h["step"] for h in rows])
    k = max(1, min(smooth, len(rows) // 5 or 1))
    for key, color, label in (("energy/post", POSTERIOR_COLOR, "posterior codes $z^+$"),
                              ("energy/prior", PRIOR_COLOR, "prior samples $z^-$")):
        vals = np.array([h[key] for h in rows], dtype=float)
        ax.plot(steps, vals, color=color, alpha=0.2, linewidth=0.8)
        ax.plot(steps[k - 1:], np.convolve(vals, np.ones(k) / k, mode="valid"), color=color, label=label)
    ax.set_xlabel("iteration")
    ax.set_ylabel(r"mean $f_\alpha(z)$")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_chains_2d(ax: plt.Axes, chain: Tensor, color: str = PRIOR_COLOR, label: str | None = "prior chains",
                   linewidth: float = 1.0, alpha: float = 0.9, outline: bool = True) -> plt.Axes:
    """Trajectories of 2-D Langevin chains: ``chain: (T+1, B, 2)`` (``LangevinTrace.chain``).

    Each chain is a line from its start (open circle) to its end (filled circle), all in ``color``; one
    legend entry (``label``) for the lot. ``outline`` draws a thin white stroke under each line so that
    chains in :data:`PRIOR_COLOR` stay visible over a blue density (:func:`plot_density_2d`).
    """
    c = chain.detach().float().cpu().numpy()
    if c.ndim != 3 or c.shape[2] != 2:
        raise ValueError(f"chain must have shape (T+1, B, 2), got {tuple(c.shape)}")
    effects = [patheffects.Stroke(linewidth=linewidth + 1.5, foreground="white"), patheffects.Normal()]
    for b in range(c.shape[1]):
        ax.plot(c[:, b, 0], c[:, b, 1], color=color, linewidth=linewidth, alpha=alpha,
                label=label if b == 0 else None, path_effects=effects if outline else None)
    ax.scatter(c[0, :, 0], c[0, :, 1], s=18, facecolors="white", edgecolors=color, linewidths=1.0, zorder=3)
    ax.scatter(c[-1, :, 0], c[-1, :, 1], s=18, color=color, edgecolors="white", linewidths=0.5, zorder=3)
    return ax


def unit_sweep_codes(base: Tensor, unit: int, values: Tensor) -> Tensor:
    """Codes that sweep one latent unit (paper Fig. 2): every row of ``base`` with unit ``unit`` set to each value.

    Args:
        base: ``(R, d)`` codes whose other units stay fixed.
        unit: the unit to sweep (0-based, negative allowed).
        values: ``(C,)`` values for that unit.

    Returns:
        ``(R * C, d)``, row-major: row ``r`` of the sweep is ``out[r * C:(r + 1) * C]``, so
        ``show_grid(decode(out), nrow=C)`` shows one base code per image row.
    """
    if base.dim() != 2:
        raise ValueError(f"base must be (R, d), got {tuple(base.shape)}")
    unit = range(base.shape[1])[unit]
    values = torch.as_tensor(values, dtype=base.dtype, device=base.device).flatten()
    out = base.detach()[:, None, :].repeat(1, values.numel(), 1)
    out[:, :, unit] = values[None, :]
    return out.reshape(-1, base.shape[1])


def show_sweep(ax: plt.Axes, images: Tensor, col_values: Sequence[float], row_values: Sequence[float] | None = None,
               xlabel: str | None = None, ylabel: str | None = None, labels: Tensor | None = None,
               label_colors: Sequence[str] | None = None, title: str | None = None, fmt: str = "{:.1f}") -> plt.Axes:
    """A latent sweep as an image grid with the swept values as tick labels (paper Figs. 2 and 6).

    Args:
        images: ``(R * C, C_img, H, W)`` in [-1, 1], row-major (e.g. decoded :func:`unit_sweep_codes`).
        col_values: the ``C`` values of the swept unit (x tick labels, left to right).
        row_values: the ``R`` values held fixed per row (y tick labels, top to bottom); ``None``: no y ticks.
        xlabel, ylabel, title: axis texts.
        labels: optional ``(R * C,)`` integer labels (e.g. a classifier's predictions) written in the corner
            of each tile, coloured by ``label_colors[label]`` (default :func:`class_palette`).
        fmt: format of the tick values.
    """
    def tick(v) -> str:
        text = fmt.format(float(v))
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"

    ncol = len(col_values)
    grid = image_grid(images, nrow=ncol)
    ax.imshow(grid.squeeze(-1) if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=1)
    h, w = images.shape[-2:]
    pad = 1
    ax.set_xticks([pad + k * (w + pad) + (w - 1) / 2 for k in range(ncol)])
    every = max(1, int(np.ceil(ncol / 5)))  # at most five labels per axis: readable in a narrow panel
    ax.set_xticklabels([tick(v) if k % every == 0 else "" for k, v in enumerate(col_values)], fontsize=MIN_FONT_PT)
    if row_values is not None:
        ax.set_yticks([pad + r * (h + pad) + (h - 1) / 2 for r in range(len(row_values))])
        every = max(1, int(np.ceil(len(row_values) / 5)))
        ax.set_yticklabels([tick(v) if k % every == 0 else "" for k, v in enumerate(row_values)],
                           fontsize=MIN_FONT_PT)
    else:
        ax.set_yticks([])
    ax.grid(False)
    if labels is not None:
        labels = labels.detach().cpu().long().flatten()
        cols = list(label_colors) if label_colors is not None else class_palette(int(labels.max()) + 1)
        for i, lab in enumerate(labels.tolist()):
            r, k = divmod(i, ncol)
            # on a white chip: a dark class colour stays readable on a black digit tile
            ax.text(pad + k * (w + pad) + 1, pad + r * (h + pad) + 1, str(lab), color=cols[lab], fontsize=MIN_FONT_PT,
                    ha="left", va="top", fontweight="bold",
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


# ----------------------------------------------------------------------------------------------
# Chapters 2-3 (conditional hierarchy, VLAE): side-by-side hierarchical samples, per-layer bars
# ----------------------------------------------------------------------------------------------


def show_panels(panels: dict[str, Tensor], nrow: int, suptitle: str | None = None,
                panel_width: float = 3.6, axes: Sequence[plt.Axes] | None = None) -> plt.Figure:
    """Image grids side by side, one per panel title (e.g. hierarchical samples per layer group).

    Args:
        panels: title -> images ``(R * nrow, C, H, W)`` in [-1, 1], rows first (as
            ``hierarchy.resample_grid`` returns them).
        nrow: images per row of every grid.
        suptitle: the figure title.
        panel_width: inches per panel, at most the column width divided by the number of panels.
    """
    n = len(panels)
    panel_width = min(panel_width, COLUMN_WIDTH_IN / n)
    if axes is None:
        first = next(iter(panels.values()))
        rows = int(np.ceil(first.shape[0] / nrow))
        fig, axes = plt.subplots(1, n, figsize=(panel_width * n, panel_width * rows / nrow + 0.7))
        axes = np.atleast_1d(axes)
    fig = axes[0].figure
    for ax, (title, x) in zip(axes, panels.items()):
        show_grid(x, nrow, title=title, ax=ax)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_panel_rows(rows: dict[str, dict[str, Tensor]], nrow: int, suptitle: str | None = None,
                    panel_width: float = 3.6, mark_first_column: bool = False) -> plt.Figure:
    """Image grids in a table of panels: one figure row per outer key (e.g. a model), one column per inner
    key (e.g. a layer); each panel is titled ``"<row>: <column>"``.

    Args:
        rows: row title -> {column title -> images ``(R * nrow, C, H, W)`` in [-1, 1], rows first}.
        nrow: images per row of every grid.
        mark_first_column: draw a line after the first image column (the context of a
            ``hierarchy.layer_grids`` panel).
    """
    n_rows = len(rows)
    n_cols = max(len(c) for c in rows.values())
    first = next(iter(next(iter(rows.values())).values()))
    img_rows = int(np.ceil(first.shape[0] / nrow))
    h, w = first.shape[-2:]
    panel_width = min(panel_width, COLUMN_WIDTH_IN / n_cols)  # the whole figure fits the column
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False,
                             figsize=(panel_width * n_cols, n_rows * (panel_width * img_rows * h / (nrow * w) + 0.45)))
    for r, (row_title, panels) in enumerate(rows.items()):
        for c in range(n_cols):
            ax = axes[r, c]
            if c >= len(panels):
                ax.set_axis_off()
                continue
            col_title, x = list(panels.items())[c]
            show_grid(x, nrow, title=f"{row_title}: {col_title}", ax=ax)
            ax.title.set_fontsize(9)
            if mark_first_column:
                ax.axvline(w + 1, color=ACCENT_COLOR, linewidth=1.5)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_per_layer(ax: plt.Axes, values: Sequence[float], labels: Sequence[str] | None = None,
                   ylabel: str | None = None, title: str | None = None, colors: Sequence[str] | None = None,
                   fmt: str | None = "{:.2f}", reference: Sequence[float] | None = None,
                   reference_label: str = "paper") -> plt.Axes:
    """Bars of one number per layer (or per group), bottom layer on the left, values written on the bars.

    Args:
        values: one value per bar, bottom to top.
        labels: x tick labels (default ``z_1 ... z_L``).
        colors: bar colours (default :data:`LAYER_COLORS`, cycled).
        fmt: format of the value written above each bar (``None``: none).
        reference: optional values drawn as black ticks over the bars (e.g. a paper's numbers).
    """
    vals = np.asarray([float(v) for v in values])
    k = len(vals)
    labels = list(labels) if labels is not None else [f"$z_{{{i + 1}}}$" for i in range(k)]
    cols = list(colors) if colors is not None else [LAYER_COLORS[i % len(LAYER_COLORS)] for i in range(k)]
    pos = np.arange(k)
    ax.bar(pos, vals, color=cols)
    ax.set_xticks(pos)
    ax.set_xticklabels(labels)
    if reference is not None:
        ref = np.asarray([float(v) for v in reference])
        ax.scatter(pos, ref, marker="_", s=600, color="black", linewidths=2, label=reference_label, zorder=3)
        ax.legend(fontsize=8, loc="upper left")
    if fmt:
        top = max(np.nanmax(vals), np.nanmax(ref) if reference is not None else 0.0)
        for p, v in zip(pos, vals):
            ax.text(p, v + 0.01 * (top or 1.0), fmt.format(v), ha="center", va="bottom", fontsize=8)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax
