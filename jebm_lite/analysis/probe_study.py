"""How noisy is the Tab. 1 probe, and did the EBM do anything? Both measured from code kits.

* :func:`batched_probe` trains K latent classifiers of paper Sec. 5.1 at once (K independent copies of
  :func:`~jebm_lite.analysis.metrics.latent_probe`: each with its own seed for the initial weights and the
  batch order, its own Adam state; stacked in one tensor so that 60 probes cost about as much as a few).
* :func:`probe_variants` repeats a model's layer-wise probe over probe seeds and four input variants (posterior
  means or one posterior sample, standardised or raw); :func:`variance_split` separates the probe's own
  spread (within a model) from training's (between models).
* :func:`ebm_activity` measures how far a learned joint prior (paper Eq. 3) is from its N(0, I) base: the spread
  of f over prior samples and over inferred codes, how far the prior's Langevin chain (paper Eq. 14) moves its
  starts, and how far its chains end from those of a freshly initialised EBM run with the same starts and noise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from jebm_lite.analysis.codekit import CodeKit
from jebm_lite.models.ebm import JointEBMPrior
from jebm_lite.sampling import sample_prior

VARIANTS = ("mean-std", "mean-raw", "sample-std", "sample-raw")
"""Probe inputs: posterior means or one posterior sample (z = mu + sigma eps), standardised with the training
codes' mean and std or raw. ``mean-std`` is the primary Tab. 1 probe."""

VARIANT_LABELS = {"mean-std": "means, standardised (Tab. 1)", "mean-raw": "means, raw",
                  "sample-std": "one sample, standardised", "sample-raw": "one sample, raw"}
"""A reader's name for each of :data:`VARIANTS` (for tables)."""


def batched_probe(z_train: Tensor, y_train: Tensor, z_test: Tensor, y_test: Tensor, seeds: Sequence[int],
                  hidden: int = 256, epochs: int = 30, lr: float = 1e-3, batch_size: int = 256,
                  standardise: Sequence[bool] | bool = True, n_classes: int | None = None) -> list[float]:
    """K latent probes trained side by side; returns their test accuracies (fractions), one per probe.

    Probe k is :func:`~jebm_lite.analysis.metrics.latent_probe` with ``seed=seeds[k]`` on the codes
    ``z_train[k]``: the same network (Linear -> ``hidden`` -> ReLU -> Linear), the same initial weights
    (``torch.manual_seed(seed)``), the same batch order (a generator seeded with ``seed``), Adam, cross-entropy.
    Only the arithmetic is batched, so results agree with the one-at-a-time probe up to float rounding.

    Shapes: ``z_train`` (K, N, d), ``z_test`` (K, M, d); ``y_*`` (N,), (M,) shared by all probes.
    """
    K, n, d = z_train.shape
    if len(seeds) != K:
        raise ValueError(f"{K} code sets but {len(seeds)} seeds")
    std = [standardise] * K if isinstance(standardise, bool) else list(standardise)
    z_train, z_test = z_train.float().clone(), z_test.float().clone()
    for k in range(K):
        if std[k]:
            mu, sd = z_train[k].mean(0), z_train[k].std(0).clamp_min(1e-6)
            z_train[k], z_test[k] = (z_train[k] - mu) / sd, (z_test[k] - mu) / sd
    y_train, y_test = y_train.long(), y_test.long()
    c = n_classes or int(max(y_train.max(), y_test.max())) + 1
    w1, b1, w2, b2 = [], [], [], []
    for s in seeds:  # the initial weights of latent_probe's nn.Sequential under torch.manual_seed(seed)
        torch.manual_seed(s)
        net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, c))
        w1.append(net[0].weight.T)
        b1.append(net[0].bias)
        w2.append(net[2].weight.T)
        b2.append(net[2].bias)
    params = [nn.Parameter(torch.stack(p).detach().clone()) for p in (w1, b1, w2, b2)]
    W1, B1, W2, B2 = params
    opt = torch.optim.Adam(params, lr=lr)

    def logits(z: Tensor) -> Tensor:  # (K, B, d) -> (K, B, c)
        return torch.baddbmm(B2[:, None], torch.relu(torch.baddbmm(B1[:, None], z, W1)), W2)

    gens = [torch.Generator().manual_seed(s) for s in seeds]
    rows = torch.arange(K)[:, None]
    for _ in range(epochs):
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens])
        for i in range(0, n, batch_size):
            idx = perms[:, i:i + batch_size]
            out = logits(z_train[rows, idx])
            # the sum of each probe's mean loss: every probe's gradient is that of its own mean loss
            loss = nn.functional.cross_entropy(out.flatten(0, 1), y_train[idx].flatten(), reduction="none")
            loss = loss.view(K, -1).mean(1).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (logits(z_test).argmax(2) == y_test[None]).float().mean(1)
    return acc.tolist()


