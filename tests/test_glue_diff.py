"""tools/glue_diff.py: the glued values of two executions of a chapter, compared with a tolerance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import glue_diff  # noqa: E402


def _nb(path: Path, values: dict) -> Path:
    outs = [{"output_type": "display_data", "data": {"application/papermill.record/text/plain": repr(v)},
             "metadata": {"scrapbook": {"mime_prefix": "application/papermill.record/", "name": k}}}
            for k, v in values.items()]
    cells = [{"cell_type": "code", "source": "", "metadata": {}, "outputs": outs, "execution_count": 1},
             {"cell_type": "code", "source": "", "metadata": {}, "execution_count": 2,
              "outputs": [{"output_type": "stream", "name": "stdout", "text": "not glue\n"}]}]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_reads_glued_values_and_finds_what_differs(tmp_path, capsys):
    old = _nb(tmp_path / "old.ipynb", {"a": 1.0, "b": "the top layer", "c": 3, "ch_wall_min": 2.0, "gone": 1})
    new = _nb(tmp_path / "new.ipynb", {"a": 1.01, "b": "the middle layer", "c": 3, "ch_wall_min": 9.0, "added": 0})
    assert glue_diff.glued_values(old) == {"a": 1.0, "b": "the top layer", "c": 3, "ch_wall_min": 2.0, "gone": 1}
    lines = glue_diff.differences(glue_diff.glued_values(old), glue_diff.glued_values(new), rtol=0.02)
    assert lines == ["added: only in new", "b: old='the top layer' new='the middle layer'", "gone: only in old"]
    assert glue_diff.differences({"a": 1.0}, {"a": 1.05}, rtol=0.02) == ["a: old=1.0 new=1.05"]
    assert glue_diff.main([str(old), str(old)]) == 0
    assert glue_diff.main([str(old), str(new)]) == 1
    assert glue_diff.main([str(old), str(tmp_path / "missing.ipynb")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_summary_counts_exact_within_and_differing_values(tmp_path):
    old = {"a": 1.0, "b": 2.0, "c": "top", "d": 10.0, "wall_s": 1.0, "gone": 0}
    new = {"a": 1.0, "b": 2.01, "c": "middle", "d": 11.0, "wall_s": 5.0, "added": 0}
    s = glue_diff.summary(old, new, rtol=0.02)
    assert (s["compared"], s["exact"], s["within"]) == (4, 1, 1)
    assert s["differ"] == [{"key": "c", "old": "top", "new": "middle", "rel": None},
                           {"key": "d", "old": 10.0, "new": 11.0, "rel": 0.1}]
    assert s["only_old"] == ["gone"] and s["only_new"] == ["added"]
    o, n = _nb(tmp_path / "o.ipynb", old), _nb(tmp_path / "n.ipynb", new)
    assert glue_diff.main([str(o), str(n), "--json", str(tmp_path / "out" / "s.json")]) == 1
    rec = json.loads((tmp_path / "out" / "s.json").read_text())
    assert rec["old_card"] == {} and glue_diff.run_card(o) == {}
    assert rec["old"] == "o.ipynb" and rec["exact"] == 1 and rec["differ"][1]["rel"] == 0.1


def test_run_card_reads_the_last_card(tmp_path):
    card = "RUN CARD\n  chapter   : Chapter 1: x : y\n  commit    : abc1234\n  wall time : running\n"
    final = card.replace("running", "12.5 s")
    cells = [{"cell_type": "code", "source": "", "metadata": {}, "execution_count": i,
              "outputs": [{"output_type": "stream", "name": "stdout", "text": t}]} for i, t in ((1, card), (2, final))]
    p = tmp_path / "c.ipynb"
    p.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert glue_diff.run_card(p) == {"chapter": "Chapter 1: x : y", "commit": "abc1234", "wall time": "12.5 s"}
