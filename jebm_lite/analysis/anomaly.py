"""Anomaly and out-of-distribution detection with the log-joint score (paper Sec. 5.4, Tab. 3, Tab. 7).

Protocol (report 1.9, after MEG / LEBM, Kumar et al. 2019 / Pang et al. 2020)::

    pool MNIST train + test (70,000 images), drop the held-out digit k
    shuffle the normal images with numpy RandomState(42); train on the first 80 %
    test  = the other 20 % of the normal images  +  every image of digit k   (label 1 = anomaly)
    score(x) = -log p(x, z),  z ~ q_phi(z | x)                                (paper Sec. 5.4)
    log p(x, z) = log N(x; g(z), sigma^2 I) + f(z) + log N(z; 0, I)           (log Z(alpha) dropped)
    metric   = AUPRC = auc(recall, precision) of sklearn's precision_recall_curve

The score is :func:`jebm_lite.objectives.log_joint` with the method's own prior: the joint EBM prior
(f = f_alpha), VLAE (f = 0) or LEBM (f = f_alpha on one layer; z from posterior Langevin, since LEBM has no
inference network). The conditional hierarchies use their own prior instead of N(0, I): ``conditional``
(LVAE/BIVA) scores -[log p(x | z_1) + log p_beta(z)] and ``cond_joint`` (CVPR 2023) scores
-[log p(x | z_1) + sum_i f_i(z_i) + log p_beta(z)] (its ``log_joint``, the poster's "un-normalized
log-posterior" decision function), z ~ q(z | x) (or posterior Langevin for ``model.posterior=langevin``). Tab. 7 (Fashion-MNIST in-distribution, MNIST out-of-distribution) uses the same score;
:func:`ood_scores` also splits it per layer.

Each learner computes the parts of its own score (the :class:`~jebm_lite.training.learner.ScoredModel`
protocol, ``learner.anomaly_score_parts``); this module batches, averages and evaluates them and never looks at
the learner's kind.

The split (a held-out digit, ``cfg.data.hold_out``) is :mod:`jebm_lite.data.anomaly`; a config with
``data.hold_out`` trains through :func:`jebm_lite.training.load.run_experiment` like any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from jebm_lite.analysis.metrics import auprc, auroc
from jebm_lite.data.anomaly import AnomalySplit
from jebm_lite.runtime import CheckpointError, ConfigError
from jebm_lite.training.learner import ScoredModel
from jebm_lite.training.learners import build_learner
from jebm_lite.training.load import load_learner
from jebm_lite.training.rundir import RunDir

__all__ = [
    "eval_mode",
    "anomaly_scores",
    "evaluate_scores",
    "evaluate_anomaly",
    "evaluate_checkpoints",
    "ood_scores",
    "evaluate_ood",
]


# ----------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode (no spectral-norm power iteration), then restore each one's mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, t in modes:
            m.training = t


def _scored(learner) -> ScoredModel:
    """``learner`` itself, checked against the :class:`~jebm_lite.training.learner.ScoredModel` protocol: the
    analyses below call only its methods (each learner computes the parts of its own log-joint)."""
    if not isinstance(learner, ScoredModel):
        raise ConfigError(
            f"{type(learner).__name__} has no log-joint score here (it does not implement the ScoredModel "
            "protocol of jebm_lite.training.learner: anomaly_score_parts, has_posterior_mean): use a joint / vlae "
            "(HierarchicalLearner), lebm (LEBMLearner), conditional (ConditionalLearner) or cond_joint "
            "(CondJointLearner) learner."
        )
    return learner


def _batched_parts(learner, x: Tensor, n_samples: int, use_mean: bool, batch_size: int, seed: int | None,
                   langevin_steps: int | None) -> dict[str, Tensor]:
    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    if x.dim() != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {tuple(x.shape)}")
    model = _scored(learner)
    dev = model.device
    rng = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
    reps = 1 if (use_mean and model.has_posterior_mean) else n_samples  # the mean of q: every draw is the same
    out: dict[str, list[Tensor]] = {}
    with eval_mode(learner), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(dev).float()
            acc: dict[str, Tensor] = {}
            for _ in range(reps):
                for k, v in model.anomaly_score_parts(xb, use_mean, rng, langevin_steps).items():
                    acc[k] = acc.get(k, 0.0) + v.double() / reps
            for k, v in acc.items():
                out.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def anomaly_scores(
    learner,
    x: Tensor,
    n_samples: int = 1,
    use_mean: bool = False,
    batch_size: int = 500,
    seed: int | None = None,
    langevin_steps: int | None = None,
) -> Tensor:
    """Anomaly score ``s(x) = -log p(x, z)`` (paper Sec. 5.4), higher = more anomalous: ``(N,)`` on the CPU.

    ``log p(x, z) = log N(x; g(z), sigma^2 I) + f(z) + log N(z; 0, I)`` (:func:`objectives.log_joint`,
    log Z(alpha) dropped) with f = f_alpha for the joint prior and LEBM and f = 0 for VLAE. z is drawn from
    q_phi(z | x) (joint, VLAE; ``use_mean`` takes its mean instead) or by posterior Langevin from N(0, I)
    (LEBM, ``cfg.posterior_langevin``, ``langevin_steps`` to override; ``use_mean`` does not apply: LEBM has
    no posterior mean in closed form). Conditional hierarchies replace ``f(z) + log N(z; 0, I)`` by their
    prior: ``log p_beta(z)`` (``ConditionalLearner``) or ``sum_i f_i(z_i) + log p_beta(z)``
    (``CondJointLearner``, = ``-learner.log_joint(x, z)``), z ~ q(z | x) (``use_mean``: the top-down means)
    or, for ``model.posterior="langevin"``, posterior Langevin. With ``n_samples > 1`` the score is
    the mean of -log p(x, z_s) over ``n_samples`` draws. Runs in eval mode, without gradients (LEBM's
    Langevin takes gradients with respect to z only), in batches of ``batch_size``.

    Args:
        learner: a trained :class:`~jebm_lite.training.learner.ScoredModel` (``HierarchicalLearner``: joint /
            vlae, ``LEBMLearner``, ``ConditionalLearner``, ``CondJointLearner``), which computes the parts of
            its own score (``learner.anomaly_score_parts``).
        x: images ``(N, C, H, W)`` in [-1, 1], on any device.
        seed: seeds the draws of z (a ``torch.Generator`` on the learner's device).
    """
    return _batched_parts(learner, x, n_samples, use_mean, batch_size, seed, langevin_steps)["score"]


def evaluate_scores(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> dict[str, float]:
    """``{"auprc", "auroc"}`` of ``scores`` (higher = positive) against 0/1 ``labels`` (1 = anomaly / OOD)."""
    return {"auprc": auprc(scores, labels), "auroc": auroc(scores, labels)}


@dataclass
class AnomalyResult:
    """Result of :func:`evaluate_anomaly`: the metrics and what they were computed from (CPU tensors)."""

    auprc: float
    auroc: float
    scores: Tensor
    labels: Tensor
    held_out: int | None = None

    def as_row(self) -> dict[str, float]:
        return {"held_out": self.held_out, "auprc": self.auprc, "auroc": self.auroc,
                "n_test": int(self.labels.numel()), "n_anomalous": int(self.labels.sum())}


def evaluate_anomaly(
    learner,
    split: AnomalySplit,
    n_samples: int = 1,
    use_mean: bool = False,
    batch_size: int = 500,
    seed: int | None = 0,
    limit: int | None = None,
    **kw,
) -> AnomalyResult:
    """AUPRC (paper Tab. 3; ``metrics.auprc``) and AUROC of :func:`anomaly_scores` on ``split.test``.

    ``limit`` scores a stratified random subset of ``limit`` test images (seeded by ``seed``; quick checks
    only: the protocol uses the whole test set). Other keywords go to :func:`anomaly_scores`.
    """
    x, _ = split.test.tensors()
    y = split.test_labels
    if limit is not None and limit < y.numel():
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        idx = torch.randperm(y.numel(), generator=g)[:limit]
        x, y = x[idx], y[idx]
    s = anomaly_scores(learner, x, n_samples=n_samples, use_mean=use_mean, batch_size=batch_size, seed=seed, **kw)
    m = evaluate_scores(s, y)
    return AnomalyResult(auprc=m["auprc"], auroc=m["auroc"], scores=s, labels=y.clone(), held_out=split.held_out)


def evaluate_checkpoints(
    run_dir,
    split: AnomalySplit,
    last: int = 10,
    device: torch.device | str | None = None,
    **kw,
) -> dict:
    """Tab. 3's "mean +- std over the last epochs": :func:`evaluate_anomaly` on each of the newest ``last``
    checkpoints of a run directory (as many as it keeps: raise ``train.keep_ckpts`` and lower
    ``train.ckpt_every`` to one epoch to follow the protocol exactly).

    Returns ``{"steps": [...], "auprc": [...], "auroc": [...], "auprc_mean", "auprc_std", "auroc_mean",
    "auroc_std"}`` (population std; 0 for one checkpoint). Keywords go to :func:`evaluate_anomaly`.

    Raises:
        CheckpointError: no checkpoint in ``run_dir``.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    ckpts = rd.checkpoints()[-last:]
    if not ckpts:
        raise CheckpointError(f"No checkpoint (checkpoints/step_*.pt) in run directory {rd.path}; train it first.")
    out: dict = {"steps": [], "auprc": [], "auroc": []}
    for path in ckpts:
        learner = load_learner(path, build_learner, device=device)
        r = evaluate_anomaly(learner, split, **kw)
        out["steps"].append(int(path.stem.split("_")[1]))
        out["auprc"].append(r.auprc)
        out["auroc"].append(r.auroc)
    for k in ("auprc", "auroc"):
        out[f"{k}_mean"] = float(np.mean(out[k]))
        out[f"{k}_std"] = float(np.std(out[k]))
    return out


# ----------------------------------------------------------------------------------------------
# Out-of-distribution detection (paper Tab. 7: Fashion-MNIST in, MNIST out)
# ----------------------------------------------------------------------------------------------


def ood_scores(
    learner,
    x: Tensor,
    n_samples: int = 1,
    use_mean: bool = False,
    batch_size: int = 500,
    seed: int | None = None,
    langevin_steps: int | None = None,
) -> dict[str, Tensor]:
    """The log-joint score and its parts, per image: ``{name: (N,)}`` on the CPU, higher = more OOD.

    With z as in :func:`anomaly_scores` (the same draws for every entry):

    * ``score`` = -log p(x, z), the decision function of Tab. 7 (= :func:`anomaly_scores`);
    * ``rec`` = -log N(x; g(z), sigma^2 I) (with its constant), ``ebm`` = -f(z) (0 for VLAE),
      ``prior/i`` = -log N(z_i; 0, I) for layer i = 1 (bottom) ... L. These add up exactly:
      ``score = rec + ebm + sum_i prior/i``;
    * with an inference network (joint, VLAE) also ``kl/i`` = KL(q_phi(z_i | x) || N(0, I)) in closed form
      (how far layer i's code of x sits from the base prior: a per-layer OOD score that does not depend on
      the draw of z) and ``neg_elbo`` = rec + sum_i kl/i - f(z) (the training loss of Eqs. 11-12 per image,
      closed-form KL);
    * conditional hierarchies: ``prior/i`` = -log p_beta(z_i | z_{i+1}) (the top: -log N(z_L; 0, I)), ``ebm`` =
      -sum_i f_i(z_i) (0 for ``ConditionalLearner``), ``kl/i`` = KL(q(z_i | z_{i+1}, x) || p_beta(z_i | z_{i+1}))
      in closed form given the drawn z_{i+1}.

    The joint EBM reads all layers at once, so f has no per-layer split; its whole contribution is ``ebm``.
    """
    return _batched_parts(learner, x, n_samples, use_mean, batch_size, seed, langevin_steps)


def evaluate_ood(
    learner, x_in: Tensor, x_out: Tensor, **kw
) -> dict[str, dict[str, float]]:
    """AUROC and AUPRC of every :func:`ood_scores` entry, out-of-distribution = positive
    (label 1).

    Returns ``{name: {"auroc", "auprc"}}``. An AUROC below 0.5 means that entry ranks
    the in-distribution images as *more* unusual (e.g. a simpler OOD set that the model
    explains better). Keywords go to :func:`ood_scores`. """
    s_in = ood_scores(learner, x_in, **kw)
    s_out = ood_scores(learner, x_out, **kw)
    labels = torch.cat(
        [
            torch.zeros(x_in.shape[0], dtype=torch.int64),
            torch.ones(x_out.shape[0], dtype=torch.int64),
        ]
    )
    return {k: evaluate_scores(torch.cat([s_in[k], s_out[k]]), labels) for k in s_in}
