"""Hierarchical sampling and per-layer diagnostics, for both kinds of multi-layer model.

Two kinds of hierarchy appear in the book:

* the **conditional** Gaussian hierarchy (LVAE / BIVA, :class:`~jebm_lite.training.learners.ConditionalLearner`),
  sampled top-down with explicit noise, ``z_L = eps_L``, ``z_i = mu_i(z_{i+1}) + sigma_i(z_{i+1}) eps_i``;
  its *state* is the list of noises ``eps`` (bottom to top). Redrawing ``eps_i`` changes ``z_i`` and every
  layer below it (paper Fig. 1, Zhao et al. 2017 Fig. 3). With ``model.topdown="deterministic"`` (the BIVA /
  LVAE code's top-down state d_i) mu_i, sigma_i are functions of d_{i+1} and the decoder reads every layer
  through d_1; the state and the functions here are the same;
* the **architectural** hierarchy (VLAE, joint EBM prior, :class:`~jebm_lite.training.learners.HierarchicalLearner`),
  ``h_L = g_L(z_L)``, ``h_i = g_i([z_i, h_{i+1}])`` (paper Eq. 5); its *state* is the list of codes ``zs``.
  Redrawing ``z_i`` changes only what g reads from layer i. With an N(0, I) prior (VLAE) the new code is an
  exact N(0, I) draw; with a joint EBM prior it is a short-run Langevin sample of the conditional
  p_alpha(z_S | z_{-S}) started from N(0, I) (paper Sec. 5.1: "sampling the latent code of one layer while
  keeping other layers fixed").

The CVPR 2023 joint prior on the conditional hierarchy (:class:`~jebm_lite.training.learners.CondJointLearner`, per-layer
energies ``learner.energies``) keeps the conditional kind's state, the eps list, but its samples and redraws
are short-run Langevin chains in eps-space (:mod:`jebm_lite.models.cond_ebm`): the prior of the state is
``p(eps) ∝ exp(sum_i f_i(T(eps)_i)) N(eps; 0, I)``, not N(0, I). :func:`conditional_resample_stats` measures the
poster's hierarchical sampling on either conditional learner.

Every function takes the learner and works on either kind. Layer lists are ordered bottom to top; layer
indices are code indices (0 = z_1, the bottom layer). Images are in [-1, 1]; pixel variances are reported on
the [0, 1] scale (the scale of :func:`jebm_lite.analysis.metrics.reconstruction_mse`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from jebm_lite.analysis.metrics import count_label_changes
from jebm_lite.analysis.viz import unit_sweep_codes
from jebm_lite.models.cond_ebm import resample_layers_eps, sample_prior_eps
from jebm_lite.training.learner import ConditionalHierarchyModel, LayeredModel

__all__ = [
    "is_conditional",
    "n_layers",
    "layer_groups",
    "sample_state",
    "resample_layers",
    "decode_state",
    "resample_grid",
    "swap_grid",
    "layer_grids",
    "resample_stats",
    "layer_sweep",
    "sweep_class_changes",
    "unit_sweep_stats",
    "bottom_layer_gibbs",
    "conditional_resample_stats",
]


# ----------------------------------------------------------------------------------------------
# Which kind of model, and its state
# ----------------------------------------------------------------------------------------------


def _layered(learner: nn.Module) -> LayeredModel:
    if not isinstance(learner, LayeredModel):
        raise TypeError(f"{type(learner).__name__} has no layered state (the LayeredModel protocol of "
                        "jebm_lite.training.learner): hierarchical sampling needs a multi-layer learner")
    return learner


def _conditional(learner: nn.Module, what: str) -> ConditionalHierarchyModel:
    if not isinstance(learner, ConditionalHierarchyModel):
        raise TypeError(f"{what} needs a conditional hierarchy (the ConditionalHierarchyModel protocol of "
                        "jebm_lite.training.learner: ConditionalLearner, CondJointLearner); use resample_stats "
                        "for the architectural hierarchy")
    return learner


def is_conditional(learner: nn.Module) -> bool:
    """True for a conditional Gaussian hierarchy (its state is the top-down noises eps)."""
    return getattr(learner, "state_kind", None) == "eps"


def n_layers(learner: nn.Module) -> int:
    """Number of latent layers L."""
    return len(learner.z_dims)


def _device(learner: nn.Module) -> torch.device:
    return next(learner.parameters()).device


def layer_groups(L: int, n_groups: int = 3, names: Sequence[str] = ("bottom", "middle", "top")) -> dict[str, tuple[int, ...]]:
    """Split code indices ``0 .. L-1`` into ``n_groups`` contiguous groups, bottom to top.

    For L = 6 and 3 groups this is the paper's Fig. 1: ``{"bottom": (0, 1), "middle": (2, 3), "top": (4, 5)}``
    (eps_1, eps_2 / eps_3, eps_4 / eps_5, eps_6). Earlier groups get the extra layer when L is not a multiple.
    With ``n_groups == L`` every layer is its own group.
    """
    if not 1 <= n_groups <= L:
        raise ValueError(f"n_groups must be in 1 .. {L}, got {n_groups}")
    if len(names) < n_groups:
        names = [f"group {k + 1}" for k in range(n_groups)]
    size, extra = divmod(L, n_groups)
    out, start = {}, 0
    for k in range(n_groups):
        stop = start + size + (1 if k < extra else 0)
        out[names[k]] = tuple(range(start, stop))
        start = stop
    return out


@torch.no_grad()
def sample_state(learner: nn.Module, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
    """``n`` fresh samples of the model's state, a per-layer list ``[(n, d_i)]`` bottom to top
    (:meth:`LayeredModel.sample_state`).

    Conditional hierarchy: the noises ``eps_i ~ N(0, I)``; with per-layer energies (``cond_joint``) the
    eps-space prior Langevin of the learner's config from those draws. VLAE: ``z ~ N(0, I)``. Joint EBM prior:
    the prior Langevin of the learner's config (paper Eq. 14) from N(0, I) draws.
    """
    return _layered(learner).sample_state(n, generator)


@torch.no_grad()
def resample_layers(
    learner: nn.Module, state: Sequence[Tensor], layers: Sequence[int], generator: torch.Generator | None = None
) -> list[Tensor]:
    """A copy of ``state`` with the layers ``layers`` redrawn and every other layer kept
    (:meth:`LayeredModel.resample_layers`; negative indices count from the top).

    Conditional hierarchy: new ``eps_i ~ N(0, I)`` for ``i`` in ``layers`` (the reparameterised top-down
    sampler then changes z_i and every z below it); with per-layer energies (``cond_joint``) followed by
    eps-space Langevin on those eps (:func:`~jebm_lite.models.cond_ebm.resample_layers_eps`). VLAE: new
    ``z_i ~ N(0, I)``. Joint EBM prior: new z_S by Langevin on p_alpha(z_S | z_{-S}) from N(0, I) (the
    learner's ``prior_langevin`` settings).
    """
    state = [s.detach() for s in state]
    layers = tuple(range(len(state))[i] for i in layers)
    return _layered(learner).resample_layers(state, layers, generator)


@torch.no_grad()
def decode_state(learner: nn.Module, state: Sequence[Tensor]) -> Tensor:
    """Mean images ``(B, C, H, W)`` in [-1, 1] of a state (eps list or z list; :meth:`LayeredModel.decode_state`).

    Conditional hierarchy: z_L = eps_L, z_i = mu_i + sigma_i eps_i, then the decoder mean of p(x | z_1).
    Architectural hierarchy: g(z) (paper Eq. 5).
    """
    return _layered(learner).decode_state(list(state))


# ----------------------------------------------------------------------------------------------
# Hierarchical sampling: grids and the variance each layer controls
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def resample_grid(
    learner: nn.Module,
    layers: Sequence[int],
    n_contexts: int = 6,
    n_resamples: int = 8,
    state: Sequence[Tensor] | None = None,
    generator: torch.Generator | None = None,
    include_context: bool = False,
) -> Tensor:
    """Hierarchical samples: for each of ``n_contexts`` fixed states, ``n_resamples`` images with ``layers`` redrawn.

    Args:
        learner: a conditional or architectural hierarchy.
        layers: code indices to redraw (e.g. ``(0, 1)`` for eps_1, eps_2).
        n_contexts: number of fixed states (rows); ignored when ``state`` is given.
        n_resamples: images per row.
        state: the fixed states ``[(n_contexts, d_i)]`` (default: :func:`sample_state`). Pass the same state
            to several calls to compare layers on the same rows.
        generator: torch RNG.
        include_context: put the context's own (unchanged) image in front of its redraws, so that each
            row has ``n_resamples + 1`` images.

    Returns:
        ``(n_contexts * n_resamples, C, H, W)``: row r, column c is context r with its c-th redraw (rows
        first, ready for ``viz.show_grid(x, nrow=n_resamples)``; ``nrow=n_resamples + 1`` with
        ``include_context``).
    """
    if state is None:
        state = sample_state(learner, n_contexts, generator)
    state = list(state)
    B = state[0].shape[0]
    rep = [s.repeat_interleave(n_resamples, dim=0) for s in state]
    new = resample_layers(learner, rep, layers, generator)
    x = decode_state(learner, new).reshape(B, n_resamples, *learner_image_shape(learner))
    if include_context:
        x = torch.cat([decode_state(learner, state)[:, None], x], dim=1)
    return x.reshape(-1, *x.shape[2:])


@torch.no_grad()
def swap_grid(
    learner: nn.Module,
    layers: Sequence[int],
    n_contexts: int = 6,
    n_donors: int = 8,
    state: Sequence[Tensor] | None = None,
    donors: Sequence[Tensor] | None = None,
    generator: torch.Generator | None = None,
    include_context: bool = False,
) -> Tensor:
    """Hierarchical samples, reading (a) of paper Fig. 4 (as the reference code draws them): **swap** codes.

    ``n_contexts + n_donors`` joint prior samples are drawn (:func:`sample_state`); row r keeps every layer of
    context r except ``layers``, whose codes are copied from donor c in column c. No new Langevin is run:
    each swapped code is a sample of the *marginal* p(z_S), pasted next to codes it was not sampled with.
    Reading (b), :func:`resample_grid`, instead redraws z_S from the *conditional* p(z_S | z_-S).

    Returns:
        ``(n_contexts * n_donors, C, H, W)`` rows first (``viz.show_grid(x, nrow=n_donors)``; ``n_donors + 1``
        with ``include_context``). Columns share a donor, so a column shows what one donor's z_S does in
        every context.
    """
    if state is None:
        state = sample_state(learner, n_contexts, generator)
    if donors is None:
        donors = sample_state(learner, n_donors, generator)
    state, donors = list(state), list(donors)
    B, D = state[0].shape[0], donors[0].shape[0]
    layers = tuple(range(len(state))[i] for i in layers)
    new = [s.repeat_interleave(D, dim=0) for s in state]
    for i in layers:
        new[i] = donors[i].repeat(B, 1)
    x = decode_state(learner, new).reshape(B, D, *learner_image_shape(learner))
    if include_context:
        x = torch.cat([decode_state(learner, state)[:, None], x], dim=1)
    return x.reshape(-1, *x.shape[2:])


@torch.no_grad()
def layer_grids(
    learner: nn.Module,
    reading: str = "resample",
    n_contexts: int = 4,
    n_resamples: int = 6,
    generator: torch.Generator | None = None,
    state: Sequence[Tensor] | None = None,
    donors: Sequence[Tensor] | None = None,
) -> dict[int, Tensor]:
    """Paper Fig. 4 for every layer of an architectural hierarchy, on the same contexts: layer index ->
    :func:`resample_grid` (``reading="resample"``: z_i redrawn from its conditional) or :func:`swap_grid`
    (``"swap"``: z_i copied from ``n_resamples`` donor samples, the same donors for every layer), each row
    starting with the context's own image (``include_context``), so ``nrow = n_resamples + 1``.

    ``state`` / ``donors`` default to fresh :func:`sample_state` draws from ``generator``.
    """
    if reading not in ("resample", "swap"):
        raise ValueError(f"reading must be 'resample' or 'swap', not {reading!r}")
    if state is None:
        state = sample_state(learner, n_contexts, generator)
    if reading == "swap" and donors is None:
        donors = sample_state(learner, n_resamples, generator)
    out = {}
    for i in range(len(state)):
        if reading == "swap":
            out[i] = swap_grid(learner, (i,), state=state, donors=donors, include_context=True)
        else:
            out[i] = resample_grid(learner, (i,), n_resamples=n_resamples, state=state, generator=generator,
                                   include_context=True)
    return out


def learner_image_shape(learner: nn.Module) -> tuple[int, int, int]:
    """``(C, H, W)`` of the learner's images."""
    return tuple(_layered(learner).image_shape)


STAT_HEADERS: dict[str, str] = {
    "pixel_var": "pixel variance",
    "pixel_var_frac": "share of the variance of all",
    "class_change": "share of redraws that change the digit",
}
"""Reader's column names for the keys of :func:`resample_stats` (for ``tables.frame_table``)."""


@torch.no_grad()
def resample_stats(
    learner: nn.Module,
    groups: Mapping[str, Sequence[int]],
    n_contexts: int = 64,
    n_resamples: int = 16,
    classifier: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    batch_contexts: int = 32,
    reading: str = "resample",
) -> dict[str, dict[str, float]]:
    """How much of the image each group of layers controls, measured by redrawing it with the rest fixed.

    For every fixed state s (``n_contexts`` of them) and every group S, ``n_resamples`` images
    ``x_k = mean image of resample_layers(s, S)`` are decoded. Reported per group:

    * ``pixel_var``: the per-pixel variance over the redraws, averaged over pixels and contexts,
      ``E_s mean_pixels Var_k[x_k]`` on the [0, 1] scale (0 when the group does not change the image);
    * ``pixel_var_frac``: ``pixel_var`` divided by that of redrawing **all** layers (the total variance of
      the model's samples), so 1 means "this group alone explains all the variation";
    * ``class_change`` (only with ``classifier``): the fraction of redraws whose predicted class differs
      from the prediction on the context's own image (the unchanged state) -- a semantic measure.

    An extra entry ``"all"`` holds the same numbers for redrawing every layer.

    ``reading="swap"`` replaces the redraw by reading (a) of paper Fig. 4 (:func:`swap_grid`): the group's
    codes are copied from ``n_resamples`` other joint prior samples instead of being redrawn from the
    conditional (only for architectural hierarchies).

    Args:
        learner: a conditional or architectural hierarchy.
        groups: name -> code indices, e.g. :func:`layer_groups`.
        classifier: ``images (B, C, H, W) in [-1, 1] -> logits (B, K)``, e.g. a digit classifier.
        batch_contexts: contexts decoded per chunk (memory).

    Returns:
        ``{group: {"pixel_var", "pixel_var_frac"[, "class_change"]}}`` plus ``"all"``.
    """
    if reading not in ("resample", "swap"):
        raise ValueError(f"reading must be 'resample' or 'swap', got {reading!r}")
    if reading == "swap" and is_conditional(learner):
        raise ValueError("reading='swap' needs an architectural hierarchy (VLAE / joint prior), not a conditional one")
    groups = dict(groups)
    groups_all = {**groups, "all": tuple(range(n_layers(learner)))}
    sums = {g: {"pixel_var": 0.0, "class_change": 0.0} for g in groups_all}
    done = 0
    while done < n_contexts:
        b = min(batch_contexts, n_contexts - done)
        state = sample_state(learner, b, generator)
        base_cls = classifier(decode_state(learner, state)).argmax(1) if classifier is not None else None
        for g, layers in groups_all.items():
            if reading == "swap":
                x = swap_grid(learner, layers, n_donors=n_resamples, state=state, generator=generator)
            else:
                x = resample_grid(learner, layers, n_resamples=n_resamples, state=state, generator=generator)
            x01 = ((x.float() + 1) / 2).reshape(b, n_resamples, -1)
            sums[g]["pixel_var"] += float(x01.var(dim=1, unbiased=True).mean(dim=1).sum())
            if classifier is not None:
                cls = classifier(x).argmax(1).reshape(b, n_resamples)
                sums[g]["class_change"] += float((cls != base_cls[:, None]).float().mean(dim=1).sum())
        done += b
    total = sums["all"]["pixel_var"] / n_contexts
    out: dict[str, dict[str, float]] = {}
    for g in groups_all:
        pv = sums[g]["pixel_var"] / n_contexts
        row = {"pixel_var": pv, "pixel_var_frac": pv / total if total > 0 else float("nan")}
        if classifier is not None:
            row["class_change"] = sums[g]["class_change"] / n_contexts
        out[g] = row
    return out


# ----------------------------------------------------------------------------------------------
# Latent manifolds of one layer (2-D layers, VLAE Fig. 5)
# ----------------------------------------------------------------------------------------------


def _sweep_codes(lim: float, n: int, device: torch.device) -> Tensor:
    a = torch.linspace(-lim, lim, n, device=device)
    # row r (top to bottom) has the 2nd coordinate going from +lim down to -lim, column c the 1st from -lim
    # to +lim: the image grid reads like a plot with the usual axes.
    u2, u1 = torch.meshgrid(a.flip(0), a, indexing="ij")
    return torch.stack([u1.reshape(-1), u2.reshape(-1)], dim=1)


@torch.no_grad()
def layer_sweep(
    learner: nn.Module, state: Sequence[Tensor], layer: int, lim: float = 2.0, n: int = 8
) -> Tensor:
    """The 2-D manifold of one layer: decode an ``n x n`` grid over ``[-lim, lim]^2`` for ``layer``, others fixed.

    ``state``: one state (``[(1, d_i)]``; the first row of a larger state is used). For an architectural
    hierarchy the grid is the code z_layer itself; for a conditional hierarchy it is eps_layer. The layer
    must be 2-dimensional. Row r / column c of the returned grid has code
    ``(-lim + 2 lim c / (n-1), lim - 2 lim r / (n-1))`` (first coordinate left to right, second bottom to top).

    Returns:
        ``(n * n, C, H, W)`` images, rows first (``viz.show_grid(x, nrow=n)``).
    """
    state = [s[:1].detach() for s in state]
    layer = range(len(state))[layer]
    if state[layer].shape[1] != 2:
        raise ValueError(f"layer {layer} has {state[layer].shape[1]} dimensions; a manifold sweep needs 2")
    codes = _sweep_codes(lim, n, state[0].device)
    new = [s.expand(n * n, -1).clone() for s in state]
    new[layer] = codes
    return decode_state(learner, new)


@torch.no_grad()
def sweep_class_changes(
    learner: nn.Module,
    classifier: Callable[[Tensor], Tensor],
    layers: Sequence[int] | None = None,
    n_contexts: int = 32,
    lim: float = 2.0,
    n: int = 8,
    generator: torch.Generator | None = None,
) -> dict[int, dict[str, float]]:
    """What stays mixed along each layer's manifold: digit identity changes over a :func:`layer_sweep`.

    For ``n_contexts`` random states and each layer, the ``n x n`` sweep is classified. Reported per layer:
    ``distinct`` (mean number of distinct predicted classes on one sweep) and ``changed`` (mean fraction of
    the sweep whose class differs from the class of the context's own image). A layer that holds digit
    identity has many classes along its sweep; a "style" layer keeps one.

    Returns:
        ``{layer: {"distinct": float, "changed": float}}``.
    """
    L = n_layers(learner)
    layers = tuple(range(L)) if layers is None else tuple(range(L)[i] for i in layers)
    states = sample_state(learner, n_contexts, generator)
    base = classifier(decode_state(learner, states)).argmax(1)
    out = {}
    for layer in layers:
        distinct, changed = 0.0, 0.0
        for k in range(n_contexts):
            x = layer_sweep(learner, [s[k:k + 1] for s in states], layer, lim=lim, n=n)
            cls = classifier(x).argmax(1)
            distinct += float(cls.unique().numel())
            changed += float((cls != base[k]).float().mean())
        out[layer] = {"distinct": distinct / n_contexts, "changed": changed / n_contexts}
    return out


@torch.no_grad()
def unit_sweep_stats(
    learner: nn.Module,
    bases: Sequence[Tensor],
    classifier: Callable[[Tensor], Tensor],
    layer: int,
    unit: int,
    values: Tensor,
) -> dict[str, float]:
    """Paper Figs. 2 and 6, measured: sweep **one latent unit** from many base codes, classify every image.

    For each base state ``[(R, d_i)]`` (e.g. posterior means of R held-out digits), unit ``unit`` of layer
    ``layer`` is set to each of ``values`` (``(C,)``), every other unit of every layer is kept, and the ``R x C``
    images are classified. Reported:

    * ``changed``: fraction of sweeps along which the predicted class changes at least once;
    * ``changes``: mean number of class changes between neighbouring images per sweep
      (:func:`~jebm_lite.analysis.metrics.count_label_changes`);
    * ``distinct``: mean number of distinct classes per sweep;
    * ``pix_same``: mean absolute pixel change ([0, 1] scale) between neighbours of the **same** class --
      the non-class ("style": stroke, slant, width) variation the unit carries.

    A unit that holds identity has ``changed`` near 1; a style unit has ``changed`` near 0 and
    ``pix_same`` > 0. Works for any learner with ``decode(list of per-layer codes)``.
    """
    bases = [b.detach() for b in bases]
    R, C = bases[0].shape[0], values.numel()
    layer = range(len(bases))[layer]

    codes = [b.repeat_interleave(C, dim=0) for b in bases]
    codes[layer] = unit_sweep_codes(bases[layer], unit, values.to(bases[layer].device))
    imgs = decode_state(learner, codes)
    labels = classifier(imgs).argmax(1).reshape(R, C)
    changes = count_label_changes(labels).float()
    distinct = torch.tensor([float(row.unique().numel()) for row in labels])
    x01 = ((imgs.float() + 1) / 2).reshape(R, C, -1)
    step = (x01[:, 1:] - x01[:, :-1]).abs().mean(dim=2)
    same = labels[:, 1:] == labels[:, :-1]
    pix_same = float(step[same].mean()) if bool(same.any()) else float("nan")
    return {"changed": float((changes > 0).float().mean()), "changes": float(changes.mean()),
            "distinct": float(distinct.mean()), "pix_same": pix_same}


# ----------------------------------------------------------------------------------------------
# Zhao et al. (2017), Proposition 1: a Gibbs chain on the bottom layer alone
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def bottom_layer_gibbs(
    learner: nn.Module, x0: Tensor, steps: int, sample_x: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """The Gibbs chain of Zhao et al. (2017, Prop. 1) that uses **only the bottom layer** of a conditional hierarchy.

    ``z_1^(t) ~ q(z_1 | x^(t))`` (a posterior draw of the whole hierarchy, of which only z_1 is kept), then
    ``x^(t+1) ~ p(x | z_1^(t))``. If the ELBO were optimal (q(z|x) = p(z|x), p(x) = p_data), this chain would
    have p_data as its stationary distribution: the layers above z_1 would not be needed to generate data.
    With ``model.topdown="deterministic"`` p(x | z) reads every layer (through the top-down state d_1), so the
    chain is the ordinary "posterior draw, then decode" chain of the whole hierarchy, not a bottom-layer one.

    Args:
        learner: a conditional hierarchy (:class:`~jebm_lite.training.learners.ConditionalLearner`).
        x0: starting images ``(B, C, H, W)`` in [-1, 1].
        steps: number of Gibbs sweeps T.
        sample_x: draw ``x^(t+1)`` from p(x | z_1) (Bernoulli pixels mapped to {-1, 1}, or Gaussian noise of the
            model's sigma); ``False`` feeds the decoder mean back instead.
        generator: torch RNG for the pixel draws (the posterior draws use the global RNG).

    Returns:
        ``(T + 1, B, C, H, W)``: ``x0``, then the decoder means ``E[x | z_1^(t)]`` of every sweep (what one
        would display; the chain itself continues from the sampled images when ``sample_x``).
    """
    model = _conditional(learner, "bottom_layer_gibbs").model
    x = x0
    out = [x0]
    for _ in range(steps):
        zs, _ = model.posterior(x)
        mean = model.decode(zs)  # markov: reads z_1 only; deterministic: every layer (p(x | z) via d_1)
        out.append(mean)
        if not sample_x:
            x = mean
        elif model.likelihood == "bernoulli":
            p = (mean + 1) / 2
            u = torch.rand(p.shape, device=p.device, generator=generator)
            x = (u < p).float() * 2 - 1
        else:
            x = mean + model.sigma * torch.randn(mean.shape, device=mean.device, generator=generator)
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------
# The CVPR 2023 poster's hierarchical sampling, measured (conditional hierarchies)
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def conditional_resample_stats(
    learner: nn.Module,
    classifier: Callable[[Tensor], Tensor],
    n: int = 256,
    steps: int | None = None,
    seed: int = 0,
    batch: int = 256,
) -> list[dict[str, float]]:
    """What each layer of a conditional hierarchy controls: redraw its eps, decode, classify (CVPR 2023 poster).

    ``n`` prior states are drawn: exact ``eps ~ N(0, I)`` for a ``ConditionalLearner``; eps-space prior
    Langevin (:func:`~jebm_lite.models.cond_ebm.sample_prior_eps`, ``steps`` or ``cfg.prior_langevin.steps``)
    for a ``CondJointLearner``. For each layer k (code index, 0 = z_1) two redraws are decoded
    (:func:`~jebm_lite.models.cond_ebm.resample_layers_eps`, the same ``steps``; exact for f = 0):

    * layer k's eps alone, the layers above and below held (as :func:`resample_stats`);
    * every layer <= k, the layers above held: the poster's reading ("latent vectors are sampled from the
      bottom layers to the top layers"); for the top layer it redraws everything.

    Args:
        learner: ``ConditionalLearner`` or ``CondJointLearner``.
        classifier: ``images (B, C, H, W) in [-1, 1] -> logits (B, K)``, e.g. a digit classifier.
        n: number of prior states.
        steps: Langevin steps of the prior draws and redraws (``cond_joint`` only).
        seed: seeds one ``torch.Generator`` for every draw and the Langevin noise.
        batch: states per chunk.

    Returns:
        one dict per layer, bottom to top: ``layer`` (1-based, as z_1 .. z_L), ``class_change`` /
        ``pixel_dist`` (redrawing layer k alone) and ``class_change_upto`` / ``pixel_dist_upto`` (layers
        1..k): the share of samples whose predicted class (argmax) differs from that of the original sample,
        and the mean absolute pixel difference to it on the [0, 1] scale.
    """
    cond = _conditional(learner, "conditional_resample_stats")
    model, energies = cond.model, cond.energies  # the hierarchy itself; the CVPR 2023 per-layer energies or None
    lc = cond.prior_langevin
    steps = int(steps) if steps is not None else lc.steps
    step_size, noise = lc.step_size, lc.noise
    gen = torch.Generator(device=_device(learner)).manual_seed(seed)
    L = n_layers(learner)
    sums = {k: [0.0, 0.0, 0.0, 0.0] for k in range(L)}
    done = 0
    while done < n:
        b = min(batch, n - done)
        zs, eps, _ = sample_prior_eps(model, energies, b, steps, step_size, noise=noise, generator=gen)
        x0 = model.decode(zs)
        c0 = classifier(x0).argmax(1)
        for k in range(L):
            for j, layers in enumerate(((k,), tuple(range(k + 1)))):
                new_zs, _ = resample_layers_eps(model, energies, eps, layers, steps, step_size, noise=noise,
                                                generator=gen)
                x = model.decode(new_zs)
                sums[k][2 * j] += float((classifier(x).argmax(1) != c0).float().sum())
                sums[k][2 * j + 1] += float(((x - x0).abs() / 2).flatten(1).mean(1).sum())
        done += b
    return [{"layer": k + 1, "class_change": sums[k][0] / n, "pixel_dist": sums[k][1] / n,
             "class_change_upto": sums[k][2] / n, "pixel_dist_upto": sums[k][3] / n} for k in range(L)]
