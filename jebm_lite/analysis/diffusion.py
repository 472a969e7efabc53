"""Why the ICML 2024 prior diffuses u and not z: diffusing the latents z directly destroys the relation
between layers that the hierarchy's sampler encodes (poster, "Diffusion on z-space: Limitation")."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from jebm_lite.models.diffusion import z_of_u
from jebm_lite.uspace import (
    DiffusionSchedule,
    _model,
    diffusion_schedule,
    to_u,
)

__all__ = ["diffusion_consistency"]


@torch.no_grad()
def diffusion_consistency(
    model,
    zs: Sequence[Tensor],
    T: int = 3,
    schedule: DiffusionSchedule | None = None,
    generator: torch.Generator | None = None,
) -> list[dict]:
    """How well the diffused latents keep the hierarchy's inter-layer relation (poster, "Diffusion on z-space:
    Limitation" vs "Diffusion on u-space").

    For each level t = 0..T and the same noise ``n``:

    * z-path: ``z_t = a_cum[t] z + sigma_cum[t] n`` per layer (diffusing z directly);
    * u-path: ``u_t = a_cum[t] to_u(z) + sigma_cum[t] n``, mapped back ``z_t = T(u_t)`` (:func:`z_of_u`).

    Measures, per layer index ``i < L - 1`` (the relation of ``z_{i+1}`` given ``z_{i+2}`` in the paper's
    numbering; code index i as everywhere):

    * ``resid``: ``mean_b ||(z_i - mu_i(z_{i+1})) / sigma_i(z_{i+1})||^2 / d_i``, the mean squared whitened
      residual of the layer below given the layer above. It is 1 in expectation when the pair follows the
      model's own conditional, and far from 1 when the relation is broken (residuals too large: z_i is not
      where the layer above says; too small: z_i no longer varies as the model says). Honest caveat: on the
      u-path the residual IS ``u_{t,i}`` exactly (the whitening inverts T), so its value is
      ``a_cum^2 ||u_i||^2/d_i + sigma_cum^2`` (+ a zero-mean cross term): it moves from the clean codes' value
      (1 for prior samples; the prior-hole mismatch for posterior codes) to 1, and cannot blow up. That is
      the point of the construction, not an independent finding.
    * ``logp``: ``mean_b log p_beta(z_i | z_{i+1}) / d_i`` (with the Gaussian constant), the complementary
      log-density view.

    Args:
        model: a ConditionalHierarchy (or a learner holding it); zs: clean codes ``[(B, d_i)]`` bottom to top.
        T / schedule: the schedule (:func:`~jebm_lite.uspace.diffusion_schedule`); generator: CPU RNG.

    Returns:
        One dict per (level, layer): ``t``, ``a_cum``, ``layer`` (code index i), ``clean_resid`` /
        ``clean_logp`` (of the given zs), ``z_path_resid``, ``u_path_resid``, ``z_path_logp``, ``u_path_logp``.
    """
    m = _model(model)
    sch = schedule if schedule is not None else diffusion_schedule(T)
    zs = [z.detach() for z in zs]
    us = to_u(m, zs)
    half_log_2pi = 0.5 * math.log(2 * math.pi)

    def measure(zz: list[Tensor]) -> list[tuple[float, float]]:
        out = []
        for i in range(m.n_layers - 1):
            mu, lv = m.prior_params(i, zz[i + 1])
            r2 = ((zz[i] - mu) * torch.exp(-0.5 * lv)).pow(2)
            logp = -0.5 * (lv + r2) - half_log_2pi
            out.append((r2.mean().item(), logp.mean().item()))
        return out

    clean = measure(zs)
    rows = []
    for t in range(sch.T + 1):
        ac, sc = float(sch.a_cum[t]), float(sch.sigma_cum[t])
        noise = [torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device) if generator is not None
                 else torch.randn_like(z) for z in zs]
        z_direct = [ac * z + sc * e for z, e in zip(zs, noise)]
        z_via_u = z_of_u(m, [ac * u + sc * e for u, e in zip(us, noise)])
        mz, mu_ = measure(z_direct), measure(z_via_u)
        for i in range(m.n_layers - 1):
            rows.append({"t": t, "a_cum": ac, "layer": i, "clean_resid": clean[i][0], "clean_logp": clean[i][1],
                         "z_path_resid": mz[i][0], "u_path_resid": mu_[i][0],
                         "z_path_logp": mz[i][1], "u_path_logp": mu_[i][1]})
    return rows
