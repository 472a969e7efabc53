"""Point the book at the repository it is published from: one setting, used by the launch buttons and by
every chapter's install cell.

    python tools/set_repo_url.py https://github.com/OWNER/REPO

rewrites ``repository: url:`` in ``_config.yml`` (the Colab / repository buttons) and the ``git+URL`` that the
first code cell of every chapter installs from (``notebooks/src/*.md`` and the paired ``.ipynb``, whose
outputs are kept). ``tests/test_colab.py`` fails when the two disagree.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URL_LINE = re.compile(r"^(\s*url:\s*)(\S+)", re.M)
INSTALL = re.compile(r"git\+(https?://[^\s\"'\\]+)")


def current_url() -> str:
    """The repository URL of ``_config.yml``."""
    text = (ROOT / "_config.yml").read_text()
    block = text[text.index("repository:"):]
    return URL_LINE.search(block).group(2)


def set_url(url: str) -> list[Path]:
    if not re.fullmatch(r"https?://\S+", url):
        raise SystemExit(f"error: {url!r} is not an http(s) URL")
    changed = []
    cfg = ROOT / "_config.yml"
    text = cfg.read_text()
    i = text.index("repository:")
    new = text[:i] + URL_LINE.sub(lambda m: m.group(1) + url, text[i:], count=1)
    if new != text:
        cfg.write_text(new)
        changed.append(cfg)
    for path in sorted((ROOT / "notebooks" / "src").glob("*.md")) + sorted((ROOT / "notebooks").glob("*.ipynb")):
        text = path.read_text()
        new = INSTALL.sub("git+" + url, text)
        if new != text:
            if path.suffix == ".ipynb":
                json.loads(new)  # still a notebook
            path.write_text(new)
            changed.append(path)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    for p in set_url(sys.argv[1]):
        print("updated", p.relative_to(ROOT))
