"""The ONNX export behind chapter 5's explorer panel (jebm_lite.analysis.export) and the runtime fetch.

* A freshly trained (two-iteration, ``ci``) joint and VLAE model exported to a temporary folder: the graphs
  run with onnxruntime agree with PyTorch (decoder image, f, log p, and the hand-written gradient against
  autograd) at any batch size, and the staleness check catches a changed file, a changed preset and a
  newer checkpoint.
* The committed export (``_static/explorer/toy012``) is current: its files have the manifest's sha256,
  its configs are still the presets', it stays under 5 MB, and onnxruntime reproduces the PyTorch outputs
  stored at export time. Where chapter 5's runs are on this machine (``notebooks/runs``), the graphs are
  compared with those runs' PyTorch models directly.
* ``tools/fetch_onnxruntime_web.py`` checks every digest, fetches from a ``file://`` archive, and a second
  call fetches nothing.
"""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import jebm_lite as jl
from jebm_lite.analysis import export as ex
from jebm_lite.io import sha256_file
from jebm_lite.models.ebm import EnergyMLP, JointEBMPrior
from jebm_lite.runtime import ConfigError
from jebm_lite.training.learners import build_learner
from jebm_lite.training.load import load_learner, run_experiment

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "_static" / "explorer" / "toy012"
CHAPTER_RUNS = ROOT / "notebooks" / "runs"
TOL = 1e-5


