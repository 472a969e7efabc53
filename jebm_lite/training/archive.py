"""Pretrained runs: pack finished run directories into archives, fetch them back (with pooch) instead of training.

Readers on a GPU or Colab expect to load a trained model rather than train it (the uvadlc pattern). Maintainers
pack the book's finished runs and publish the archives and their manifest, e.g. as assets of a GitHub release::

    python -m jebm_lite runs pack runs/toy012_joint-cpu runs/mnist_joint-cpu --out dist/runs
    # upload dist/runs/*.tar.gz and dist/runs/manifest.json to the release, then readers set
    export JEBM_RUNS_URL=https://github.com/OWNER/REPO/releases/download/runs-v1

and readers fetch a run by name (``python -m jebm_lite runs fetch toy012_joint-cpu``), or let
:func:`jebm_lite.training.load.run_experiment` fetch it when its run directory is missing and ``JEBM_RUNS_URL``
is set. Downloads go through `pooch <https://www.fatiando.org/pooch>`_: a sha256 from the manifest is checked
before anything is unpacked, files are cached, a progress bar shows large downloads. An archive holds the
run's ``config.json``, ``history.jsonl``, ``result.json`` and its final checkpoint (with the sha256 recorded when it
was written, checked before packing and again after unpacking) only, and is unpacked with tarfile's ``data``
filter (no absolute paths, no ``..``, no links out of the run directory).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from jebm_lite.io import check_sha256, read_json, sha256_file, sha256_sidecar, write_json_atomic
from jebm_lite.runtime import CheckpointError, ConfigError
from jebm_lite.training.rundir import RunDir

RUNS_URL_ENV = "JEBM_RUNS_URL"
MANIFEST = "manifest.json"
FORMAT = "jebm_lite.runs/1"


def runs_url(base_url: str | None = None) -> str | None:
    """The base URL of published runs: the argument, else ``$JEBM_RUNS_URL``, else None (no fetching)."""
    url = base_url or os.environ.get(RUNS_URL_ENV, "").strip() or None
    return url.rstrip("/") if url else None


def sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file (:func:`jebm_lite.io.sha256_file`)."""
    return sha256_file(path)