def probe_variants(kit: CodeKit, seeds: Sequence[int] = (0, 1, 2, 3, 4), variants: Sequence[str] = VARIANTS,
                   epochs: int = 30) -> list[dict[str, Any]]:
    """Every (variant, probe seed, layer) probe of one model, in one :func:`batched_probe` call.

    A ``sample-*`` variant draws one z = mu + sigma eps per image with a generator seeded by the probe seed
    (train codes first, then test codes). Returns rows ``{"variant", "seed", "layer" (1 = bottom), "accuracy"
    (%)}``."""
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}; choose from {VARIANTS}")
    L = len(kit.z_dims)
    ztr, zte, keys, std = [], [], [], []
    for v in variants:
        kind = v.split("-")[0]
        for s in seeds:
            g = torch.Generator().manual_seed(s)
            tr = kit.layers("train", kind, g)
            te = kit.layers("test", kind, g)
            for la in range(L):
                ztr.append(tr[la])
                zte.append(te[la])
                keys.append((v, s, la + 1))
                std.append(v.endswith("std"))
    dims = {z.shape[1] for z in ztr}
    accs: list[float] = [0.0] * len(keys)
    for dim in sorted(dims):  # probes of equal input size share one batch
        sel = [i for i, z in enumerate(ztr) if z.shape[1] == dim]
        out = batched_probe(torch.stack([ztr[i] for i in sel]), kit.y_train, torch.stack([zte[i] for i in sel]),
                            kit.y_test, [keys[i][1] for i in sel], epochs=epochs,
                            standardise=[std[i] for i in sel])
        for i, a in zip(sel, out):
            accs[i] = a
    return [{"variant": v, "seed": s, "layer": la, "accuracy": 100.0 * a} for (v, s, la), a in zip(keys, accs)]


def variance_split(per_model: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Within-model (probe) and between-model (training) spread per (variant, layer).

    ``per_model``: model name -> the rows of :func:`probe_variants`. Returns rows ``{"variant", "layer",
    "n_models", "mean", "within_sd" (the root mean of each model's variance over probe seeds), "between_sd" (the
    std over models of each model's mean over probe seeds)}`` in percentage points."""
    cells: dict[tuple[str, int], list[list[float]]] = {}
    for rows in per_model.values():
        by: dict[tuple[str, int], list[float]] = {}
        for r in rows:
            by.setdefault((r["variant"], r["layer"]), []).append(r["accuracy"])
        for key, accs in by.items():
            cells.setdefault(key, []).append(accs)
    out = []
    for (v, la), models in sorted(cells.items(), key=lambda kv: (VARIANTS.index(kv[0][0]), kv[0][1])):
        means = [statistics.fmean(a) for a in models]
        within = math.sqrt(statistics.fmean([statistics.variance(a) for a in models if len(a) > 1] or [math.nan]))
        between = statistics.stdev(means) if len(means) > 1 else math.nan
        out.append({"variant": v, "layer": la, "n_models": len(models), "mean": statistics.fmean(means),
                    "within_sd": within, "between_sd": between})
    return out


ACTIVE_RMS = 0.1
"""The rule's threshold: an EBM is active if its prior chains end at least this far (root mean square per
coordinate) from a fresh EBM's chains run from the same starts with the same noise."""


@torch.no_grad()
def _f(prior: JointEBMPrior, z: Tensor) -> Tensor:
    return prior.energy(z).flatten()


def ebm_activity(kit: CodeKit, ebm_cfg, langevin_cfg, seed: int, n: int = 10_000) -> dict[str, Any]:
    """How much the learned EBM of a joint-prior model changes its N(0, I) base, beside a fresh EBM (the floor).

    ``ebm_cfg``: the model's :class:`~jebm_lite.config.EBMConfig`; ``langevin_cfg``: its ``prior_langevin``
    settings (the training's chain). The fresh EBM is built with ``torch.manual_seed(seed)``. Both chains start
    from the same N(0, I) draws with the same noise (one generator seeded with ``seed`` for each).

    Returns ``{"trained": {...}, "fresh": {...}, "endpoint_rms", "active"}`` where each of ``trained`` /
    ``fresh`` holds ``f_sd_prior`` (std of f over ``n`` prior samples), ``f_sd_codes`` (std of f over the test
    images' posterior means), ``f_gap`` (mean f over codes minus mean f over prior samples), ``move_rms``
    (root-mean-square per coordinate of z_T - z_0 along the chain); ``endpoint_rms`` is the same measure of
    z_T(trained) - z_T(fresh); ``active`` is ``endpoint_rms >= ACTIVE_RMS``.
    """
    if kit.ebm is None:
        raise ValueError("this kit has no EBM (a VLAE model): ebm_activity needs a joint-prior model")
    trained = JointEBMPrior.from_config(kit.z_dims, ebm_cfg)
    trained.load_state_dict(kit.ebm)
    torch.manual_seed(seed)
    fresh = JointEBMPrior.from_config(kit.z_dims, ebm_cfg)
    codes = kit.mu_test[:n].float()
    out: dict[str, Any] = {}
    ends = {}
    for name, prior in (("trained", trained), ("fresh", fresh)):
        prior.eval()
        g = torch.Generator().manual_seed(seed)
        z0 = prior.sample_base(n, generator=g)
        zt = sample_prior(prior, n, langevin_cfg.steps, langevin_cfg.step_size, noise=langevin_cfg.noise,
                          z0=z0, generator=g).z
        ends[name] = zt
        f_p, f_c = _f(prior, zt), _f(prior, codes)
        out[name] = {"f_sd_prior": f_p.std().item(), "f_sd_codes": f_c.std().item(),
                     "f_gap": (f_c.mean() - f_p.mean()).item(),
                     "move_rms": (zt - z0).pow(2).mean().sqrt().item()}
    rms = (ends["trained"] - ends["fresh"]).pow(2).mean().sqrt().item()
    return {**out, "endpoint_rms": rms, "active": rms >= ACTIVE_RMS, "n": n,
            "langevin": {"steps": langevin_cfg.steps, "step_size": langevin_cfg.step_size}}
