"""The joint EBM prior for a conditional-Gaussian hierarchy (Cui, Wu & Han, CVPR 2023; method ``cond_joint``).

Poster, "Joint Latent Space EBM Prior Model", with layers bottom (z_1, index 0) to top (z_L, index L-1)::

    p_{alpha,beta}(z) = exp(sum_i f_{alpha_i}(z_i)) prod_{i<L} p_beta(z_i | z_{i+1}) N(z_L; 0, I) / Z(alpha, beta)

* ``f_{alpha_i}`` is the *negative* energy of layer i, one :class:`~jebm_lite.models.ebm.EnergyMLP` per layer
  (:class:`LayerEnergies`); the per-layer values are **summed** (reference 5.1). Each f_i reads its own layer
  only ("intra-layer" relations); the inter-layer relations stay with the Gaussian hierarchy p_beta
  (:class:`~jebm_lite.models.conditional.ConditionalHierarchy`). This differs from the ICCV prior
  (:class:`~jebm_lite.models.ebm.JointEBMPrior`): one f on the concatenated layers over an N(0, I) base.
* :func:`log_prior_unnorm` is ``sum_i f_i(z_i) + log p_beta(z)`` = log p_{alpha,beta}(z) + log Z.

Prior sampling in the whitened eps-space
----------------------------------------

The hierarchy is sampled by ``z = T(eps)`` (``z_L = eps_L``, ``z_i = mu_i(z_{i+1}) + sigma_i(z_{i+1}) eps_i``,
:meth:`ConditionalHierarchy.top_down`), a bijection with ``p_beta(T(eps)) |det dT / d eps| = N(eps; 0, I)``.
By the change of variables the EBM prior in eps-space is::

    p(eps) ∝ exp(sum_i f_i(T(eps)_i)) N(eps; 0, I),     log p(eps) = sum_i f_i(T(eps)_i) - ||eps||^2 / 2 + const

and Langevin (the convention's ``eps <- eps + (s^2/2) grad log p(eps) + s noise``) runs on eps, started from
N(0, I); ``z = T(eps)`` is the sample. As in the CVPR two-stage code (NVAE, reference 5.2) and the ICML 2024
follow-up (u-space). Why: the sampler is **better conditioned**. In z-space the target's curvature along
z_i is about 1 / sigma_i^2, and the learned sigma_i spans 0.03 .. 2.7 (``LOGVAR_RANGE``), so a step size
stable for the tightest direction barely moves the widest one (a condition number up to ~1e4), and the
right s changes as sigma is learned. In eps-space the base part of the target is N(0, I) in every
direction whatever beta is, one s fits all layers, and with f = 0 the N(0, I) start is already an exact
sample (Langevin then only adds the O(s^2) ULA bias): the energies only tilt an exactly-sampled base.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from jebm_lite.models.conditional import ConditionalHierarchy
from jebm_lite.models.ebm import EnergyMLP
from jebm_lite.runtime import ConfigError
from jebm_lite.sampling import LangevinTrace, langevin

__all__ = ["LayerEnergies", "log_prior_unnorm", "eps_log_prob", "sample_prior_eps", "resample_layers_eps"]


class LayerEnergies(nn.Module):
    """Per-layer negative energies f_{alpha_i}(z_i) of the CVPR 2023 joint prior, one EnergyMLP per layer.

    Args:
        z_dims: latent sizes, bottom (z_1) to top (z_L).
        nef: hidden width of every f_i (> 0).
        layers: hidden layers of every f_i (>= 1).
        activation: ``lrelu`` | ``gelu`` | ``silu``.
        spectral_norm: spectral norm on every Linear (the reference hje code uses none).
    """

    def __init__(
        self,
        z_dims: Sequence[int],
        nef: int = 50,
        layers: int = 2,
        activation: str = "lrelu",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        self.z_dims: tuple[int, ...] = tuple(int(d) for d in z_dims)
        if not self.z_dims or any(d < 1 for d in self.z_dims):
            raise ConfigError(f"z_dims must be a non-empty tuple of positive sizes, got {tuple(z_dims)!r}")
        self.nets = nn.ModuleList(
            [EnergyMLP(d, nef=nef, layers=layers, activation=activation, spectral_norm=spectral_norm)
             for d in self.z_dims]
        )

    @classmethod
    def from_config(cls, z_dims: Sequence[int], ebm_cfg) -> LayerEnergies | None:
        """Build from an :class:`~jebm_lite.config.EBMConfig`; ``nef == 0`` gives ``None`` (f = 0)."""
        if ebm_cfg.nef == 0:
            return None
        return cls(z_dims, ebm_cfg.nef, ebm_cfg.layers, ebm_cfg.activation, ebm_cfg.spectral_norm)

    @property
    def n_layers(self) -> int:
        return len(self.z_dims)

    def f_layers(self, zs: Sequence[Tensor]) -> Tensor:
        """``[f_1(z_1), ..., f_L(z_L)]``: ``zs = [(B, z_dims[i])]`` bottom to top -> ``(B, L)``."""
        zs = list(zs)
        if len(zs) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} layers (bottom -> top), got {len(zs)}")
        return torch.stack([net(z) for net, z in zip(self.nets, zs)], dim=1)

    def f(self, zs: Sequence[Tensor]) -> Tensor:
        """sum_i f_i(z_i), the exponent of the poster's joint prior: ``[(B, z_dims[i])]`` -> ``(B,)``."""
        return self.f_layers(zs).sum(dim=1)

    def forward(self, zs: Sequence[Tensor]) -> Tensor:
        """Same as :meth:`f`."""
        return self.f(zs)