def pack(run_dirs: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Pack finished runs into ``<out_dir>/<name>.tar.gz`` (name = the run directory's name) and write (or
    extend) ``<out_dir>/manifest.json`` with each archive's sha256, size, steps and config.

    Raises:
        ConfigError: a directory that is not a finished run (no ``result.json`` or no checkpoint).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    man_path = out / MANIFEST
    manifest = read_json(man_path) if man_path.exists() else {"format": FORMAT, "runs": {}}
    for d in run_dirs:
        rd = RunDir(d)
        ckpt = rd.latest_checkpoint()
        if not rd.is_finished() or ckpt is None:
            raise ConfigError(f"{rd.path} is not a finished run (it needs result.json and a checkpoint); finish it "
                              "with `python -m jebm_lite train` first.")
        _, problem = check_sha256(ckpt)
        if problem is not None:
            raise CheckpointError(f"{ckpt} is corrupt ({problem}); it is not packed. Restore it, or train the run "
                                  "again.")
        name = rd.path.resolve().name
        archive = out / f"{name}.tar.gz"
        tmp = out / f".{name}.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for rel in ("config.json", "history.jsonl", "result.json"):
                if (rd.path / rel).exists():
                    tar.add(rd.path / rel, arcname=f"{name}/{rel}")
            tar.add(ckpt, arcname=f"{name}/checkpoints/{ckpt.name}")
            if sha256_sidecar(ckpt).is_file():
                tar.add(sha256_sidecar(ckpt), arcname=f"{name}/checkpoints/{sha256_sidecar(ckpt).name}")
        os.replace(tmp, archive)
        result = rd.read_result()
        manifest["runs"][name] = {"file": archive.name, "sha256": sha256(archive), "size": archive.stat().st_size,
                                  "steps": result.get("steps"), "profile": result.get("profile"),
                                  "config": read_json(rd.config_path)}
    write_json_atomic(man_path, manifest)
    return manifest


def _file_downloader(url: str, output_file: Any, pooch_obj: Any) -> None:
    """pooch downloader for ``file://`` URLs (a local mirror, and the tests)."""
    src = Path(url[len("file://"):])
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist")
    if hasattr(output_file, "write"):
        with open(src, "rb") as f:
            shutil.copyfileobj(f, output_file)
    else:
        shutil.copyfile(src, output_file)


def _retrieve(url: str, known_hash: str | None, cache: Path) -> Path:
    import pooch  # an optional dependency of this feature only (installed by requirements.txt)

    pooch.get_logger().setLevel("WARNING")  # its "Downloading ..." lines; the progress bar says enough
    downloader = _file_downloader if url.startswith("file://") else None
    try:
        return Path(pooch.retrieve(url, known_hash=known_hash, path=cache, progressbar=not url.startswith("file://")
                                   and os.environ.get("TQDM_DISABLE", "") != "1", downloader=downloader))
    except ValueError as e:  # pooch: "SHA256 hash of downloaded file (...) does not match the known hash"
        raise CheckpointError(f"{url}: {e} The download is refused; fetch it again, or tell the maintainers.") from None
    except Exception as e:  # offline, 404, a missing local file, ...
        raise CheckpointError(f"Could not download {url} ({type(e).__name__}: {str(e)[:200]}); check "
                              f"{RUNS_URL_ENV} and the network, or train the run instead.") from None


def fetch_manifest(base_url: str | None = None, cache: str | Path | None = None) -> dict[str, Any]:
    """The manifest of the published runs at ``base_url`` (``$JEBM_RUNS_URL``)."""
    url = runs_url(base_url)
    if url is None:
        raise ConfigError(f"No base URL for published runs: pass --base-url or set {RUNS_URL_ENV}.")
    cache = Path(cache) if cache is not None else _cache_dir()
    path = _retrieve(f"{url}/{MANIFEST}", None, cache / "manifests" / hashlib.sha256(url.encode()).hexdigest()[:16])
    man = read_json(path)
    if man.get("format") != FORMAT:
        raise CheckpointError(f"{url}/{MANIFEST} is not a jebm_lite runs manifest (format {man.get('format')!r}).")
    return man


def _cache_dir() -> Path:
    base = os.environ.get("JEBM_CACHE") or Path.home() / ".cache" / "jebm_lite"
    return Path(base) / "runs"


def is_published(name: str, base_url: str | None = None, cache: str | Path | None = None) -> bool:
    """True if a base URL is set and its manifest lists ``name`` (False when none is set)."""
    if runs_url(base_url) is None:
        return False
    return name in fetch_manifest(base_url, cache)["runs"]


def fetch(name: str, runs_root: str | Path = "runs", base_url: str | None = None,
          cache: str | Path | None = None) -> Path:
    """Download the published run ``name`` (checked against the manifest's sha256) and unpack it as
    ``<runs_root>/<name>``; returns that directory. A directory that already exists is left alone.

    Raises:
        ConfigError: no base URL, or ``name`` is not in the manifest (the published names are listed).
        CheckpointError: the download failed, its hash does not match, or the archive holds unsafe paths.
    """
    target = Path(runs_root) / name
    if RunDir(target).is_finished():
        return target
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} exists and is not a finished run; move it away to fetch {name}.")
    cache = Path(cache) if cache is not None else _cache_dir()
    man = fetch_manifest(base_url, cache)
    entry = man["runs"].get(name)
    if entry is None:
        raise ConfigError(f"No published run {name!r}; published: {', '.join(sorted(man['runs'])) or 'none'}.")
    archive = _retrieve(f"{runs_url(base_url)}/{entry['file']}", f"sha256:{entry['sha256']}", cache / "archives")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for m in tar.getmembers():
                    if not (m.name == name or m.name.startswith(name + "/")):
                        raise tarfile.FilterError(f"member {m.name!r} lies outside {name}/")
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise CheckpointError(f"Archive {archive} of run {name} is unsafe or broken ({e}); nothing was "
                                  "unpacked.") from None
        if not RunDir(Path(tmp) / name).is_finished():
            raise CheckpointError(f"Archive {archive} holds no finished run {name}/ (result.json missing).")
        for ckpt in RunDir(Path(tmp) / name).checkpoints():
            _, problem = check_sha256(ckpt)
            if problem is not None:
                raise CheckpointError(f"Archive {archive} of run {name}: {ckpt.name} is corrupt ({problem}); nothing "
                                      "was unpacked. Fetch it again, or tell the maintainers.")
        if target.exists():
            target.rmdir()
        os.replace(Path(tmp) / name, target)
    return target
