"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """Refuse to test another checkout's package. An editable install made in a different clone (a shared or
    linked ``.venv``) shadows this one wherever the current folder is not the repository root, e.g. in the
    notebook kernels nbval starts in ``notebooks/``: ask where ``jebm_lite`` resolves from there."""
    import subprocess
    import sys

    origin = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('jebm_lite').origin)"],
                            cwd=REPO / "notebooks", capture_output=True, text=True, check=False).stdout.strip()
    if not origin or Path(origin).resolve().parent.parent != REPO:
        raise pytest.UsageError(f"jebm_lite resolves to {origin or 'nothing'}, not to this checkout ({REPO}): "
                                f"run `make venv` here (or `pip install -e .` with this checkout's Python).")


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


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (as in CI's subprocesses); global determinism switched off afterwards.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)


def assert_same(a, b, path="state"):
    """Exact equality of nested dicts / lists / tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.shape == b.shape and a.dtype == b.dtype, path
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def learner_state(learner) -> dict:
    """What a checkpoint stores of a learner: networks, optimisers, schedulers."""
    return {
        "learner": learner.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in learner.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in learner.schedulers.items()},
    }


def no_time(rows):
    """History rows without their wall-clock field."""
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def record_optimizer_steps(learner) -> dict[str, dict]:
    """Wrap every optimiser's ``step`` of ``learner`` to record, at that moment, which parameters hold a
    gradient and a copy of those gradients: ``{optimiser name: {"with_grad": {id(p)}, "grads": {id(p): grad}}}``.
    """
    seen: dict[str, dict] = {}
    all_params = list(learner.parameters())
    for name, opt in learner.optimizers.items():
        orig = opt.step

        def step(*a, _name=name, _orig=orig, **k):
            seen[_name] = {
                "with_grad": {id(p) for p in all_params if p.grad is not None},
                "grads": {id(p): p.grad.clone() for p in all_params if p.grad is not None},
            }
            return _orig(*a, **k)

        opt.step = step
    return seen


def flip_tensor_byte(path: Path) -> int:
    """Flip one byte in the middle of the largest tensor stored in the torch (zip) file ``path``, in place; returns
    its offset. The file still loads (torch does not check the zip CRCs), with one number changed: what a bad
    disk block or a bit flip in transit does, which only a recorded hash can catch."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    offset = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))
    return offset
