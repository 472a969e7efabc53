"""Disentanglement scores (paper App. Tab. 8) and latent traversals (paper Fig. 11).

The paper compares MIG (Chen et al. 2018; bib key ``chen2018isolating``) and MIG-sup (Li et al. 2020;
``li2020provlae``) of its joint-EBM-prior model with pro-VLAE on 3D Shapes. With codes
``z_j`` (j = 1..J, all latent units of all layers) and ground-truth factors ``v_k`` (k = 1..K):

* **normalised mutual information** ``I~(z_j; v_k) = I(z_j; v_k) / H(v_k)`` (in [0, 1]);
* **MIG** (Chen et al. 2018, their definition of the mutual information gap), per factor the gap between the two most informative *latents*::

      MIG = 1/K sum_k [ I~(z_{j(k)}; v_k) - max_{j != j(k)} I~(z_j; v_k) ],   j(k) = argmax_j I(z_j; v_k)

  high when every factor is captured by one latent unit only (it does not penalise one unit capturing
  several factors);
* **MIG-sup** (Li et al. 2020, their supplementary MIG), per latent unit the gap between the two factors it is most
  informative about::

      MIG-sup = 1/J sum_j [ I~(z_j; v_{k(j)}) - max_{k != k(j)} I~(z_j; v_k) ],   k(j) = argmax_k I~(z_j; v_k)

  high when every latent unit captures one factor only.

Estimation here: every code dimension is discretised into ``n_bins`` equal-width bins over its range
(the "histogram" estimator of Locatello et al. 2019's disentanglement_lib) and ``I`` is the plug-in
estimate of :func:`sklearn.metrics.mutual_info_score` (nats); ``H(v_k)`` is the empirical factor entropy.
Chen et al. and the pro-VLAE code (the source of Tab. 8's baseline numbers) instead estimate ``I`` from
``q(z|x)`` by sampling, normalise by ``log K_k`` (uniform factors: the same thing), clamp negative
estimates at 0 and average MIG-sup over *active* units only (``Var_x E_q[z_j] > 0.01``:
``active_threshold=0.01`` below). Scores from the two estimators are close but not identical, so compare
our numbers with each other, not digit-for-digit with Tab. 8.

Shapes: ``codes`` is ``(N, J)`` or a list of per-layer ``(N, d_i)`` (bottom to top, concatenated);
``factors`` is ``(N, K)`` integer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from jebm_lite.training.learner import LayeredModel, LayerwisePosterior

ArrayLike = Tensor | np.ndarray | Sequence[Tensor] | Sequence[np.ndarray]


def _codes_array(codes: ArrayLike) -> np.ndarray:
    """(N, J) float64 from a tensor / array or a list of per-layer ones (concatenated along dim 1)."""
    if isinstance(codes, (list, tuple)):
        parts = [_codes_array(c) for c in codes]
        return np.concatenate(parts, axis=1)
    if isinstance(codes, Tensor):
        codes = codes.detach().float().cpu().numpy()
    a = np.asarray(codes, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"codes must be (N, J), got shape {a.shape}")
    return a


def _factors_array(factors: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(factors, Tensor):
        factors = factors.detach().cpu().numpy()
    f = np.asarray(factors)
    if f.ndim == 1:
        f = f[:, None]
    if f.ndim != 2:
        raise ValueError(f"factors must be (N, K), got shape {f.shape}")
    return f.astype(np.int64)


def discretize(codes: ArrayLike, n_bins: int = 20) -> np.ndarray:
    """Equal-width histogram bins per code dimension: ``(N, J)`` floats -> ``(N, J)`` ints in [0, n_bins).

    A constant dimension maps to bin 0 (it then carries no information).
    """
    z = _codes_array(codes)
    lo, hi = z.min(0), z.max(0)
    width = np.where(hi > lo, hi - lo, 1.0)
    b = np.floor((z - lo) / width * n_bins).astype(np.int64)
    return np.clip(b, 0, n_bins - 1)


def _codes_of(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer labels (N,) -> dense codes 0..m-1 and m."""
    uniq, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(-1), len(uniq)


