"""Put ONNX Runtime Web (its wasm build) into the book's own static files, so that chapter 5's explorer runs offline.

    python3 tools/fetch_onnxruntime_web.py            (``make book`` runs it before the build)

Chapter 5's explorer panel (``_static/explorer/explorer.mjs``) runs the exported graphs of the toy models
in the reader's browser with ``onnxruntime-web``, loaded from ``_static/onnxruntime-web/`` instead of a CDN.
This script fills ``_vendor/_static/onnxruntime-web/`` (git-ignored) with three files of the npm package
``onnxruntime-web@1.30.0``: the ES module ``ort.wasm.min.mjs`` (the wasm backend only: no WebGL, WebGPU or
WebNN code), its loader ``ort-wasm-simd-threaded.mjs`` and the WebAssembly binary
``ort-wasm-simd-threaded.wasm``; ``html_extra_path: [_vendor]`` copies them into ``_build/html/_static/``
(the same route as MathJax, ``tools/fetch_mathjax.py``; not a root ``_static/`` folder, whose ``.js``
files Jupyter Book adds to every page).

1. ``npm pack onnxruntime-web@1.30.0`` when ``npm`` is on the PATH, else
2. the same archive from the npm registry's tarball address with Python's ``urllib`` (a machine with
   only python3 can build the book too; ``--url`` points it elsewhere, e.g. a ``file://`` copy).

The archive is checked against a pinned SHA-256 digest, and so is every file taken from it. The fetch is
idempotent: when ``.version`` names this version and every file has its pinned digest, nothing is
fetched (a second ``make book`` does not touch the network). ``--force`` fetches again.
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
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "_vendor" / "_static" / "onnxruntime-web"
PACKAGE = "onnxruntime-web"
VERSION = "1.30.0"
NPM_SPEC = f"{PACKAGE}@{VERSION}"
TGZ_NAME = f"{PACKAGE}-{VERSION}.tgz"
TGZ_SHA256 = "d2228df7e4616bc3348bf504ee888f3bec43789a273f0a63f3e68d203ce3bf71"
REGISTRY_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{TGZ_NAME}"
PREFIX = "package/dist/"
# The wasm build: its ES module, the loader it imports and the WebAssembly binary (the page runs it on one
# thread: the threaded binary works single-threaded where the page is not cross-origin isolated).
FILES = {
    "ort.wasm.min.mjs": "219e6a1fc8a9938268d18efca3c91d310bd2f4a59bbd13744df5b2b7fc6cee3b",
    "ort-wasm-simd-threaded.mjs": "e13f7f94fc51b4ca72b12faeb1ee95f4ace6dfbc8939bc718aabdc0a27c4299b",
    "ort-wasm-simd-threaded.wasm": "3398c10d07d229bd91b364548e130e0e51a8e5704b88c7c083ebbeb78842dee2",
}
ENTRY = "ort.wasm.min.mjs"


class FetchError(RuntimeError):
    pass


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_present(dest: Path = DEST, files: dict[str, str] | None = None) -> bool:
    """Whether ``dest`` holds this version with every file at its pinned digest."""
    files = FILES if files is None else files
    stamp = dest / ".version"
    return (
        stamp.is_file()
        and stamp.read_text().strip() == VERSION
        and all((dest / name).is_file() and sha256((dest / name).read_bytes()) == digest
                for name, digest in files.items())
    )


def _check(data: bytes, expected: str, what: str) -> None:
    if sha256(data) != expected:
        raise FetchError(f"{what}: SHA-256 {sha256(data)} is not the pinned {expected}")


def files_from_tgz(data: bytes, files: dict[str, str] | None = None, tgz_sha256: str | None = None) -> dict[str, bytes]:
    """The pinned files of the npm archive ``data`` (checked against ``tgz_sha256``, default the pin)."""
    files = FILES if files is None else files
    _check(data, TGZ_SHA256 if tgz_sha256 is None else tgz_sha256, f"npm package {NPM_SPEC}")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name[len(PREFIX):] if member.name.startswith(PREFIX) else None
            if member.isfile() and name in files:
                out[name] = tar.extractfile(member).read()
    missing = sorted(set(files) - set(out))
    if missing:
        raise FetchError(f"the archive has no {', '.join(missing)}")
    return out


def tgz_from_npm(tmp: Path) -> bytes:
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm is not on the PATH")
    proc = subprocess.run([npm, "pack", NPM_SPEC, "--silent", "--pack-destination", str(tmp)], cwd=tmp,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"`npm pack {NPM_SPEC}` failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    found = sorted(tmp.glob(f"{PACKAGE}-*.tgz"))
    if len(found) != 1:
        raise FetchError(f"expected one {PACKAGE}-*.tgz in {tmp}, found {[p.name for p in found]}")
    return found[0].read_bytes()


def tgz_from_url(url: str = REGISTRY_URL, timeout: float = 120.0) -> bytes:
    """The archive from ``url`` (the npm registry's tarball address, or a ``file://`` copy)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except (OSError, ValueError) as e:
        raise FetchError(f"cannot download {url}: {e}") from None


def install(files: dict[str, bytes], dest: Path = DEST, pins: dict[str, str] | None = None) -> None:
    """Write ``files`` (each checked against its pin) into ``dest`` through a staging folder."""
    pins = FILES if pins is None else pins
    missing = sorted(set(pins) - set(files))
    if missing:
        raise FetchError(f"missing {', '.join(missing)}")
    for name, digest in pins.items():
        _check(files[name], digest, name)
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in pins:
        (staging / name).write_bytes(files[name])
    (staging / ".version").write_text(VERSION + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def fetch(dest: Path = DEST, force: bool = False, sources: tuple[str, ...] = ("npm", "registry"),
          url: str = REGISTRY_URL) -> str:
    """Fill ``dest``; returns what was done ('present' or the source used)."""
    shutil.rmtree(dest.with_name(dest.name + ".partial"), ignore_errors=True)
    if not force and is_present(dest):
        return "present"
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for source in sources:
        with tempfile.TemporaryDirectory(prefix="ort-web-") as tmp:
            try:
                data = tgz_from_npm(Path(tmp)) if source == "npm" else tgz_from_url(url)
                install(files_from_tgz(data), dest)
                return source
            except FetchError as e:
                errors.append(f"  {source}: {e}")
    raise FetchError(f"could not fetch {NPM_SPEC}:\n" + "\n".join(errors))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="fetch even when the files are present")
    parser.add_argument("--source", choices=("npm", "registry"), action="append",
                        help="only this source (may be repeated)")
    parser.add_argument("--url", default=REGISTRY_URL, help="where the 'registry' source downloads the archive")
    args = parser.parse_args(argv)
    try:
        done = fetch(force=args.force, sources=tuple(args.source or ("npm", "registry")), url=args.url)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rel = DEST.relative_to(ROOT)
    if done == "present":
        print(f"== {NPM_SPEC} already in {rel}/ (skipped)")
    else:
        print(f"== {NPM_SPEC} fetched with {done} into {rel}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
