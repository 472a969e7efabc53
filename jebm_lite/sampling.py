"""Langevin dynamics (paper Eq. 13) for the joint prior (Eq. 14), the generator posterior and one layer.

Every sampler here uses the "s^2" form of the reference code, with ``s = step_size``::

    z_{t+1} = z_t + (s^2 / 2) grad_z log p(z_t) + s * eps_t,    eps_t ~ N(0, I)

(unadjusted Langevin, ULA: no Metropolis correction, so the stationary law carries an O(s^2) bias;
for a standard normal target the stationary variance is 1 / (1 - s^2 / 4), e.g. +4 % at s = 0.4).

Guarantees of every sampler, whatever the caller's context:

* gradients are taken with respect to ``z`` only (:func:`torch.autograd.grad`, or by hand on the fast
  path below), so no ``.grad`` is ever accumulated on module parameters;
* the state is detached after every step, so no graph is kept across steps (memory is O(1) in steps);
* it runs under the caller's ``torch.no_grad()`` or ``torch.inference_mode()`` (grad is re-enabled
  inside);
* it never calls ``.train()`` / ``.eval()``: modules stay in the mode the caller chose (a spectral-normed
  EBM in train mode runs one power iteration per step, as in the reference code).

The returned :class:`LangevinTrace` holds detached tensors.

Fast path (``fast=True``, the default of :func:`sample_prior` and :func:`sample_layer`). When f is an
:class:`~jebm_lite.models.ebm.EnergyMLP`, each step computes ``grad_z f`` by a hand-written backward
pass (:meth:`EnergyMLP.value_and_grad`, the same ATen kernels autograd calls) under ``no_grad``
instead of building an autograd graph; the noise draws are the same. Spectral norm: in eval mode (or
without spectral norm) the normalised weights are fixed, so they are computed once per chain and the
chain equals the plain one bit for bit. In train mode every forward pass of a spectral-normed layer
runs one power iteration and updates ``u`` / ``v`` in place, so the plain path uses new weights at
every step; the fast path reproduces this exactly in count (T power iterations per chain of T steps,
plus one for a recorded final state) and leaves ``u`` / ``v`` where the plain path leaves them, so the
EBM's training is unchanged. As the iterates do not depend on z, it runs them for a block of steps at
once (:meth:`EnergyMLP.param_schedule`); this reorders the power iteration's float arithmetic, so the
chains agree to ~1e-7 instead of bit for bit. Other energy networks, autocast regions and
``fast=False`` use the plain autograd loop. :func:`use_fast_path` switches the default for code that
does not pass ``fast`` (e.g. the learners).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from jebm_lite.models.ebm import EnergyMLP, JointEBMPrior

__all__ = [
    "LangevinTrace",
    "use_fast_path",
    "fast_path_default",
    "CapturedChain",
    "langevin",
    "sample_prior",
    "sample_prior_from_config",
    "sample_posterior",
    "sample_layer",
]

# A target returns (log p(z) up to a constant: (B,), f(z): (B,) or None).
_Target = Callable[[Tensor], "tuple[Tensor, Tensor | None]"]


@dataclass
class LangevinTrace:
    """What a Langevin run returns (all tensors detached).

    Attributes:
        z: final state, ``(B, d)``.
        chain: every state z_0 ... z_T, ``(T+1, B, d)``, when ``record=True``; else ``None``.
        log_prob: the (unnormalised) target log-density at each state, ``(T+1, B)``, when ``record=True``.
        grad_norm: mean over chains of ||grad log p(z_t)||, one value per step, ``(T,)`` (always recorded).
        energy: f(z_t) of the EBM term at each state, ``(T+1, B)``, when the target has an EBM term and
            ``record=True``; else ``None``.
    """

    z: Tensor
    chain: Tensor | None = None
    log_prob: Tensor | None = None
    grad_norm: Tensor = field(default_factory=lambda: torch.zeros(0))
    energy: Tensor | None = None

    @property
    def steps(self) -> int:
        return int(self.grad_norm.shape[0])


def _noise(z: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)


def _step_sizes(steps: int, step_size: float) -> tuple[float, float]:
    """Check the Langevin settings; return ``(s, s^2 / 2)``."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if step_size <= 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")
    s = float(step_size)
    return s, 0.5 * s * s


