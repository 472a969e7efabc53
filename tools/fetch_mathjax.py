"""Put MathJax 3 into the book's own static files, so that the built book reads offline.

    python3 tools/fetch_mathjax.py            (``make book`` runs it before the build)

The book's pages load ``_static/mathjax/tex-mml-chtml.js`` (``mathjax_path`` in ``_config.yml``)
instead of a CDN. This script fills ``_vendor/_static/mathjax/`` (git-ignored) with the browser
build of MathJax 3.2.2 (the ``es5/`` folder of the npm package ``mathjax``) from a package registry;
``html_extra_path: [_vendor]`` copies it into ``_build/html/_static/mathjax/``. (Not a ``_static/``
folder at the root: Jupyter Book would add every ``.js`` file found there to every page.)

1. ``npm pack mathjax@3.2.2`` when ``npm`` is on the PATH (the official package), else
2. ``pip download sphinx-mathjax-offline==0.0.2`` (a PyPI wheel that ships the same 3.2.2 ``es5``
   files, byte for byte), so that a machine with only python3 and pip can build the book too.

Both archives are checked against pinned SHA-256 digests, and so is the entry file. The fetch is
idempotent: when ``_vendor/_static/mathjax/.version`` names this version and the entry file has the pinned
digest, nothing is fetched. ``--force`` fetches again.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "_vendor" / "_static" / "mathjax"
VERSION = "3.2.2"
ENTRY = "tex-mml-chtml.js"
ENTRY_SHA256 = "300480069078b5892d2363a2b65e2dfbbf30fe5c80f83edbfecf4610fd093862"

NPM_SPEC = f"mathjax@{VERSION}"
NPM_TGZ_SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"
NPM_PREFIX = "package/es5/"

PIP_SPEC = "sphinx-mathjax-offline==0.0.2"
PIP_WHL_SHA256 = "206418155b2ff2f57496fb8501fdccae3da978e53031ff296c73729ba16062c4"
PIP_PREFIX = "sphinx-mathjax-offline/static/mathjax/"


class FetchError(RuntimeError):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_present(dest: Path = DEST) -> bool:
    stamp, entry = dest / ".version", dest / ENTRY
    return (
        stamp.is_file()
        and stamp.read_text().strip() == VERSION
        and entry.is_file()
        and sha256(entry.read_bytes()) == ENTRY_SHA256
    )


def _run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr.strip()}")


def _single(folder: Path, pattern: str) -> bytes:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise FetchError(f"expected one {pattern} in {folder}, found {[p.name for p in found]}")
    return found[0].read_bytes()


def _check(data: bytes, expected: str, what: str) -> None:
    if sha256(data) != expected:
        raise FetchError(f"{what}: SHA-256 {sha256(data)} is not the pinned {expected}")


def files_from_npm(tmp: Path) -> dict[str, bytes]:
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm is not on the PATH")
    _run([npm, "pack", NPM_SPEC, "--silent", "--pack-destination", str(tmp)], cwd=tmp)
    data = _single(tmp, "mathjax-*.tgz")
    _check(data, NPM_TGZ_SHA256, f"npm package {NPM_SPEC}")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(NPM_PREFIX):
                out[member.name[len(NPM_PREFIX) :]] = tar.extractfile(member).read()
    return out


def files_from_pip(tmp: Path) -> dict[str, bytes]:
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-d",
            str(tmp),
            PIP_SPEC,
        ],
        cwd=tmp,
    )
    data = _single(tmp, "sphinx_mathjax_offline-*.whl")
    _check(data, PIP_WHL_SHA256, f"PyPI package {PIP_SPEC}")
    out = {}
    with zipfile.ZipFile(io.BytesIO(data)) as whl:
        for name in whl.namelist():
            if name.startswith(PIP_PREFIX) and not name.endswith("/"):
                out[name[len(PIP_PREFIX) :]] = whl.read(name)
    return out


def install(files: dict[str, bytes], dest: Path = DEST) -> None:
    if ENTRY not in files:
        raise FetchError(f"the archive has no {ENTRY}")
    _check(files[ENTRY], ENTRY_SHA256, ENTRY)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    for rel, data in files.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise FetchError(f"unsafe path in archive: {rel}")
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (staging / ".version").write_text(VERSION + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def fetch(dest: Path = DEST, force: bool = False, sources: tuple[str, ...] = ("npm", "pip")) -> str:
    """Fill ``dest``; returns what was done ('present' or the source used)."""
    # A half-written copy from an interrupted run would be copied into the book: remove it.
    shutil.rmtree(dest.with_name(dest.name + ".partial"), ignore_errors=True)
    if not force and is_present(dest):
        return "present"
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for source in sources:
        with tempfile.TemporaryDirectory(prefix="mathjax-") as tmp:
            try:
                files = (files_from_npm if source == "npm" else files_from_pip)(Path(tmp))
                install(files, dest)
                return source
            except FetchError as e:
                errors.append(f"  {source}: {e}")
    raise FetchError("could not fetch MathJax " + VERSION + ":\n" + "\n".join(errors))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="fetch even when the files are present")
    parser.add_argument(
        "--source", choices=("npm", "pip"), action="append", help="only this source (may be repeated)"
    )
    args = parser.parse_args(argv)
    try:
        done = fetch(force=args.force, sources=tuple(args.source or ("npm", "pip")))
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rel = DEST.relative_to(ROOT)
    if done == "present":
        print(f"== MathJax {VERSION} already in {rel}/ (skipped)")
    else:
        print(f"== MathJax {VERSION} fetched with {done} into {rel}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
