"""Colab and fresh machines: the install cell of every chapter and the launch button use one repository URL
(``_config.yml``'s ``repository.url``, changed with ``tools/set_repo_url.py``), and the install cell installs
the package only where it is missing."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import set_repo_url  # noqa: E402

CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def install_cell(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_install_cell_uses_the_configured_repository(path):
    urls = set_repo_url.INSTALL.findall(install_cell(path))
    assert urls == [set_repo_url.current_url()], f"{path.name}: run tools/set_repo_url.py URL"


def _run_install_part(source: str, installed: bool) -> list[list[str]]:
    """Execute the cell's install block with a fake ``subprocess`` and ``find_spec``; return the commands."""
    block = source.split("import jebm_lite as jl")[0]
    calls: list[list[str]] = []
    fake_sub = types.SimpleNamespace(run=lambda cmd, check: calls.append(cmd))
    fake_util = types.SimpleNamespace(find_spec=lambda name: object() if installed else None)
    fake_importlib = types.SimpleNamespace(util=fake_util)
    code = block.replace("import importlib.util\n", "").replace("import subprocess\n", "")
    exec(compile(code, "<install cell>", "exec"), {"importlib": fake_importlib, "subprocess": fake_sub, "sys": sys})
    return calls


def test_install_cell_installs_only_when_the_package_is_missing():
    src = install_cell(CHAPTERS[0])
    assert _run_install_part(src, installed=True) == []
    (cmd,) = _run_install_part(src, installed=False)
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"] and cmd[-1] == "git+" + set_repo_url.current_url()
    assert importlib.util.find_spec("jebm_lite") is not None


def test_set_repo_url_rewrites_config_and_every_chapter(tmp_path, monkeypatch):
    import shutil

    fake = tmp_path / "repo"
    (fake / "notebooks" / "src").mkdir(parents=True)
    shutil.copy(ROOT / "_config.yml", fake / "_config.yml")
    for p in CHAPTERS[:2]:
        shutil.copy(p, fake / "notebooks" / p.name)
        shutil.copy(ROOT / "notebooks" / "src" / f"{p.stem}.md", fake / "notebooks" / "src" / f"{p.stem}.md")
    monkeypatch.setattr(set_repo_url, "ROOT", fake)
    changed = set_repo_url.set_url("https://example.org/me/book")
    assert len(changed) == 5 and set_repo_url.current_url() == "https://example.org/me/book"
    for p in CHAPTERS[:2]:
        nb = json.loads((fake / "notebooks" / p.name).read_text())
        assert "git+https://example.org/me/book" in "".join(nb["cells"][1]["source"]) or any(
            "git+https://example.org/me/book" in "".join(c["source"]) for c in nb["cells"])
        assert nb["cells"] and any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    with pytest.raises(SystemExit):
        set_repo_url.set_url("not a url")
