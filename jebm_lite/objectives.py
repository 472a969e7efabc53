"""The losses, one function per equation (paper Eqs. 9-12, LEBM, VLAE) and the anomaly log-joint.

Conventions: ``f`` is the negative energy, p_alpha(z) ∝ exp(f(z)) N(z; 0, I); the likelihood is
x ~ N(g(z), sigma^2 I), so -log p(x | z) = ||x - g(z)||^2 / (2 sigma^2) + (D/2) log(2 pi sigma^2)
(the reference code's ``Gfactor`` is 1 / (2 sigma^2)). Per-example quantities are ``(B,)`` and are
summed over all non-batch dimensions; losses are batch means.

KL terms of the training losses are **single-sample Monte-Carlo** estimates
log q(z|x) - log N(z; 0, I) at the reparameterised z (as ``hre:train_hs.py:fit``), in both
:func:`joint_inference_loss` and :func:`vlae_loss`, so the only difference between the two is the
``-f(z)`` term. :func:`kl_analytic` is there for evaluation and checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "gaussian_log_prob",
    "standard_normal_log_prob",
    "kl_mc",
    "kl_analytic",
    "reconstruction_nll",
    "reparameterize",
    "joint_inference_loss",
    "kl_warmup_weight",
    "ebm_loss",
    "vlae_loss",
    "lebm_generator_loss",
    "log_joint",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _flat_sum(t: Tensor) -> Tensor:
    """Sum over all non-batch dimensions: ``(B, ...) -> (B,)``."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


def gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over dimensions: ``(B, d)`` x3 -> ``(B,)``."""
    return -0.5 * _flat_sum(_LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over dimensions: ``(B, d)`` -> ``(B,)``."""
    return -0.5 * _flat_sum(_LOG_2PI + z.pow(2))


def kl_mc(
    z: Tensor,
    mu: Tensor,
    logvar: Tensor,
    prior_mu: Tensor | None = None,
    prior_logvar: Tensor | None = None,
) -> Tensor:
    """Single-sample KL estimate log q(z|x) - log p(z) at ``z ~ q`` (reference §1.6): ``(B,)``.

    ``p`` is N(0, I) by default, or N(prior_mu, diag exp(prior_logvar)) (a conditional-Gaussian layer).
    Its expectation over z ~ N(mu, exp(logvar)) is :func:`kl_analytic`.
    """
    log_q = gaussian_log_prob(z, mu, logvar)
    if prior_mu is None and prior_logvar is None:
        return log_q - standard_normal_log_prob(z)
    pm = prior_mu if prior_mu is not None else torch.zeros_like(z)
    plv = prior_logvar if prior_logvar is not None else torch.zeros_like(z)
    return log_q - gaussian_log_prob(z, pm, plv)


