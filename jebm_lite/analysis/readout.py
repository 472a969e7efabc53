"""What each latent layer controls, read off generated images against known factors (chapter 6).

On the ``colour_mnist`` stand-in every image has a recorded background colour, stroke colour and digit.
For generated images they are read back by measurement (:func:`jebm_lite.data.colour_digits.estimate_colours`)
and by a digit classifier (``classify``: images -> labels). :func:`layer_factor_changes` changes one layer of
prior samples (paper Sec. 5.1, "sampling the latent code of one layer while keeping other layers fixed",
both readings of :mod:`jebm_lite.analysis.hierarchy`) and reports how much each factor moves; it works on
any :class:`~jebm_lite.training.learner.LayeredModel` (joint prior and VLAE alike), so the two priors are
read with the same code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from jebm_lite.analysis import hierarchy
from jebm_lite.data.colour_digits import estimate_colours
from jebm_lite.training.learner import LayeredModel

Classify = Callable[[Tensor], Tensor]  # images (B, C, H, W) in [-1, 1] -> labels (B,)

FACTOR_COLUMNS = ("background colour change", "stroke colour change", "digit change (%)", "share of pixel variance")


@torch.no_grad()
def layer_factor_changes(
    model: LayeredModel,
    classify: Classify,
    reading: str = "swap",
    n_contexts: int = 64,
    n_changes: int = 16,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Mean factor change when one layer of a prior sample is changed, per layer (top first) and for all.

    For ``n_contexts`` prior samples (contexts) and ``n_changes`` changes of layer i each (``reading``:
    ``"swap"`` copies the layer from other prior samples, ``"resample"`` redraws it given the others), the
    decoded images are compared with the context's own image:

    * background / stroke colour change: mean RGB distance on [0, 1] of the estimated colours;
    * digit change (%): share of changed images that ``classify`` names differently from the context;
    * share of pixel variance: per-pixel variance over the changes / that of changing all layers
      (:func:`jebm_lite.analysis.hierarchy.resample_stats`).

    Returns ``{"z<L>": {...}, ..., "z1": {...}, "all": {...}}`` with the columns :data:`FACTOR_COLUMNS`;
    the row ``"all"`` changes every layer (two independent prior samples), the scale for one layer.
    """
    if reading not in ("swap", "resample"):
        raise ValueError(f"reading must be 'swap' or 'resample', not {reading!r}")
    L = hierarchy.n_layers(model)
    g = torch.Generator().manual_seed(seed)
    ctx = hierarchy.sample_state(model, n_contexts, g)
    donors = hierarchy.sample_state(model, n_changes, g)
    x0 = hierarchy.decode_state(model, ctx)
    bg0, st0 = estimate_colours(x0)
    c0 = classify(x0)
    groups = {f"z{i + 1}": (i,) for i in reversed(range(L))} | {"all": tuple(range(L))}
    rows: dict[str, dict[str, float]] = {}
    for name, layers in groups.items():
        if reading == "swap":
            x = hierarchy.swap_grid(model, layers, state=ctx, donors=donors)
        else:
            x = hierarchy.resample_grid(model, layers, n_resamples=n_changes, state=ctx, generator=g)
        bg, st = estimate_colours(x)
        changed = classify(x).view(n_contexts, n_changes) != c0[:, None]
        rows[name] = {
            "background colour change": float((bg.view(n_contexts, n_changes, 3) - bg0[:, None]).norm(dim=-1).mean()),
            "stroke colour change": float((st.view(n_contexts, n_changes, 3) - st0[:, None]).norm(dim=-1).mean()),
            "digit change (%)": 100 * float(changed.float().mean()),
        }
    pv = hierarchy.resample_stats(model, {k: v for k, v in groups.items() if k != "all"}, n_contexts=n_contexts,
                                  n_resamples=n_changes, generator=torch.Generator().manual_seed(seed),
                                  reading=reading)
    for name in rows:
        rows[name]["share of pixel variance"] = float(pv[name]["pixel_var_frac"])
    return rows


@torch.no_grad()
def digit_agreement(classify: Classify, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Share of images ``x`` (B, C, H, W) that ``classify`` names as ``y`` (B,), e.g. reconstructions read
    against the true digits: 1 when the model keeps every digit legible, 0.1 for blobs (chance)."""
    hits = sum(int((classify(x[i:i + batch_size]) == y[i:i + batch_size].to(x.device)).sum())
               for i in range(0, len(x), batch_size))
    return hits / max(len(x), 1)
