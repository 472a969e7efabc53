"""The long-run Langevin test of the learned prior (paper Sec. 5.3, Fig. 8; report 1.9).

Run prior Langevin (paper Eqs. 13-14) from p_0 = N(0, I) for far longer than in training (2,500 steps on
CelebA-64 against 40-60 in training), decode every ``record_every`` steps and track the energy f(z_t) at every
step. A well-learned EBM prior gives a steady energy and images that stay realistic; a badly learned one
drifts into over-saturated images (Nijkamp et al. 2020, "anatomy of MCMC-based ML learning", Fig. 3). The
over-saturation is measured directly: the fraction of pixels with |x| > ``saturation_threshold``.

The chain is run with :func:`jebm_lite.sampling.sample_prior` in segments of ``record_every`` steps, each
started from the last state of the previous one (``z0=``) and sharing one ``torch.Generator``: with a
``seed`` the result is the very chain one ``sample_prior`` call of ``steps`` steps would give.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from jebm_lite.analysis.anomaly import eval_mode
from jebm_lite.runtime import ConfigError
from jebm_lite.sampling import sample_prior
from jebm_lite.training.learner import JointPriorModel

__all__ = ["LongRunResult", "long_run_chain", "saturation_fraction"]


@dataclass
class LongRunResult:
    """What :func:`long_run_chain` records (CPU tensors; T = steps, F = number of frames, n chains).

    Attributes:
        frame_steps: ``(F,)`` the steps t of the frames: 0, record_every, 2 record_every, ..., and T.
        frames: ``(F, n, C, H, W)`` decoded images g(z_t) in [-1, 1] at those steps.
        energy: ``(T + 1, n)`` f(z_t) of every chain at every step t = 0 ... T.
        energy_mean, energy_std: ``(T + 1,)`` mean / std of f(z_t) over the chains.
        log_prob_mean: ``(T + 1,)`` mean of the Langevin target f(z_t) - ||z_t||^2 / 2.
        z_norm: ``(T + 1,)`` mean ||z_t|| over the chains.
        grad_norm: ``(T,)`` mean ||grad log p(z_t)|| per step.
        saturation: ``(F,)`` fraction of pixels with |x| > threshold per frame.
        pixel_std: ``(F,)`` mean over pixels of the std over chains (diversity; 0 = all chains alike).
        z: ``(n, d)`` the final state.
    """

    frame_steps: Tensor
    frames: Tensor
    energy: Tensor
    energy_mean: Tensor
    energy_std: Tensor
    log_prob_mean: Tensor
    z_norm: Tensor
    grad_norm: Tensor
    saturation: Tensor
    pixel_std: Tensor
    z: Tensor


def saturation_fraction(x: Tensor, threshold: float = 0.99) -> Tensor:
    """Fraction of pixels with ``|x| > threshold``, per leading index: ``(F, ...) -> (F,)``."""
    return (x.abs() > threshold).flatten(1).float().mean(dim=1)


def long_run_chain(
    learner,
    n: int = 64,
    steps: int = 2500,
    record_every: int = 100,
    step_size: float | None = None,
    noise: bool | None = None,
    seed: int | None = 0,
    saturation_threshold: float = 0.99,
    z0: Tensor | None = None,
) -> LongRunResult:
    """Long-run prior Langevin from N(0, I) with frames every ``record_every`` steps (paper Fig. 8).

    Args:
        learner: a learner with a joint EBM prior (``learner.prior.energy`` set) and ``decode``: joint or LEBM.
        n: number of chains.
        steps: T, Langevin steps (2,500 in the paper).
        record_every: frame spacing (100 in the paper); the last step is always a frame.
        step_size, noise: default ``cfg.prior_langevin``'s.
        seed: seeds the initial draw and the noise (``None``: the global RNG).
        z0: optional initial states ``(n, d)`` instead of N(0, I) draws.

    Runs in eval mode (spectral norm without power iterations: the prior is the fixed learned one).

    Raises:
        ConfigError: the learner has no EBM (a VLAE prior is N(0, I), sampled exactly: nothing to test),
            or ``steps`` / ``record_every`` < 1.
    """
    if not isinstance(learner, JointPriorModel):
        raise ConfigError(f"long_run_chain needs a learner with a joint EBM prior (joint or LEBM); "
                          f"{type(learner).__name__} has none")
    prior = learner.prior
    if prior.energy is None:
        raise ConfigError("long_run_chain needs an EBM prior (method joint or lebm); a VLAE prior is N(0, I).")
    if steps < 1 or record_every < 1 or n < 1:
        raise ConfigError(f"need n, steps and record_every >= 1 (got {n}, {steps}, {record_every})")
    lc = learner.prior_langevin
    s = lc.step_size if step_size is None else float(step_size)
    use_noise = lc.noise if noise is None else bool(noise)
    dev = learner.device
    gen = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
    if z0 is None:
        z = prior.sample_base(n, device=dev, generator=gen)
    else:
        z = z0.to(dev).float()
    energies: list[Tensor] = []
    log_probs: list[Tensor] = []
    norms: list[Tensor] = []
    grads: list[Tensor] = []
    frames: list[Tensor] = []
    frame_steps: list[int] = []
    t = 0
    with eval_mode(learner), torch.no_grad():
        frames.append(learner.decode(prior.split(z)).cpu())
        frame_steps.append(0)
        while t < steps:
            seg = min(record_every, steps - t)
            tr = sample_prior(prior, z.shape[0], seg, s, noise=use_noise, z0=z, record=True, generator=gen)
            first = 0 if t == 0 else 1  # state t of a later segment is the previous segment's last state
            energies.append(tr.energy[first:].cpu())
            log_probs.append(tr.log_prob[first:].cpu())
            norms.append(tr.chain[first:].norm(dim=2).mean(dim=1).cpu())
            grads.append(tr.grad_norm.cpu())
            z = tr.z
            t += seg
            frames.append(learner.decode(prior.split(z)).cpu())
            frame_steps.append(t)
    energy = torch.cat(energies)
    frames_t = torch.stack(frames)
    return LongRunResult(
        frame_steps=torch.tensor(frame_steps),
        frames=frames_t,
        energy=energy,
        energy_mean=energy.mean(dim=1),
        energy_std=energy.std(dim=1) if energy.shape[1] > 1 else torch.zeros(energy.shape[0]),
        log_prob_mean=torch.cat(log_probs).mean(dim=1),
        z_norm=torch.cat(norms),
        grad_norm=torch.cat(grads),
        saturation=saturation_fraction(frames_t, saturation_threshold),
        pixel_std=frames_t.std(dim=1).flatten(1).mean(dim=1) if n > 1 else torch.zeros(frames_t.shape[0]),
        z=z.cpu(),
    )