def _mi(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in ``I(a; b)`` in nats of two integer label vectors, by :func:`sklearn.metrics.mutual_info_score`
    on their contingency table (built with ``np.bincount``: the same number, much faster)."""
    # imported on use: a heavy import (~0.9 s)
    from sklearn.metrics import mutual_info_score

    ia, na = _codes_of(a)
    ib, nb = _codes_of(b)
    table = np.bincount(ia * nb + ib, minlength=na * nb).reshape(na, nb)
    return float(mutual_info_score(None, None, contingency=table))


def factor_entropies(factors: Tensor | np.ndarray) -> np.ndarray:
    """Empirical entropies ``H(v_k) = I(v_k; v_k)`` in nats, ``(K,)``."""
    f = _factors_array(factors)
    return np.array([_mi(f[:, k], f[:, k]) for k in range(f.shape[1])])


def mutual_info_matrix(codes: ArrayLike, factors: Tensor | np.ndarray, n_bins: int = 20,
                       normalize: bool = False) -> np.ndarray:
    """``I(z_j; v_k)`` in nats for every code dimension j and factor k: ``(J, K)``.

    Codes are discretised with :func:`discretize`, ``I`` is :func:`sklearn.metrics.mutual_info_score`.
    ``normalize=True`` divides column k by ``H(v_k)`` (as in Chen et al. 2018); a constant factor
    (``H = 0``) gets a column of zeros.
    """
    zb = discretize(codes, n_bins)
    f = _factors_array(factors)
    if zb.shape[0] != f.shape[0]:
        raise ValueError(f"codes have {zb.shape[0]} rows, factors {f.shape[0]}")
    mi = np.array([[_mi(f[:, k], zb[:, j]) for k in range(f.shape[1])] for j in range(zb.shape[1])])
    mi = mi.reshape(zb.shape[1], f.shape[1])
    if normalize:
        h = factor_entropies(f)
        mi = np.where(h[None] > 0, mi / np.where(h > 0, h, 1.0)[None], 0.0)
    return mi


def _top_gap(m: np.ndarray, axis: int) -> np.ndarray:
    """Largest minus second largest entry along ``axis`` (the second counts as 0 if there is none)."""
    s = -np.sort(-m, axis=axis)
    first = np.take(s, 0, axis=axis)
    second = np.take(s, 1, axis=axis) if m.shape[axis] > 1 else np.zeros_like(first)
    return first - second


def mig(codes: ArrayLike, factors: Tensor | np.ndarray, n_bins: int = 20) -> float:
    """Mutual Information Gap (Chen et al. 2018), in [0, 1]; see the module docstring.

    Averaged over the factors that vary (``H(v_k) > 0``); negative MI estimates are
    clamped at 0. """
    f = _factors_array(factors)
    mi = np.clip(mutual_info_matrix(codes, f, n_bins, normalize=True), 0, None)
    varying = factor_entropies(f) > 0
    if not varying.any():
        raise ValueError("every factor is constant: MIG is undefined")
    return float(_top_gap(mi[:, varying], axis=0).mean())


def mig_sup(codes: ArrayLike, factors: Tensor | np.ndarray, n_bins: int = 20,
            active_threshold: float | None = None) -> float:
    """MIG-sup (Li et al. 2020), in [0, 1]: the per-latent-unit gap between its top two factors.

    Args:
        codes, factors, n_bins: see the module docstring.
        active_threshold: average only over units whose code variance exceeds it (pro-VLAE's protocol
            uses 0.01 on posterior means); ``None`` averages over all J units.
    """
    z = _codes_array(codes)
    f = _factors_array(factors)
    mi = np.clip(mutual_info_matrix(z, f, n_bins, normalize=True), 0, None)
    gaps = _top_gap(mi, axis=1)
    if active_threshold is not None:
        active = z.var(0) > active_threshold
        if not active.any():
            return 0.0
        gaps = gaps[active]
    return float(gaps.mean())


@dataclass
class DisentanglementReport:
    """MI analysis of per-layer codes: which unit (and layer) captures which factor.

    ``mi_normalized (J, K)``: ``I~(z_j; v_k)``; ``layer_of_unit (J,)``: layer index (0 = bottom) of each
    unit; ``best_unit[k]`` / ``best_layer[k]``: the unit / layer most informative about factor k and
    ``best_score[k]`` its normalised MI; ``mig``, ``mig_sup``: the two scores.
    """

    factor_names: tuple[str, ...]
    mi_normalized: np.ndarray
    layer_of_unit: np.ndarray
    best_unit: np.ndarray
    best_layer: np.ndarray
    best_score: np.ndarray
    mig: float
    mig_sup: float

    def table(self) -> list[dict[str, object]]:
        """One row per factor: name, best layer (1-based, the paper's z_i), best unit, normalised MI."""
        return [
            {"factor": n, "layer": int(ly) + 1, "unit": int(u), "nmi": round(float(s), 3)}
            for n, ly, u, s in zip(self.factor_names, self.best_layer, self.best_unit, self.best_score)
        ]


def disentanglement_report(
    layer_codes: Sequence[Tensor] | Tensor,
    factors: Tensor | np.ndarray,
    factor_names: Sequence[str] | None = None,
    n_bins: int = 20,
    active_threshold: float | None = None,
) -> DisentanglementReport:
    """MIG, MIG-sup and the factor -> (layer, unit) assignment for codes ``[(N, d_i)]`` bottom to top.

    The paper's Fig. 11 reading ("shape, size, orientation in the top layer; colours below") is
    ``report.best_layer``.
    """
    layers = list(layer_codes) if isinstance(layer_codes, (list, tuple)) else [layer_codes]
    z = _codes_array(layers)
    f = _factors_array(factors)
    sizes = [_codes_array(c).shape[1] for c in layers]
    layer_of_unit = np.repeat(np.arange(len(sizes)), sizes)
    mi = np.clip(mutual_info_matrix(z, f, n_bins, normalize=True), 0, None)
    best = mi.argmax(0)
    names = tuple(factor_names) if factor_names is not None else tuple(f"v{k}" for k in range(f.shape[1]))
    varying = factor_entropies(f) > 0
    gaps_sup = _top_gap(mi, axis=1)
    if active_threshold is not None:
        gaps_sup = gaps_sup[z.var(0) > active_threshold] if (z.var(0) > active_threshold).any() else np.zeros(1)
    return DisentanglementReport(
        factor_names=names,
        mi_normalized=mi,
        layer_of_unit=layer_of_unit,
        best_unit=best,
        best_layer=layer_of_unit[best],
        best_score=mi[best, np.arange(mi.shape[1])],
        mig=float(_top_gap(mi[:, varying], axis=0).mean()),
        mig_sup=float(gaps_sup.mean()),
    )


# ----------------------------------------------------------------------------------------------
# Latent traversals (paper Fig. 11)
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def latent_traversal(
    learner,
    x: Tensor,
    layer: int,
    dim: int,
    values: Sequence[float] | Tensor,
    relative: bool = False,
) -> Tensor:
    """Decode ``x``'s codes with one latent unit swept: ``(B, V, C, H, W)`` images in [-1, 1].

    The codes of ``x: (B, C, H, W)`` are ``learner.encode(x)`` (posterior means, bottom to top); unit
    ``dim`` of layer ``layer`` (0 = z_1, bottom; -1 = top) is set to each of ``values`` (``relative``: the
    values are added to it) and the result is decoded with ``learner.decode``.

    For a conditional hierarchy (a :class:`~jebm_lite.training.learner.LayeredModel` whose state is the
    top-down noise, ``state_kind == "eps"``) the sweep is done on the whitened noise ``eps_i`` of the posterior
    means (``layer_codes(x, whiten=True)``, :class:`~jebm_lite.training.learner.LayerwisePosterior`), decoded
    with ``decode_state``, since a change of z_i with the layers below held fixed would not reach the image;
    layers below ``layer`` then follow their conditional means.
    """
    vals = torch.as_tensor(values, dtype=torch.float32, device=x.device).flatten()
    B, V = x.shape[0], vals.numel()
    on_eps = isinstance(learner, LayeredModel) and learner.state_kind == "eps"
    if on_eps:
        if not isinstance(learner, LayerwisePosterior):
            raise TypeError(f"{type(learner).__name__}: a traversal of the noise needs layer_codes(x, whiten=True)")
        codes = [c.detach() for c in learner.layer_codes(x, whiten=True)]
    else:
        codes = [c.detach() for c in learner.encode(x)]
    L = len(codes)
    if not -L <= layer < L:
        raise IndexError(f"layer {layer} out of range for {L} layers")
    d = codes[layer].shape[1]
    if not -d <= dim < d:
        raise IndexError(f"dim {dim} out of range for layer {layer} with {d} units")
    rep = [c.repeat_interleave(V, dim=0).clone() for c in codes]  # (B * V, d_i), row b * V + v
    sweep = vals.to(rep[layer].dtype).repeat(B)
    rep[layer][:, dim] = rep[layer][:, dim] + sweep if relative else sweep
    out = learner.decode_state(rep) if on_eps else learner.decode(rep)
    return out.float().reshape(B, V, *out.shape[1:])
