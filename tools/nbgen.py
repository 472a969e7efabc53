"""The shared part of the chapter generators ``tools/make_chNN.py``: cells, the setup cell, writing.

A generator builds a chapter's cells in order and writes the notebook without outputs; the outputs are
stored by executing it in place (``jupyter nbconvert --to notebook --execute --inplace``)::

    nb = Chapter("Chapter 4: The joint latent-space EBM prior")
    md, code = nb.md, nb.code
    md("# ...")
    nb.setup_cell()          # CONTRIBUTING.md's first code cell
    ...
    nb.write("notebooks/04_joint_prior.ipynb")
"""

from __future__ import annotations

import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO_URL = "https://github.com/jebm-lite/joint-latent-ebm-book"

SETUP_CELL = '''
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("jebm_lite") is None:  # Colab / a fresh machine; a no-op here
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "git+{url}"], check=True)
import jebm_lite as jl
from jebm_lite import viz
card, PROFILE, DEVICE = jl.start_run("{title}", seed=0)
viz.set_style()
'''


class Chapter:
    """The cells of one chapter notebook, in order."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.cells: list = []

    def md(self, source: str) -> None:
        """A markdown cell (leading / trailing blank lines dropped)."""
        self.cells.append(new_markdown_cell(source.strip("\n")))

    def code(self, source: str, hide: bool = False) -> None:
        """A code cell; ``hide`` tags it ``hide-input`` (the book shows only its output)."""
        cell = new_code_cell(source.strip("\n"))
        if hide:
            cell.metadata["tags"] = ["hide-input"]
        self.cells.append(cell)

    def setup_cell(self) -> None:
        """The first code cell of every chapter: install the package when missing, print the run card."""
        self.code(SETUP_CELL.format(url=REPO_URL, title=self.title))

    def write(self, path: str) -> None:
        """Write the notebook (python3 kernel, no outputs) to ``path``, or to ``sys.argv[1]`` if given.

        With ``--keep-outputs`` on the command line, code cells whose source is unchanged keep the stored
        outputs of the notebook already at ``path`` (the n-th copy of a source gets the n-th stored
        outputs): a change to the narrative then needs no re-execution. Any changed code cell still does.
        """
        args = [a for a in sys.argv[1:] if a != "--keep-outputs"]
        path = args[0] if args else path
        nb = new_notebook(cells=self.cells, metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        })
        kept = 0
        if "--keep-outputs" in sys.argv[1:] and os.path.exists(path):
            old: dict[str, list] = {}
            for c in nbformat.read(path, as_version=4).cells:
                if c.cell_type == "code":
                    old.setdefault(c.source, []).append(c)
            for c in nb.cells:
                if c.cell_type == "code" and old.get(c.source):
                    prev = old[c.source].pop(0)
                    c.outputs, c.execution_count = prev.outputs, prev.execution_count
                    kept += 1
        nbformat.write(nb, path)
        print(f"wrote {path} with {len(self.cells)} cells" + (f" ({kept} code cells kept their outputs)" if kept else ""))
