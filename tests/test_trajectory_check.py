"""tools/trajectory_check.py: histories compared bit for bit, bad input refused in one line."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import trajectory_check  # noqa: E402


def test_first_difference_ignores_bookkeeping_and_finds_the_first_changed_number():
    a = [{"step": 1, "time_s": 0.1, "loss": 3.0, "kl/1": 1.0}, {"step": 2, "time_s": 0.2, "loss": 2.0, "kl/1": 0.5}]
    b = [{"step": 1, "time_s": 9.9, "loss": 3.0, "kl/1": 1.0}, {"step": 2, "time_s": 9.9, "loss": 2.0, "kl/1": 0.5}]
    assert trajectory_check.first_difference(a, b) is None  # wall-clock columns differ, numbers do not
    b[1]["kl/1"] = 0.5000001
    assert trajectory_check.first_difference(a, b) == 1
    assert trajectory_check.first_difference(a, a[:1]) == 1  # a shorter history differs where it stops


def test_an_unknown_commit_is_refused_in_one_line(capsys):
    assert trajectory_check.main(["not-a-commit-xyz"]) == 2
    assert "is not a commit of this repository" in capsys.readouterr().err