# ------------------------------------------------------------------------------------------------
# The gradient graph, without onnxruntime
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["lrelu", "silu", "gelu"])
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_prior_graph_equals_autograd(activation, spectral_norm):
    torch.manual_seed(0)
    prior = JointEBMPrior((2, 2), EnergyMLP(4, nef=16, layers=3, activation=activation, spectral_norm=spectral_norm))
    prior.train()  # the graph takes the eval-mode weights and leaves the power iteration where it was
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    graph = ex.PriorGraph(prior)
    assert all(torch.equal(before[k], v) for k, v in prior.state_dict().items())
    assert prior.energy.training
    prior.eval()
    z = 2 * torch.randn(9, 4)
    f, log_p, grad = graph(z)
    zz = z.clone().requires_grad_(True)
    lp = prior.log_prob_unnorm(zz)
    (g,) = torch.autograd.grad(lp.sum(), zz)
    torch.testing.assert_close(f, prior.f(z).detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(log_p, lp.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, g, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(grad, -z, atol=1e-3), "the EBM term must move the gradient away from N(0, I)'s"


def test_prior_graph_refuses_a_prior_without_ebm():
    with pytest.raises(ConfigError, match="N\\(0, I\\)"):
        ex.PriorGraph(JointEBMPrior((2, 2), None))


def test_pad_lims_cover_the_codes():
    codes = torch.tensor([[0.5, -7.2, 1.0, 0.2], [2.0, 1.0, -4.4, 0.1]])
    assert ex.pad_lims(codes, (2, 2), least=3.0, q=1.0) == [8.0, 5.0]
    assert ex.pad_lims(torch.zeros(5, 4), (2, 2), least=3.0) == [3.0, 3.0]


# ------------------------------------------------------------------------------------------------
# Export of freshly trained models
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, shared_data):
    """Joint and VLAE models after two training iterations (ci profile), exported with a manifest."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny")
    sources = {}
    for name, preset in ex.TOY012.items():
        overrides = ("train.max_steps=2", "train.ckpt_every=2")
        cfg = jl.get_config(preset, profile="ci", overrides=list(overrides))
        learner, _, run = run_experiment(cfg, run_dir=root / "runs" / f"{preset}-ci", device="cpu")
        learner.eval()
        codes = torch.randn(30, 4, generator=torch.Generator().manual_seed(1))
        sources[name] = ex.ExportSource(learner, cfg, run, codes, torch.arange(30) % 3, overrides)
    out = root / "graphs"
    manifest = ex.export_models(sources, out, runs_root=root)
    return out, manifest, sources, root / "runs"


def test_export_writes_graphs_and_a_manifest(tiny_export):
    out, manifest, sources, _ = tiny_export
    assert manifest == json.loads((out / ex.MANIFEST).read_text())
    assert manifest["opset"] == ex.OPSET and set(manifest["models"]) == {"joint", "vlae"}
    joint, vlae = manifest["models"]["joint"], manifest["models"]["vlae"]
    assert set(joint["graphs"]) == {"decoder", "prior"} and joint["graphs"]["prior"] is not None
    assert vlae["graphs"]["prior"] is None, "VLAE's N(0, I) prior needs no graph"
    assert sorted(p.name for p in out.glob("*.onnx")) == ["joint_decoder.onnx", "joint_prior.onnx", "vlae_decoder.onnx"]
    for name, m in manifest["models"].items():
        cfg = sources[name].cfg
        assert m["preset"] == cfg.name and m["profile"] == "ci" and m["seed"] == cfg.train.seed
        assert m["overrides"] == ["train.max_steps=2", "train.ckpt_every=2"]
        assert m["config"] == jl.config.to_dict(cfg)
        assert m["run"]["checkpoint"] == "step_00000002.pt" and m["run"]["path"] == f"runs/{cfg.name}-ci"
        assert m["run"]["checkpoint_sha256"] == sha256_file(sources[name].run.latest_checkpoint())
        assert m["prior_langevin"] == {"steps": cfg.prior_langevin.steps, "step_size": cfg.prior_langevin.step_size,
                                       "noise": cfg.prior_langevin.noise, "exact_gaussian": name == "vlae"}
        for g in m["graphs"].values():
            if g is not None:
                assert sha256_file(out / g["file"]) == g["sha256"] and (out / g["file"]).stat().st_size == g["bytes"]
        assert np.asarray(m["reference"]["image"]).shape == (len(ex.REFERENCE_CODES), 1, 28, 28)
        assert len(m["codes"]["z"]) == 30 and m["codes"]["labels"][:4] == [0, 1, 2, 0]
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in out.glob("*.onnx")) < ex.MAX_BYTES


@pytest.mark.parametrize("batch", [1, 5, 64])
def test_onnxruntime_equals_pytorch(tiny_export, batch):
    out, _, sources, _ = tiny_export
    z = 2.5 * torch.randn(batch, 4, generator=torch.Generator().manual_seed(batch))
    for name, src in sources.items():
        diffs = ex.compare_with_pytorch(out, name, src.learner, z)
        assert set(diffs) == ({"image", "f", "log_p", "grad_log_p"} if name == "joint" else {"image"})
        assert max(diffs.values()) < TOL, (name, diffs)
    got = ex.run_graphs(out, "joint", z)
    assert got["image"].shape == (batch, 1, 28, 28) and got["grad_log_p"].shape == (batch, 4)


def test_the_manifest_holds_pytorch_outputs(tiny_export):
    out, manifest, sources, _ = tiny_export
    for name, m in manifest["models"].items():
        ref = ex.pytorch_outputs(sources[name].learner, torch.tensor(m["reference"]["codes"]))
        for key, value in ref.items():
            np.testing.assert_allclose(np.asarray(m["reference"][key]), value.numpy(), atol=1e-6, rtol=0)


def test_staleness_is_reported(tiny_export, tmp_path):
    out, _, sources, runs = tiny_export
    assert ex.manifest_problems(out, runs) == []
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    # a graph file that is not the one exported
    data = bytearray((copy / "joint_prior.onnx").read_bytes())
    data[len(data) // 2] ^= 1  # inside the weights
    (copy / "joint_prior.onnx").write_bytes(bytes(data))
    # a config that is no longer the preset's (as if the preset had changed since the export)
    manifest = json.loads((copy / ex.MANIFEST).read_text())
    manifest["models"]["vlae"]["config"]["model"]["sigma"] = 0.5
    (copy / ex.MANIFEST).write_text(json.dumps(manifest))
    problems = ex.manifest_problems(copy, runs)
    assert any("joint/prior" in p and "sha256" in p for p in problems), problems
    assert any(p.startswith("vlae: the preset toy012_vlae") and "model.sigma" in p for p in problems), problems
    assert len(problems) == 2
    # a run that has trained on since the export
    manifest["models"]["vlae"]["config"]["model"]["sigma"] = sources["vlae"].cfg.model.sigma
    manifest["models"]["joint"]["run"]["checkpoint_sha256"] = "0" * 64
    (copy / ex.MANIFEST).write_text(json.dumps(manifest))
    (copy / "joint_prior.onnx").write_bytes((out / "joint_prior.onnx").read_bytes())
    problems = ex.manifest_problems(copy, runs)
    assert len(problems) == 1 and "another checkpoint" in problems[0], problems
    assert ex.manifest_problems(copy) == [], "without the runs only the files and presets are checked"


def test_export_refuses_graphs_over_the_budget(tiny_export, tmp_path, monkeypatch):
    _, _, sources, _ = tiny_export
    monkeypatch.setattr(ex, "MAX_BYTES", 100_000)
    with pytest.raises(ConfigError, match="budget"):
        ex.export_models({"vlae": sources["vlae"]}, tmp_path)


# ------------------------------------------------------------------------------------------------
# The committed export is current
# ------------------------------------------------------------------------------------------------


def committed_manifest() -> dict:
    return json.loads((COMMITTED / ex.MANIFEST).read_text())


def test_committed_export_is_current():
    runs = CHAPTER_RUNS if CHAPTER_RUNS.is_dir() else None
    assert ex.manifest_problems(COMMITTED, runs) == []
    m = committed_manifest()
    assert {k: v["preset"] for k, v in m["models"].items()} == ex.TOY012
    total = sum(p.stat().st_size for p in COMMITTED.iterdir() if p.is_file())
    assert total < 5_000_000, f"the explorer's files take {total} bytes"
    for spec in m["models"].values():
        cfg = jl.get_config(spec["preset"], profile=spec["profile"])
        assert spec["overrides"] == [] and spec["profile"] == "cpu" and spec["run"]["finished"] and spec["run"]["steps"] == cfg.train.max_steps
        lc = cfg.prior_langevin
        assert (spec["prior_langevin"]["steps"], spec["prior_langevin"]["step_size"]) == (lc.steps, lc.step_size)


def test_committed_graphs_reproduce_the_stored_pytorch_outputs():
    m = committed_manifest()
    for name, spec in m["models"].items():
        ref = spec["reference"]
        got = ex.run_graphs(COMMITTED, name, np.asarray(ref["codes"], dtype=np.float32), m)
        assert set(got) == set(ref) - {"codes"}
        for key, value in got.items():
            np.testing.assert_allclose(value, np.asarray(ref[key]), atol=TOL, rtol=0, err_msg=f"{name}/{key}")
        # trained models: the stored images are digits (not a blank), and differ from code to code
        img = np.asarray(ref["image"])
        assert img.min() < -0.9 and img.max() > 0.5 and np.abs(img[0] - img[1]).max() > 0.5


def test_committed_graphs_equal_chapter_runs():
    """Against the PyTorch models of chapter 5's runs, where they are on this machine."""
    m = committed_manifest()
    dirs = {name: CHAPTER_RUNS / spec["run"]["name"] for name, spec in m["models"].items()}
    if not all((d / "result.json").is_file() for d in dirs.values()):
        pytest.skip(f"chapter 5's runs are not in {CHAPTER_RUNS} (the committed reference outputs are checked above)")
    torch.set_num_threads(1)
    z = torch.tensor(m["models"]["joint"]["reference"]["codes"]) * 0.8 + 0.1
    for name, d in dirs.items():
        learner = load_learner(d, build_learner, device="cpu")
        learner.eval()
        diffs = ex.compare_with_pytorch(COMMITTED, name, learner, z)
        assert max(diffs.values()) < TOL, (name, diffs)


# ------------------------------------------------------------------------------------------------
# tools/fetch_onnxruntime_web.py
# ------------------------------------------------------------------------------------------------


def _fetch_tool():
    spec = importlib.util.spec_from_file_location("fetch_ort", ROOT / "tools" / "fetch_onnxruntime_web.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_fetch_runtime_from_a_file_url_then_nothing(tmp_path):
    fo = _fetch_tool()
    files = {"ort.wasm.min.mjs": b"export const x = 1;", "ort-wasm-simd-threaded.mjs": b"//",
             "ort-wasm-simd-threaded.wasm": b"\0asm"}
    archive = _tgz({**{fo.PREFIX + k: v for k, v in files.items()}, "package/dist/ort.webgpu.min.mjs": b"no",
                    "package/package.json": b"{}"})
    fo.FILES = {k: fo.sha256(v) for k, v in files.items()}
    fo.TGZ_SHA256 = fo.sha256(archive)
    src = tmp_path / "onnxruntime-web-x.tgz"
    src.write_bytes(archive)
    dest = tmp_path / "vendor" / "onnxruntime-web"
    (dest.parent / "onnxruntime-web.partial").mkdir(parents=True)  # left by an interrupted run
    assert fo.fetch(dest, sources=("registry",), url=src.as_uri()) == "registry"
    assert sorted(p.name for p in dest.iterdir()) == [".version", *sorted(files)]
    assert (dest / "ort.wasm.min.mjs").read_bytes() == files["ort.wasm.min.mjs"]
    assert not (dest.parent / "onnxruntime-web.partial").exists()
    # the second build: present, no source asked
    assert fo.fetch(dest, sources=()) == "present"
    src.unlink()
    assert fo.fetch(dest, url=src.as_uri(), sources=("registry",)) == "present"
    # a changed file is fetched again (and here cannot be: the archive is gone)
    (dest / "ort-wasm-simd-threaded.wasm").write_bytes(b"\0asm-other")
    with pytest.raises(fo.FetchError, match="cannot download"):
        fo.fetch(dest, url=src.as_uri(), sources=("registry",))


def test_fetch_runtime_checks_digests(tmp_path):
    fo = _fetch_tool()
    good = {"ort.wasm.min.mjs": b"a"}
    fo.FILES = {k: fo.sha256(v) for k, v in good.items()}
    archive = _tgz({fo.PREFIX + "ort.wasm.min.mjs": b"a"})
    with pytest.raises(fo.FetchError, match="SHA-256"):
        fo.files_from_tgz(archive)  # not the pinned archive
    assert fo.files_from_tgz(archive, tgz_sha256=fo.sha256(archive)) == good
    with pytest.raises(fo.FetchError, match="SHA-256"):
        fo.install({"ort.wasm.min.mjs": b"b"}, tmp_path / "d")
    other = _tgz({"package/dist/other.mjs": b""})
    with pytest.raises(fo.FetchError, match="no ort.wasm.min.mjs"):
        fo.files_from_tgz(other, tgz_sha256=fo.sha256(other))
    assert not (tmp_path / "d").exists()


def test_book_build_fetches_the_runtime_and_the_page_loads_it():
    make = (ROOT / "Makefile").read_text()
    book = make.split("\nbook:", 1)[1].split("\n\n", 1)[0]
    assert "tools/fetch_onnxruntime_web.py" in book
    assert book.index("fetch_onnxruntime_web") < book.index("jupyter-book build")
    js = (ROOT / "_static" / "explorer" / "explorer.mjs").read_text()
    assert 'new URL("../onnxruntime-web/", HERE)' in js and "ort.wasm.min.mjs" in js
    assert "://" not in js, "the panel must not load anything from another host"
    chapter = (ROOT / "notebooks" / "src" / "05_toy012.md").read_text()
    assert '<script type="module" src="../_static/explorer/explorer.mjs"></script>' in chapter
    # Jupyter Book adds every .js file under _static/ to every page: the panel's module is a .mjs file
    assert not list((ROOT / "_static" / "explorer").glob("**/*.js"))


def test_ort_session_module_is_imported_lazily():
    """onnxruntime is an optional dependency: importing the export module does not load it."""
    code = "import sys, jebm_lite.analysis.export; print('onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"

