"""Tests of the SVHN-like colour-digit stand-in (jebm_lite.data.colour_digits), rendered from the real
MNIST files in ../shared/data."""

from __future__ import annotations

import pytest
import torch

from jebm_lite.data import DataNotFoundError, as_tensors, colour_digits, get_dataset, get_loader, image_shape
from jebm_lite.data.colour_digits import ColourDigits, RenderOptions, luminance
from jebm_lite.data.mnist import load as load_mnist
from jebm_lite.runtime import ConfigError


@pytest.fixture(scope="module", autouse=True)
def _tmp_cache(tmp_jebm_cache):
    """Derived files (decompressed idx) go to a temporary cache, not the user's home (conftest)."""
    yield


@pytest.fixture(scope="module")
def mnist_test(shared_data):
    return load_mnist("mnist", "test", shared_data)


@pytest.fixture(scope="module")
def test_set(shared_data) -> ColourDigits:
    return get_dataset("colour_mnist", "test", root=shared_data)


@pytest.fixture(scope="module")
def plain(mnist_test) -> ColourDigits:
    """The test split without neighbour fragments (every border pixel is background)."""
    return colour_digits.make(mnist_test.images, mnist_test.targets, seed=1, options=RenderOptions(distractors=False))


def _unlit(ds: ColourDigits) -> torch.Tensor:
    """Images (N, 3, 32, 32) in [0, 1] with the recorded lighting divided out."""
    x = ds.images.float() / 255
    return x / colour_digits._shade(ds.factors.light_angle, ds.factors.light_strength)


def test_shape_range_labels(test_set, mnist_test, shared_data):
    assert image_shape("colour_mnist") == (3, 32, 32)
    assert len(test_set) == 10000
    x, y = test_set[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    xs, ys = as_tensors(test_set)
    assert xs.min() >= -1 and xs.max() <= 1 and xs.min() < -0.9 and xs.max() > 0.9
    assert torch.equal(ys, mnist_test.targets)
    assert torch.equal(test_set.factors.label, mnist_test.targets)
    assert torch.equal(test_set.factors.mnist_index, torch.arange(10000))
    with pytest.raises(ConfigError, match="train, test"):
        get_dataset("colour_mnist", "extra", root=shared_data)


def test_deterministic_and_per_index(test_set, shared_data, mnist_test):
    colour_digits._CACHE.clear()
    again = get_dataset("colour_mnist", "test", root=shared_data)
    assert again.images is not test_set.images and torch.equal(again.images, test_set.images)
    assert torch.equal(again.factors.background, test_set.factors.background)
    # item i does not depend on which other items are rendered, nor on the chunking
    sub = get_dataset("colour_mnist", "test", root=shared_data, classes=(3, 7), subset=300)
    idx = sub.factors.mnist_index
    assert len(sub) == 300 and set(sub.targets.tolist()) == {3, 7}
    assert torch.equal(idx, torch.nonzero(torch.isin(mnist_test.targets, torch.tensor([3, 7]))).squeeze(1)[:300])
    assert torch.equal(sub.images, test_set.images[idx])
    rows = torch.tensor([5, 9000, 17])
    f = colour_digits.draw_factors(rows, mnist_test.targets, seed=1, opts=RenderOptions())
    assert torch.equal(colour_digits.render(mnist_test.images, f, chunk=2), test_set.images[rows])
    first = get_dataset("colour_mnist", "test", root=shared_data, subset=50)
    assert torch.equal(first.images, test_set.images[:50])
    # another seed or split gives other images
    other = colour_digits.load("test", shared_data, subset=50, seed=1)
    assert (other.images.float() - first.images.float()).abs().mean() > 20
    train = get_dataset("colour_mnist", "train", root=shared_data, subset=50)
    assert not torch.allclose(train.factors.background, first.factors.background)


def test_factors_vary(test_set):
    f = test_set.factors
    assert len(f) == 10000
    assert (f.background.std(0) > 0.25).all() and (f.stroke.std(0) > 0.2).all()
    assert f.light_strength.min() < 0.02 and f.light_strength.max() > 0.48
    assert f.light_angle.min() < 0.1 and f.light_angle.max() > 6.1
    assert f.thickness.min() < -0.25 and f.thickness.max() > 1.15
    assert f.rotation.min() < -14 and f.rotation.max() > 14
    assert f.scale.min() < 0.92 and f.scale.max() > 1.13
    assert (f.shift.abs().amax(0) > 1.9).all()
    for side in ("left", "right"):
        present = getattr(f, side + "_index") >= 0
        assert 0.45 < present.float().mean() < 0.55
        labels = getattr(f, side + "_label")
        assert (labels[~present] == -1).all() and labels[present].unique().numel() == 10
    # the nuisance factors do not depend on the digit
    per_class = torch.stack([f.background[f.label == k].mean(0) for k in range(10)])
    assert (per_class - f.background.mean(0)).abs().max() < 0.05
    d = f[7]
    assert d["label"] == int(test_set.targets[7]) and len(d["background"]) == 3 and isinstance(d["rotation"], float)


def test_background_recovered_from_border(plain, test_set):
    # no fragments: the whole 1-pixel border is background; the lighting ramp averages out over it
    x = plain.images.float() / 255
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], -1).mean(-1)
    est = border / (1 - plain.factors.light_strength[:, None] / 2)
    err = (est - plain.factors.background).abs().amax(1)
    assert torch.quantile(err, 0.99) < 0.02, err.max()
    # with fragments at the left / right edges the top and bottom rows still give it
    x = test_set.images.float() / 255
    rows = torch.cat([x[..., 0, :], x[..., -1, :]], -1).mean(-1)
    est = rows / (1 - test_set.factors.light_strength[:, None] / 2)
    err = (est - test_set.factors.background).abs().amax(1)
    assert torch.quantile(err, 0.95) < 0.03, torch.quantile(err, 0.95)


