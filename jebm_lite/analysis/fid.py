"""FID (Heusel et al. 2017) and test-set reconstruction error: the evaluation protocol of paper Tab. 2.

FID compares Gaussians fitted to features of real and generated images,
``||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))``. The features come from torchmetrics'
:class:`~torchmetrics.image.fid.FrechetInceptionDistance`: by default its Inception-v3 (torch-fidelity's
port of the TensorFlow FID network, pool3 = 2048 features), or any ``nn.Module`` mapping images to
features (a small CNN in tests; a digit classifier's penultimate layer for the MNIST-family
"classifier Fréchet distance", see :func:`digit_features`).

Protocol (report 1.7, ``hre:train_fid.py``): 50 000 generated samples against 50 000 training images,
Inception batch 200. Differences here: images are quantised to uint8 (torch-fidelity's input; ``hre``
fed floats), the real images are drawn *without* replacement (a seeded random subset), and the resize
to 299 is TensorFlow-1-compatible bilinear (``antialias=False``; torchmetrics' default ``True`` differs
only when downsampling).

Weights. The Inception weights file is ``weights-inception-2015-12-05-6726825d.pth`` (:data:`WEIGHTS_URL`,
about 91 MB). It is looked for in this order: ``weights_path=``, ``$JEBM_FID_WEIGHTS``, torch's hub
cache ``<torch.hub.get_dir()>/checkpoints/`` (``$TORCH_HOME/hub/checkpoints``); otherwise torchmetrics
downloads it into that cache. Offline without the file, :class:`FIDWeightsNotFoundError` says what to put
where.

Resuming. A long evaluation (50 k Inception passes) saves its running feature sums (sum and sum of outer
products per set, torchmetrics' own state) to a state file every ``save_every`` batches; called again after
an interruption it continues from there and gives the same FID. The state's sha256 is recorded beside it
(``<name>.state.pt.sha256``); a state whose bytes differ from it is refused, naming the file. Each batch is a
function of ``(seed, batch index)`` only: a real image set is read through a seeded permutation, and a sampler
is called with the global RNG seeded per batch.

Example::

    from jebm_lite.analysis import fid
    res = fid.compute_fid(x_train, learner.sample, n=50_000, run_dir=run.path)  # resumable
    res.fid, res.as_dict()  # also in <run>/results/fid.json
"""

from __future__ import annotations

import http.client
import os
import time
import urllib.error
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from jebm_lite.analysis.metrics import reconstruction_mse
from jebm_lite.data import DataNotFoundError
from jebm_lite.io import atomic_write, safe_torch_load, sha256_sidecar, write_json_atomic
from jebm_lite.runtime import CheckpointError, ConfigError, device_name, get_device

WEIGHTS_ENV = "JEBM_FID_WEIGHTS"
WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE
DEFAULT_N = 50_000
STATE_VERSION = 1

#: Where images come from: a tensor (N, C, H, W) in [-1, 1], a Dataset of ``(image, label)`` items, or a
#: sampler ``f(n) -> (n, C, H, W)`` in [-1, 1] such as ``learner.sample``.
ImageSource = Tensor | Dataset | Callable[[int], Tensor]

__all__ = [
    "DEFAULT_N",
    "FIDResult",
    "FIDWeightsNotFoundError",
    "WEIGHTS_ENV",
    "WEIGHTS_FILE",
    "WEIGHTS_URL",
    "compute_fid",
    "digit_features",
    "fid_from_stats",
    "hub_weights_path",
    "inception_metric",
    "reconstruction_report",
    "resolve_weights",
    "to_uint8",
]


class FIDWeightsNotFoundError(DataNotFoundError):
    """The Inception weights file is missing and could not be downloaded (the message says what to do)."""


# ----------------------------------------------------------------------------------------------
# Feature extractors
# ----------------------------------------------------------------------------------------------


