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

Wiring a held-out digit into training: ``cfg.data.hold_out`` (presets ``mnist_anomaly_joint`` / ``_vlae`` /
``_lebm``) is read by :func:`anomaly_training_data`, whose result goes to
:func:`jebm_lite.runs.load_or_train` as its ``data`` (or use :func:`run_anomaly_experiment`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from . import objectives as obj
from .data import TensorImageDataset, get_dataset
from .metrics import auprc, auroc
from .models.conditional import ConditionalHierarchy
from .runtime import ConfigError

__all__ = [
    "AnomalySplit",
    "anomaly_split",
    "anomaly_training_data",
    "run_anomaly_experiment",
    "eval_mode",
    "anomaly_scores",
    "evaluate_scores",
    "evaluate_anomaly",
    "evaluate_checkpoints",
    "ood_scores",
    "evaluate_ood",
]


# ----------------------------------------------------------------------------------------------
# The split
# ----------------------------------------------------------------------------------------------


@dataclass
class AnomalySplit:
    """One held-out-digit split of the pooled MNIST (70,000 images; train first, then test).

    Attributes:
        held_out: the anomalous digit k.
        train: normal training images, a uint8 :class:`TensorImageDataset` (N_train items).
        test: test images (normal first, then every image of digit k), :class:`TensorImageDataset`.
        test_labels: ``(N_test,)`` int64, 1 = anomaly (digit k), 0 = normal.
        train_index, test_index: ``(N,)`` int64 row indices into the pooled 70,000 (0..59,999 = the
            MNIST train split, 60,000..69,999 = its test split): the split, checkable for disjointness.
        counts: ``n_pooled, n_normal, n_anomalous, n_train, n_test_normal, n_test`` (ints).
    """

    held_out: int
    train: TensorImageDataset
    test: TensorImageDataset
    test_labels: Tensor
    train_index: Tensor
    test_index: Tensor
    counts: dict[str, int] = field(default_factory=dict)

    def train_images(self, device: torch.device | str | None = None) -> Tensor:
        """Training images ``(N_train, 1, 28, 28)`` float32 in [-1, 1] on ``device``."""
        return self.train.tensors(device)[0]

    def test_images(self, device: torch.device | str | None = None) -> Tensor:
        """Test images ``(N_test, 1, 28, 28)`` float32 in [-1, 1] on ``device``."""
        return self.test.tensors(device)[0]


def _pooled_mnist(root: str | Path | None, download: bool = False) -> tuple[Tensor, Tensor]:
    """uint8 images ``(70000, 1, 28, 28)`` and labels ``(70000,)``: MNIST train then test."""
    tr = get_dataset("mnist", "train", root=root, download=download)
    te = get_dataset("mnist", "test", root=root, download=download)
    return torch.cat([tr.images, te.images]), torch.cat([tr.targets, te.targets])


def anomaly_split(
    held_out_digit: int,
    root: str | Path | None = None,
    seed: int = 42,
    train_frac: float = 0.8,
    download: bool = False,
) -> AnomalySplit:
    """The MNIST anomaly split of Kumar et al. (2019) / Pang et al. (2020) used by paper Tab. 3.

    Pool train + test (70,000), drop digit ``held_out_digit``, permute the normal images with
    ``np.random.RandomState(seed).permutation``, train on the first ``int(train_frac * n_normal)``; test on
    the rest of the normal images plus all images of the held-out digit (label 1). For digit 1:
    7,877 anomalies, 62,123 normal -> 49,698 train, 12,425 + 7,877 = 20,302 test.

    Args:
        held_out_digit: 0 ... 9.
        root: data folder (``$JEBM_DATA`` by default).
        seed: RandomState seed of the shuffle (42 in the protocol).
        train_frac: fraction of the normal images used for training.
        download: let torchvision download missing files.

    Raises:
        ConfigError: digit not in 0..9 or ``train_frac`` not in (0, 1).
        DataNotFoundError: the MNIST files are missing.
    """
    if isinstance(held_out_digit, bool) or int(held_out_digit) != held_out_digit or not 0 <= held_out_digit <= 9:
        raise ConfigError(f"held-out digit must be an integer 0..9 (data.hold_out), got {held_out_digit!r}")
    if not 0.0 < train_frac < 1.0:
        raise ConfigError(f"train_frac must be in (0, 1), got {train_frac}")
    k = int(held_out_digit)
    images, labels = _pooled_mnist(root, download)
    lab = labels.numpy()
    normal = np.flatnonzero(lab != k)
    anomalous = np.flatnonzero(lab == k)
    normal = normal[np.random.RandomState(seed).permutation(normal.shape[0])]
    n_train = int(train_frac * normal.shape[0])
    train_idx = torch.from_numpy(normal[:n_train].astype(np.int64))
    test_idx = torch.from_numpy(np.concatenate([normal[n_train:], anomalous]).astype(np.int64))
    test_labels = torch.cat([torch.zeros(normal.shape[0] - n_train, dtype=torch.int64),
                             torch.ones(anomalous.shape[0], dtype=torch.int64)])
    counts = {
        "n_pooled": int(lab.shape[0]), "n_normal": int(normal.shape[0]), "n_anomalous": int(anomalous.shape[0]),
        "n_train": n_train, "n_test_normal": int(normal.shape[0] - n_train), "n_test": int(test_idx.shape[0]),
    }
    return AnomalySplit(
        held_out=k,
        train=TensorImageDataset(images[train_idx], labels[train_idx]),
        test=TensorImageDataset(images[test_idx], labels[test_idx]),
        test_labels=test_labels,
        train_index=train_idx,
        test_index=test_idx,
        counts=counts,
    )


def anomaly_training_data(cfg, device: torch.device | str | None = None, split: AnomalySplit | None = None):
    """The training images of an anomaly config (``cfg.data.hold_out`` set), for ``load_or_train(data=...)``.

    The split's normal training images, then the first ``cfg.data.subset`` of them (the ``ci`` profile);
    a ``(N, 1, 28, 28)`` tensor on the device when ``cfg.data.on_device`` (as ``runs.training_data``), else
    a :class:`TensorImageDataset`. ``split`` reuses an already built :func:`anomaly_split`.

    Raises:
        ConfigError: ``data.hold_out`` unset, a dataset other than MNIST, or ``data.classes`` also set.
    """
    from .runtime import get_device

    d = cfg.data
    if d.hold_out is None:
        raise ConfigError("anomaly_training_data needs data.hold_out=<digit> (e.g. preset mnist_anomaly_joint)")
    if d.name.strip().lower() != "mnist":
        raise ConfigError(f"the anomaly protocol is defined on MNIST; got data.name={d.name!r}")
    if d.classes is not None:
        raise ConfigError("data.hold_out and data.classes cannot both be set; unset data.classes")
    if split is None or split.held_out != d.hold_out:
        split = anomaly_split(d.hold_out, root=d.root, download=d.download)
    ds = split.train
    if d.subset is not None:
        if d.subset < 1:
            raise ConfigError(f"data.subset={d.subset} must be >= 1")
        ds = ds.select(torch.arange(min(d.subset, len(ds))))
    if d.on_device:
        return ds.tensors(get_device(device if device is not None else cfg.train.device))[0]
    return ds


def run_anomaly_experiment(cfg, run_dir=None, device=None, resume: bool = True):
    """:func:`jebm_lite.runs.run_experiment` for an anomaly config: load a finished run or train it on
    :func:`anomaly_training_data`. Returns ``(learner, history, run_dir)``.

    The default run directory is ``runs/<name>-h<digit>-<profile>`` (a temporary one in ``ci``), so the
    five held-out digits of Tab. 3 do not collide.
    """
    from .io import temp_dir
    from .learners import build_learner
    from .runs import RunDir, load_or_train

    if cfg.data.hold_out is None:
        raise ConfigError("run_anomaly_experiment needs data.hold_out=<digit>")
    if run_dir is None:
        tag = f"{cfg.name}-h{cfg.data.hold_out}"
        run_dir = temp_dir(f"{tag}-ci-") if cfg.profile == "ci" else Path("runs") / f"{tag}-{cfg.profile}"
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    data = None if rd.is_finished() else anomaly_training_data(cfg, device)
    learner, history = load_or_train(cfg, rd, build_learner, data, device=device, resume=resume)
    return learner, history, rd


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


def _kind(learner) -> str:
    from .learners import ConditionalLearner, CondJointLearner

    if isinstance(learner, (ConditionalLearner, CondJointLearner)):
        # (other learners built on a ConditionalHierarchy have priors of their own: no score here)
        # ConditionalLearner, CondJointLearner (amortized) -> q(z|x); CondJointLearner (langevin) -> Langevin
        return "conditional_langevin" if getattr(learner, "posterior_mode", None) == "langevin" else "conditional"
    if hasattr(learner, "inference") and hasattr(learner, "posterior"):
        return "hierarchical"
    if hasattr(learner, "infer") and hasattr(learner, "prior"):
        return "lebm"
    raise ConfigError(
        f"{type(learner).__name__} has no log-joint score here: use a joint / vlae (HierarchicalLearner), "
        "lebm (LEBMLearner), conditional (ConditionalLearner) or cond_joint (CondJointLearner) learner."
    )


def _latents(learner, x: Tensor, use_mean: bool, rng: torch.Generator | None,
             langevin_steps: int | None) -> tuple[list[Tensor], list[Tensor] | None, list[Tensor] | None]:
    """Per-layer z for ``x`` (bottom to top) and, when there is an inference net, q's means / log-variances.

    Hierarchical: z ~ q_phi(z|x) (Eq. 8) or its mean. LEBM: posterior Langevin from N(0, I) (Pang et al.
    2020) with ``cfg.posterior_langevin`` (``langevin_steps`` overrides the number of steps).
    """
    if _kind(learner) == "hierarchical":
        mus, logvars = learner.posterior(x)
        zs = mus if use_mean else [obj.reparameterize(m, lv, generator=rng) for m, lv in zip(mus, logvars)]
        return zs, mus, logvars
    from .learners import frozen
    from .sampling import sample_posterior

    lc = learner.cfg.posterior_langevin
    with frozen(learner.generator), frozen(learner.prior):
        trace = sample_posterior(learner.generator, learner.prior, x, learner.cfg.model.sigma,
                                 lc.steps if langevin_steps is None else int(langevin_steps), lc.step_size,
                                 noise=lc.noise, rng=rng)
    return learner.prior.split(trace.z), None, None


def _conditional_parts(learner, x: Tensor, use_mean: bool, rng, langevin_steps) -> dict[str, Tensor]:
    """:func:`_score_parts` for a conditional hierarchy: -log p(x, z) = -log p(x | z_1) - sum_i f_i(z_i)
    - log p_beta(z) (f = 0 for ``ConditionalLearner``), z ~ q(z | x) (or its top-down mean), or posterior
    Langevin for ``CondJointLearner`` with ``model.posterior="langevin"``. Each entry ``(B,)``."""
    model: ConditionalHierarchy = learner.model
    energies = getattr(learner, "energies", None)
    stats = None
    if _kind(learner) == "conditional_langevin":
        trace = learner.langevin_posterior(x, steps=langevin_steps, generator=rng)
        zs = list(torch.split(trace.z, list(model.z_dims), dim=1))
    else:
        zs, stats = model.posterior(x, use_mean=use_mean, generator=rng)
    rec = -model.log_px(x, zs[0])
    lp = model.log_prior_layers(zs)  # (B, L), with constants
    f_z = energies.f(zs) if energies is not None else torch.zeros_like(rec)
    parts = {"score": rec - f_z - lp.sum(1), "rec": rec, "ebm": -f_z}
    for i in range(lp.shape[1]):
        parts[f"prior/{i + 1}"] = -lp[:, i]
    if stats is not None:
        for i, st in enumerate(stats):
            parts[f"kl/{i + 1}"] = obj.kl_analytic(st["q_mu"], st["q_logvar"], st["p_mu"], st["p_logvar"])
        parts["neg_elbo"] = rec + sum(parts[f"kl/{i + 1}"] for i in range(len(stats))) - f_z
    return parts


def _score_parts(learner, x: Tensor, use_mean: bool, rng, langevin_steps) -> dict[str, Tensor]:
    """One z per image: the additive parts of -log p(x, z) and the per-layer KLs, each ``(B,)``."""
    if _kind(learner).startswith("conditional"):
        return _conditional_parts(learner, x, use_mean, rng, langevin_steps)
    zs, mus, logvars = _latents(learner, x, use_mean, rng, langevin_steps)
    x_hat = learner.decode(zs)
    f_z = learner.prior.f(zs)
    sigma = learner.cfg.model.sigma
    score = -obj.log_joint(x, x_hat, zs, f_z, sigma)
    D = x[0].numel()
    rec = obj.reconstruction_nll(x, x_hat, sigma) + 0.5 * D * np.log(2.0 * np.pi * float(sigma) ** 2)
    parts = {"score": score, "rec": rec, "ebm": -f_z}
    for i, z in enumerate(zs):
        parts[f"prior/{i + 1}"] = -obj.standard_normal_log_prob(z)
    if mus is not None:
        for i, (m, lv) in enumerate(zip(mus, logvars)):
            parts[f"kl/{i + 1}"] = obj.kl_analytic(m, lv)
        parts["neg_elbo"] = rec + sum(parts[f"kl/{i + 1}"] for i in range(len(mus))) - f_z
    return parts


def _batched_parts(learner, x: Tensor, n_samples: int, use_mean: bool, batch_size: int, seed: int | None,
                   langevin_steps: int | None) -> dict[str, Tensor]:
    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    if x.dim() != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {tuple(x.shape)}")
    dev = learner.device
    rng = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
    reps = 1 if (use_mean and _kind(learner) in ("hierarchical", "conditional")) else n_samples
    out: dict[str, list[Tensor]] = {}
    with eval_mode(learner), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(dev).float()
            acc: dict[str, Tensor] = {}
            for _ in range(reps):
                for k, v in _score_parts(learner, xb, use_mean, rng, langevin_steps).items():
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
        learner: a trained ``HierarchicalLearner`` (joint / vlae), ``LEBMLearner``, ``ConditionalLearner``
            or ``CondJointLearner``.
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
    from .learners import build_learner
    from .runs import RunDir, load_learner
    from .trainer import CheckpointError

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


def evaluate_ood(learner, x_in: Tensor, x_out: Tensor, **kw) -> dict[str, dict[str, float]]:
    """AUROC and AUPRC of every :func:`ood_scores` entry, out-of-distribution = positive (label 1).

    Returns ``{name: {"auroc", "auprc"}}``. An AUROC below 0.5 means that entry ranks the in-distribution
    images as *more* unusual (e.g. a simpler OOD set that the model explains better). Keywords go to
    :func:`ood_scores`.
    """
    s_in = ood_scores(learner, x_in, **kw)
    s_out = ood_scores(learner, x_out, **kw)
    labels = torch.cat([torch.zeros(x_in.shape[0], dtype=torch.int64), torch.ones(x_out.shape[0], dtype=torch.int64)])
    return {k: evaluate_scores(torch.cat([s_in[k], s_out[k]]), labels) for k in s_in}

