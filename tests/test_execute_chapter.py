"""tools/execute_chapter.py: a chapter executed for storing keeps no widget state, a failing one leaves the
stored notebook untouched, the glue diff is recorded, and the ci profile is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import execute_chapter as ec  # noqa: E402


def _chapter(folder: Path, source: str, widgets: bool = True) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if widgets:
        nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = folder / "99_tiny.ipynb"
    nbformat.write(nb, path)
    return path


def test_executes_strips_widget_state_and_records_the_glue_diff(tmp_path):
    code = "import os\nfrom myst_nb import glue\nglue('x', 2 + 2, display=False)\nprint(os.environ['JEBM_STATIC'])"
    path = _chapter(tmp_path, code)
    assert ec.execute(path, "cpu", timeout=120, note="test") == 0
    nb = json.loads(path.read_text())
    assert "widgets" not in nb["metadata"]
    outs = nb["cells"][0]["outputs"]
    assert any("".join(o.get("text", "")) == "1\n" for o in outs)  # executed with JEBM_STATIC=1
    rec = json.loads((tmp_path / "results" / "reexec" / "99_tiny.json").read_text())
    assert rec["note"] == "test" and rec["only_new"] == ["x"] and rec["compared"] == 0
    assert ec.execute(path, "cpu", timeout=120) == 0  # a second execution: the value agrees with the stored one
    rec = json.loads((tmp_path / "results" / "reexec" / "99_tiny.json").read_text())
    assert rec["compared"] == 1 and rec["exact"] == 1 and not rec["differ"]


def test_a_failing_chapter_leaves_the_stored_notebook_untouched(tmp_path):
    path = _chapter(tmp_path, "raise RuntimeError('boom')")
    before = path.read_bytes()
    assert ec.execute(path, "cpu", timeout=120) == 1
    assert path.read_bytes() == before
    assert not (tmp_path / "results").exists()


def test_strip_widget_state_and_bad_input(tmp_path, capsys):
    nb = {"metadata": {"widgets": {"state": 1}, "kernelspec": {}}}
    assert ec.strip_widget_state(nb) is True and nb["metadata"] == {"kernelspec": {}}
    assert ec.strip_widget_state(nb) is False
    assert ec.main(["04", "--profile", "ci"]) == 2
    assert "ci outputs are never stored" in capsys.readouterr().err
    assert ec.main(["04", "--profile", "gpu"]) == 2
    assert ec.main(["nonexistent_chapter"]) == 2
    assert "give one of" in capsys.readouterr().err
    assert ec.resolve("04") == ROOT / "notebooks" / "04_joint_prior.ipynb"
    with pytest.raises(ValueError, match="not a file"):
        ec.resolve(str(tmp_path / "missing.ipynb"))
