"""Execute a chapter for storing: run it top to bottom, store its outputs without widget state, and
compare its glued values with the previous execution.

    python tools/execute_chapter.py 04 [06 ...] [--profile cpu] [--note TEXT] [--timeout 5400]

For each chapter (``04``, ``04_joint_prior`` or ``notebooks/04_joint_prior.ipynb``) this

1. executes a copy with ``jupyter nbconvert`` in ``notebooks/`` (``JEBM_STATIC=1`` so that no ipywidget is
   built, ``JEBM_PROFILE`` as given, one torch thread unless ``OMP_NUM_THREADS`` is set);
2. removes the notebook-level widget state (``metadata.widgets``), which a library can leave behind even in
   the static mode and which the book must not store;
3. replaces the stored notebook only when the execution succeeded (a failing chapter leaves it untouched);
4. compares the glued values with the stored ones (``tools/glue_diff.py``, wall times left out) and writes
   the summary to ``notebooks/results/reexec/<chapter>.json``.

The ``ci`` profile is refused: its outputs are never stored. Exit status: 0 when every chapter executed,
1 when one failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import glue_diff  # noqa: E402  (a sibling tool, found through the path set above)
import nbformat  # noqa: E402

IGNORE = (*glue_diff.DEFAULT_IGNORE, "_ms", "_cpu")  # measurements of the execution itself


def resolve(name: str, notebooks: Path = NOTEBOOKS) -> Path:
    """The stored notebook for ``04``, ``04_joint_prior`` or a path to it. Raises ValueError naming the
    choices when there is none or more than one."""
    p = Path(name)
    if p.suffix == ".ipynb":
        if not p.is_file():
            raise ValueError(f"{p} is not a file")
        return p.resolve()
    hits = sorted(notebooks.glob(f"{p.name}*.ipynb"))
    if len(hits) != 1:
        have = ", ".join(h.stem for h in sorted(notebooks.glob("[0-9]*.ipynb")))
        raise ValueError(f"{name!r} names {len(hits)} chapters; give one of: {have}")
    return hits[0]


def strip_widget_state(nb: dict) -> bool:
    """Remove the notebook's stored widget state (``metadata.widgets``) in place; True if there was one."""
    return nb.get("metadata", {}).pop("widgets", None) is not None


def execute(path: Path, profile: str, timeout: int, note: str = "") -> int:
    """Execute one chapter and store it (module docstring). Returns 0 on success, 1 on a failed execution."""
    env = dict(os.environ, JEBM_STATIC="1", JEBM_PROFILE=profile, TQDM_DISABLE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="jebm_exec_") as tmp:
        out = Path(tmp) / path.name
        cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
               f"--ExecutePreprocessor.timeout={timeout}", "--output-dir", tmp, str(path)]
        print(f"== executing {path.name} ({profile} profile)", flush=True)
        if subprocess.run(cmd, cwd=path.parent, env=env).returncode != 0 or not out.is_file():
            print(f"== {path.name} failed; the stored notebook is unchanged", file=sys.stderr)
            return 1
        nb = nbformat.read(out, as_version=4)
        if strip_widget_state(nb):
            print("   widget state removed")
        nbformat.write(nb, out)
        old, new = glue_diff.glued_values(path), glue_diff.glued_values(out)
        lines = glue_diff.differences(old, new, ignore=IGNORE)
        reexec = path.parent / "results" / "reexec" / f"{path.stem}.json"
        glue_diff.write_record(reexec, path, out, ignore=IGNORE, note=note, names=(path.name, path.name))
        shutil.copyfile(out, path)
    print("\n".join(f"   {ln}" for ln in lines) if lines else f"   all {len(old)} glued values agree")
    print(f"== stored {path.name}; glue diff in {reexec.relative_to(path.parent)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("chapters", nargs="+", help="04, 04_joint_prior or notebooks/04_joint_prior.ipynb")
    p.add_argument("--profile", default="cpu", help="cpu (default) or full; never ci")
    p.add_argument("--timeout", type=int, default=5400, help="seconds per cell")
    p.add_argument("--note", default="", help="a line stored with the glue diff (e.g. which runs were retrained)")
    a = p.parse_args(argv)
    if a.profile not in ("cpu", "full"):
        why = "ci outputs are never stored" if a.profile == "ci" else f"there is no profile {a.profile!r}"
        print(f"error: {why}; use --profile cpu (or full)", file=sys.stderr)
        return 2
    try:
        paths = [resolve(c) for c in a.chapters]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rc = 0
    for path in paths:
        rc = max(rc, execute(path, a.profile, a.timeout, a.note))
    return rc


if __name__ == "__main__":
    sys.exit(main())
