"""Tests of jebm_lite.analysis.fid: FID through torchmetrics with a small injected feature network, resuming after an
interruption, the Inception weights lookup (local file, variable, hub cache, offline error), and the
test-set reconstruction MSE. CPU, no network, no real Inception weights."""

from __future__ import annotations

import json
import urllib.error

import pytest
import torch
from torch import nn

from jebm_lite.analysis import fid
from jebm_lite.analysis.metrics import DigitCNN, frechet_distance
from jebm_lite.data import DataNotFoundError
from jebm_lite.runtime import ConfigError


def small_cnn(seed: int = 0, channels: int = 3) -> nn.Module:
    """A random conv net: (B, C, 32, 32) -> (B, 32) features."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
    )


def smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, 32, 32) in [-1, 1]: upsampled 8 x 8 noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, 8, 8, generator=g)
    return torch.tanh(nn.functional.interpolate(z, size=32, mode="bilinear", align_corners=False))


class Sampler:
    """A generator stand-in, ``f(m) -> (m, 3, 32, 32)``, drawing from the global RNG; raises on call
    ``fail_at`` (0-based) to simulate an interruption."""

    def __init__(self, fail_at: int | None = None, shift: float = 0.0) -> None:
        self.calls, self.fail_at, self.shift = 0, fail_at, shift

    def __call__(self, m: int) -> torch.Tensor:
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        z = torch.randn(m, 3, 8, 8)
        return torch.tanh(nn.functional.interpolate(z, size=32, mode="bilinear", align_corners=False) + self.shift)


def test_identical_sets_zero_and_monotone_in_shift():
    x = smooth_images(400)
    net = small_cnn()
    same = fid.compute_fid(x, x, n=400, batch_size=100, extractor=net)
    assert same.n_real == same.n_fake == 400 and same.feature_dim == 32
    values = [fid.compute_fid(x, (x + d).clamp(-1, 1), n=400, batch_size=100, extractor=net).fid
              for d in (0.05, 0.15, 0.3, 0.6)]
    assert abs(same.fid) < 1e-6 * values[0]
    assert all(a < b for a, b in zip(values, values[1:])), values
    # the same number as Fréchet distance on the features computed in one go
    y = (x + 0.3).clamp(-1, 1)
    with torch.no_grad():
        direct = frechet_distance(net(x), net(y))
    assert values[2] == pytest.approx(direct, rel=1e-6)


def test_subset_sampling_and_sampler_determinism():
    net = small_cnn()
    x = smooth_images(500)
    a = fid.compute_fid(x, Sampler(), n=300, batch_size=64, extractor=net, seed=3)
    b = fid.compute_fid(x, Sampler(), n=300, batch_size=64, extractor=net, seed=3)
    c = fid.compute_fid(x, Sampler(), n=300, batch_size=64, extractor=net, seed=4)
    assert a.fid == b.fid and a.fid != c.fid
    assert torch.get_rng_state() is not None  # the global RNG stays usable (fork_rng restores it)
    with pytest.raises(ConfigError, match="fewer than"):
        fid.compute_fid(x, Sampler(), n=600, extractor=net)


@pytest.mark.parametrize("interrupt", ["real", "fake"])
def test_resume_gives_the_same_fid(tmp_path, interrupt):
    net = small_cnn()
    kw = dict(n=360, batch_size=40, extractor=net, seed=1)  # 9 batches per set
    full = fid.compute_fid(Sampler(), Sampler(shift=0.2), **kw)
    run = tmp_path / "run"
    state = run / "results" / "fid.state.pt"
    real = Sampler(fail_at=5 if interrupt == "real" else None)
    fake = Sampler(fail_at=7 if interrupt == "fake" else None, shift=0.2)
    with pytest.raises(KeyboardInterrupt):
        fid.compute_fid(real, fake, run_dir=run, save_every=2, **kw)
    assert state.is_file() and not (run / "results" / "fid.json").exists()
    saved = torch.load(state, weights_only=False)
    assert saved["done"] == ({"real": 4, "fake": 0} if interrupt == "real" else {"real": 9, "fake": 6})
    again = fid.compute_fid(Sampler(), Sampler(shift=0.2), run_dir=run, save_every=2, **kw)
    assert again.resumed and not full.resumed
    assert again.fid == pytest.approx(full.fid, rel=1e-12, abs=1e-12)
    assert (again.n_real, again.n_fake) == (360, 360)
    stored = json.loads((run / "results" / "fid.json").read_text())
    assert stored["fid"] == again.fid and stored["n_fake"] == 360 and "custom" in stored["feature_extractor"]
    assert stored["wall_time_s"] > 0 and not state.exists()


def test_state_for_other_settings_is_refused(tmp_path):
    net = small_cnn()
    state = tmp_path / "s.pt"
    with pytest.raises(KeyboardInterrupt):
        fid.compute_fid(Sampler(), Sampler(fail_at=1), n=80, batch_size=20, extractor=net, state_path=state)
    with pytest.raises(ConfigError, match="Delete it"):
        fid.compute_fid(Sampler(), Sampler(), n=80, batch_size=40, extractor=net, state_path=state)


def test_digit_classifier_features():
    net = DigitCNN()
    feats = fid.digit_features(net)
    x = smooth_images(64)[:, :1, 2:30, 2:30]
    assert feats(x).shape == (64, 64)
    r = fid.compute_fid(x, (x * 0.5), n=64, batch_size=32, extractor=feats)
    assert r.feature_dim == 64 and r.fid > 0


def test_to_uint8():
    x = torch.tensor([-1.0, -2.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5)
    u = fid.to_uint8(x)
    assert u.dtype == torch.uint8 and u.shape == (1, 3, 1, 5)
    assert u[0, 0, 0].tolist() == [0, 0, 128, 255, 255]


# ---------------------------------------------------------------------------------------------
# Inception weights: local file, environment variable, hub cache, offline error
# ---------------------------------------------------------------------------------------------


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """No network (the download raises URLError) and an empty torch hub cache."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    def no_network(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fe, "load_state_dict_from_url", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(fid.WEIGHTS_ENV, raising=False)
    return tmp_path


