"""Every chapter has one source to edit: ``notebooks/src/NN_name.md`` (MyST markdown, Jupytext), paired with
``notebooks/NN_name.ipynb`` (the same cells plus the stored outputs the book renders). The pair must agree
cell by cell; ``jupytext --sync notebooks/NN_name.ipynb`` brings them together after an edit."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
CHAPTERS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
FORMATS = "ipynb,src//md:myst"


def _cells(nb) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in nb.cells]


def test_every_chapter_has_a_source_and_no_source_is_orphaned():
    assert len(CHAPTERS) == 10  # chapters 01-09 and the back-matter notebook 90_reproduction_notes
    sources = sorted(p.stem for p in (NOTEBOOKS / "src").glob("*.md"))
    assert sources == [p.stem for p in CHAPTERS]
    assert not list(Path(__file__).resolve().parent.parent.glob("tools/make_ch*.py")), "generators are gone"


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_pair_is_in_sync(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("jupytext", {}).get("formats") == FORMATS, f"{path.name}: jupytext --set-formats {FORMATS}"
    src = jupytext.read(NOTEBOOKS / "src" / f"{path.stem}.md")
    a, b = _cells(nb), _cells(src)
    assert len(a) == len(b), f"{path.name}: {len(a)} cells, its source {len(b)}; run jupytext --sync {path}"
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == y, f"{path.name} cell {i} differs from its source; run jupytext --sync {path}"
