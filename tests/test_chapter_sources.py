"""Every chapter has one source to edit: ``notebooks/src/NN_name.md`` (MyST markdown, Jupytext), paired with
``notebooks/NN_name.ipynb`` (the same cells plus the stored outputs the book renders). The pair must agree
cell by cell; ``jupytext --sync notebooks/NN_name.ipynb`` brings them together after an edit."""

from __future__ import annotations

import re
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
    assert len(CHAPTERS) == 11  # chapters 01-10 and the back-matter notebook 90_reproduction_notes
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


VISIBLE_LINE = 88  # characters of a code line that fit the content column (book.css sets the code font)
HIDDEN = {"hide-cell", "remove-cell", "hide-input", "remove-input"}


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_visible_code_fits_the_column(path):
    """A code line the reader sees is at most VISIBLE_LINE characters: no code block scrolls sideways."""
    src = jupytext.read(NOTEBOOKS / "src" / f"{path.stem}.md")
    long = [(i, line) for i, c in enumerate(src.cells) if c.cell_type == "code"
            and not HIDDEN & set(c.metadata.get("tags", []))
            for line in c.source.splitlines() if len(line) > VISIBLE_LINE]
    assert not long, f"{path.name}: visible code lines over {VISIBLE_LINE} characters: " + "; ".join(
        f"cell {i}: {line[:60]}..." for i, line in long[:5])


FIGSIZE = re.compile(r"figsize=\((\d+(?:\.\d+)?)\s*,")
FONTSIZE = re.compile(r"fontsize=(\d+(?:\.\d+)?)\b")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_figures_use_the_column_style(path):
    """No chapter draws a figure wider than the column or text smaller than the style's smallest font
    (``viz.COLUMN_WIDTH_IN``, ``viz.MIN_FONT_PT``); literal sizes are what this can see, the browser test
    measures the rendered images."""
    from jebm_lite.analysis.viz import COLUMN_WIDTH_IN, MIN_FONT_PT

    text = (NOTEBOOKS / "src" / f"{path.stem}.md").read_text()
    wide = [m.group(0) for m in FIGSIZE.finditer(text) if float(m.group(1)) > COLUMN_WIDTH_IN]
    small = [m.group(0) for m in FONTSIZE.finditer(text) if float(m.group(1)) < MIN_FONT_PT]
    assert not wide and not small, f"{path.name}: {wide + small} (use viz.COLUMN_WIDTH_IN; fonts >= {MIN_FONT_PT})"


INCLUDE = re.compile(r"```\{literalinclude\} /(\S+\.py)\n((?::\w+:.*\n)*)")
LAB_WORDS = re.compile(r"\b(?:issue \d+|report \d+\.\d+|report §)", re.IGNORECASE)


def _object_lines(path: Path, name: str) -> list[str]:
    """The source lines of ``name`` (``func`` or ``Class.method``) in ``path``, decorators included."""
    import ast

    lines = path.read_text().splitlines()
    body, node = ast.parse("\n".join(lines)).body, None
    for part in name.split("."):
        node = next(n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
        body = node.body
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return lines[start - 1:node.end_lineno]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_included_library_code_fits_the_column(path):
    """Library code shown with ``literalinclude`` (``:pyobject:``) is dedented and at most VISIBLE_LINE
    characters wide, so it never scrolls sideways, and carries no maintainers' words in its docstring."""
    import textwrap

    root = NOTEBOOKS.parent
    problems = []
    for m in INCLUDE.finditer((NOTEBOOKS / "src" / f"{path.stem}.md").read_text()):
        opts = dict(re.findall(r":(\w+):\s*(.*)", m.group(2)))
        if "pyobject" not in opts:
            continue
        name = opts["pyobject"].strip()
        if "dedent" not in opts:
            problems.append(f"{name}: add :dedent:")
        shown = textwrap.dedent("\n".join(_object_lines(root / m.group(1), name))).splitlines()
        problems += [f"{name}: {len(ln)} columns: {ln.strip()[:50]}" for ln in shown if len(ln) > VISIBLE_LINE]
        problems += [f"{name}: {w!r}" for ln in shown for w in LAB_WORDS.findall(ln)]
    assert not problems, f"{path.name}: " + "; ".join(problems[:6])


VISIBLE_BUDGET = 160  # "fewer than about 150" visible code lines per chapter: the calls the text explains


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_visible_code_stays_within_the_budget(path):
    """A chapter shows at most VISIBLE_BUDGET lines of code; plotting, glue, settings tables and other
    bookkeeping go into collapsed (``hide-input``) or removed cells."""
    src = jupytext.read(NOTEBOOKS / "src" / f"{path.stem}.md")
    shown = sum(len([ln for ln in c.source.splitlines() if ln.strip()]) for c in src.cells
                if c.cell_type == "code" and not HIDDEN & set(c.metadata.get("tags", [])))
    assert shown <= VISIBLE_BUDGET, f"{path.name}: {shown} visible code lines (budget {VISIBLE_BUDGET})"