def test_offline_without_weights_says_what_to_do(offline, monkeypatch):
    x = smooth_images(4)
    with pytest.raises(fid.FIDWeightsNotFoundError) as err:
        fid.compute_fid(x, x, n=4)
    msg = str(err.value)
    assert isinstance(err.value, DataNotFoundError)
    for part in (fid.WEIGHTS_FILE, fid.WEIGHTS_ENV, fid.WEIGHTS_URL, str(fid.hub_weights_path()), "download failed"):
        assert part in msg, part
    assert str(offline / "torch_home") in msg
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(offline / "nowhere.pth"))
    with pytest.raises(fid.FIDWeightsNotFoundError, match="nowhere.pth, which does not exist"):
        fid.inception_metric()


def _random_inception_file(path, monkeypatch) -> None:
    """Save the state dict of a randomly initialised torch-fidelity Inception (the real file's layout)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    with monkeypatch.context() as m:
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["64"])
    torch.save(net.state_dict(), path)


def test_local_weights_file_env_and_hub_cache(offline, monkeypatch):
    weights = offline / "inception.pth"
    _random_inception_file(weights, monkeypatch)
    x = smooth_images(6)
    y = (x + 0.5).clamp(-1, 1)
    a = fid.compute_fid(x, y, n=6, batch_size=3, feature=64, weights_path=weights)
    assert a.feature_dim == 64 and "inception" in a.feature_extractor and a.fid > 0
    monkeypatch.setenv(fid.WEIGHTS_ENV, str(weights))
    b = fid.compute_fid(x, y, n=6, batch_size=3, feature=64)
    monkeypatch.delenv(fid.WEIGHTS_ENV)
    hub = fid.hub_weights_path()
    hub.parent.mkdir(parents=True)
    weights.rename(hub)
    c = fid.compute_fid(x, y, n=6, batch_size=3, feature=64)
    assert a.fid == b.fid == c.fid
    grey = fid.compute_fid(x[:, :1], y[:, :1], n=6, batch_size=3, feature=64)  # grey -> RGB
    assert grey.fid > 0
    bad = offline / "bad.pth"
    torch.save({"weight": torch.zeros(1)}, bad)
    with pytest.raises(fid.FIDWeightsNotFoundError, match="is not that file"):
        fid.inception_metric(bad, feature=64)


# ---------------------------------------------------------------------------------------------
# Reconstruction MSE
# ---------------------------------------------------------------------------------------------


def test_reconstruction_report_scales():
    x = smooth_images(50) * 0.5
    assert fid.reconstruction_report(lambda v: v, x)["mse_01"] == 0
    r = fid.reconstruction_report(lambda v: v + 0.2, x, batch_size=16)
    assert r["n"] == 50
    assert r["mse_01"] == pytest.approx(0.01, rel=1e-5) and r["mse_pm1"] == pytest.approx(0.04, rel=1e-5)
    ds = torch.utils.data.TensorDataset(x, torch.zeros(50))
    assert fid.reconstruction_report(lambda v: v + 0.2, ds)["mse_01"] == pytest.approx(0.01, rel=1e-5)
