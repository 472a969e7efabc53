"""The latent attack of Gondim-Ribeiro, Tabacof & Valle (2018) on one layer of the inference network.

Paper Sec. 5.4, Fig. 9 ("adversarial robustness", their Eq. 5 adapted to a hierarchy): given an original
image x and a target image t, find a perturbation delta such that the inference distribution of layer k at
the distorted image matches the one at the target::

    min_delta  KL( q_k(z_k | x + delta) || q_k(z_k | t) ) + c * ||delta||^2,    x + delta in [-1, 1]^D

(squared L2 penalty by default; ``penalty="l2"`` gives Gondim-Ribeiro's plain norm). q_k is the diagonal
Gaussian head of layer k (paper Eq. 8), so the KL is in closed form (:func:`objectives.kl_analytic` with
the target's mean / log-variance as the "prior"). We minimise with Adam on delta and project after every
step onto the box (x + delta clamped to [-1, 1]) and, optionally, onto an L2 ball ``||delta|| <= budget``
(Gondim-Ribeiro use L-BFGS-B with box constraints). Gradients flow to delta only; the networks are frozen
and in eval mode.

The paper's reading of Fig. 9: attacking the bottom layer moves low-level features only, so the
reconstruction of x + delta stays close to x (robust); attacking the top layer moves the semantics, so the
reconstruction drifts towards the target (a successful attack). :func:`attack_all_layers` measures this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from jebm_lite import objectives as obj
from jebm_lite.analysis.anomaly import eval_mode
from jebm_lite.runtime import ConfigError
from jebm_lite.training.learner import AmortizedPosterior
from jebm_lite.training.learners import frozen

__all__ = ["AttackResult", "latent_attack", "attack_all_layers", "posterior_kl_per_layer"]


@dataclass
class AttackResult:
    """One latent attack on layer ``layer`` (0 = bottom), all tensors on the CPU, batch size B.

    Attributes:
        layer: attacked layer (code index, 0 = z_1).
        x_adv: adversarial images x + delta, ``(B, C, H, W)`` in [-1, 1].
        delta_norm: ``||delta||_2`` per image, ``(B,)``.
        kl_before: KL(q_i(.|x) || q_i(.|t)) for every layer i, ``(L, B)``.
        kl_after: KL(q_i(.|x + delta) || q_i(.|t)) for every layer i, ``(L, B)``.
        rec_orig, rec_adv, rec_target: g(mean of q(z|.)) of x, x + delta and t, ``(B, C, H, W)``.
        loss_history: mean objective per Adam step, ``(steps,)``.
    """

    layer: int
    x_adv: Tensor
    delta_norm: Tensor
    kl_before: Tensor
    kl_after: Tensor
    rec_orig: Tensor
    rec_adv: Tensor
    rec_target: Tensor
    loss_history: Tensor = field(default_factory=lambda: torch.zeros(0))


def _check(learner) -> None:
    if not isinstance(learner, AmortizedPosterior):
        raise ConfigError(
            f"The latent attack needs an inference network q_phi(z|x); {type(learner).__name__} has none "
            "(use a joint or vlae learner)."
        )


def posterior_kl_per_layer(learner, x: Tensor, x_target: Tensor) -> Tensor:
    """KL(q_i(z_i | x) || q_i(z_i | x_target)) in closed form for every layer i: ``(L, B)`` (differentiable in x)."""
    mus, lvs = learner.posterior(x)
    with torch.no_grad():
        mus_t, lvs_t = learner.posterior(x_target)
    return torch.stack([obj.kl_analytic(m, lv, mt, lvt) for m, lv, mt, lvt in zip(mus, lvs, mus_t, lvs_t)])


def _project(delta: Tensor, x: Tensor, budget: float | None) -> Tensor:
    """Onto ``{delta : x + delta in [-1, 1]^D}`` (exact), then radially onto ``||delta|| <= budget``.

    The radial shrink keeps the box constraint: it moves x + delta towards x, which is inside the box.
    """
    delta = (x + delta).clamp(-1.0, 1.0) - x
    if budget is not None:
        norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        scale = (budget / norm).clamp(max=1.0).view(-1, *([1] * (delta.dim() - 1)))
        delta = delta * scale
    return delta


def latent_attack(
    learner,
    x: Tensor,
    x_target: Tensor,
    layer: int,
    c: float = 1e-2,
    steps: int = 300,
    lr: float = 1e-2,
    budget: float | None = None,
    penalty: str = "l2sq",
    init_std: float = 1e-3,
    seed: int = 0,
) -> AttackResult:
    """Gondim-Ribeiro et al.'s latent attack on layer ``layer`` of a joint / VLAE learner (paper Fig. 9).

    Minimises ``sum_b [KL(q_k(z|x_b + delta_b) || q_k(z|t_b)) + c * P(delta_b)]`` with Adam (``lr``,
    ``steps``), ``P = ||delta||^2`` (``penalty="l2sq"``) or ``||delta||`` (``"l2"``), keeping x + delta in
    [-1, 1] and, with ``budget``, ``||delta||_2 <= budget``. delta starts at ``init_std`` * N(0, I) (seeded;
    a small non-zero start avoids the non-differentiable ``||0||`` of the ``"l2"`` penalty).

    Args:
        learner: a ``HierarchicalLearner``.
        x: originals ``(B, C, H, W)`` in [-1, 1]; x_target: targets, same shape (or ``(1, C, H, W)``,
            broadcast).
        layer: 0 = bottom (z_1) ... L - 1 = top; negative indices allowed.

    Returns:
        :class:`AttackResult`.
    """
    _check(learner)
    if penalty not in ("l2sq", "l2"):
        raise ConfigError(f"penalty must be 'l2sq' or 'l2', got {penalty!r}")
    if steps < 0 or lr <= 0 or c < 0:
        raise ConfigError("latent_attack needs steps >= 0, lr > 0 and c >= 0")
    n_layers = len(learner.z_dims)
    layer = range(n_layers)[layer]
    dev = learner.device
    x = x.to(dev).float()
    x_target = x_target.to(dev).float().expand_as(x)
    g = torch.Generator(device=dev).manual_seed(seed)
    history: list[float] = []
    with eval_mode(learner), frozen(learner), torch.enable_grad():
        with torch.no_grad():
            kl_before = posterior_kl_per_layer(learner, x, x_target)
            mus_t, lvs_t = learner.posterior(x_target)
        delta = _project(init_std * torch.randn(x.shape, generator=g, device=dev), x, budget)
        delta.requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=lr)
        for _ in range(steps):
            mus, lvs = learner.posterior(x + delta)
            kl = obj.kl_analytic(mus[layer], lvs[layer], mus_t[layer], lvs_t[layer])
            sq = delta.pow(2).flatten(1).sum(dim=1)
            pen = sq if penalty == "l2sq" else (sq + 1e-12).sqrt()
            loss = (kl + c * pen).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                delta.copy_(_project(delta, x, budget))
            history.append(float(loss.detach()) / x.shape[0])
        with torch.no_grad():
            x_adv = (x + delta).clamp(-1.0, 1.0)
            kl_after = posterior_kl_per_layer(learner, x_adv, x_target)
            rec = [learner.decode(learner.posterior(v)[0]) for v in (x, x_adv, x_target)]
    return AttackResult(
        layer=layer,
        x_adv=x_adv.detach().cpu(),
        delta_norm=(x_adv - x).flatten(1).norm(dim=1).detach().cpu(),
        kl_before=kl_before.detach().cpu(),
        kl_after=kl_after.detach().cpu(),
        rec_orig=rec[0].cpu(),
        rec_adv=rec[1].cpu(),
        rec_target=rec[2].cpu(),
        loss_history=torch.tensor(history),
    )


def _mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-image mean squared error on the [-1, 1] scale: ``(B,)``."""
    return (a - b).pow(2).flatten(1).mean(dim=1)