def _stack_norms(grad_norms: list[Tensor], z: Tensor) -> Tensor:
    """The per-step mean gradient norms as one ``(T,)`` tensor (empty for T = 0)."""
    return torch.stack(grad_norms).float() if grad_norms else torch.zeros(0, device=z.device)


def _recorded_trace(z: Tensor, chain: list[Tensor], lps: list[Tensor], fs: list[Tensor],
                    grad_norm: Tensor) -> LangevinTrace:
    """A :class:`LangevinTrace` with the whole chain (``T + 1`` states, the final one included)."""
    return LangevinTrace(z=z, chain=torch.stack(chain), log_prob=torch.stack(lps), grad_norm=grad_norm,
                         energy=torch.stack(fs) if fs else None)


def _run(
    target: _Target,
    z0: Tensor,
    steps: int,
    step_size: float,
    noise: bool,
    record: bool,
    generator: torch.Generator | None,
) -> LangevinTrace:
    """The ULA loop shared by every sampler. ``target(z) -> (log_prob (B,), f (B,) |
    None)``."""
    s, half_s2 = _step_sizes(steps, step_size)
    # inference_mode(False) + enable_grad: works under the caller's no_grad /
    # inference_mode. The clone makes a normal (non-inference) tensor that owns its
    # memory, so z0 itself is never modified.
    with torch.inference_mode(False), torch.enable_grad():
        z = z0.detach().clone()
        grad_norms: list[Tensor] = []
        chain: list[Tensor] = []
        lps: list[Tensor] = []
        fs: list[Tensor] = []
        for _ in range(steps):
            z.requires_grad_(True)
            lp, fz = target(z)
            (grad,) = torch.autograd.grad(lp.sum(), z)
            if record:
                chain.append(z.detach())
                lps.append(lp.detach())
                if fz is not None:
                    fs.append(fz.detach())
            grad_norms.append(grad.flatten(1).norm(dim=1).mean())
            z = z.detach() + half_s2 * grad
            if noise:
                z = z + s * _noise(z, generator)
        z = z.detach()
        if not record:
            return LangevinTrace(z=z, grad_norm=_stack_norms(grad_norms, z))
        with torch.no_grad():
            lp, fz = target(z)
        chain.append(z)
        lps.append(lp.detach())
        if fz is not None:
            fs.append(fz.detach())
        return _recorded_trace(z, chain, lps, fs, _stack_norms(grad_norms, z))


_FAST_DEFAULT = True
_CHUNK = 128  # steps whose spectral-norm weights are computed together (memory: _CHUNK x the EBM's weights)


def fast_path_default() -> bool:
    """What ``fast=None`` means in :func:`sample_prior` / :func:`sample_layer` (``True`` unless changed
    by :func:`use_fast_path`)."""
    return _FAST_DEFAULT


@contextlib.contextmanager
def use_fast_path(enabled: bool) -> Iterator[None]:
    """Within the block, ``fast=None`` (the default) means ``enabled``; e.g. ``with use_fast_path(False):
    learner.train_step(x, 1)`` runs the learner's prior chains on the plain autograd path."""
    global _FAST_DEFAULT
    old, _FAST_DEFAULT = _FAST_DEFAULT, bool(enabled)
    try:
        yield
    finally:
        _FAST_DEFAULT = old


