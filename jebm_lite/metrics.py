"""Metrics: latent-classifier probes (paper Tab. 1), AUPRC/AUROC (Tabs. 3, 7), MSE, active units.

Where a well-kept library does the job it is used: scikit-learn for precision-recall and ROC
curves; torchmetrics for Fréchet distances (see :func:`frechet_distance`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class ProbeResult:
    """Test accuracy of a classifier fitted on one layer's codes."""

    train_accuracy: float
    test_accuracy: float
    epochs: int


def latent_probe(
    z_train: Tensor,
    y_train: Tensor,
    z_test: Tensor,
    y_test: Tensor,
    hidden: int = 256,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    n_classes: int | None = None,
) -> ProbeResult:
    """The paper's latent classifier (Sec. 5.1): Linear -> 256 -> ReLU -> Linear -> softmax.

    No dropout or normalisation (as the paper states); Adam, cross-entropy. Inputs are
    standardised with the training codes' mean and std (a fixed affine map, which a linear first
    layer could learn anyway; it only makes the probe's optimisation insensitive to code scale).

    Shapes: ``z_*`` (N, d) codes, ``y_*`` (N,) integer labels.
    """
    g = torch.Generator().manual_seed(seed)
    z_train = z_train.detach().float().cpu()
    z_test = z_test.detach().float().cpu()
    y_train = y_train.long().cpu()
    y_test = y_test.long().cpu()
    mu, sd = z_train.mean(0), z_train.std(0).clamp_min(1e-6)
    z_train, z_test = (z_train - mu) / sd, (z_test - mu) / sd
    k = n_classes or int(max(y_train.max(), y_test.max())) + 1
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(z_train.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, k))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    n = z_train.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(net(z_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        tr = (net(z_train).argmax(1) == y_train).float().mean().item()
        te = (net(z_test).argmax(1) == y_test).float().mean().item()
    return ProbeResult(train_accuracy=tr, test_accuracy=te, epochs=epochs)


def auprc(scores: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> float:
    """Area under the precision-recall curve, ``auc(recall, precision)`` (label 1 = anomaly).

    Higher ``scores`` mean "more anomalous". The protocol of Kumar et al. (2019) / Pang et al.
    (2020) that the paper follows (Tab. 3).
    """
    from sklearn.metrics import auc, precision_recall_curve

    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels).astype(int)
    precision, recall, _ = precision_recall_curve(y, s)
    return float(auc(recall, precision))


def auroc(scores: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> float:
    """Area under the ROC curve (label 1 = out-of-distribution / anomaly)."""
    from sklearn.metrics import roc_auc_score

    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels).astype(int)
    return float(roc_auc_score(y, s))


def reconstruction_mse(x: Tensor, x_hat: Tensor, scale: str = "01") -> Tensor:
    """Per-image, per-pixel MSE, (B,).

    ``scale="01"`` maps images from [-1, 1] to [0, 1] first (the book reports this one);
    ``scale="pm1"`` computes it on [-1, 1] (4x larger).
    """
    if scale not in ("01", "pm1"):
        raise ValueError("scale must be '01' or 'pm1'")
    d = (x_hat.float() - x.float())
    if scale == "01":
        d = d / 2
    return d.pow(2).flatten(1).mean(1)


def active_units(mu: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """Active units (Burda et al. 2016): dims whose posterior mean varies across data, Cov_x(E_q[z]) > threshold.

    Shape: ``mu`` (N, d). Returns the count and the per-dimension variances (d,).
    """
    var = mu.detach().float().var(0)
    return int((var > threshold).sum()), var


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    Uses torchmetrics' implementation of the matrix square root term. Shapes: (N, d), (M, d).
    """
    from torchmetrics.image.fid import _compute_fid

    a = features_a.detach().double().cpu()
    b = features_b.detach().double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = torch.cov(a.T)
    cov_b = torch.cov(b.T)
    return float(_compute_fid(mu_a, cov_a, mu_b, cov_b))
