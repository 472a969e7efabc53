"""Helpers added for chapter 1 (single-layer LEBM): viz and metrics functions."""

from __future__ import annotations

import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from jebm_lite.analysis import metrics, viz  # noqa: E402


def test_class_palette_avoids_prior_colour():
    cols = viz.class_palette(3)
    assert len(cols) == 3 and len(set(cols)) == 3
    assert viz.PRIOR_COLOR not in viz.class_palette(9)
    assert cols[0] == viz.POSTERIOR_COLOR
    with pytest.raises(ValueError):
        viz.class_palette(0)
    with pytest.raises(ValueError):
        viz.class_palette(10)


def test_unit_sweep_codes_varies_only_the_unit():
    base = torch.tensor([[0.5, -1.0, 2.0], [3.0, 4.0, 5.0]])
    values = torch.linspace(-2, 2, 5)
    out = viz.unit_sweep_codes(base, 1, values)
    assert out.shape == (10, 3)
    grid = out.reshape(2, 5, 3)
    # the swept unit takes the values along every row
    assert torch.equal(grid[0, :, 1], values) and torch.equal(grid[1, :, 1], values)
    # the other units are the base code's, unchanged
    assert torch.equal(grid[:, :, 0], base[:, None, 0].expand(2, 5))
    assert torch.equal(grid[:, :, 2], base[:, None, 2].expand(2, 5))
    # negative unit index and base untouched
    out_neg = viz.unit_sweep_codes(base, -2, values)
    assert torch.equal(out, out_neg)
    assert torch.equal(base, torch.tensor([[0.5, -1.0, 2.0], [3.0, 4.0, 5.0]]))
    with pytest.raises(ValueError):
        viz.unit_sweep_codes(torch.zeros(3), 0, values)
    with pytest.raises(IndexError):
        viz.unit_sweep_codes(base, 3, values)


def _history(n: int = 60) -> list[dict]:
    rows = []
    for s in range(1, n + 1):
        rows.append({"step": s, "energy/post": 1.0 + 0.01 * s, "energy/prior": 0.5, "mse": 0.1})
    rows.insert(10, {"event": "rollback", "step": 10})
    return rows


def test_plot_energy_diagnostic_draws_both_series_in_book_colours():
    ax = viz.plot_energy_diagnostic(_history(), smooth=5)
    lines = ax.get_lines()
    assert len(lines) == 4  # raw + smoothed, for posterior and prior
    colours = {to_hex(line.get_color()).lower() for line in lines}
    assert colours == {viz.POSTERIOR_COLOR.lower(), viz.PRIOR_COLOR.lower()}
    smoothed_post = lines[1].get_ydata()
    assert len(smoothed_post) == 60 - 5 + 1
    # the moving average of a linear ramp is the ramp at the window centre
    np.testing.assert_allclose(smoothed_post[0], 1.0 + 0.01 * 3, rtol=1e-6)
    assert ax.get_xlabel() == "iteration" and ax.get_legend() is not None
    plt.close("all")
    # a history without energies does not crash
    ax = viz.plot_energy_diagnostic([{"step": 1, "mse": 0.1}])
    assert "not logged" in ax.get_title()
    plt.close("all")


def test_plot_chains_2d_one_line_per_chain():
    fig, ax = plt.subplots()
    chain = torch.randn(11, 4, 2)
    viz.plot_chains_2d(ax, chain)
    assert len(ax.get_lines()) == 4
    np.testing.assert_allclose(ax.get_lines()[2].get_xdata(), chain[:, 2, 0].numpy())
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["prior chains"]
    with pytest.raises(ValueError):
        viz.plot_chains_2d(ax, torch.randn(11, 4, 3))
    plt.close(fig)


def test_count_label_changes():
    labels = torch.tensor([[0, 0, 1, 1, 2], [1, 1, 1, 1, 1], [0, 1, 0, 1, 0]])
    assert metrics.count_label_changes(labels).tolist() == [2, 0, 4]
    assert metrics.count_label_changes(torch.zeros(3, 1, dtype=torch.long)).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        metrics.count_label_changes(torch.zeros(5, dtype=torch.long))


def test_time_per_call_measures_a_sleep():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)

    t = metrics.time_per_call(fn, repeat=3, number=2, warmup=1)
    assert len(calls) == 1 + 3 * 2
    assert 0.009 < t < 0.1


def test_show_sweep_ticks_and_labels():
    fig, ax = plt.subplots()
    images = torch.rand(2 * 4, 1, 28, 28) * 2 - 1
    labels = torch.tensor([0, 0, 1, 2, 1, 1, 1, 1])
    viz.show_sweep(ax, images, col_values=[-1.5, -0.5, 0.5, 1.5], row_values=[-1e-8, 1.0], xlabel="z_1",
                   ylabel="z_2", labels=labels, title="t")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-1.5", "-0.5", "0.5", "1.5"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.0", "1.0"]
    # tick k sits at the centre of tile k (1-pixel padding between 28-pixel tiles)
    np.testing.assert_allclose(ax.get_xticks(), [1 + k * 29 + 13.5 for k in range(4)])
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["0", "0", "1", "2", "1", "1", "1", "1"]
    palette = viz.class_palette(3)
    assert to_hex(ax.texts[3].get_color()) == palette[2].lower()
    assert ax.get_xlabel() == "z_1" and ax.get_title() == "t"
    plt.close(fig)


def test_plot_chains_2d_outline_switch():
    fig, ax = plt.subplots()
    viz.plot_chains_2d(ax, torch.randn(5, 2, 2), outline=False)
    assert all(not line.get_path_effects() for line in ax.get_lines())
    viz.plot_chains_2d(ax, torch.randn(5, 2, 2), outline=True)
    assert all(line.get_path_effects() for line in ax.get_lines()[2:])
    plt.close(fig)
