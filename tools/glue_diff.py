"""Compare the glued values of two executions of a chapter (e.g. the stored notebook and a re-execution).

    python tools/glue_diff.py OLD.ipynb NEW.ipynb [--rtol 0.02] [--ignore-prefix ch04_wall]

Prints one line per key that is missing on one side or whose value differs (numbers: beyond ``rtol``
relative, or ``atol`` absolute near zero; text: exactly), and exits 1 when any differs, 0 when all agree.
Keys that measure the execution itself (wall times) can be left out with ``--ignore`` substrings.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from pathlib import Path

DEFAULT_IGNORE = ("wall", "_min", "eval_s")  # wall-clock measurements differ between executions


def glued_values(path: str | Path) -> dict[str, object]:
    """``{key: value}`` of every ``glue(...)`` output of a notebook (the text/plain form, parsed when it is a
    Python literal)."""
    nb = json.loads(Path(path).read_text())
    out: dict[str, object] = {}
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook")
            if not meta:
                continue
            text = o.get("data", {}).get(meta.get("mime_prefix", "") + "text/plain")
            if text is None:
                continue
            text = "".join(text) if isinstance(text, list) else text
            try:
                out[meta["name"]] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                out[meta["name"]] = text
    return out


def differences(old: dict, new: dict, rtol: float = 0.02, atol: float = 1e-9,
                ignore: tuple[str, ...] = DEFAULT_IGNORE) -> list[str]:
    """One line per key whose value differs between ``old`` and ``new`` (see the module docstring)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if any(s in key for s in ignore):
            continue
        if key not in old or key not in new:
            lines.append(f"{key}: only in {'new' if key in new else 'old'}")
            continue
        a, b = old[key], new[key]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        same = math.isclose(a, b, rel_tol=rtol, abs_tol=atol) if numeric else a == b
        if not same:
            lines.append(f"{key}: old={a!r} new={b!r}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rtol", type=float, default=0.02)
    p.add_argument("--ignore", nargs="*", default=list(DEFAULT_IGNORE), help="key substrings to leave out")
    a = p.parse_args(argv)
    for f in (a.old, a.new):
        if not Path(f).is_file():
            print(f"error: {f} is not a file; give two .ipynb paths", file=sys.stderr)
            return 2
    old, new = glued_values(a.old), glued_values(a.new)
    lines = differences(old, new, a.rtol, ignore=tuple(a.ignore))
    print("\n".join(lines) if lines else f"all {len(old)} glued values agree (rtol {a.rtol})")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
