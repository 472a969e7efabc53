"""Latent-space hierarchical EBM diffusion in the whitened u-space (Cui & Han, ICML 2024; bib key
``cui2024diffusion``), re-implemented compactly on a FROZEN conditional hierarchy (latent MLPs only, as the official code's notes suggest).

The poster learns the EBM prior of a multi-layer generator not on ``z = (z_1, ..., z_L)`` but on the noise
``u = T^-1(z)`` of the reparameterised sampler (:mod:`jebm_lite.uspace`), diffused towards N(0, I) by the
kernel ``q(u_{t+1} | u_t) = N(a_{t+1} u_t, sigma_{t+1}^2 I)``. The reverse model is a sequence of conditional
EBMs (poster, "Reverse on u-space")::

    p(u_t | u_{t+1}) ∝ exp(F(T(u_t), t)) N(u_t; 0, I) q(u_{t+1} | u_t),    F(z, t) = sum_i f_i(z_i, t)

each learned by diffusion recovery likelihood (DRL, Gao et al. 2021). ``f`` is the NEGATIVE energy (as
everywhere in the library), evaluated on the decoded latents ``z_i(u)``, not on u itself.

Conventions that differ from the rest of the library, on purpose (the official ICML 2024 code):

* **Langevin form.** :func:`recovery_langevin` uses the official update
  ``y <- y + 1/2 grad F - 1/2 s_t grad[kernel + ||y||^2/2] + sqrt(s_t) eps`` with a per-level step
  ``s_t``: this is the library's ``s^2`` form (``z <- z + (s^2/2) grad log p + s eps``) with ``s^2 = s_t``
  for the target ``exp(F / s_t) N(y; 0, I) q(y_{t+1} | y)``, i.e. the network learns ``F / s_t``-scaled
  energies (the DRL trick) and its gradient enters the update without a step-size factor.
* **Loss scaling.** :func:`drl_loss` divides the energy gap by ``s_t`` (the same trick).

Layout: lists of per-layer tensors are bottom to top (``zs[0]`` is z_1); flattened u-space vectors ``y`` are
``(B, sum d_i)`` with the bottom layer first (:func:`jebm_lite.uspace.flatten_u`). Diffusion levels run
t = 0..T; the T conditional EBMs model ``p(y_t | y_{t+1})`` for t = 0..T-1 and t = T-1 is the top step
(recovery kernel off: an unconditional EBM, "is_recovery = 0").

Contents: the energy nets (:class:`TimeEnergyMLP`, :class:`DiffusionEBMPrior`), the sampler
(:func:`recovery_langevin`, :func:`sample_diffusion_prior`) and the loss (:func:`drl_loss`,
:func:`drl_train_step`). The learner (method ``"udiffusion"``) is
:class:`jebm_lite.training.learners.UDiffusionLearner`; the "why u and not z" measurement is
:func:`jebm_lite.analysis.diffusion.diffusion_consistency`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from jebm_lite.models.ebm import make_activation
from jebm_lite.runtime import ConfigError
from jebm_lite.uspace import (
    DiffusionSchedule,
    _model,
    diffusion_pair,
    diffusion_schedule,
    flatten_u,
    split_u,
)

__all__ = [
    "level_embedding",
    "TimeEnergyMLP",
    "DiffusionEBMPrior",
    "z_of_u",
    "recovery_step_size",
    "recovery_langevin",
    "drl_loss",
    "drl_train_step",
    "DiffusionSample",
    "sample_diffusion_prior",
]



# ----------------------------------------------------------------------------------------------
# Energy networks f_i(z_i, t)
# ----------------------------------------------------------------------------------------------


def level_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of the diffusion level (the official code's t-embedding of ``_CIFAR10_netE``).

    ``emb(t) = [sin(t w_k), cos(t w_k)]`` with ``w_k = 10000^(-k / (dim/2))``, k = 0..dim/2-1 (Transformer /
    DDPM form). ``t: (B,)`` (integer levels) -> ``(B, dim)``; ``dim`` must be even.
    """
    if dim < 2 or dim % 2:
        raise ConfigError(f"the level embedding needs an even size >= 2 (diffusion.t_dim), got {dim}")
    half = dim // 2
    w = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    arg = t.to(torch.float32)[:, None] * w[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


def _levels(t: int | Tensor, B: int, device: torch.device) -> Tensor:
    """``t`` as a ``(B,)`` long tensor on ``device``."""
    t = torch.as_tensor(t, device=device, dtype=torch.long)
    return t.expand(B).contiguous() if t.dim() == 0 else t


class TimeEnergyMLP(nn.Module):
    """One layer's level-conditioned negative energy ``f_i(z_i, t)`` (the official net, as an MLP).

    ``h_1 = act(W_1 z + g(emb(t)))``, ``h_k = act(W_k h_{k-1})`` for k = 2..``layers``, ``f = w^T h + b``,
    where ``emb`` is :func:`level_embedding` (``t_dim``) and ``g`` a 2-layer SiLU MLP to ``nef`` channels:
    the official CIFAR net likewise adds an MLP of the sinusoidal t-embedding to its first feature map.
    With ``spectral_norm`` every Linear is spectrally normalised (official: all layers), so with 1-Lipschitz
    activations ``|grad_z f| <= 1``; unlike the official conv net the Linear layers keep their biases.

    Args:
        in_dim: ``d_i``, the size of z_i.
        T: the number of levels it serves (t in 0..T-1).
        nef: hidden width; layers: number of hidden layers (>= 1); t_dim: embedding size (even).
        activation: ``silu`` (official) | ``gelu`` | ``lrelu``.
        zero_init: start with f = 0 (output layer zeroed; needs ``spectral_norm=False``, a zero matrix has no
            spectral normalisation). Not in the reference: with f = 0 and the tiny official steps the sampler
            stays near its N(0, I) start (a small random walk): it samples the base's Gaussian prior, so learning
            starts from that baseline
            instead of from a random 1-Lipschitz flow, which moves a low-dimensional code far (up to 1/2 per
            step) at initialisation.

    Shapes: ``forward(z: (B, in_dim), t: (B,) long or int) -> (B,)``.
    """

    def __init__(self, in_dim: int, T: int, nef: int = 64, layers: int = 2, t_dim: int = 32,
                 spectral_norm: bool = True, activation: str = "silu", zero_init: bool = False) -> None:
        super().__init__()
        if zero_init and spectral_norm:
            raise ConfigError("a zero-initialised energy cannot be spectrally normalised: set ebm.spectral_norm=false "
                              "or diffusion.zero_init=false")
        if in_dim < 1 or T < 1 or nef < 1 or layers < 1:
            raise ConfigError(f"TimeEnergyMLP needs in_dim, T, nef, layers >= 1 (got {in_dim}, {T}, {nef}, {layers}); "
                              "set ebm.nef >= 1 and ebm.layers >= 1")
        level_embedding(torch.zeros(1), t_dim)  # validates t_dim
        self.in_dim, self.T, self.nef, self.t_dim = int(in_dim), int(T), int(nef), int(t_dim)

        def lin(i: int, o: int) -> nn.Module:
            m = nn.Linear(i, o)
            return _spectral_norm(m) if spectral_norm else m

        self.inp = lin(self.in_dim, self.nef)
        self.t_mlp = nn.Sequential(lin(self.t_dim, self.nef), nn.SiLU(), lin(self.nef, self.nef))
        self.hidden = nn.ModuleList([lin(self.nef, self.nef) for _ in range(layers - 1)])
        self.out = lin(self.nef, 1)
        self.act = make_activation(activation)
        if zero_init:
            with torch.no_grad():
                self.out.weight.zero_()
                self.out.bias.zero_()

    def t_features(self, t: int | Tensor, B: int | None = None, device=None) -> Tensor:
        """``g(emb(t))``: ``(B, nef)``, the level term added to the first hidden layer."""
        device = device if device is not None else next(self.parameters()).device  # not .weight: SN would iterate
        t = _levels(t, 1 if B is None else B, device)
        return self.t_mlp(level_embedding(t, self.t_dim))

    def forward(self, z: Tensor, t: int | Tensor, t_feat: Tensor | None = None) -> Tensor:
        """``f_i(z, t)``: ``z: (B, in_dim)``, ``t: (B,)`` or int -> ``(B,)``. ``t_feat``: precomputed
        :meth:`t_features` (a Langevin chain keeps t fixed)."""
        if t_feat is None:
            t_feat = self.t_features(t, z.shape[0], z.device)
        h = self.act(self.inp(z) + t_feat)
        for lin in self.hidden:
            h = self.act(lin(h))
        return self.out(h).squeeze(-1)


class DiffusionEBMPrior(nn.Module):
    """``F(z, t) = sum_i f_i(z_i, t)``, one :class:`TimeEnergyMLP` per layer (the official code: one conditional EBM
    per latent group, energies summed over groups, evaluated on z(u)).

    Args:
        z_dims: layer sizes bottom to top; T: number of conditional EBMs (levels t = 0..T-1);
        nef, layers, t_dim, spectral_norm, activation, zero_init: see :class:`TimeEnergyMLP`.
    """

    def __init__(self, z_dims: Sequence[int], T: int, nef: int = 64, layers: int = 2, t_dim: int = 32,
                 spectral_norm: bool = True, activation: str = "silu", zero_init: bool = False) -> None:
        super().__init__()
        self.z_dims = tuple(int(d) for d in z_dims)
        self.T = int(T)
        self.nets = nn.ModuleList([TimeEnergyMLP(d, T, nef, layers, t_dim, spectral_norm, activation, zero_init)
                                   for d in self.z_dims])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device  # not a spectral-normed .weight (a power iteration in train mode)

    def t_features(self, t: int | Tensor, B: int) -> list[Tensor]:
        """Per-layer level features ``[(B, nef)]`` (see :meth:`TimeEnergyMLP.t_features`)."""
        return [net.t_features(t, B, self.device) for net in self.nets]

    def f_layers(self, zs: Sequence[Tensor], t: int | Tensor, t_feats: Sequence[Tensor] | None = None) -> list[Tensor]:
        """``[f_i(z_i, t)]``: ``zs: [(B, d_i)]`` bottom to top, ``t: (B,)`` or int -> ``[(B,)]``."""
        if len(zs) != len(self.nets):
            raise ValueError(f"expected {len(self.nets)} layers (bottom -> top), got {len(zs)}")
        feats = t_feats if t_feats is not None else [None] * len(self.nets)
        return [net(z, t, tf) for net, z, tf in zip(self.nets, zs, feats)]

    def f(self, zs: Sequence[Tensor], t: int | Tensor, t_feats: Sequence[Tensor] | None = None) -> Tensor:
        """``F(z, t) = sum_i f_i(z_i, t)``: ``(B,)``."""
        return torch.stack(self.f_layers(zs, t, t_feats), 0).sum(0)


@contextlib.contextmanager
def _fixed_weights(module: nn.Module) -> Iterator[None]:
    """Spectral-norm weights computed once (one power iteration in train mode, none in eval mode) and
    held fixed inside the block, without an autograd graph: a Langevin chain then differentiates only
    with respect to its state, and costs no power iteration per step."""
    with parametrize.cached():
        with torch.no_grad():
            for m in module.modules():
                if parametrize.is_parametrized(m):
                    for name in m.parametrizations:
                        getattr(m, name)
        yield


# ----------------------------------------------------------------------------------------------
# u-space helpers and the recovery-likelihood Langevin
# ----------------------------------------------------------------------------------------------


def z_of_u(model, u: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """``z = T(u)`` without decoding (poster, "Diffusion on u-space"): ``z_L = u_L``,
    ``z_i = mu_i(z_{i+1}) + sigma_i(z_{i+1}) u_i``. ``u``: ``(B, sum d_i)`` or ``[(B, d_i)]`` -> ``[(B, d_i)]``;
    differentiable in ``u``."""
    m = _model(model)
    us = split_u(u, m.z_dims) if isinstance(u, Tensor) else list(u)
    zs: list[Tensor] = list(us)
    for i in range(m.n_layers - 2, -1, -1):
        mu, lv = m.prior_params(i, zs[i + 1])
        zs[i] = mu + torch.exp(0.5 * lv) * us[i]
    return zs


def recovery_step_size(schedule: DiffusionSchedule, t: int | Tensor, base_step: float) -> Tensor:
    """The per-level Langevin step of the official code's step 5: ``s_t = (sigma_cum[t] / sigma_cum[0]) * base * sigma_{t+1}^2``.

    ``t``: int or ``(B,)`` long in 0..T-1 -> float64 tensor of ``t``'s shape. For T = 3 and base 3e-5:
    about 1.4e-5, 1.8e-3, 2.9e-3.
    """
    t = torch.as_tensor(t, dtype=torch.long).cpu()
    s = schedule
    return (s.sigma_cum[t] / s.sigma_cum[0]) * float(base_step) * s.sigma[t + 1] ** 2


def _check_levels(t: Tensor, T: int) -> None:
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > T - 1):
        raise ValueError(f"levels t must lie in 0..{T - 1} (T = {T}), got {int(t.min())}..{int(t.max())}")


def recovery_langevin(
    prior: DiffusionEBMPrior,
    model,
    y_next: Tensor,
    t: int | Tensor,
    steps: int,
    base_step: float,
    schedule: DiffusionSchedule | None = None,
    noise: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Short-run Langevin for ``p(y_t | y_{t+1})`` (the official code's steps 4-5;
    poster "Reverse on u-space").

    Target: ``p(y_t | y_{t+1}) ∝ exp(F(z(y_t), t) / s_t) N(y_t; 0, I) N(y_{t+1}; a_{t+1}
    y_t, sigma_{t+1}^2 I)``, the Gaussian recovery kernel switched off at the top level
    t = T-1 (``is_recovery = 0``). Started AT ``y_{t+1}``, ``steps`` updates of the
    OFFICIAL form::

        y <- y + 1/2 grad_y F(z(y), t)
               - 1/2 s_t grad_y[ ||y_{t+1} - a_{t+1} y||^2 / (2 sigma_{t+1}^2)
                                 + ||y||^2 / 2 ]
               + sqrt(s_t) N(0, I),       s_t = :func:`recovery_step_size`

    Note: this is NOT the library's ``z <- z + (s^2/2) grad log p + s eps`` with a user
    step ``s``; it is that form with ``s^2 = s_t`` for an energy ``F / s_t`` (the
    network learns the scaled energy, :func:`drl_loss`), so F's gradient has no
    step-size factor. ``z(y) = T(split(y))`` (:func:`z_of_u`) goes through the frozen
    hierarchy ``model``; only ``y`` is differentiated (no ``.grad`` reaches any
    parameter), spectral-norm weights are held fixed for the chain.

    Args:
        prior: the energies; model: the ConditionalHierarchy (or a learner holding it in
        ``.model``).
        y_next: the condition ``y_{t+1}``, ``(B, sum d_i)``.
        t: level, int or ``(B,)`` long in 0..T-1.
        steps, base_step: chain length and the base step of :func:`recovery_step_size`.
        schedule: default :func:`diffusion_schedule(prior.T)
        <jebm_lite.uspace.diffusion_schedule>`.
        noise: add the ``sqrt(s_t)`` noise; generator: a CPU generator for it (default:
        the global RNG).

    Returns:
        ``y_t`` samples ``(B, sum d_i)``, detached.
    """
    m = _model(model)
    sch = schedule if schedule is not None else diffusion_schedule(prior.T)
    if sch.T != prior.T:
        raise ValueError(
            f"schedule has T = {sch.T} levels but the prior has T = {prior.T}"
        )
    y_next = y_next.detach()
    B, dev, dt = y_next.shape[0], y_next.device, y_next.dtype
    t = _levels(t, B, dev)
    _check_levels(t, sch.T)
    tc = t.cpu()
    s_t = recovery_step_size(sch, tc, base_step).to(dev, dt)[:, None]
    a = sch.a[tc + 1].to(dev, dt)[:, None]
    var = (sch.sigma[tc + 1] ** 2).to(dev, dt)[:, None]
    rec = (tc < sch.T - 1).to(dev, dt)[:, None]  # 0 at the top level: unconditional EBM
    sq = s_t.sqrt()
    y = y_next.clone()
    if steps <= 0:
        return y
    with torch.enable_grad(), _fixed_weights(prior):
        with torch.no_grad():
            feats = prior.t_features(t, B)
        for _ in range(steps):
            y = y.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(prior.f(z_of_u(m, y), t, feats).sum(), y)
            with torch.no_grad():
                grad_u = (
                    rec * (-a * (y_next - a * y) / var) + y
                )  # grad of kernel + ||y||^2 / 2
                y = y + 0.5 * g - 0.5 * s_t * grad_u
                if noise:
                    eps = (
                        torch.randn(y.shape, generator=generator, dtype=dt).to(dev)
                        if generator is not None
                        else torch.randn_like(y)
                    )
                    y = y + sq * eps
    return y.detach()


# ----------------------------------------------------------------------------------------------
# The DRL loss and one training step
# ----------------------------------------------------------------------------------------------


def drl_loss(
    f_pos: Tensor | Sequence[Tensor], f_neg: Tensor | Sequence[Tensor], s_t: Tensor
) -> Tensor:
    """The diffusion-recovery-likelihood loss of the official code's step 6 (to
    minimise)::

        loss = sum_i -mean_b[ (f_i(z_i(y_t^+), t) - f_i(z_i(y_t^-), t)) / s_t ]

    ``f_pos, f_neg``: ``(B,)`` (F summed over layers) or lists ``[(B,)]`` per layer
    (then summed); ``s_t: (B,)`` the Langevin step of each example's level. Dividing by
    ``s_t`` makes the network learn ``s_t``-scaled energies (the DRL trick; see
    :func:`recovery_langevin`). Raising f at the positives lowers the loss."""
    if not isinstance(f_pos, Tensor):
        f_pos = torch.stack(list(f_pos), 0).sum(0)
    if not isinstance(f_neg, Tensor):
        f_neg = torch.stack(list(f_neg), 0).sum(0)
    s_t = torch.as_tensor(s_t, device=f_pos.device).to(f_pos.dtype)
    return -((f_pos - f_neg) / s_t).mean()


def drl_train_step(
    prior: DiffusionEBMPrior,
    model,
    optimizer: torch.optim.Optimizer,
    u: Tensor | Sequence[Tensor],
    schedule: DiffusionSchedule,
    steps: int,
    base_step: float,
    sync: Callable[[list], None] | None = None,
) -> dict[str, float]:
    """One DRL update of ``prior`` on clean codes ``u`` (the official code's steps 1-6).

    ``t ~ U{0..T-1}`` per example; ``(y_t, y_{t+1})`` from :func:`~jebm_lite.uspace.diffusion_pair`; negatives
    ``y_t^-`` by :func:`recovery_langevin` from ``y_{t+1}``; :func:`drl_loss`; one ``optimizer`` step (the
    optimiser must hold only the energies' parameters). ``u``: ``(B, sum d_i)`` or ``[(B, d_i)]``.

    Returns metrics: ``loss``, ``energy/pos`` and ``energy/neg`` (mean F, unscaled), ``drl/recovery_mse``
    (mean squared distance of the negatives to the positives per dimension) and ``drl/gap_t{k}`` (mean
    ``F(y^+) - F(y^-)`` of the examples at level k).
    """
    m = _model(model)
    y = (flatten_u(u) if not isinstance(u, Tensor) else u).detach()
    B = y.shape[0]
    t = torch.randint(0, prior.T, (B,), device=y.device)
    y_t, y_t1 = diffusion_pair(y, t, schedule)
    y_neg = recovery_langevin(prior, m, y_t1, t, steps, base_step, schedule)
    with torch.no_grad():
        zs = z_of_u(m, torch.cat([y_t, y_neg], 0))
    f = prior.f(zs, torch.cat([t, t], 0))  # one pass (one power iteration) for both sets
    f_pos, f_neg = f[:B], f[B:]
    s_t = recovery_step_size(schedule, t.cpu(), base_step).to(y.device)
    loss = drl_loss(f_pos, f_neg, s_t)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if sync is not None:
        sync([p for g in optimizer.param_groups for p in g["params"]])
    optimizer.step()
    gap = (f_pos - f_neg).detach()
    out = {
        "loss": loss.item(),
        "energy/pos": f_pos.mean().item(),
        "energy/neg": f_neg.mean().item(),
        "drl/recovery_mse": (y_neg - y_t).pow(2).mean().item(),
    }
    for k in range(prior.T):
        sel = t == k
        if bool(sel.any()):
            out[f"drl/gap_t{k}"] = gap[sel].mean().item()
    return out


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


@dataclass
class DiffusionSample:
    """What :func:`sample_diffusion_prior` returns (detached).

    ``u``: ``[(n, d_i)]`` u-space samples (level 0) bottom to top; ``z``: ``[(n, d_i)]`` = T(u);
    ``levels``: with ``record_levels``, ``levels[t]`` is ``y_t`` ``(n, sum d_i)`` for t = 0..T
    (``levels[T]`` the N(0, I) start), else ``None``.
    """

    u: list[Tensor]
    z: list[Tensor]
    levels: list[Tensor] | None = None


def sample_diffusion_prior(
    prior: DiffusionEBMPrior,
    model,
    n: int,
    steps: int,
    base_step: float,
    record_levels: bool = False,
    schedule: DiffusionSchedule | None = None,
    noise: bool = True,
    y_T: Tensor | None = None,
) -> DiffusionSample:
    """Ancestral sampling of the reverse chain (the official code's sampling): ``y_T ~ N(0, I)``, then for
    t = T-1 down to 0, :func:`recovery_langevin` at level t started from the current y; ``z = T(y_0)``.

    ``y_T``: an explicit start ``(n, sum d_i)`` (default: drawn). See :class:`DiffusionSample` for the result.
    """
    m = _model(model)
    sch = schedule if schedule is not None else diffusion_schedule(prior.T)
    D = sum(m.z_dims)
    y = torch.randn(n, D, device=prior.device) if y_T is None else y_T.detach().to(prior.device)
    levels: list[Tensor | None] = [None] * (sch.T + 1)
    levels[sch.T] = y
    for t in range(sch.T - 1, -1, -1):
        y = recovery_langevin(prior, m, y, t, steps, base_step, sch, noise=noise)
        levels[t] = y
    with torch.no_grad():
        zs = [z.detach() for z in z_of_u(m, y)]
    return DiffusionSample(u=split_u(y, m.z_dims), z=zs, levels=list(levels) if record_levels else None)
