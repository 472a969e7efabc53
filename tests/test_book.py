"""Checks of the book itself: table of contents, stored notebook outputs, citations, config.

The notebook checks run on every notebook listed in ``_toc.yml``. With no chapter written yet they
iterate over zero notebooks; ``test_checker_rejects_bad_notebooks`` shows that the checker does fail.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import load_yaml, toc_files

ROOT = Path(__file__).resolve().parent.parent
TOC = ROOT / "_toc.yml"
CONFIG = ROOT / "_config.yml"
BIB = ROOT / "book" / "references.bib"

MAX_NOTEBOOK_BYTES = 5 * 1024 * 1024
RUN_CARD_PROFILE = re.compile(r"^\s*profile\s*:\s*(\S+)\s*$", re.MULTILINE)
# {cite}`a,b`, {cite:p}`a`, {cite:t}`a`, {cite:ps}`a` ...
CITE_ROLE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")
BIB_KEY = re.compile(r"^\s*@(\w+)\s*\{\s*([^,\s]+)\s*,", re.MULTILINE)
SOURCE_SUFFIXES = (".md", ".ipynb", ".rst")


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def resolve_source(entry: str, root: Path = ROOT) -> Path | None:
    """The file a TOC entry names (with or without its suffix), or None."""
    path = root / entry
    if path.suffix in SOURCE_SUFFIXES and path.is_file():
        return path
    for suffix in SOURCE_SUFFIXES:
        candidate = path.with_name(path.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def toc_notebooks() -> list[Path]:
    """The notebooks (``notebooks/...``) listed in ``_toc.yml``, as paths (existing or not)."""
    out = []
    for entry in toc_files(load_yaml(TOC)):
        if not entry.startswith("notebooks/"):
            continue
        src = resolve_source(entry)
        out.append(
            src if src is not None else ROOT / (entry if entry.endswith(".ipynb") else entry + ".ipynb")
        )
    return out


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def _stream_text(cell: dict) -> str:
    return "".join(_text(o.get("text")) for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def check_notebook(path: Path) -> list[str]:
    """Problems that keep a chapter notebook out of the book; an empty list means it is fine.

    A chapter must be committed with the outputs of a real run (``cpu`` or ``full``, never ``ci``):
    every code cell executed, in order, with no error output; kernelspec ``python3``; under 5 MB; and
    its first code cell prints the run card (``RUN CARD`` ... ``profile : <name>``).
    """
    if not path.is_file():
        return [f"{path}: file does not exist"]
    problems = []
    size = path.stat().st_size
    if size >= MAX_NOTEBOOK_BYTES:
        problems.append(f"size {size / 1e6:.1f} MB >= 5 MB (smaller figures, fewer frames in animations)")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return problems + [f"not a readable notebook: {e}"]

    kernel = nb.get("metadata", {}).get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"kernelspec name is {kernel!r}, expected 'python3'")

    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    if not code:
        problems.append("no code cells")
        return problems

    counts = []
    for i, cell in enumerate(code):
        source = _text(cell.get("source")).strip()
        if not source:
            continue
        count = cell.get("execution_count")
        if count is None:
            problems.append(f"code cell {i} was not executed (no stored execution_count/outputs)")
        else:
            counts.append(count)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"code cell {i} has an error output: {out.get('ename')}: {out.get('evalue')}")
    if counts and counts != sorted(counts):
        problems.append("cells were executed out of order (re-run the notebook top to bottom)")
    if not any(cell.get("outputs") for cell in code):
        problems.append("no stored outputs at all")

    first = _stream_text(code[0])
    if "RUN CARD" not in first:
        problems.append("the first code cell does not print the run card (jebm_lite.start_run)")
    else:
        profiles = RUN_CARD_PROFILE.findall(first)
        if not profiles:
            problems.append("the run card has no 'profile : <name>' line")
    # Every run card in the notebook (the first one and the final card.finish()) must be non-ci.
    for i, cell in enumerate(code):
        text = _stream_text(cell)
        if "RUN CARD" in text:
            for prof in RUN_CARD_PROFILE.findall(text):
                if prof == "ci":
                    problems.append(
                        f"code cell {i}: run card from profile 'ci'; save the notebook from a 'cpu' or 'full' run"
                    )
    return problems


def bib_keys(path: Path = BIB) -> list[str]:
    return [
        key for kind, key in BIB_KEY.findall(path.read_text(encoding="utf-8")) if kind.lower() != "comment"
    ]


def cited_keys(text: str) -> set[str]:
    keys = set()
    for group in CITE_ROLE.findall(text):
        keys.update(k.strip() for k in group.split(",") if k.strip())
    return keys


def book_texts() -> dict[str, str]:
    """Markdown of every page in book/ and of the markdown cells of every notebook."""
    texts = {}
    for md in sorted((ROOT / "book").glob("**/*.md")):
        texts[str(md.relative_to(ROOT))] = md.read_text(encoding="utf-8")
    for ipynb in sorted((ROOT / "notebooks").glob("**/*.ipynb")):
        if ".ipynb_checkpoints" in ipynb.parts:
            continue
        nb = json.loads(ipynb.read_text(encoding="utf-8"))
        texts[str(ipynb.relative_to(ROOT))] = "\n".join(
            _text(c.get("source")) for c in nb.get("cells", []) if c.get("cell_type") == "markdown"
        )
    return texts


# ----------------------------------------------------------------------------------------------
# (a) notebooks in the TOC carry the outputs of a real run
# ----------------------------------------------------------------------------------------------


def test_toc_notebooks_have_real_run_outputs():
    notebooks = toc_notebooks()
    problems = {str(p.relative_to(ROOT)): check_notebook(p) for p in notebooks}
    problems = {k: v for k, v in problems.items() if v}
    assert not problems, "notebooks not ready for the book:\n" + "\n".join(
        f"  {name}:\n    - " + "\n    - ".join(msgs) for name, msgs in problems.items()
    )


def _write_nb(path: Path, cells: list[dict], kernel: str = "python3") -> Path:
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": kernel, "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def _card(profile: str) -> str:
    return f"RUN CARD\n  chapter   : test\n  profile   : {profile}\n  device    : cpu\n  seed      : 0\n"


def _code(source: str, count: int | None, outputs: list[dict] | None = None) -> dict:
    return {
        "cell_type": "code",
        "source": source,
        "execution_count": count,
        "metadata": {},
        "outputs": outputs or [],
    }


def _stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_checker_accepts_good_notebook(tmp_path):
    good = _write_nb(
        tmp_path / "good.ipynb",
        [
            {"cell_type": "markdown", "source": "# Title", "metadata": {}},
            _code("card, PROFILE, device = start_run('test')", 1, [_stream(_card("cpu"))]),
            _code("import numpy as np", 2),
            _code("card.finish()", 3, [_stream(_card("cpu"))]),
        ],
    )
    assert check_notebook(good) == []


def test_checker_rejects_bad_notebooks(tmp_path):
    ci_card = _write_nb(tmp_path / "ci.ipynb", [_code("start_run('t')", 1, [_stream(_card("ci"))])])
    assert any("profile 'ci'" in p for p in check_notebook(ci_card))

    error = _write_nb(
        tmp_path / "error.ipynb",
        [
            _code("start_run('t')", 1, [_stream(_card("full"))]),
            _code(
                "1 / 0",
                2,
                [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "x", "traceback": []}],
            ),
        ],
    )
    assert any("error output" in p for p in check_notebook(error))

    stripped = _write_nb(tmp_path / "stripped.ipynb", [_code("start_run('t')", None), _code("x = 1", None)])
    found = check_notebook(stripped)
    assert any("not executed" in p for p in found)
    assert any("run card" in p for p in found)

    no_card = _write_nb(tmp_path / "nocard.ipynb", [_code("print('hi')", 1, [_stream("hi\n")])])
    assert any("run card" in p for p in check_notebook(no_card))

    kernel = _write_nb(
        tmp_path / "kernel.ipynb", [_code("start_run('t')", 1, [_stream(_card("cpu"))])], kernel="jebm"
    )
    assert any("kernelspec" in p for p in check_notebook(kernel))

    order = _write_nb(
        tmp_path / "order.ipynb",
        [_code("start_run('t')", 5, [_stream(_card("cpu"))]), _code("x = 1", 2)],
    )
    assert any("out of order" in p for p in check_notebook(order))

    big = _write_nb(
        tmp_path / "big.ipynb",
        [_code("start_run('t')", 1, [_stream(_card("cpu") + "x" * MAX_NOTEBOOK_BYTES)])],
    )
    assert any("MB" in p for p in check_notebook(big))

    assert check_notebook(tmp_path / "missing.ipynb") == [
        f"{tmp_path / 'missing.ipynb'}: file does not exist"
    ]


def test_run_card_format_matches_runtime():
    """The checker reads the card that jebm_lite.runtime actually prints."""
    from jebm_lite.runtime import RunCard

    card = RunCard(
        title="t", profile="cpu", device="cpu", torch_version="x", commit="c", seed=0, started="now"
    )
    text = card.render()
    assert text.startswith("RUN CARD")
    assert RUN_CARD_PROFILE.findall(text) == ["cpu"]


# ----------------------------------------------------------------------------------------------
# (b) the table of contents
# ----------------------------------------------------------------------------------------------


def test_toc_references_existing_files():
    toc = load_yaml(TOC)
    assert toc.get("format") == "jb-book"
    entries = toc_files(toc)
    assert entries and entries[0] == toc["root"]
    missing = [e for e in entries if resolve_source(e) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    assert len(entries) == len(set(entries)), "_toc.yml lists a file twice"


def test_toc_helpers_find_nested_notebooks(tmp_path):
    toc = {
        "format": "jb-book",
        "root": "book/intro",
        "parts": [
            {
                "caption": "C",
                "chapters": [{"file": "notebooks/01_a", "sections": [{"file": "notebooks/01_b"}]}],
            }
        ],
    }
    assert toc_files(toc) == ["book/intro", "notebooks/01_a", "notebooks/01_b"]
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_a.ipynb").write_text("{}")
    assert resolve_source("notebooks/01_a", tmp_path) == tmp_path / "notebooks" / "01_a.ipynb"
    assert resolve_source("notebooks/01_b", tmp_path) is None


# ----------------------------------------------------------------------------------------------
# (c) citations
# ----------------------------------------------------------------------------------------------


def test_bibliography_parses_without_duplicates():
    keys = bib_keys()
    assert len(keys) >= 25
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    assert not dupes, f"duplicate keys in references.bib: {dupes}"
    pybtex = pytest.importorskip("pybtex.database")
    data = pybtex.parse_file(str(BIB))
    assert set(data.entries) == set(keys)
    for key, entry in data.entries.items():
        assert "title" in entry.fields and "year" in entry.fields, key
        assert entry.persons.get("author"), key


def test_every_cited_key_exists():
    keys = set(bib_keys())
    texts = book_texts()
    assert "book/intro.md" in texts
    missing = {name: sorted(cited_keys(text) - keys) for name, text in texts.items()}
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"{{cite}} keys not in book/references.bib: {missing}"
    # the checker itself sees citations in every role form
    assert cited_keys("{cite}`a,b` {cite:p}`c` and {cite:t}`d`") == {"a", "b", "c", "d"}


def test_main_papers_are_in_bibliography():
    keys = set(bib_keys())
    for key in (
        "cui2023hierarchical",
        "cui2023joint",
        "cui2024diffusion",
        "pang2020lebm",
        "zhao2017vlae",
        "maaloe2019biva",
        "sonderby2016lvae",
    ):
        assert key in keys


# ----------------------------------------------------------------------------------------------
# (d) the book configuration
# ----------------------------------------------------------------------------------------------


def test_config_renders_stored_outputs_and_fails_on_errors():
    cfg = load_yaml(CONFIG)
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    assert cfg.get("only_build_toc_files") is True
    assert cfg["bibtex_bibfiles"] == ["book/references.bib"]
    for pattern in ("_build", ".venv", "README.md", "CONTRIBUTING.md", "tests", "runs"):
        assert pattern in cfg["exclude_patterns"], pattern
    assert cfg["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")


def test_every_vector_macro_is_defined():
    """The book writes vectors as ``\\vx``, ``\\vz``, ``\\veps``, ...; each must be a MathJax macro of
    ``_config.yml`` (an undefined one renders in red; the browser test catches it too, but later)."""
    macros = set(load_yaml(CONFIG)["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"])
    used = {name: set(re.findall(r"\\(v[a-zA-Z]+)\b", text)) for name, text in book_texts().items()}
    undefined = {name: sorted(u - macros) for name, u in used.items() if u - macros}
    assert not undefined, f"undefined \\v... macros (add them to _config.yml mathjax3_config): {undefined}"
    assert {"vu", "vz", "veps"} <= macros


def test_readme_states_the_tab1_verdict_its_records_give():
    """The README's chapter-6 line is written by hand; the verdict it states per arm of the Tab. 1 campaign
    must be the one its records give (the numbers live in the chapter, re-executed as pairs arrive)."""
    from jebm_lite.experiments import campaign

    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| 6 |"))
    words = {"holds": "holds", "reversed": "reversed", "not shown": "not shown", "untested": "untested"}
    phrases = {"A": "MNIST (LayerNorm)", "B": "MNIST without normalisation", "C": "Fashion-MNIST"}
    for key, arm in campaign.ARMS.items():
        rep = campaign.arm_report(arm, campaign.arm_records(arm, ROOT / "notebooks"))
        part = row.split(phrases[key], 1)[1].split(",")[0]
        assert words[rep["outcome"]] in part, f"README says {part!r} for arm {key}, its records: {rep['outcome']}"
