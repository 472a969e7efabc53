"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def shared_data_path() -> Path:
    """``$JEBM_DATA``, else ``<repo>/../shared/data`` (the staged MNIST / Fashion-MNIST files)."""
    return Path(os.environ.get("JEBM_DATA") or REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; fails (never skips) when it or its MNIST files are missing."""
    path = shared_data_path()
    assert path.is_dir(), (
        f"Shared data folder {path} does not exist. Set JEBM_DATA to the folder holding mnist/ and "
        f"fashion-mnist/ (see ../shared/data/MANIFEST.md)."
    )
    return path


@pytest.fixture(scope="module")
def tmp_jebm_cache(tmp_path_factory):
    """``JEBM_CACHE`` set to a fresh temporary folder for one test module (derived files such as
    decompressed idx files go there, not to the user's home)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JEBM_CACHE", str(tmp_path_factory.mktemp("jebm_cache")))
        yield


def load_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def toc_files(toc: dict) -> list[str]:
    """Every ``file:`` entry of a jb-book TOC (root, parts, chapters, sections, at any depth), in order."""
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                found.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    if isinstance(toc.get("root"), str):
        found.append(toc["root"])
    walk(toc)
    return found
