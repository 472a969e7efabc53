"""Compare the glued values of two executions of a chapter (e.g. the stored notebook and a re-execution).

    python tools/glue_diff.py OLD.ipynb NEW.ipynb [--rtol 0.02] [--ignore wall _min] [--json OUT.json --note TEXT]

Prints one line per key that is missing on one side or whose value differs (numbers: beyond ``rtol``
relative, or ``atol`` absolute near zero; text: exactly), and exits 1 when any differs, 0 when all agree.
Keys that measure the execution itself (wall times) can be left out with ``--ignore`` substrings.
``--json`` also writes :func:`summary` (counts of exact / within-tolerance / differing values and every
differing key with both values) for the reproduction notes.
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


def run_card(path: str | Path) -> dict[str, str]:
    """The fields of the last ``RUN CARD`` a notebook printed (``{"commit", "profile", "device", "wall time", ...}``;
    empty when it printed none)."""
    nb = json.loads(Path(path).read_text())
    card: dict[str, str] = {}
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []):
            text = o.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            if text.startswith("RUN CARD"):
                card = {k.strip(): v.strip() for k, _, v in (ln.partition(" : ") for ln in text.splitlines()[1:])
                        if v}
    return card


def differences(old: dict, new: dict, rtol: float = 0.02, atol: float = 1e-9,
                ignore: tuple[str, ...] = DEFAULT_IGNORE) -> list[str]:
    """One line per key whose value differs between ``old`` and ``new`` (see the module docstring), sorted by key:
    the printable form of :func:`summary`."""
    s = summary(old, new, rtol, atol, ignore)
    lines = {k: f"{k}: only in old" for k in s["only_old"]} | {k: f"{k}: only in new" for k in s["only_new"]}
    lines |= {d["key"]: f"{d['key']}: old={d['old']!r} new={d['new']!r}" for d in s["differ"]}
    return [lines[k] for k in sorted(lines)]


def summary(old: dict, new: dict, rtol: float = 0.02, atol: float = 1e-9,
             ignore: tuple[str, ...] = DEFAULT_IGNORE) -> dict[str, object]:
    """Counts over the keys both executions glued (``ignore`` left out): ``exact``, ``within`` (numbers
    within ``rtol`` but not equal), ``differ`` with ``[{"key", "old", "new", "rel"}]`` (``rel``: relative
    change of a number, else None), and the keys found on one side only."""
    keys = [k for k in sorted(set(old) | set(new)) if not any(s in k for s in ignore)]
    both = [k for k in keys if k in old and k in new]
    exact, within, differ = 0, 0, []
    for k in both:
        a, b = old[k], new[k]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if a == b:
            exact += 1
        elif numeric and math.isclose(a, b, rel_tol=rtol, abs_tol=atol):
            within += 1
        else:
            rel = abs(b - a) / max(abs(a), atol) if numeric else None
            differ.append({"key": k, "old": a, "new": b, "rel": rel})
    return {"compared": len(both), "exact": exact, "within": within, "rtol": rtol, "differ": differ,
            "only_old": [k for k in keys if k not in new], "only_new": [k for k in keys if k not in old]}


def write_record(out: str | Path, old_path: str | Path, new_path: str | Path, rtol: float = 0.02,
                 ignore: tuple[str, ...] = DEFAULT_IGNORE, note: str = "", names: tuple[str, str] | None = None) -> dict:
    """Write (and return) the JSON record of a comparison: both run cards, ``note`` and :func:`summary`.
    ``names`` (old, new) replace the file names in the record (e.g. a temporary copy's)."""
    old_name, new_name = names or (Path(old_path).name, Path(new_path).name)
    rec = {"old": old_name, "new": new_name, "ignore": list(ignore), "note": note,
           "old_card": run_card(old_path), "new_card": run_card(new_path),
           **summary(glued_values(old_path), glued_values(new_path), rtol, ignore=ignore)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(rec, indent=1, default=str) + "\n")
    return rec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--rtol", type=float, default=0.02)
    p.add_argument("--ignore", nargs="*", default=list(DEFAULT_IGNORE), help="key substrings to leave out")
    p.add_argument("--json", default=None, help="also write the summary (counts, differing keys) to this file")
    p.add_argument("--note", default="", help="a line stored with --json (e.g. which runs were retrained)")
    a = p.parse_args(argv)
    for f in (a.old, a.new):
        if not Path(f).is_file():
            print(f"error: {f} is not a file; give two .ipynb paths", file=sys.stderr)
            return 2
    old, new = glued_values(a.old), glued_values(a.new)
    lines = differences(old, new, a.rtol, ignore=tuple(a.ignore))
    print("\n".join(lines) if lines else f"all {len(old)} glued values agree (rtol {a.rtol})")
    if a.json:
        write_record(a.json, a.old, a.new, a.rtol, tuple(a.ignore), a.note)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
