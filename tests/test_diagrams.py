"""The concept diagrams of tools/make_diagrams.py: the committed SVGs are current, and each one parses, has
a viewBox, a <title> and a <desc>, no text below 12 px at its natural width, and stays small."""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import make_diagrams  # noqa: E402

NS = "{http://www.w3.org/2000/svg}"
NAMES = sorted(make_diagrams.DIAGRAMS)
MIN_PX = 12.0


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return make_diagrams.render_all()


def _px(value: str, where: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*(px)?\s*", value)
    assert m, f"{where}: font-size {value!r} is not in px"
    return float(m.group(1))


def _text_sizes(el: ET.Element, inherited: float | None, out: list[tuple[float | None, str]]) -> None:
    """(font size, text) for every text-bearing <text> / <tspan>, with the size inherited down the tree."""
    size = _px(el.attrib["font-size"], el.tag) if "font-size" in el.attrib else inherited
    if el.tag in (NS + "text", NS + "tspan"):
        own = (el.text or "").strip()
        if own:
            out.append((size, own))
    for child in el:
        _text_sizes(child, size, out)
        if el.tag in (NS + "text", NS + "tspan") and (child.tail or "").strip():
            out.append((size, child.tail.strip()))


def test_the_committed_svgs_are_the_scripts_output(rendered):
    assert NAMES == ["ladder.svg", "priors.svg", "train_step.svg"]
    for name, text in rendered.items():
        path = make_diagrams.OUT_DIR / name
        assert path.exists(), f"{path} is missing: run python tools/make_diagrams.py"
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run python tools/make_diagrams.py"
    assert make_diagrams.main(["--check"]) == 0


@pytest.mark.parametrize("name", NAMES)
def test_each_svg_is_valid_accessible_and_legible(name):
    path = make_diagrams.OUT_DIR / name
    data = path.read_bytes()
    assert len(data) < 30_000, f"{name} is {len(data)} bytes"
    root = ET.fromstring(data)
    assert root.tag == NS + "svg"

    # a viewBox, and the natural size it is drawn at (width / height attributes, else the viewBox)
    vb = [float(v) for v in root.attrib["viewBox"].replace(",", " ").split()]
    assert len(vb) == 4 and vb[2] > 0 and vb[3] > 0
    width = _px(root.attrib.get("width", str(vb[2])), "svg width")
    scale = width / vb[2]
    assert scale > 0

    # accessibility: a non-empty <title> first, a <desc>, and the root labelled by them
    children = list(root)
    assert children[0].tag == NS + "title" and (children[0].text or "").strip()
    desc = root.find(NS + "desc")
    assert desc is not None and len((desc.text or "").strip()) > 40
    assert root.attrib.get("role") == "img"

    # no text smaller than 12 px at the natural width; every text has an explicit size
    sizes: list[tuple[float | None, str]] = []
    _text_sizes(root, None, sizes)
    assert sizes, "no text"
    for size, text in sizes:
        assert size is not None, f"{name}: {text!r} has no font-size"
        assert size * scale >= MIN_PX, f"{name}: {text!r} is {size * scale:.1f} px"
    # ... and no stylesheet rule or style attribute that could override that
    css = " ".join(el.text or "" for el in root.iter(NS + "style"))
    css += " ".join(el.attrib.get("style", "") for el in root.iter())
    assert "font-size" not in css
