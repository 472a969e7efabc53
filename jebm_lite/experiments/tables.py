"""Result tables: rows of string cells as one markdown table, for the command lines (:func:`markdown_table`),
and result records as a table a reader can read, for the chapters (:func:`display_frame`: human headers,
formatted numbers, a named index, constant columns lifted out)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd


def markdown_table(rows: Sequence[Mapping[str, str]], headers: Mapping[str, str] | None = None) -> str:
    """``rows`` (one dict per row, the first row's keys as the columns, in order) as a markdown table.

    ``headers`` renames columns in the header line only (e.g. ``{"1": "held-out 1"}``). No rows: ``""``.
    """
    if not rows:
        return ""
    cols = list(rows[0])
    head = [(headers or {}).get(c, c) for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


Format = str | Callable[[Any], str]


def _cell(value: Any, fmt: Format | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if fmt is None:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
        return str(value)
    return fmt(value) if callable(fmt) else format(value, fmt)


def display_frame(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str | tuple[str, Format | None]],
                  index: str | Sequence[str], lift_constants: bool = True) -> tuple[Any, str]:
    """A result table as a reader should see it: human column names, formatted numbers, rows named by their
    first column(s), no row numbers and no empty header rows.

    ``columns``: record key -> ``header`` or ``(header, format)``, in display order; the format is a format spec
    (``".1f"``, ``"+.1f"``, ``","``) or a function of the value; ``None`` formats integers with thousands
    separators and floats with three significant digits (from 1,000 on: whole numbers with separators). ``index``: the key (or keys) that name a row: they
    come first, in bold, and a value repeated from the row above is left blank. With ``lift_constants``, a
    column whose value is the same in every row (of two or more) is left out and returned as
    ``"header: value"`` in the note (say it once in the text or caption). Missing values show as a dash.

    Returns ``(table, note)``: ``table`` is a pandas ``Styler`` (``display(table)`` renders it as HTML; its
    ``.data`` is the DataFrame of strings).
    """
    columns = {k: (v, None) if isinstance(v, str) else v for k, v in columns.items()}
    headers = [h for h, _ in columns.values()]
    if len(set(headers)) != len(headers):
        twice = sorted({h for h in headers if headers.count(h) > 1})
        raise ValueError(f"two columns share the header(s) {twice}: one would hide the other; name them apart")
    keys = [index] if isinstance(index, str) else list(index)
    order = keys + [k for k in columns if k not in keys]
    data = {columns.get(k, (k, None))[0]: [_cell(r.get(k), columns.get(k, (k, None))[1]) for r in rows]
            for k in order}
    notes = []
    if lift_constants and len(rows) > 1:
        for k in order[len(keys):]:
            h = columns[k][0]
            if len(set(data[h])) == 1:
                notes.append(f"{h}: {data.pop(h)[0]}")
    for k in keys:  # blank a key repeated from the row above (a group), as in a printed table
        h = columns.get(k, (k, None))[0]
        vals = data[h]
        data[h] = [v if i == 0 or any(data[columns.get(kk, (kk, None))[0]][i] !=
                                      data[columns.get(kk, (kk, None))[0]][i - 1] for kk in keys[:keys.index(k)])
                   or v != vals[i - 1] else "" for i, v in enumerate(vals)]
    df = pd.DataFrame(data)
    key_cols = [columns.get(k, (k, None))[0] for k in keys]
    styler = (df.style.hide(axis="index")
              .set_properties(subset=key_cols, **{"font-weight": "bold", "text-align": "left"})
              .set_table_attributes('class="jebm-table"'))
    return styler, "; ".join(notes)


def _human(name: str) -> str:
    """``pixel_var_frac`` -> ``pixel var frac``; a name ending in a one-character part (``z_1``, ``abar_t``)
    is a symbol and stays as it is."""
    parts = name.split("_")
    return " ".join(parts) if len(parts) > 1 and len(parts[-1]) > 1 and parts[-1].isalpha() else name


def frame_table(frame: pd.DataFrame | pd.Series, fmt: str | Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, index: str | None = None,
                lift_constants: bool = False) -> Any:
    """A pandas frame whose index names its rows, shown as :func:`display_frame` shows records.

    ``fmt``: one format spec for every float, or one per column (integers stay integers, text passes through);
    ``headers``: column -> header (default: a snake_case name with spaces); ``index``: the header of
    the row names (default: the index's name; of the last level for a MultiIndex, whose levels become
    columns, a repeated value left blank). A Series is one column; MultiIndex columns are joined with
    ", ". With ``lift_constants``, columns with one value in every row become the table's caption
    ("The same in all rows: device: cpu ..."). Returns the ``Styler``.
    """
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    if isinstance(frame.columns, pd.MultiIndex):  # e.g. a pivot table: "value, column"
        frame = frame.set_axis([", ".join(map(str, c)) for c in frame.columns], axis=1)
    levels = [f"\x00row{k}" for k in range(frame.index.nlevels)]
    rows = [{**dict(zip(levels, i if isinstance(i, tuple) else (i,))), **r}
            for i, r in zip(frame.index, frame.to_dict("records"))]

    def number_format(spec: str | None) -> Format | None:
        if spec is None:
            return None
        return lambda v: format(v, spec) if isinstance(v, float) and not math.isnan(v) else _cell(v, None)

    names = [str(n) if n is not None else "" for n in frame.index.names]
    if index is not None:
        names[-1] = index
    columns: dict[str, str | tuple[str, Format | None]] = dict(zip(levels, names))
    for c in frame.columns:
        spec = fmt.get(c) if isinstance(fmt, Mapping) else fmt
        columns[c] = ((headers or {}).get(c, _human(str(c))), number_format(spec))
    table, note = display_frame(rows, columns, levels, lift_constants=lift_constants)
    return table.set_caption(f"The same in all rows: {note}") if note else table
