"""Metrics: latent-classifier probes (paper Tab. 1), AUPRC/AUROC (Tabs. 3, 7), MSE, active units.

Where a well-kept library does the job it is used: scikit-learn for precision-recall and ROC
curves; torchmetrics for Fréchet distances (see :func:`frechet_distance`).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from jebm_lite.data import as_tensors, get_dataset
from jebm_lite.io import atomic_write, safe_torch_load
from jebm_lite.runtime import get_device
from jebm_lite.training.learner import LayerwisePosterior


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
    # imported on use: a heavy import (~0.9 s)
    from sklearn.metrics import auc, precision_recall_curve

    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores, dtype=np.float64)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels).astype(int)
    precision, recall, _ = precision_recall_curve(y, s)
    return float(auc(recall, precision))


def auroc(scores: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> float:
    """Area under the ROC curve (label 1 = out-of-distribution / anomaly)."""
    # imported on use: a heavy import (~0.9 s)
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
    # imported on use: a heavy import (~2 s)
    from torchmetrics.image.fid import _compute_fid

    a = features_a.detach().double().cpu()
    b = features_b.detach().double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = torch.cov(a.T)
    cov_b = torch.cov(b.T)
    return float(_compute_fid(mu_a, cov_a, mu_b, cov_b))


# ----------------------------------------------------------------------------------------------
# Per-layer codes, KL and latent probes (chapters 2-4: the hooks of the paper's Tab. 1 comparison)
# ----------------------------------------------------------------------------------------------


def _as_images(data) -> Tensor:
    """A (N, C, H, W) tensor, or the images of a Dataset (via ``jebm_lite.data.as_tensors``)."""
    if isinstance(data, Tensor):
        return data
    return as_tensors(data)[0]


@torch.no_grad()
def layer_codes(learner: nn.Module, data, batch_size: int = 500, whiten: bool = False) -> list[Tensor]:
    """Per-layer posterior means over a dataset, bottom to top: ``[(N, d_i)]`` on the CPU.

    A :class:`~jebm_lite.training.learner.LayerwisePosterior` gives its own (``learner.layer_codes``):

    * architectural hierarchy (VLAE, joint prior): the means of q_phi(z_i | x) (paper Eq. 8), ``learner.encode``;
    * conditional hierarchy: the means of q(z_L | x), q(z_i | z_{i+1}, x) computed top-down with each
      z_{i+1} set to its mean (``ConditionalHierarchy.posterior(x, use_mean=True)``). With ``whiten`` they are
      mapped to the noise space, ``(mu_q,i - mu_p,i) / sigma_p,i`` (what layer i adds beyond what the layer
      above predicts); ``whiten`` changes nothing for an N(0, I) prior.

    Any other learner with an ``encode(x) -> list`` method (a :class:`~jebm_lite.training.learner.LatentModel`,
    e.g. the LEBM's posterior Langevin codes) gives ``learner.encode(x)``; ``whiten`` does not apply to it.

    Args:
        learner: a trained learner.
        data: images ``(N, C, H, W)`` in [-1, 1], or a Dataset.
        batch_size: images per forward pass.
    """
    x_all = _as_images(data)
    layerwise = isinstance(learner, LayerwisePosterior)  # a protocol check: the codes come from the learner
    dev = next(learner.parameters()).device
    outs: list[list[Tensor]] = []
    for i in range(0, x_all.shape[0], batch_size):
        x = x_all[i:i + batch_size].to(dev)
        codes = learner.layer_codes(x, whiten=whiten) if layerwise else learner.encode(x)
        outs.append([c.float().cpu() for c in codes])
    return [torch.cat([o[k] for o in outs]) for k in range(len(outs[0]))]


@torch.no_grad()
def layer_kl(learner: nn.Module, data, batch_size: int = 500) -> Tensor:
    """Mean KL term of each layer in nats over a dataset, ``(L,)`` bottom to top
    (``learner.layer_kl`` of a :class:`~jebm_lite.training.learner.LayerwisePosterior`).

    * architectural hierarchy: ``KL(q_phi(z_i | x) || N(0, I))`` in closed form (for the joint prior this is
      the KL to the base p_0, the term of paper Eq. 11; the EBM's f is not included);
    * conditional hierarchy: ``KL(q(z_i | z_{i+1}, x) || p(z_i | z_{i+1}))`` in closed form at one draw
      z_{>i} ~ q (an unbiased estimate of the layer's term of the ELBO).

    Raises:
        TypeError: ``learner`` has no closed-form posterior per layer (e.g. the LEBM).
    """
    if not isinstance(learner, LayerwisePosterior):
        raise TypeError(f"{type(learner).__name__} has no closed-form posterior per layer (the LayerwisePosterior "
                        "protocol of jebm_lite.training.learner: layer_codes, layer_kl): layer_kl needs a joint, "
                        "vlae, conditional, cond_joint or udiffusion learner.")
    x_all = _as_images(data)
    dev = next(learner.parameters()).device
    total: Tensor | None = None
    for i in range(0, x_all.shape[0], batch_size):
        x = x_all[i:i + batch_size].to(dev)
        kls = learner.layer_kl(x)
        s = torch.stack([k.sum() for k in kls]).double().cpu()
        total = s if total is None else total + s
    assert total is not None, "layer_kl: empty data"
    return (total / x_all.shape[0]).float()


def layerwise_probe(
    learner: nn.Module,
    train: tuple,
    test: tuple,
    batch_size: int = 500,
    whiten: bool = False,
    **probe_kw,
) -> list[ProbeResult]:
    """The paper's latent classifier (Sec. 5.1, Tab. 1) fitted on each layer's codes separately.

    Args:
        learner: a trained learner.
        train, test: ``(images (N, C, H, W), labels (N,))``.
        batch_size, whiten: see :func:`layer_codes`.
        probe_kw: passed on to :func:`latent_probe` (``epochs``, ``hidden``, ``seed`` ...).

    Returns:
        One :class:`ProbeResult` per layer, bottom to top.
    """
    z_tr = layer_codes(learner, train[0], batch_size, whiten=whiten)
    z_te = layer_codes(learner, test[0], batch_size, whiten=whiten)
    return [latent_probe(a, train[1], b, test[1], **probe_kw) for a, b in zip(z_tr, z_te)]


# ----------------------------------------------------------------------------------------------
# A small digit classifier on real MNIST (what a generated digit "is": used along latent sweeps)
# ----------------------------------------------------------------------------------------------


class DigitCNN(nn.Module):
    """A small CNN for 28x28 digits in [-1, 1]: conv(16) -> pool -> conv(32) -> pool -> fc(64) -> 10 logits.

    ~105 k parameters; about 98.5-99 % test accuracy on MNIST after two epochs.
    ``forward(x: (B, 1, 28, 28)) -> (B, 10)`` logits.
    """

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, n_classes),
        )
        self.test_accuracy: float | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def train_digit_classifier(
    x: Tensor, y: Tensor, epochs: int = 2, batch_size: int = 128, lr: float = 1e-3, seed: int = 0
) -> DigitCNN:
    """Fit :class:`DigitCNN` on images ``x: (N, 1, 28, 28)`` in [-1, 1] and labels ``y: (N,)`` (Adam, cross-entropy).

    Runs on ``x``'s device; the returned network is in eval mode. Seeded (own ``torch.Generator`` for the
    batch order; the global RNG is re-seeded for the initial weights).
    """
    torch.manual_seed(seed)
    net = DigitCNN(int(y.max()) + 1).to(x.device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    y = y.long().to(x.device)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(x.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def classifier_accuracy(net: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1000) -> float:
    """Accuracy of ``net`` (logits) on ``x: (N, ...)``, ``y: (N,)``."""
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        correct += int((net(x[i:i + batch_size]).argmax(1).cpu() == y[i:i + batch_size].cpu()).sum())
    return correct / x.shape[0]


def digit_classifier(
    cache: str | None = "runs/digit_classifier-mnist.pt",
    root: str | None = None,
    epochs: int = 2,
    subset: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    dataset: str = "mnist",
) -> DigitCNN:
    """A :class:`DigitCNN` trained on the real MNIST training set (``dataset="fashion_mnist"``: Fashion-MNIST's,
    the same network on clothing classes), loaded from ``cache`` when it is there.

    The first call trains it (about half a minute per epoch on 2 CPU cores for the full 60 k images) and
    stores the weights in ``cache`` (``None``: never cache); its MNIST **test** accuracy is measured and kept
    in ``net.test_accuracy``. A cache written with other ``epochs`` / ``subset`` / ``seed`` is retrained.

    Args:
        cache: path of the cached weights (relative to the working directory, like the run directories).
        root: the data folder (``$JEBM_DATA`` by default).
        epochs: training epochs.
        subset: train on the first ``subset`` training images only (the ``ci`` profile uses a few thousand).
        device: where to train and keep the network (default: the default device).
        seed: weights and batch order.

    Raises:
        DataNotFoundError: the MNIST files are missing.
    """
    dev = get_device(device)
    key = {"epochs": int(epochs), "subset": subset, "seed": int(seed)}
    if dataset != "mnist":  # MNIST caches written before this option keep their key
        key["dataset"] = dataset
    if cache is not None and Path(cache).is_file():
        blob = safe_torch_load(cache, "digit-classifier cache", "delete it and the classifier is trained again")
        if isinstance(blob, dict) and blob.get("key") == key:
            net = DigitCNN(blob.get("n_classes", 10))
            net.load_state_dict(blob["state_dict"])
            net.test_accuracy = blob["test_accuracy"]
            return net.to(dev).eval()
    x, y = as_tensors(get_dataset(dataset, "train", root=root, subset=subset), device=dev)
    net = train_digit_classifier(x, y, epochs=epochs, seed=seed)
    xt, yt = as_tensors(get_dataset(dataset, "test", root=root), device=dev)
    net.test_accuracy = classifier_accuracy(net, xt, yt)
    if cache is not None:
        blob = {"key": key, "n_classes": 10, "state_dict": {k: v.cpu() for k, v in net.state_dict().items()},
                "test_accuracy": net.test_accuracy}
        atomic_write(cache, lambda f: torch.save(blob, f), mode="wb")
    return net


# ----------------------------------------------------------------------------------------------
# Chapter 1 (single-layer LEBM): class changes along latent sweeps, wall-clock cost of a call
# ----------------------------------------------------------------------------------------------


def count_label_changes(labels: Tensor) -> Tensor:
    """How often the label changes between neighbours along each row: ``(R, C)`` ints -> ``(R,)`` counts.

    Row ``r`` is one sweep (e.g. predicted classes of the images decoded along one latent unit, paper
    Fig. 2); the count is the number of ``c`` with ``labels[r, c] != labels[r, c - 1]``.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be (R, C), got {tuple(labels.shape)}")
    if labels.shape[1] < 2:
        return torch.zeros(labels.shape[0], dtype=torch.long, device=labels.device)
    return (labels[:, 1:] != labels[:, :-1]).long().sum(dim=1)


def time_per_call(fn, repeat: int = 5, number: int = 3, warmup: int = 1) -> float:
    """Median wall-clock seconds of one ``fn()`` call: ``repeat`` timings of ``number`` calls each.

    ``warmup`` calls are made first (and not timed). On CUDA the device is synchronised around each
    timing. The median makes it robust to other jobs on a shared machine.
    """
    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        sync()
        times.append((time.perf_counter() - t0) / number)
    return float(statistics.median(times))


def time_train_step(learner: nn.Module, x: Tensor, repeat: int = 5, number: int = 2, threads: int | None = 1) -> float:
    """Median seconds of one ``learner.train_step(x, 0)`` (:func:`time_per_call`), leaving the learner as it was.

    The parameters, buffers and optimiser states are restored afterwards (timing steps must not change a
    trained model that a chapter goes on to show) and the learner is put back in its train / eval mode.
    ``threads``: torch threads during the timing (1 makes numbers comparable across machines; ``None``:
    unchanged). ``x: (B, C, H, W)``.
    """
    was_training = learner.training
    state = {k: v.clone() for k, v in learner.state_dict().items()}
    opt_state = {k: o.state_dict() for k, o in learner.optimizers.items()}
    n_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        learner.train()
        return time_per_call(lambda: learner.train_step(x, 0), repeat=repeat, number=number)
    finally:
        torch.set_num_threads(n_threads)
        learner.load_state_dict(state)
        for k, o in learner.optimizers.items():
            o.load_state_dict(opt_state[k])
        learner.train(was_training)
