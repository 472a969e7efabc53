"""The book's display helpers: result tables a reader can read, figures that fit the column."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from jebm_lite.analysis import viz  # noqa: E402
from jebm_lite.experiments.tables import display_frame  # noqa: E402


def test_display_frame_names_rows_formats_numbers_and_lifts_constants():
    rows = [{"arm": "A", "prior": "joint", "n": 12000, "d": 3.456, "dev": "cpu", "x": None},
            {"arm": "A", "prior": "vlae", "n": 3, "d": -1.0, "dev": "cpu", "x": 0.5}]
    table, note = display_frame(rows, {"arm": "arm", "prior": "prior", "n": "pairs", "d": ("mean d", "+.1f"),
                                       "dev": "device", "x": ("x", ".2f")}, ["arm", "prior"])
    df = table.data
    assert list(df.columns) == ["arm", "prior", "pairs", "mean d", "x"]  # keys first, constant column lifted
    assert note == "device: cpu"
    assert df["arm"].tolist() == ["A", ""]  # a repeated group key is blank, as in a printed table
    assert df["pairs"].tolist() == ["12,000", "3"] and df["mean d"].tolist() == ["+3.5", "-1.0"]
    assert df["x"].tolist() == ["–", "0.50"]  # missing values are a dash
    html = table.to_html()
    assert "jebm-table" in html and "<th" in html
    assert ">0<" not in html.replace(" ", "")  # no pandas row numbers
    # two columns under one header: the second would silently replace the first
    with pytest.raises(ValueError, match="share the header"):
        display_frame(rows, {"arm": "arm", "n": ("same", ","), "d": ("same", ".1f")}, "arm")


def test_readability_problems_catch_wide_figures_and_small_text():
    fig, ax = plt.subplots(figsize=(viz.COLUMN_WIDTH_IN, 3))
    ax.set_title("fine", fontsize=10)
    assert viz.readability_problems(fig) == []
    ax.text(0.5, 0.5, "tiny", fontsize=6)
    assert any("6.0 pt" in p for p in viz.readability_problems(fig))
    wide, _ = plt.subplots(figsize=(11, 3))
    assert any("11.0 in" in p for p in viz.readability_problems(wide))
    plt.close("all")


def test_paired_differences_plot_draws_dots_interval_and_paper():
    viz.set_style()
    fig, ax = plt.subplots(figsize=(viz.COLUMN_WIDTH_IN, 3))
    viz.plot_paired_differences(ax, [{"label": "A", "diffs": [1.0, 2.0, 6.0], "low": -1.0, "high": 7.0,
                                      "paper": 15.6},
                                     {"label": "B", "diffs": [], "low": None, "high": None, "paper": None}])
    dots = [c for c in ax.collections if len(c.get_offsets()) == 3]
    assert dots, "one dot per pair"
    stars = [c for c in ax.collections if len(c.get_offsets()) == 1 and c.get_offsets()[0][1] == 15.6]
    assert stars, "the paper's value"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["A", "B"]
    assert viz.readability_problems(fig) == []
    plt.close("all")


def test_frame_table_formats_numbers_names_rows_and_passes_text():
    import pandas as pd

    from jebm_lite.experiments.tables import frame_table

    df = pd.DataFrame({"kl_nats": [1.23456, 70000.0], "note": ["a", "b"], "units": [2, 3000]},
                      index=pd.Index(["z_1", "z_2"], name="layer"))
    data = frame_table(df, fmt={"kl_nats": ".2f"}).data
    assert list(data.columns) == ["layer", "kl nats", "note", "units"]
    assert data["kl nats"].tolist() == ["1.23", "70000.00"] and data["note"].tolist() == ["a", "b"]
    assert data["units"].tolist() == ["2", "3,000"]  # integers stay integers
    assert list(frame_table(pd.DataFrame({"a_t": [1.0], "z_path_resid": [2.0]})).data.columns)[1:] == [
        "a_t", "z path resid"]  # symbols keep their underscore
    # one format for all, a Series, headers, an index header
    s = pd.Series({"real": 0.98765, "samples": 0.5}, name="confidence")
    data = frame_table(s, ".3f", headers={"confidence": "mean confidence"}, index="images").data
    assert data.to_dict("list") == {"images": ["real", "samples"], "mean confidence": ["0.988", "0.500"]}
    # a constant column is lifted into the caption, once
    df3 = pd.DataFrame({"v": [1.0, 2.0], "device": ["cpu", "cpu"]}, index=pd.Index(["a", "b"], name="run"))
    styled = frame_table(df3, ".1f", lift_constants=True)
    assert list(styled.data.columns) == ["run", "v"] and styled.caption == "The same in all rows: device: cpu"
    assert "The same in all rows: device: cpu" in styled.to_html()
    # a MultiIndex: one column per level, a repeated key left blank; pivot-table columns joined
    df2 = pd.DataFrame({"model": ["m", "m"], "layer": ["z1", "z2"], "v": [1.0, 2.0]}).set_index(["model", "layer"])
    data = frame_table(df2, ".1f").data
    assert data.to_dict("list") == {"model": ["m", ""], "layer": ["z1", "z2"], "v": ["1.0", "2.0"]}
    piv = df2.reset_index().pivot_table(index="layer", columns="model", values=["v"])
    assert list(frame_table(piv).data.columns) == ["layer", "v, m"]
