"""The book's findings at a glance: one row per claim of the paper, from the result records only.

``make book`` writes :func:`glance_markdown` to ``book/_generated/findings.md`` (git-ignored, built anew each
time), which the introduction includes: the table can never say more, or less, than the records::

    python -m jebm_lite.experiments.findings --root notebooks --out book/_generated/findings.md
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jebm_lite.experiments import campaign, fig4
from jebm_lite.experiments.tables import markdown_table
from jebm_lite.io import atomic_write

VERDICT_WORDS = {"holds": "reproduced", "reversed": "reversed", "not shown": "not shown",
                 "untested": "not yet tested"}
"""A paired test's outcome as the table's verdict."""


def _verdict(rep: dict[str, Any]) -> str:
    """An arm's verdict words; "not shown" adds when the interval also excludes the paper's difference."""
    words = VERDICT_WORDS[rep["outcome"]]
    if rep["outcome"] == "not shown" and rep.get("excludes_paper"):
        words += "; an average effect of the paper's size is outside the interval"
    return words


def _ci(rep: dict[str, Any]) -> str:
    if rep["diff"] is None:
        return "no pair yet"
    ci = "" if rep["ci_low"] is None else f", 95 % CI {rep['ci_low']:+.1f} to {rep['ci_high']:+.1f}"
    n = rep["n_pairs"]
    return f"{rep['diff']:+.1f} points{ci} ({n} pair{'s' * (n != 1)})"


def glance_rows(root: str | Path = ".") -> list[dict[str, str]]:
    """``[{"claim", "paper", "this book", "verdict", "chapter"}]`` from the records under ``root`` (the notebooks
    folder): the three arms of the Tab. 1 campaign and the top layer of paper Fig. 4."""
    root = Path(root)
    reps = {k: campaign.arm_report(a, campaign.arm_records(a, root)) for k, a in campaign.ARMS.items()}
    rows = [
        {"claim": "MNIST: the joint prior's top layer predicts the class better than VLAE's (Tab. 1)",
         "paper": "+15.6 points (one run)", "this book": _ci(reps["A"]),
         "verdict": _verdict(reps["A"]), "chapter": "6"},
        {"claim": "MNIST without normalisation, where VLAE's hierarchy can be mixed: the joint prior repairs it",
         "paper": "VLAE z2 57.9 % > z3 52.1 %", "this book": _ci(reps["B"]),
         "verdict": _verdict(reps["B"]), "chapter": "6"},
        {"claim": "Fashion-MNIST: the same comparison (Tab. 1)", "paper": "+1.0 points (one run)",
         "this book": _ci(reps["C"]), "verdict": _verdict(reps["C"]), "chapter": "6"},
    ]
    recs = fig4.load_results(root / "results" / "fig4_ref", profile="cpu")
    if recs:
        c = fig4.top_layer_contrast(recs, "mnist", reading="resample")
        both = c["joint"] > 50 and c["vlae"] > 50
        verdict = {"joint higher": "reproduced", "joint lower": "reversed",
                   "no difference shown": "hierarchy with both priors; advantage not shown",
                   "untested": "not yet tested"}[c["outcome"]]
        if not both and c["outcome"] == "no difference shown":
            verdict = "not shown"
        rows.append({"claim": "Redrawing the top layer changes the digit; the joint prior more than VLAE (Fig. 4)",
                     "paper": "shown in pictures", "this book":
                     f"{c['joint']:.0f} % vs {c['vlae']:.0f} % of redraws ({c['n_pairs']} pairs)",
                     "verdict": verdict, "chapter": "4"})
    return rows


def glance_markdown(root: str | Path = ".") -> str:
    """:func:`glance_rows` as a markdown table (what the introduction includes)."""
    return markdown_table(glance_rows(root)) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jebm_lite.experiments.findings", description=__doc__.split("\n")[0])
    p.add_argument("--root", default="notebooks", help="the notebooks folder (its results/ are read)")
    p.add_argument("--out", default="book/_generated/findings.md")
    a = p.parse_args(argv)
    text = glance_markdown(a.root)
    atomic_write(a.out, lambda f: f.write(text))
    print(f"wrote {a.out} ({text.count(chr(10)) - 2} findings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