def kl_analytic(
    mu: Tensor,
    logvar: Tensor,
    prior_mu: Tensor | None = None,
    prior_logvar: Tensor | None = None,
) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || p) in closed form, summed over dimensions: ``(B,)``.

    ``p`` is N(0, I) by default: 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar).
    """
    if prior_mu is None and prior_logvar is None:
        return 0.5 * _flat_sum(mu.pow(2) + torch.exp(logvar) - 1.0 - logvar)
    pm = prior_mu if prior_mu is not None else torch.zeros_like(mu)
    plv = prior_logvar if prior_logvar is not None else torch.zeros_like(mu)
    return 0.5 * _flat_sum(plv - logvar + (torch.exp(logvar) + (mu - pm).pow(2)) * torch.exp(-plv) - 1.0)


def reconstruction_nll(x: Tensor, x_hat: Tensor, sigma: float) -> Tensor:
    """Gaussian -log p(x | z) up to its constant: sum over pixels of (x - x_hat)^2 / (2 sigma^2).

    ``x, x_hat: (B, ...)`` -> ``(B,)``. Equals ``Gfactor * ||x - g(z)||^2`` with Gfactor = 1/(2 sigma^2);
    the dropped constant is (D/2) log(2 pi sigma^2) (see :func:`log_joint`).
    """
    return _flat_sum((x - x_hat).pow(2)) / (2.0 * float(sigma) ** 2)


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) (the reparameterisation trick, paper Sec. 3.2)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def joint_inference_loss(
    x: Tensor,
    x_hat: Tensor,
    zs: Sequence[Tensor],
    mus: Sequence[Tensor],
    logvars: Sequence[Tensor],
    f_z: Tensor | None,
    sigma: float,
    prior_weight: float = 1.0,
) -> tuple[Tensor, dict]:
    """Generator + inference objective of the joint model, paper Eqs. 11-12 (Sec. 3.4:
    -ELBO + log Z).

    ``loss = mean_b [ ||x - g(z)||^2 / (2 sigma^2) + sum_i KL_i - f([z_1..z_L]) ]`` with
    ``z_i ~ q(z_i | x)`` reparameterised and KL_i the single-sample estimate log
    q(z_i|x) - log N(z_i; 0, I) (:func:`kl_mc`). log Z(alpha) does not depend on the
    generator or the inference net, so it is dropped.

    Args:
        x: data ``(B, ...)``; x_hat: g(z) ``(B, ...)``.
        zs, mus, logvars: per-layer lists (bottom to top) of ``(B, z_dims[i])``.
        f_z: f(z) on the same z, ``(B,)``; the caller decides whether EBM parameters get
            gradients (e.g. compute it with ``requires_grad`` off on the EBM). ``None``
            means f = 0.
        sigma: likelihood standard deviation.
        prior_weight: weight on the prior term ``sum_i KL_i - f`` (1 = the ELBO; below 1
            during a KL warm-up, :func:`kl_warmup_weight`).

    Returns:
        ``(loss, parts)``: scalar loss with gradients, and detached parts ``rec`` (mean
        rec. NLL), ``kl`` (list of per-layer mean KLs), ``f_post`` (mean f(z_q)),
        ``loss``.
    """
    if not (len(zs) == len(mus) == len(logvars)):
        raise ValueError(
            "zs, mus and logvars must have one entry per layer "
            f"({len(zs)}, {len(mus)}, {len(logvars)})"
        )
    rec = reconstruction_nll(x, x_hat, sigma)
    kls = [kl_mc(z, m, lv) for z, m, lv in zip(zs, mus, logvars)]
    prior_term = torch.stack(kls, dim=0).sum(dim=0)
    if f_z is not None:
        prior_term = prior_term - f_z
    loss = (rec + prior_weight * prior_term).mean()
    parts = {
        "rec": rec.detach().mean(),
        "kl": [k.detach().mean() for k in kls],
        "f_post": (
            torch.zeros((), device=rec.device) if f_z is None else f_z.detach().mean()
        ),
        "loss": loss.detach(),
    }
    return loss, parts


def kl_warmup_weight(step: int, warmup: int) -> float:
    """VLAE's KL warm-up (``vlae:vladder.py``, report 3.1): ``1 - exp(-step / warmup)``; 1 when ``warmup`` is 0.

    ``step`` counts from 1 (the trainer's iteration number), so the weight is never exactly 0.
    """
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    return 1.0 if warmup == 0 else 1.0 - math.exp(-step / warmup)


def ebm_loss(f_prior: Tensor, f_post: Tensor) -> Tensor:
    """EBM objective, paper Eq. 10: ``mean f(z_prior) - mean f(z_post)`` (a scalar to minimise).

    Its gradient is the Eq. 10 learning gradient E_prior[grad f] - E_post[grad f] (with the sign of a
    loss). ``f_prior: (B1,)`` on short-run prior samples, ``f_post: (B2,)`` on inferred codes; the
    caller detaches both *codes* (not the f values: gradients must reach the EBM through both).
    """
    return f_prior.mean() - f_post.mean()


def vlae_loss(
    x: Tensor,
    x_hat: Tensor,
    zs: Sequence[Tensor],
    mus: Sequence[Tensor],
    logvars: Sequence[Tensor],
    sigma: float,
) -> tuple[Tensor, dict]:
    """Negative ELBO with the N(0, I) prior (VLAE baseline with a Gaussian likelihood).

    Exactly :func:`joint_inference_loss` with f = 0, i.e. with the same single-sample
    Monte-Carlo KL, so a joint-vs-VLAE comparison differs only by the EBM. Returns
    ``(loss, parts)`` with ``rec``, ``kl`` (per-layer list) and ``loss`` (no
    ``f_post``). """
    loss, parts = joint_inference_loss(x, x_hat, zs, mus, logvars, None, sigma)
    parts.pop("f_post")
    return loss, parts


def lebm_generator_loss(x: Tensor, x_hat: Tensor, sigma: float) -> Tensor:
    """LEBM generator loss (Pang et al. 2020): ``mean_b ||x - g(z_post)||^2 / (2 sigma^2)``.

    ``x_hat = g(z)`` at posterior Langevin samples z (detached). The ``lebm`` reference omits the
    1/(2 sigma^2) factor (it only rescales the gradient, which Adam largely absorbs).
    """
    return reconstruction_nll(x, x_hat, sigma).mean()


def log_joint(
    x: Tensor,
    x_hat: Tensor,
    z: Tensor | Sequence[Tensor],
    f_z: Tensor | None,
    sigma: float,
) -> Tensor:
    """Unnormalised log p(x, z) = log N(x; g(z), sigma^2 I) + f(z) + log N(z; 0, I)  (paper Sec. 5.4).

    The anomaly score is its negative at z ~ q(z | x). log Z(alpha) is omitted (a constant for a fixed
    model). The Gaussian likelihood keeps its constant -(D/2) log(2 pi sigma^2).

    Args:
        x, x_hat: ``(B, ...)``.
        z: ``(B, d)`` or the per-layer list.
        f_z: f(z) ``(B,)``, or ``None`` for a Gaussian prior.
        sigma: likelihood standard deviation.

    Returns:
        ``(B,)``.
    """
    if not isinstance(z, Tensor):
        z = torch.cat([t.flatten(1) for t in z], dim=1)
    D = x[0].numel()
    log_lik = -reconstruction_nll(x, x_hat, sigma) - 0.5 * D * math.log(2.0 * math.pi * float(sigma) ** 2)
    out = log_lik + standard_normal_log_prob(z)
    if f_z is not None:
        out = out + f_z
    return out
