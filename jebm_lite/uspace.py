"""The whitened u-space of a conditional hierarchy and its forward diffusion (ICML 2024 follow-up).

Cui & Han (2024; bib key ``cui2024diffusion``) learn the hierarchical EBM prior by diffusion, not on
z = (z_1, ..., z_L) but on the noise u that generates it. For the conditional Gaussian hierarchy
``p(z_i | z_{i+1}) = N(mu_i(z_{i+1}), sigma_i^2(z_{i+1}))`` the reparameterised sampler is an invertible
map ``z = T(u)`` (poster, "Diffusion on u-space")::

    z_L = u_L,   z_i = mu_i(z_{i+1}) + sigma_i(z_{i+1}) * u_i            (T, :func:`from_u`)
    u_L = z_L,   u_i = (z_i - mu_i(z_{i+1})) / sigma_i(z_{i+1})          (T^-1, :func:`to_u`)

so under the model's own prior u ~ N(0, I): diffusing u towards N(0, I) leaves the inter-layer
structure in T, where diffusing z would destroy it. The forward kernel is (poster)::

    q(u_{t+1} | u_t) = N(a_{t+1} u_t, sigma_{t+1}^2 I),   sigma_t^2 = 1 - a_t^2    (variance preserving)

with the marginal ``q(u_t | u) = N(abar_t u, (1 - abar_t^2) I)``, ``abar_t = prod_{s <= t} a_s``.

Schedule (the official code's, itself from Gao et al. 2021, bib key ``gao2021diffusion``, re-derived from
its description): a 1000-step linear beta schedule from 1e-4 to 0.02; levels at the indices
``k * (1000 // (2 (T - 1)))`` for k = 0..T-1, plus 999; ``a_0 = sqrt(1 - beta_0)`` and
``a_t = prod sqrt(1 - beta_i)`` over the indices after level t-1 up to level t. For T = 3 the levels are
[0, 250, 500, 999], ``a = [0.99995, 0.7221, 0.3863, 0.0228]``, so level 0 is the data up to a tiny noise
and level T is almost pure N(0, I). Levels run t = 0..T; the T conditional EBMs model
``p(u_t | u_{t+1})`` for t = 0..T-1.

Shapes: ``zs`` and ``u`` are lists ``[(B, d_i)]`` bottom to top (as everywhere in the library);
:func:`forward_diffusion` also takes one tensor (e.g. the concatenation, :func:`flatten_u`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from jebm_lite.models.conditional import ConditionalHierarchy


def _model(model) -> ConditionalHierarchy:
    """The ConditionalHierarchy itself, or the one a ``ConditionalLearner`` holds in ``.model``."""
    m = getattr(model, "model", model)
    if not isinstance(m, ConditionalHierarchy):
        raise TypeError(f"u-space needs a ConditionalHierarchy (or a learner holding one), got {type(model).__name__}")
    return m


def to_u(model, zs: Sequence[Tensor]) -> list[Tensor]:
    """Whitening ``u = T^-1(z)``: ``u_L = z_L``, ``u_i = (z_i - mu_i(z_{i+1})) /
    sigma_i(z_{i+1})``.

    ``model``: a :class:`~jebm_lite.models.conditional.ConditionalHierarchy` or a
    learner holding one; ``zs: [(B, d_i)]`` bottom to top -> ``[(B, d_i)]``.
    (:meth:`ConditionalHierarchy.eps_from_z`.) """
    return _model(model).eps_from_z(list(zs))


def from_u(model, u: Sequence[Tensor], return_x: bool = False):
    """The top-down map ``z = T(u)``: ``z_L = u_L``, ``z_i = mu_i(z_{i+1}) + sigma_i(z_{i+1}) u_i``.

    ``u: [(B, d_i)]`` bottom to top -> ``zs [(B, d_i)]`` (and, with ``return_x``, the decoded mean image
    ``(B, C, H, W)`` in [-1, 1]). (:meth:`ConditionalHierarchy.sample`.)
    """
    zs, x = _model(model).sample(list(u))
    return (zs, x) if return_x else zs


def flatten_u(u: Sequence[Tensor]) -> Tensor:
    """``[(B, d_i)]`` -> ``(B, sum d_i)`` (bottom layer first)."""
    return torch.cat(list(u), dim=1)


def split_u(u: Tensor, z_dims: Sequence[int]) -> list[Tensor]:
    """Inverse of :func:`flatten_u`: ``(B, sum d_i)`` -> ``[(B, d_i)]``."""
    return list(torch.split(u, list(z_dims), dim=1))


# ----------------------------------------------------------------------------------------------
# Forward diffusion on u
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiffusionSchedule:
    """Per-level coefficients, each ``(T + 1,)`` float64, levels t = 0..T.

    ``a[t]``, ``sigma[t]``: the kernel ``q(u_t | u_{t-1}) = N(a_t u_{t-1}, sigma_t^2 I)`` (``a[0]``,
    ``sigma[0]``: from the data u to level 0); ``a_cum[t]``, ``sigma_cum[t]``: the marginal
    ``q(u_t | u) = N(a_cum_t u, sigma_cum_t^2 I)``; ``indices``: the kept steps of the base schedule.
    """

    a: Tensor
    sigma: Tensor
    a_cum: Tensor
    sigma_cum: Tensor
    indices: tuple[int, ...]

    @property
    def T(self) -> int:
        return self.a.numel() - 1


def linear_betas(n: int = 1000, start: float = 1e-4, end: float = 0.02) -> Tensor:
    """The linear beta schedule of DDPM: ``(n,)`` float64 from ``start`` to ``end``."""
    return torch.linspace(start, end, n, dtype=torch.float64)


def diffusion_schedule(T: int = 3, betas: Tensor | None = None) -> DiffusionSchedule:
    """The T-level schedule of the ICML 2024 code (and Gao et al. 2021); see the module docstring.

    Args:
        T: number of diffusion levels above level 0 (the number of conditional EBMs); T >= 1.
        betas: the fine base schedule ``(n,)``; default :func:`linear_betas` (n = 1000).
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    b = linear_betas() if betas is None else torch.as_tensor(betas, dtype=torch.float64).flatten()
    n = b.numel()
    stride = n // (2 * (T - 1)) if T > 1 else 0
    idx = [k * stride for k in range(T)] + [n - 1]
    if any(j <= i for i, j in zip(idx, idx[1:])):
        raise ValueError(f"T={T} is too large for a base schedule of {n} steps (levels {idx})")
    sq = torch.sqrt(1 - b)
    a = torch.stack([sq[idx[0]]] + [sq[idx[t - 1] + 1: idx[t] + 1].prod() for t in range(1, T + 1)])
    a_cum = torch.cumprod(a, 0)
    return DiffusionSchedule(
        a=a, sigma=torch.sqrt(1 - a**2), a_cum=a_cum, sigma_cum=torch.sqrt(1 - a_cum**2), indices=tuple(idx)
    )


