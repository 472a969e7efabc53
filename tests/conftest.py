"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