def test_stroke_contrast_and_colour(plain):
    f = plain.factors
    assert (f.contrast >= RenderOptions().min_contrast - 1e-4).all()
    assert torch.allclose(f.contrast, (luminance(f.stroke) - luminance(f.background)).abs(), atol=1e-5)
    y = luminance(_unlit(plain).permute(0, 2, 3, 1))  # (N, 32, 32)
    dev = (y - luminance(f.background)[:, None, None]).abs().flatten(1)
    # the stroke really stands out from the background: it reaches its full colour (eroded thin strokes
    # come close: bilinear resampling blurs them)
    ratio = dev.amax(1) / f.contrast
    assert ratio.median() > 0.97 and torch.quantile(ratio, 0.01) > 0.8
    assert torch.quantile(dev.amax(1), 0.01) > 0.24
    # the pixel farthest from the background has the recorded stroke colour
    x = _unlit(plain).flatten(2)
    pick = dev.argmax(1)
    colour = x[torch.arange(len(plain)), :, pick]
    err = (colour - f.stroke).abs().amax(1)
    assert torch.quantile(err, 0.9) < 0.03, torch.quantile(err, 0.9)
    # thicker strokes cover more pixels (same digits, thickness as the only change)
    mask = (dev > 0.5 * (luminance(f.stroke) - luminance(f.background)).abs()[:, None]).float().mean(1)
    thick, thin = f.thickness > 0.9, f.thickness < 0
    assert mask[thick].mean() > 1.5 * mask[thin].mean()


def test_return_factors_and_loader(shared_data):
    ds = colour_digits.load("test", shared_data, subset=64, return_factors=True)
    x, y, fac = ds[2]
    assert x.shape == (3, 32, 32) and fac["label"].item() == y and fac["background"].shape == (3,)
    xb, yb, fb = next(iter(get_loader(ds, batch_size=16, shuffle=False)))
    assert xb.shape == (16, 3, 32, 32) and torch.equal(fb["label"], yb) and fb["shift"].shape == (16, 2)
    plain = get_dataset("colour_mnist", "test", root=shared_data, subset=64)
    xb2, yb2 = next(iter(get_loader(plain, batch_size=16, shuffle=False)))
    assert torch.equal(xb, xb2) and torch.equal(yb, yb2)
    sel = ds.select(torch.tensor([3, 1]))
    assert isinstance(sel, ColourDigits) and sel.factors.mnist_index.tolist() == [3, 1] and sel.return_factors


def test_missing_mnist(tmp_path):
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        get_dataset("colour_mnist", "test", root=tmp_path)


def test_estimate_colours_and_ink28(test_set):
    """The factor read-outs used on generated images (chapter 6) recover the recorded factors on real ones."""
    x = test_set.images.float() / 127.5 - 1
    f = test_set.factors
    bg, stroke = colour_digits.estimate_colours(x)
    lit = 1 - f.light_strength[:, None] / 2
    assert torch.quantile((bg - f.background * lit).abs().amax(1), 0.95) < 0.03
    err = (stroke - f.stroke * lit).abs().amax(1)
    assert torch.quantile(err, 0.5) < 0.05 and torch.quantile(err, 0.9) < 0.15
    for c in range(3):
        assert torch.corrcoef(torch.stack([stroke[:, c], (f.stroke * lit)[:, c]]))[0, 1] > 0.95
    ink = colour_digits.Ink28()
    y = ink(x[:8])
    assert y.shape == (8, 1, 28, 28) and y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5
    assert torch.allclose(ink(torch.full((1, 3, 32, 32), 0.2)), torch.full((1, 1, 28, 28), -1.0), atol=1e-3)
    # colours and polarity drop out: the negative image gives the same ink map
    assert torch.allclose(ink(x[:8]), ink(-x[:8]), atol=1e-4)