class CapturedChain:
    """The fast prior chain (:func:`_run_fast`, ``record=False``) captured once as a CUDA graph and replayed.

    A chain of T steps is about 25 T tiny kernels; on a GPU their launches, not their arithmetic, bound it.
    Captured, one ``replay()`` launches them all. The graph reads the EBM's weights and spectral-norm
    buffers where they live (optimisers and ``load_state_dict`` update them in place, so replays see the
    current EBM) and draws its noise from the default CUDA generator, whose offset advances with every
    replay. Fixed per instance: the EBM, ``n`` chains, ``steps``, ``step_size``, ``noise``, train/eval mode.

    Capture needs warm-up runs; they run on a side stream, and the spectral-norm buffers and the CUDA RNG
    state they touched are restored afterwards, so capturing leaves the model and the random stream as
    they were. Use through :func:`sample_prior` (``graph=True``), which keeps one instance per shape.
    """

    def __init__(self, energy: EnergyMLP, n: int, d: int, steps: int, step_size: float, noise: bool,
                 device: torch.device) -> None:
        if device.type != "cuda":
            raise RuntimeError("CapturedChain needs a CUDA device")
        self.z0 = torch.zeros(n, d, device=device)
        args = (energy, _identity, None, self.z0, steps, step_size, noise, False, None)
        buffers = list(energy.buffers())
        saved = [b.detach().clone() for b in buffers]
        rng = torch.cuda.get_rng_state(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                _run_fast(*args)
        torch.cuda.current_stream(device).wait_stream(side)
        with torch.no_grad():
            for b, v in zip(buffers, saved):
                b.copy_(v)
        torch.cuda.set_rng_state(rng, device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = _run_fast(*args)

    def __call__(self, z0: Tensor) -> LangevinTrace:
        self.z0.copy_(z0)
        self.graph.replay()
        return LangevinTrace(z=self.out.z.clone(), grad_norm=self.out.grad_norm.clone())


def _identity(z: Tensor) -> Tensor:
    return z


_GRAPHS: dict[tuple, CapturedChain] = {}


def _captured(energy: EnergyMLP, z0: Tensor, steps: int, step_size: float, noise: bool) -> CapturedChain:
    """The :class:`CapturedChain` for this EBM and chain shape (captured on first use). A changed storage of
    any parameter or buffer (``.to()``, a replaced tensor) invalidates the EBM's graphs."""
    storage = tuple(t.data_ptr() for t in (*energy.parameters(), *energy.buffers()))
    key = (id(energy), tuple(z0.shape), str(z0.device), int(steps), float(step_size), bool(noise), energy.training)
    hit = _GRAPHS.get(key)
    if hit is not None and hit.storage == storage:
        return hit
    for k in [k for k in _GRAPHS if k[0] == id(energy) and _GRAPHS[k].storage != storage]:
        del _GRAPHS[k]
    chain = CapturedChain(energy, z0.shape[0], z0.shape[1], steps, step_size, noise, z0.device)
    chain.storage = storage
    _GRAPHS[key] = chain
    return chain


def _fast_energy(energy: nn.Module | None, fast: bool | None, z: Tensor) -> EnergyMLP | None:
    """``energy`` when the fast path applies to it, else ``None`` (use the plain path)."""
    if fast is None:
        fast = _FAST_DEFAULT
    if not fast or not isinstance(energy, EnergyMLP) or not energy.supports_value_and_grad():
        return None
    if torch.is_autocast_enabled(z.device.type):  # keep autocast semantics: plain path
        return None
    return energy


def _run_fast(
    energy: EnergyMLP,
    embed: Callable[[Tensor], Tensor],
    columns: slice | None,
    z0: Tensor,
    steps: int,
    step_size: float,
    noise: bool,
    record: bool,
    generator: torch.Generator | None,
) -> LangevinTrace:
    """The ULA loop of :func:`_run` for ``log p(u) = f(u) - ||u||^2 / 2`` with ``u = embed(z)``,
    gradients by :meth:`EnergyMLP.value_and_grad` (no autograd). ``columns`` selects the part of
    ``grad_u`` that is ``grad_z`` (``None``: all, ``embed`` is the identity). Same steps, same RNG
    calls and the same number of energy evaluations (spectral-norm power iterations) as :func:`_run`.
    """
    s, half_s2 = _step_sizes(steps, step_size)
    with torch.inference_mode(False), torch.no_grad():
        z = z0.detach().clone()
        # Spectral norm in train mode runs one power iteration per forward pass, i.e. per step of the
        # plain path: the weights change every step. They do not depend on z, so the weights of the
        # next _CHUNK steps are computed in one go (param_schedule, which leaves u / v where those
        # steps would). In eval mode (or without spectral norm) they are fixed: computed once.
        vary = energy.weights_vary_per_call
        schedule = vary and energy.can_schedule()
        params = None if vary else energy.effective_params()
        block: list[tuple[Tensor, Tensor | None]] = []
        grad_norms: list[Tensor] = []
        chain: list[Tensor] = []
        lps: list[Tensor] = []
        fs: list[Tensor] = []
        for t in range(steps):
            if schedule:
                if t % _CHUNK == 0:
                    block = energy.param_schedule(min(_CHUNK, steps - t))
                params = [(w[t % _CHUNK], b) for w, b in block]
            elif vary:  # another parametrization: exactly one forward's worth of it per step
                params = energy.effective_params()
            u = embed(z)
            fz, grad_f = energy.value_and_grad(u, params, value=record)
            grad = grad_f - u
            if columns is not None:
                grad = grad[:, columns]
            if record:
                chain.append(z)
                lps.append(fz - 0.5 * u.pow(2).sum(dim=1))
                fs.append(fz)
            grad_norms.append(grad.flatten(1).norm(dim=1).mean())
            z = z + half_s2 * grad
            if noise:
                z = z + s * _noise(z, generator)
        if not record:
            return LangevinTrace(z=z, grad_norm=_stack_norms(grad_norms, z))
        u = embed(z)
        fz = energy(u)  # a plain forward: one more power iteration in train mode, as in _run
        chain.append(z)
        lps.append(fz - 0.5 * u.pow(2).sum(dim=1))
        fs.append(fz)
        return _recorded_trace(z, chain, lps, fs, _stack_norms(grad_norms, z))


def langevin(
    log_prob: Callable[[Tensor], Tensor],
    z0: Tensor,
    steps: int,
    step_size: float,
    noise: bool = True,
    record: bool = False,
    generator: torch.Generator | None = None,
) -> LangevinTrace:
    """Generic Langevin dynamics, paper Eq. 13: z <- z + (s^2/2) grad_z sum_b log_prob(z)_b + s eps.

    Args:
        log_prob: ``(B, ...) -> (B,)``, the target log-density up to a constant, one value per chain
            (chains must be independent: the gradient of the sum is each chain's own gradient).
        z0: initial states ``(B, ...)`` (not modified).
        steps: T, number of updates.
        step_size: s.
        noise: add ``s * eps``; ``False`` gives plain gradient ascent with step s^2/2.
        record: also keep the chain and the log-density of every state.
        generator: torch RNG for the noise (on ``z0``'s device).

    Returns:
        :class:`LangevinTrace` (``energy`` is ``None``: a generic target has no EBM term).
    """

    def target(z: Tensor) -> tuple[Tensor, None]:
        return log_prob(z), None

    return _run(target, z0, steps, step_size, noise, record, generator)


def _exact_gaussian_trace(z: Tensor, record: bool) -> LangevinTrace:
    lp = -0.5 * z.pow(2).sum(dim=1)
    return LangevinTrace(
        z=z,
        chain=z[None] if record else None,
        log_prob=lp[None] if record else None,
        grad_norm=torch.zeros(0, device=z.device),
    )


def sample_prior(
    prior: JointEBMPrior,
    n: int,
    steps: int,
    step_size: float,
    noise: bool = True,
    z0: Tensor | None = None,
    record: bool = False,
    generator: torch.Generator | None = None,
    fast: bool | None = None,
    graph: bool = False,
) -> LangevinTrace:
    """Langevin sampling of the joint EBM prior, paper Eqs. 13-14.

    Target ``log p_alpha(z) = f(z) - ||z||^2 / 2 + const``, so each step is ``z <- z +
    (s^2/2) (grad f(z) - z) + s eps``. Chains start from N(0, I) (the short-run,
    noise-initialised chains of the paper) unless ``z0`` is given (e.g. a persistent
    chain).

    Without an EBM (``prior.energy is None``, a VLAE prior) the target is N(0, I)
    itself, so exact
    samples are returned and no Langevin step is taken: ``trace.z`` holds fresh N(0, I)
    draws (``z0``, if given, only fixes the number of samples and the device),
    ``grad_norm`` is empty and a recorded chain has one state.

    Args:
        prior: the joint prior.
        n: number of chains (ignored when ``z0`` is given).
        steps, step_size, noise: Langevin settings (``LangevinConfig``).
        z0: optional initial states ``(B, d)``.
        record: keep the chain, log-density and f of every state.
        generator: torch RNG for the initial draws and the noise.
        fast: gradients of an :class:`EnergyMLP` without autograd (same chain, see the
            module docstring); ``None`` means :func:`fast_path_default` (``True``);
            ``False``: the plain path.
        graph: on CUDA, replay the fast chain as one captured CUDA graph
            (:class:`CapturedChain`) when it applies (fast path, ``record=False``, no
            ``generator``); the eager fast path otherwise.

    Returns:
        :class:`LangevinTrace` with ``z: (n, d)``; ``energy: (T+1, n)`` when recorded
        with an EBM.
    """
    if z0 is not None and (z0.dim() != 2 or z0.shape[1] != prior.d):
        raise ValueError(f"z0 must have shape (B, {prior.d}), got {tuple(z0.shape)}")
    device = z0.device if z0 is not None else prior.device
    if prior.energy is None:
        m = z0.shape[0] if z0 is not None else n
        return _exact_gaussian_trace(
            prior.sample_base(m, device=device, generator=generator), record
        )
    if z0 is None:
        z0 = prior.sample_base(n, device=device, generator=generator)

    energy = prior.energy
    fast_energy = _fast_energy(energy, fast, z0)
    if fast_energy is not None:
        if graph and z0.is_cuda and not record and generator is None:
            return _captured(fast_energy, z0, steps, step_size, noise)(z0)
        return _run_fast(
            fast_energy, _identity, None, z0, steps, step_size, noise, record, generator
        )

    def target(z: Tensor) -> tuple[Tensor, Tensor]:
        fz = energy(z)
        return fz - 0.5 * z.pow(2).sum(dim=1), fz

    return _run(target, z0, steps, step_size, noise, record, generator)


def sample_prior_from_config(prior: JointEBMPrior, n: int, lc, **kw) -> LangevinTrace:
    """:func:`sample_prior` with steps / step size / noise (and ``fast``, when the config has that
    field) from a :class:`~jebm_lite.config.LangevinConfig`."""
    if "fast" not in kw and getattr(lc, "fast", None) is not None:
        kw["fast"] = lc.fast
    return sample_prior(prior, n, lc.steps, lc.step_size, noise=lc.noise, **kw)


def sample_posterior(
    generator: nn.Module,
    prior: JointEBMPrior,
    x: Tensor,
    sigma: float,
    steps: int,
    step_size: float,
    noise: bool = True,
    z0: Tensor | None = None,
    record: bool = False,
    rng: torch.Generator | None = None,
) -> LangevinTrace:
    """Langevin sampling of the generator posterior p(z | x) (LEBM, Pang et al. 2020).

    Target ``log p(x | z) + f(z) - ||z||^2 / 2`` with ``log p(x | z) = -||x - g(z)||^2 /
    (2 sigma^2)`` (up to a constant). ``generator`` is called with the per-layer list
    ``prior.split(z)`` (bottom to top), so a single-layer model gets a one-element list.
    Chains start from N(0, I) unless ``z0`` is given. The LEBM reference uses 20 steps
    at s = 0.1 from a fresh N(0, I) draw.

    Args:
        generator: g, ``list[(B, z_dims[i])] -> (B, ...)`` shaped like ``x``.
        prior: the joint prior (``energy=None`` gives a Gaussian prior).
        x: observations ``(B, ...)``.
        sigma: likelihood standard deviation.
        steps, step_size, noise: Langevin settings.
        z0: optional initial states ``(B, d)``.
        record: keep the chain, log-density and f of every state.
        rng: torch RNG for the initial draws and the noise.

    Returns:
        :class:`LangevinTrace` with ``z: (B, d)``.
    """
    if z0 is None:
        z0 = prior.sample_base(x.shape[0], device=x.device, generator=rng)
    inv_2s2 = 1.0 / (2.0 * float(sigma) ** 2)
    has_f = prior.energy is not None

    def target(z: Tensor) -> tuple[Tensor, Tensor | None]:
        x_hat = generator(prior.split(z))
        log_lik = -(x - x_hat).pow(2).flatten(1).sum(dim=1) * inv_2s2
        fz = prior.f(z)
        return log_lik + fz - 0.5 * z.pow(2).sum(dim=1), (fz if has_f else None)

    return _run(target, z0, steps, step_size, noise, record, rng)


def sample_layer(
    prior: JointEBMPrior,
    zs: list[Tensor],
    layer: int,
    steps: int,
    step_size: float,
    noise: bool = True,
    record: bool = False,
    generator: torch.Generator | None = None,
    fast: bool | None = None,
) -> LangevinTrace:
    """Langevin on one layer with the others held fixed: the conditional of the joint prior.

    Target ``log p_alpha(z_layer | z_{-layer}) = f([z_1, ..., z_L]) - ||z||^2 / 2 + const``, i.e.
    ``prior.log_prob_unnorm`` of the whole code (what ``trace.log_prob`` records); the fixed layers only
    add a constant. The chain starts from ``zs[layer]``; ``zs`` itself is not modified. Use it for
    conditional hierarchical sampling ("sampling the latent code of one layer while keeping other
    layers fixed", paper Sec. 5): ``new = list(zs); new[layer] = sample_layer(prior, zs, layer, ...).z``.
    Langevin is run even without an EBM (the target is then N(0, I) for that layer, up to the O(s^2)
    ULA bias).

    Args:
        prior: the joint prior.
        zs: per-layer codes, bottom to top, ``[(B, z_dims[i])]``.
        layer: index of the layer to resample (0 = bottom, negative indices allowed).
        steps, step_size, noise: Langevin settings.
        record: keep the chain, log-density and f of every state.
        generator: torch RNG for the noise.
        fast: as in :func:`sample_prior`.

    Returns:
        :class:`LangevinTrace` of that layer only: ``z: (B, z_dims[layer])``, ``chain: (T+1, B, z_dims[layer])``.
    """
    zs = list(zs)
    if len(zs) != prior.n_layers:
        raise ValueError(f"expected {prior.n_layers} layers, got {len(zs)}")
    layer = range(prior.n_layers)[layer]  # validates and resolves negative indices
    fixed = [z.detach() for z in zs]
    fast_energy = _fast_energy(prior.energy, fast, zs[layer])
    if fast_energy is not None:
        lo = sum(prior.z_dims[:layer])
        columns = slice(lo, lo + prior.z_dims[layer])

        def embed(z_layer: Tensor) -> Tensor:
            parts = list(fixed)
            parts[layer] = z_layer
            return prior.cat(parts)

        return _run_fast(fast_energy, embed, columns, zs[layer], steps, step_size, noise, record, generator)

    def target(z_layer: Tensor) -> tuple[Tensor, Tensor | None]:
        parts = list(fixed)
        parts[layer] = z_layer
        z = torch.cat(parts, dim=1)
        fz = prior.f(z)
        # the joint log_prob_unnorm; the other layers' ||z_j||^2 / 2 is a constant here
        return fz - 0.5 * z.pow(2).sum(dim=1), (fz if prior.energy is not None else None)

    return _run(target, zs[layer], steps, step_size, noise, record, generator)
