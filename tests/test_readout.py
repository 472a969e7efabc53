"""The per-layer factor read-out of chapter 6 (jebm_lite.analysis.readout) on a model whose layers control
known factors: layer 1 the background colour, layer 2 the stroke colour and, through it, the "digit"."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from jebm_lite.analysis import readout
from jebm_lite.training.learner import LayeredModel


class TwoFactorModel(nn.Module):
    """A LayeredModel with codes z1 (3 units) -> background RGB and z2 (3 units) -> stroke RGB of a bar."""

    state_kind = "codes"
    z_dims = (3, 3)

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))  # a device for the analyses

    @property
    def device(self) -> torch.device:
        return self.dummy.device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (3, 32, 32)

    def sample_state(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        return [torch.randn(n, d, generator=generator) for d in self.z_dims]

    def resample_layers(self, state, layers, generator=None):
        out = [s.clone() for s in state]
        for i in layers:
            out[i] = torch.randn(out[i].shape, generator=generator)
        return out

    def decode_state(self, state) -> Tensor:
        bg, stroke = torch.sigmoid(2 * state[0]), torch.sigmoid(2 * state[1])  # colours in [0, 1]
        x = bg[:, :, None, None].expand(-1, -1, 32, 32).clone()
        x[:, :, 4:28, 14:18] = stroke[:, :, None, None]  # a vertical bar: the "digit"
        return 2 * x - 1

    # the rest of the LatentModel protocol (the read-out never encodes images: calling this is a test failure)
    def encode(self, x):
        raise NotImplementedError("layer_factor_changes must not need encode")

    def decode(self, zs):
        return self.decode_state(zs)

    def sample_latents(self, n):
        return self.sample_state(n)

    def sample(self, n):
        return self.decode_state(self.sample_state(n))


def classify_by_stroke(x: Tensor) -> Tensor:
    """'Digit' = whether the bar's red channel is above one half."""
    return ((x[:, 0, 16, 16] + 1) / 2 > 0.5).long()


@pytest.mark.parametrize("reading", ["swap", "resample"])
def test_read_out_finds_the_layer_of_each_factor(reading: str) -> None:
    model = TwoFactorModel()
    assert isinstance(model, LayeredModel)
    rows = readout.layer_factor_changes(model, classify_by_stroke, reading, n_contexts=32, n_changes=8, seed=0)
    assert list(rows) == ["z2", "z1", "all"]  # top layer first, then all layers
    for row in rows.values():
        assert set(row) == set(readout.FACTOR_COLUMNS)
    # background moves only with z1, the stroke and the digit only with z2
    assert rows["z1"]["background colour change"] > 0.2
    assert rows["z2"]["background colour change"] < 0.02
    assert rows["z2"]["stroke colour change"] > 0.2
    assert rows["z1"]["stroke colour change"] < 0.05
    assert rows["z1"]["digit change (%)"] == 0.0
    assert 20 < rows["z2"]["digit change (%)"] <= 100
    assert rows["all"]["digit change (%)"] == pytest.approx(rows["z2"]["digit change (%)"], abs=15)


def test_read_out_is_seeded_and_rejects_unknown_readings() -> None:
    model = TwoFactorModel()
    a = readout.layer_factor_changes(model, classify_by_stroke, "swap", 8, 4, seed=3)
    b = readout.layer_factor_changes(model, classify_by_stroke, "swap", 8, 4, seed=3)
    assert a == b
    with pytest.raises(ValueError, match="reading"):
        readout.layer_factor_changes(model, classify_by_stroke, "shuffle")


def test_digit_agreement_counts_correct_labels() -> None:
    x = torch.zeros(5, 3, 32, 32)
    x[:2, 0, 16, 16] = 1.0  # red bar -> class 1
    y = torch.tensor([1, 1, 0, 0, 1])
    assert readout.digit_agreement(classify_by_stroke, x, y, batch_size=2) == pytest.approx(4 / 5)