def _coef(c: Tensor, t: int | Tensor, like: Tensor) -> Tensor:
    """``c[t]`` as a float of ``like``'s dtype/device, shaped to broadcast over ``like: (B, ...)``."""
    v = c.to(like.device)[torch.as_tensor(t, device=like.device)].to(like.dtype)
    return v.reshape(-1, *([1] * (like.dim() - 1))) if v.dim() == 1 else v


def _apply(u, fn):
    return [fn(x) for x in u] if isinstance(u, (list, tuple)) else fn(u)


def forward_diffusion(
    u: Tensor | Sequence[Tensor],
    t: int | Tensor,
    T: int = 3,
    betas: Tensor | None = None,
    noise: Tensor | Sequence[Tensor] | None = None,
    generator: torch.Generator | None = None,
    schedule: DiffusionSchedule | None = None,
):
    """Sample the marginal ``u_t ~ q(u_t | u) = N(a_cum_t u, (1 - a_cum_t^2) I)`` (poster kernel, composed).

    Args:
        u: clean codes ``(B, d)`` or a list ``[(B, d_i)]`` (then every layer is diffused alike).
        t: level in 0..T, an int or a ``(B,)`` long tensor (one level per example).
        T, betas: the schedule (:func:`diffusion_schedule`), unless ``schedule`` is given.
        noise: the standard normal noise to use (same structure as ``u``); drawn when ``None``.

    Returns:
        ``u_t``, with the structure of ``u``.
    """
    s = schedule if schedule is not None else diffusion_schedule(T, betas)
    noises = noise if noise is not None else _apply(u, lambda x: torch.randn(
        x.shape, generator=generator, dtype=x.dtype, device="cpu" if generator is not None else x.device
    ).to(x.device))
    if isinstance(u, (list, tuple)):
        return [_coef(s.a_cum, t, x) * x + _coef(s.sigma_cum, t, x) * e for x, e in zip(u, noises)]
    return _coef(s.a_cum, t, u) * u + _coef(s.sigma_cum, t, u) * noises


def forward_step(
    u_t: Tensor | Sequence[Tensor],
    t: int | Tensor,
    schedule: DiffusionSchedule,
    noise: Tensor | Sequence[Tensor] | None = None,
    generator: torch.Generator | None = None,
):
    """One kernel step ``u_{t+1} ~ q(u_{t+1} | u_t) = N(a_{t+1} u_t, sigma_{t+1}^2 I)`` (poster), t in 0..T-1."""
    t1 = t + 1
    noises = noise if noise is not None else _apply(u_t, lambda x: torch.randn(
        x.shape, generator=generator, dtype=x.dtype, device="cpu" if generator is not None else x.device
    ).to(x.device))
    if isinstance(u_t, (list, tuple)):
        return [_coef(schedule.a, t1, x) * x + _coef(schedule.sigma, t1, x) * e for x, e in zip(u_t, noises)]
    return _coef(schedule.a, t1, u_t) * u_t + _coef(schedule.sigma, t1, u_t) * noises


def diffusion_pair(
    u: Tensor | Sequence[Tensor],
    t: int | Tensor,
    schedule: DiffusionSchedule,
    generator: torch.Generator | None = None,
):
    """The training pair of the recovery-likelihood step: ``(u_t, u_{t+1})`` with ``u_t ~ q(u_t | u)`` and
    ``u_{t+1} ~ q(u_{t+1} | u_t)``; t in 0..T-1 (int or ``(B,)``)."""
    u_t = forward_diffusion(u, t, schedule=schedule, generator=generator)
    return u_t, forward_step(u_t, t, schedule, generator=generator)