def hub_weights_path() -> Path:
    """Where torchmetrics / torch-fidelity cache the weights: ``<torch.hub.get_dir()>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def _missing_message(reason: str) -> str:
    return (
        f"FID needs the Inception-v3 weights {WEIGHTS_FILE} (about 91 MB; torch-fidelity's port of the "
        f"TensorFlow FID Inception) and {reason}. On a machine with internet download {WEIGHTS_URL} and "
        f"put it at {hub_weights_path()} (torch's hub cache, where torchmetrics looks; set TORCH_HOME to "
        f"move it), or anywhere and set {WEIGHTS_ENV}=/path/to/{WEIGHTS_FILE} (or pass weights_path=)."
    )


def resolve_weights(weights_path: str | Path | None = None) -> Path | None:
    """The local weights file to use: ``weights_path``, else ``$JEBM_FID_WEIGHTS``, else the hub cache file
    if present; None means "let torchmetrics download it".

    Raises:
        FIDWeightsNotFoundError: an explicitly named file (argument or variable) does not exist.
    """
    given = weights_path if weights_path not in (None, "") else os.environ.get(WEIGHTS_ENV) or None
    if given is not None:
        p = Path(given).expanduser()
        if not p.is_file():
            src = "weights_path" if weights_path not in (None, "") else f"${WEIGHTS_ENV}"
            raise FIDWeightsNotFoundError(_missing_message(f"{src} names {p}, which does not exist"))
        return p
    cached = hub_weights_path()
    return cached if cached.is_file() else None


def inception_metric(
    weights_path: str | Path | None = None, feature: int = 2048, antialias: bool = False
):
    """torchmetrics' ``FrechetInceptionDistance`` with its Inception-v3 (``feature``: 64 | 192 | 768 | 2048).

    Its ``update`` takes uint8 images (B, 3, H, W) (see :func:`to_uint8`). The weights are found as in
    :func:`resolve_weights`, else downloaded.

    Raises:
        FIDWeightsNotFoundError: no local file and the download failed (offline), or the file is not
            torch-fidelity's (e.g. pytorch-fid's ``pt_inception-*.pth`` has other parameter names).
        ConfigError: torch-fidelity is not installed.
    """
    try:
        import torch_fidelity  # noqa: F401  (heavy optional import, ~1.5 s, checked only when FID is asked for)
    except ImportError:
        raise ConfigError(
            "FID with the Inception network needs torch-fidelity: pip install torch-fidelity==0.4.0 "
            "(it is in requirements.txt), or pass a feature extractor (extractor=)."
        ) from None
    # imported on use: a heavy import (~2 s)
    from torchmetrics.image.fid import FrechetInceptionDistance

    path = resolve_weights(weights_path)
    if path is not None:  # read it safely first: a junk or crafted file is refused before torch-fidelity sees it
        try:
            blob = safe_torch_load(path, "Inception weights file", "point --weights at torch-fidelity's file")
        except CheckpointError as e:
            raise FIDWeightsNotFoundError(_missing_message(f"{path} is not that file ({str(e)[:300]})")) from None
        if not isinstance(blob, dict):
            raise FIDWeightsNotFoundError(_missing_message(f"{path} is not that file (no state dict inside)"))
    try:
        return FrechetInceptionDistance(
            feature=feature, normalize=False, antialias=antialias,
            feature_extractor_weights_path=None if path is None else str(path),
        )
    except (OSError, http.client.HTTPException) as e:  # URLError, socket errors, timeouts: offline
        if path is not None:
            raise FIDWeightsNotFoundError(_missing_message(f"{path} cannot be read ({e})")) from None
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise FIDWeightsNotFoundError(
            _missing_message(f"it is not at {hub_weights_path()} and the download failed ({reason})")
        ) from None
    except (RuntimeError, KeyError) as e:
        raise FIDWeightsNotFoundError(
            _missing_message(f"{path} is not that file (loading it failed: {str(e)[:200]})")
        ) from None


class _Extractor(nn.Module):
    """Wraps a feature network for torchmetrics: float images (B, C, H, W) in [-1, 1] -> (B, d) float."""

    def __init__(self, net: nn.Module, num_features: int) -> None:
        super().__init__()
        self.net = net
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten(1)


def feature_metric(extractor: nn.Module, example: Tensor):
    """torchmetrics' ``FrechetInceptionDistance`` on features of ``extractor`` (images in [-1, 1]).

    ``example``: a batch (B, C, H, W) used once to find the feature size.
    """
    # imported on use: a heavy import (~2 s)
    from torchmetrics.image.fid import FrechetInceptionDistance

    dev = next((p.device for p in extractor.parameters()), torch.device("cpu"))
    with torch.no_grad():
        d = extractor(example[:2].float().to(dev)).flatten(1).shape[1]
    return FrechetInceptionDistance(feature=_Extractor(extractor, d), normalize=True)


def digit_features(net: nn.Module) -> nn.Module:
    """The penultimate layer (64-d) of a :class:`~jebm_lite.analysis.metrics.DigitCNN`: (B, 1, 28, 28) -> (B, 64).

    With :func:`compute_fid` it gives the MNIST-family "classifier Fréchet distance" (features of a digit
    classifier instead of Inception, which is meaningless on 28 x 28 grey digits).
    """
    layers = list(net.net.children())[:-1]  # drop the last Linear (the logits)
    return nn.Sequential(*layers).eval()


def to_uint8(x: Tensor) -> Tensor:
    """Images (B, C, H, W) in [-1, 1] -> uint8 (B, 3, H, W) in [0, 255] (rounded; grey repeated to RGB)."""
    u = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return u.expand(-1, 3, -1, -1) if u.shape[1] == 1 else u


# ----------------------------------------------------------------------------------------------
# Sources, deterministic per batch
# ----------------------------------------------------------------------------------------------


def _batch_seed(seed: int, which: int, b: int) -> int:
    return (int(seed) * 1_000_003 + which * 7_919 + b * 104_729) % (2**63 - 1)


def _source_len(source: ImageSource) -> int | None:
    if isinstance(source, Tensor):
        return source.shape[0]
    if isinstance(source, Dataset):
        return len(source)  # type: ignore[arg-type]
    return None


class _Reader:
    """Batches of one source, each a function of ``(seed, which, batch index)`` only.

    Tensors / Datasets: batch ``b`` holds rows ``perm[b * batch_size:][:m]`` of a seeded permutation;
    samplers: ``source(m)`` with the global RNG seeded for batch ``b`` (and restored afterwards).
    """

    def __init__(self, source: ImageSource, n: int, batch_size: int, seed: int, which: int) -> None:
        self.source, self.n, self.batch_size, self.seed, self.which = source, n, batch_size, seed, which
        length = _source_len(source)
        self.perm = None
        if length is not None:
            g = torch.Generator().manual_seed(_batch_seed(seed, which, 0))
            self.perm = torch.randperm(length, generator=g)[:n]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __call__(self, b: int) -> Tensor:
        """Batch ``b``: (m, C, H, W) in [-1, 1], m = batch_size except maybe for the last batch."""
        m = min(self.batch_size, self.n - b * self.batch_size)
        src = self.source
        if self.perm is not None:
            idx = self.perm[b * self.batch_size:b * self.batch_size + m]
            if isinstance(src, Tensor):
                return src[idx.to(src.device)]
            getitems = getattr(src, "__getitems__", None)
            items = getitems(idx.tolist()) if getitems is not None else [src[i] for i in idx.tolist()]
            return torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
            torch.manual_seed(_batch_seed(self.seed, self.which, b))
            x = src(m)  # type: ignore[operator]
        if x.shape[0] != m:
            raise ConfigError(f"The sampler returned {x.shape[0]} images when asked for {m}")
        return x


# ----------------------------------------------------------------------------------------------
# FID
# ----------------------------------------------------------------------------------------------

_STATES = ("features_sum", "features_cov_sum", "features_num_samples")


def fid_from_stats(real: dict[str, Tensor], fake: dict[str, Tensor]) -> float:
    """FID from accumulated feature statistics ``{"features_sum": (d,), "features_cov_sum": (d, d),
    "features_num_samples": ()}`` (torchmetrics' state, float64), with torchmetrics' ``_compute_fid``."""
    # imported on use: a heavy import (~2 s)
    from torchmetrics.image.fid import _compute_fid

    def gauss(s: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        n = s["features_num_samples"].double()
        mu = s["features_sum"].double() / n
        cov = (s["features_cov_sum"].double() - n * torch.outer(mu, mu)) / (n - 1)
        return mu, cov

    mu_r, cov_r = gauss(real)
    mu_g, cov_g = gauss(fake)
    return float(_compute_fid(mu_r, cov_r, mu_g, cov_g))


@dataclass
class FIDResult:
    """The outcome of :func:`compute_fid` (also written to ``<run>/results/<name>.json``)."""

    name: str
    fid: float
    n_real: int
    n_fake: int
    feature_extractor: str
    feature_dim: int
    batch_size: int
    seed: int
    wall_time_s: float
    device: str
    resumed: bool
    result_path: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric_states(metric, which: str) -> dict[str, Tensor]:
    return {k: getattr(metric, f"{which}_{k}").detach().cpu().clone() for k in _STATES}


def _load_states(metric, which: str, states: dict[str, Tensor]) -> None:
    for k in _STATES:
        getattr(metric, f"{which}_{k}").copy_(states[k])


def _save_state(path: Path, state: dict) -> None:
    """Write the resume state atomically, its sha256 recorded beside it (checked when it is read back)."""
    atomic_write(path, lambda f: torch.save(state, f), mode="wb", record_sha256=True)


def compute_fid(
    real: ImageSource,
    fake: ImageSource,
    n: int = DEFAULT_N,
    n_real: int | None = None,
    batch_size: int = 200,
    extractor: nn.Module | None = None,
    feature: int = 2048,
    weights_path: str | Path | None = None,
    antialias: bool = False,
    device: str | torch.device | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    name: str = "fid",
    state_path: str | Path | None = None,
    save_every: int = 25,
    keep_state: bool = False,
    progress: bool = False,
) -> FIDResult:
    """FID between ``n_real`` images of ``real`` and ``n`` images of ``fake`` (paper Tab. 2; resumable).

    Args:
        real, fake: an :data:`ImageSource` each: a tensor (N, C, H, W) in [-1, 1], a Dataset of
            ``(image, label)``, or a sampler ``f(m) -> (m, C, H, W)`` (e.g. ``learner.sample``, run under
            ``torch.no_grad``; the global RNG is seeded per batch). Tensors / Datasets are read through a
            seeded permutation (no repeats; they need at least ``n_real`` / ``n`` images).
        n: generated images (default 50 000, the reference protocol); ``n_real`` defaults to ``n``.
        batch_size: images per feature pass (200 as in the reference).
        extractor: an ``nn.Module`` mapping images (B, C, H, W) in [-1, 1] to features (B, d); default
            Inception-v3 (``feature``: 64 | 192 | 768 | 2048) on uint8 RGB images (:func:`to_uint8`).
        weights_path: the Inception weights file (see :func:`resolve_weights`).
        antialias: torchmetrics' resize option for Inception (False: TF-1-compatible bilinear).
        device: where features are computed (default: the default device).
        seed: picks the real images and seeds the sampler's batches.
        run_dir: a run directory: the result goes to ``<run_dir>/results/<name>.json`` and the running state
            to ``<run_dir>/results/<name>.state.pt`` (unless ``state_path`` is given).
        state_path: the resume file (None and no ``run_dir``: not resumable).
        save_every: write the state every this many batches (and after the real set).
        keep_state: keep the state file once done (default: delete it; it holds 2 (d, d) float64 sums).
        progress: a tqdm bar.

    Returns:
        :class:`FIDResult` (``fid``, sample counts, feature extractor, time summed over resumed sessions).

    Raises:
        FIDWeightsNotFoundError: Inception weights missing and not downloadable.
        ConfigError: too few real images, or a state file written for other settings (delete it).
    """
    t0 = time.perf_counter()
    n_real = n if n_real is None else n_real
    if n < 2 or n_real < 2 or batch_size < 1 or save_every < 1:
        raise ConfigError("compute_fid needs n, n_real >= 2, batch_size >= 1 and save_every >= 1")
    for src, want, label in ((real, n_real, "real"), (fake, n, "fake")):
        have = _source_len(src)
        if have is not None and have < want:
            raise ConfigError(f"The {label} set has {have} images, fewer than the {want} asked for; "
                              f"pass {'n_real' if label == 'real' else 'n'}={have} or more images")
    dev = get_device(device)
    if run_dir is not None and state_path is None:
        state_path = Path(run_dir) / "results" / f"{name}.state.pt"
    state_path = None if state_path is None else Path(state_path)

    if extractor is None:
        metric = inception_metric(weights_path, feature=feature, antialias=antialias)
        prepare: Callable[[Tensor], Tensor] = to_uint8
        label = f"inception-v3 (torch-fidelity {WEIGHTS_FILE}), {feature} features"
        dim = feature
    else:
        extractor.eval()
        metric = feature_metric(extractor, _Reader(real, n_real, batch_size, seed, 0)(0))
        prepare = lambda x: x.float()  # noqa: E731
        label = f"custom: {type(extractor).__name__}"
        dim = int(metric.inception.num_features)
    metric = metric.to(dev)
    key = {"version": STATE_VERSION, "name": name, "n": n, "n_real": n_real, "batch_size": batch_size,
           "seed": seed, "feature_extractor": label, "feature_dim": dim}

    done = {"real": 0, "fake": 0}
    elapsed, resumed = 0.0, False
    if state_path is not None and state_path.is_file():
        st = safe_torch_load(state_path, "FID state file", "delete it (or pass another name=/state_path=) to "
                             "compute the FID afresh")
        if not isinstance(st, dict) or st.get("key") != key:
            raise ConfigError(
                f"FID state file {state_path} was written for other settings:\n"
                f"  stored {st.get('key') if isinstance(st, dict) else type(st).__name__}\n"
                f"  now    {key}\nDelete it (or pass another name=/state_path=) to start afresh."
            )
        for which in ("real", "fake"):
            _load_states(metric, which, st[which])
        done, elapsed, resumed = dict(st["done"]), float(st["elapsed_s"]), True

    def snapshot() -> dict:
        return {"key": key, "done": dict(done), "elapsed_s": elapsed + time.perf_counter() - t0,
                "real": _metric_states(metric, "real"), "fake": _metric_states(metric, "fake")}

    passes = (("real", _Reader(real, n_real, batch_size, seed, 0)), ("fake", _Reader(fake, n, batch_size, seed, 1)))
    bar = None
    if progress:
        bar = tqdm(total=sum(len(r) for _, r in passes), initial=done["real"] + done["fake"], desc=f"FID {name}")
    with torch.no_grad():
        for which, reader in passes:
            n_batches = len(reader)
            for b in range(done[which], n_batches):
                metric.update(prepare(reader(b).to(dev)), real=which == "real")
                done[which] = b + 1
                if bar is not None:
                    bar.update(1)
                if state_path is not None and (done[which] % save_every == 0 or done[which] == n_batches):
                    _save_state(state_path, snapshot())
    if bar is not None:
        bar.close()
    value = fid_from_stats(_metric_states(metric, "real"), _metric_states(metric, "fake"))
    res = FIDResult(
        name=name, fid=value, n_real=int(metric.real_features_num_samples), n_fake=int(metric.fake_features_num_samples),
        feature_extractor=label, feature_dim=dim, batch_size=batch_size, seed=seed,
        wall_time_s=round(elapsed + time.perf_counter() - t0, 3), device=device_name(dev), resumed=resumed,
    )
    if run_dir is not None:
        out = Path(run_dir) / "results" / f"{name}.json"
        res.result_path = str(out)
        write_json_atomic(out, res.as_dict())
    if state_path is not None and not keep_state:
        state_path.unlink(missing_ok=True)
        sha256_sidecar(state_path).unlink(missing_ok=True)
    return res


# ----------------------------------------------------------------------------------------------
# Reconstruction error (paper Tab. 2, "MSE")
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruction_report(
    reconstruct: Callable[[Tensor], Tensor], data: ImageSource, batch_size: int = 500,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Mean per-pixel reconstruction MSE over a test set, on both scales (report 1.9: the paper's scale is
    unstated, so the book reports both).

    ``reconstruct``: images (B, C, H, W) -> reconstructions, e.g. ``learner.reconstruct`` (from the posterior
    means); ``data``: a tensor (N, C, H, W) in [-1, 1] or a Dataset. Per image it is
    :func:`jebm_lite.analysis.metrics.reconstruction_mse`; returns ``{"mse_01", "mse_pm1", "n"}`` (``mse_pm1`` =
    4 ``mse_01``).
    """
    dev = get_device(device)
    length = _source_len(data)
    if length is None:
        raise ConfigError("reconstruction_report needs a tensor or a Dataset of test images")
    total, count = 0.0, 0
    for i in range(0, length, batch_size):
        if isinstance(data, Tensor):
            x = data[i:i + batch_size]
        else:
            items = [data[j] for j in range(i, min(i + batch_size, length))]
            x = torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])
        x = x.to(dev)
        total += float(reconstruction_mse(x, reconstruct(x), scale="01").double().sum())
        count += x.shape[0]
    mse01 = total / count
    return {"mse_01": mse01, "mse_pm1": 4 * mse01, "n": count}