@torch.no_grad()
def _predict(classifier: nn.Module, x: Tensor) -> Tensor:
    dev = next(classifier.parameters()).device
    return classifier(x.to(dev)).argmax(dim=1).cpu()


def attack_all_layers(
    learner,
    x: Tensor,
    x_target: Tensor,
    classifier: nn.Module | None = None,
    layers: list[int] | None = None,
    with_clean: bool = False,
    **attack_kw,
) -> tuple[list[dict[str, float]], list[AttackResult]]:
    """Attack every layer in turn (paper Fig. 9) and tabulate where the adversarial reconstruction lands.

    For each attacked layer k (1 = bottom in the table) one row of batch means:

    * ``delta_norm``: ||delta||_2; ``kl_before`` / ``kl_after``: KL(q_k(.|x (+delta)) || q_k(.|t));
      ``kl_other_after``: the same summed over the layers that were *not* attacked;
    * ``mse_to_orig`` / ``mse_to_target``: per-pixel MSE ([-1, 1] scale) of g(q(x + delta)) to x and to t
      (a robust layer keeps the first small; a successful attack makes the second smaller than the first);
    * with ``classifier`` (logits, e.g. ``metrics.digit_classifier()``): ``label_orig`` / ``label_target``,
      the fraction of adversarial reconstructions classified as the class the classifier gives x / t.

    With ``with_clean`` the table starts with the reference row ``layer = 0``: no attack, the
    reconstruction of the clean x (``delta_norm`` 0, the KL columns NaN).

    Returns ``(rows, results)``: the table (a list of dicts, e.g. for ``pandas.DataFrame``) and the
    :class:`AttackResult` of each attacked layer. ``attack_kw`` go to :func:`latent_attack`.
    """
    _check(learner)
    n_layers = len(learner.z_dims)
    layers = list(range(n_layers)) if layers is None else [range(n_layers)[k] for k in layers]
    x_t = x_target.expand_as(x) if x_target.shape[0] == 1 else x_target
    lab_x = _predict(classifier, x) if classifier is not None else None
    lab_t = _predict(classifier, x_t) if classifier is not None else None
    rows: list[dict[str, float]] = []
    results: list[AttackResult] = []
    for k in layers:
        r = latent_attack(learner, x, x_t, k, **attack_kw)
        others = [i for i in range(n_layers) if i != k]
        row: dict[str, float] = {
            "layer": k + 1,
            "delta_norm": float(r.delta_norm.mean()),
            "kl_before": float(r.kl_before[k].mean()),
            "kl_after": float(r.kl_after[k].mean()),
            "kl_other_after": float(r.kl_after[others].sum(0).mean()) if others else 0.0,
            "mse_to_orig": float(_mse(r.rec_adv, x.cpu()).mean()),
            "mse_to_target": float(_mse(r.rec_adv, x_t.cpu()).mean()),
        }
        if classifier is not None:
            pred = _predict(classifier, r.rec_adv)
            row["label_orig"] = float((pred == lab_x).float().mean())
            row["label_target"] = float((pred == lab_t).float().mean())
        rows.append(row)
        results.append(r)
    if with_clean and results:
        rec = results[0].rec_orig
        clean = {"layer": 0, "delta_norm": 0.0, "kl_before": math.nan, "kl_after": math.nan,
                 "kl_other_after": math.nan, "mse_to_orig": float(_mse(rec, x.cpu()).mean()),
                 "mse_to_target": float(_mse(rec, x_t.cpu()).mean())}
        if classifier is not None:
            pred = _predict(classifier, rec)
            clean["label_orig"] = float((pred == lab_x).float().mean())
            clean["label_target"] = float((pred == lab_t).float().mean())
        rows.insert(0, clean)
    return rows, results
