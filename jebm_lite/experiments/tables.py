"""Result tables as text: rows of string cells (what the ``table_rows`` functions of the experiments return)
as one markdown table, for the command lines. Chapters show the same rows as a DataFrame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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