def _f(energies: LayerEnergies | None, zs: Sequence[Tensor]) -> Tensor:
    """sum_i f_i(z_i), or zeros ``(B,)`` without energies."""
    if energies is None:
        return zs[0].new_zeros(zs[0].shape[0])
    return energies.f(zs)


def log_prior_unnorm(
    model: ConditionalHierarchy, energies: LayerEnergies | None, zs: Sequence[Tensor]
) -> Tensor:
    """log p_{alpha,beta}(z) + log Z(alpha, beta) = sum_i f_i(z_i) + log p_beta(z)
    (poster's joint prior).

    ``zs``: ``[(B, z_dims[i])]`` bottom to top -> ``(B,)``. ``energies=None`` gives log
    p_beta(z) (f = 0). """
    return _f(energies, zs) + model.log_prior(zs)


def eps_log_prob(
    model: ConditionalHierarchy, energies: LayerEnergies | None, eps: Sequence[Tensor]
) -> Tensor:
    """The eps-space target ``log p(eps) = sum_i f_i(T(eps)_i) - ||eps||^2 / 2`` (+
    const; module docstring).

    ``eps``: ``[(B, z_dims[i])]`` bottom to top -> ``(B,)``; differentiable in ``eps``
    through T. """
    eps = list(eps)
    base = -0.5 * torch.cat([e.flatten(1) for e in eps], dim=1).pow(2).sum(dim=1)
    if energies is None:
        return base
    return energies.f(model.top_down(eps)) + base


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _split(u: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    return list(torch.split(u, list(sizes), dim=1))


def sample_prior_eps(
    model: ConditionalHierarchy,
    energies: LayerEnergies | None,
    n: int,
    steps: int,
    step_size: float,
    eps0: Sequence[Tensor] | None = None,
    record: bool = False,
    noise: bool = True,
    generator: torch.Generator | None = None,
):
    """Short-run Langevin of the joint prior in eps-space (module docstring): ``(zs, eps, trace)``.

    ``eps <- eps + (s^2/2) grad [sum_i f_i(T(eps)_i) - ||eps||^2 / 2] + s noise`` for ``steps`` steps,
    started from ``eps0`` (default: N(0, I) draws), then ``zs = T(eps)``. Without energies (``None``) the
    target is N(0, I) itself: exact fresh draws are returned, no Langevin step is taken (``eps0`` then only
    fixes n and the device), ``trace.grad_norm`` is empty.

    Args:
        model: the conditional hierarchy (its prior nets give T).
        energies: the per-layer energies, or ``None``.
        n: number of chains (ignored when ``eps0`` is given).
        steps, step_size, noise: Langevin settings (``cfg.prior_langevin``).
        eps0: optional initial eps ``[(B, z_dims[i])]`` bottom to top.
        record: keep the chain of (concatenated) eps and its log-density.
        generator: torch RNG for the initial draws and the noise.

    Returns:
        ``zs`` and ``eps``, lists ``[(n, z_dims[i])]`` bottom to top (detached), and the
        :class:`~jebm_lite.sampling.LangevinTrace` of the concatenated eps, ``trace.z: (n, sum z_dims)``.
    """
    sizes = model.z_dims
    if eps0 is not None:
        eps0 = [e.detach() for e in eps0]
        n, device = eps0[0].shape[0], eps0[0].device
    else:
        device = _device(model)
    if eps0 is None or energies is None:
        eps0 = [torch.randn(n, d, device=device, generator=generator) for d in sizes]
    u0 = torch.cat(eps0, dim=1)
    if energies is None:
        u = u0
        lp = -0.5 * u.pow(2).sum(dim=1)
        trace = LangevinTrace(z=u, chain=u[None] if record else None, log_prob=lp[None] if record else None,
                              grad_norm=torch.zeros(0, device=device))
    else:
        trace = langevin(lambda v: eps_log_prob(model, energies, _split(v, sizes)), u0, steps, step_size,
                         noise=noise, record=record, generator=generator)
        u = trace.z
    eps = _split(u, sizes)
    with torch.no_grad():
        zs = [z.detach() for z in model.top_down(eps)]
    return zs, eps, trace


def resample_layers_eps(
    model: ConditionalHierarchy,
    energies: LayerEnergies | None,
    eps: Sequence[Tensor],
    layers: Sequence[int],
    steps: int,
    step_size: float,
    noise: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[list[Tensor], list[Tensor]]:
    """Hierarchical sampling in eps-space (poster, "Hierarchical Sampling"): redraw the eps of ``layers``.

    The eps of ``layers`` (code indices, 0 = z_1; negative allowed) are redrawn from N(0, I), then Langevin
    runs on those eps only, the others held, with the full target ``sum_i f_i(T(eps)_i) - ||eps||^2 / 2`` (the
    held layers add a constant): a short-run sample of p(eps_S | eps_{-S}). Redrawing eps_i changes z_i and
    every layer below it, never the layers above; the poster's reading redraws all layers <= k
    (``layers = range(k + 1)``) with the layers above fixed. With ``energies=None`` (nef 0) the conditional
    is N(0, I) and the redraw is exact (no Langevin).

    Args:
        model, energies: as in :func:`sample_prior_eps`.
        eps: the current state ``[(B, z_dims[i])]`` bottom to top (not modified).
        layers: which eps to redraw.
        steps, step_size, noise: Langevin settings.
        generator: torch RNG for the redraws and the noise.

    Returns:
        ``(zs, eps)``: the new state and its ``T(eps)``, lists ``[(B, z_dims[i])]`` bottom to top (detached).
    """
    eps = [e.detach() for e in eps]
    if len(eps) != model.n_layers:
        raise ValueError(f"expected {model.n_layers} eps tensors (bottom -> top), got {len(eps)}")
    layers = tuple(sorted({range(len(eps))[i] for i in layers}))
    new = list(eps)
    for i in layers:
        new[i] = torch.randn(eps[i].shape, device=eps[i].device, generator=generator)
    if energies is not None and layers and steps > 0:
        sizes = [model.z_dims[i] for i in layers]
        fixed = list(new)

        def log_prob(v: Tensor) -> Tensor:
            parts = list(fixed)
            for i, part in zip(layers, _split(v, sizes)):
                parts[i] = part
            return eps_log_prob(model, energies, parts)

        v = langevin(log_prob, torch.cat([new[i] for i in layers], dim=1), steps, step_size, noise=noise,
                     generator=generator).z
        for i, part in zip(layers, _split(v, sizes)):
            new[i] = part
    with torch.no_grad():
        zs = [z.detach() for z in model.top_down(new)]
    return zs, new
