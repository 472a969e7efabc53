"""Trained models as ONNX graphs for the book's pages: the decoder and the joint prior, run in the browser.

Chapter 5's explorer panel runs two graphs per model with ``onnxruntime-web``, offline:

* the **decoder** g_beta (paper Eq. 5): ``z: (B, d)`` (the layers concatenated bottom to top,
  ``[z_1, z_2]``) -> ``image: (B, C, H, W)`` in [-1, 1];
* the **prior** of the joint model (paper Eq. 3): ``z: (B, d)`` -> ``f: (B,)`` (the EBM's negative energy),
  ``log_p: (B,)`` (``f(z) - ||z||^2 / 2``, the unnormalised log-density that Langevin targets, Eq. 14)
  and ``grad_log_p: (B, d)``. The gradient is part of the graph: :class:`PriorGraph` writes the backward
  pass of :class:`~jebm_lite.models.ebm.EnergyMLP` by hand (the chain rule through its Linear layers
  and activations, as :meth:`EnergyMLP.value_and_grad` does), so the exporter sees only forward
  operators and the page takes exact gradients instead of finite differences. A VLAE has no prior
  graph: its prior is N(0, I) (``log_p = -||z||^2 / 2``, gradient ``-z``), which the page computes
  in closed form.

Graphs have a fixed opset (:data:`OPSET`) and a dynamic batch dimension (one code for the decoded digit,
a grid of codes for the heat map). :func:`export_models` writes them with a ``manifest.json``: per
model the preset, profile, seed and full config, the source run (its checkpoint and that file's sha256),
the Langevin settings, each graph's sha256, and reference outputs computed by PyTorch at fixed codes
(what the tests and the browser test compare against). :func:`manifest_problems` says when the files
no longer fit the manifest or the manifest no longer fits the presets (a stale export);
:func:`compare_with_pytorch` runs the graphs with ``onnxruntime`` against a learner.

    python -m jebm_lite.analysis.export            # chapter 5's toy runs -> _static/explorer/toy012
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from jebm_lite.config import get_config, to_dict
from jebm_lite.data import as_tensors, get_dataset
from jebm_lite.io import atomic_write, sha256_file
from jebm_lite.models.ebm import EnergyMLP, JointEBMPrior
from jebm_lite.runtime import ConfigError
from jebm_lite.training.load import default_run_dir, run_experiment
from jebm_lite.training.rundir import RESUMABLE_KEYS, RunDir, config_diff, format_diff

__all__ = [
    "OPSET",
    "MANIFEST",
    "MAX_BYTES",
    "REFERENCE_CODES",
    "DecoderGraph",
    "PriorGraph",
    "ExportSource",
    "export_graph",
    "pad_lims",
    "export_models",
    "export_toy012",
    "manifest_problems",
    "run_graphs",
    "compare_with_pytorch",
]

OPSET = 18
"""ONNX opset of every exported graph (onnxruntime-web 1.30 runs it with its wasm backend)."""
MANIFEST = "manifest.json"
MAX_BYTES = 5 * 1024 * 1024
"""Budget for all graphs of one export together (they are served with the book)."""
FORMAT = 1

REFERENCE_CODES: tuple[tuple[float, ...], ...] = (
    (0.0, 0.0, 0.0, 0.0),
    (1.0, -0.5, 0.5, 1.0),
    (-1.5, 0.75, -1.0, -0.5),
    (0.5, 1.5, 1.5, -1.25),
    (-0.25, -1.0, -1.5, 1.5),
    (2.0, 2.0, -2.0, -2.0),
)
"""Fixed codes ``[z_1, z_2]`` (4 numbers of the toy) at which PyTorch's outputs are stored in the manifest."""

# Keys that change how a run reports or where it runs, never its weights. Unlike a resumed run, a graph
# is stale when train.max_steps or the profile changes: different weights.
_NOT_WEIGHTS = RESUMABLE_KEYS - {"train.max_steps", "profile"}

# ------------------------------------------------------------------------------------------------
# The graphs
# ------------------------------------------------------------------------------------------------


class DecoderGraph(nn.Module):
    """The generator g_beta (paper Eq. 5) on one concatenated code.

    ``z: (B, d)`` with ``d = sum(z_dims)``, bottom layer first -> ``image: (B, C, H, W)`` in [-1, 1].
    """

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: Tensor) -> Tensor:
        return self.generator(z).float()


def _act_grad(act: nn.Module, g: Tensor, a: Tensor) -> Tensor:
    """``g * act'(a)`` with forward operators only (exportable): ``g, a: (B, width)``."""
    if isinstance(act, nn.LeakyReLU):
        return torch.where(a > 0, g, g * act.negative_slope)
    if isinstance(act, nn.SiLU):
        s = torch.sigmoid(a)
        return g * (s * (1 + a * (1 - s)))
    if isinstance(act, nn.GELU) and act.approximate == "none":
        cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
        return g * (cdf + a * pdf)
    raise TypeError(f"no exportable derivative for {act!r}")


class PriorGraph(nn.Module):
    """The joint prior of paper Eq. 3 with its gradient, as forward operators only.

    ``z: (B, d)`` -> ``(f: (B,), log_p: (B,), grad_log_p: (B, d))`` with ``log_p = f(z) - ||z||^2 / 2``
    (the Langevin target of Eq. 14, up to a constant) and ``grad_log_p = grad f(z) - z``. ``grad f`` is
    the backward pass of the :class:`EnergyMLP` written out (``g <- (g * act'(a_k)) W_k`` from the output
    layer down), so it equals autograd's gradient up to float round-off. The weights are the ones the
    EBM uses in eval mode (spectral norm: its current estimate), copied when the graph is built.
    """

    def __init__(self, prior: JointEBMPrior) -> None:
        super().__init__()
        energy = prior.energy
        if not isinstance(energy, EnergyMLP) or not energy.supports_value_and_grad():
            raise ConfigError("PriorGraph needs a joint prior whose energy is a plain EnergyMLP "
                              "(a VLAE's N(0, I) prior has no graph: the page computes it in closed form)")
        was_training = energy.training
        energy.eval()  # eval mode: a spectral norm's power iteration does not advance
        try:
            params = energy.effective_params()
        finally:
            energy.train(was_training)
        self.acts = nn.ModuleList([m for m in energy.net if not isinstance(m, nn.Linear)])
        for k, (w, b) in enumerate(params):
            self.register_buffer(f"w{k}", w.detach().clone().float())
            self.register_buffer(f"b{k}", (torch.zeros(w.shape[0]) if b is None else b.detach().clone()).float())
        self.n_linear = len(params)
        self.d = prior.d

    def _wb(self, k: int) -> tuple[Tensor, Tensor]:
        return getattr(self, f"w{k}"), getattr(self, f"b{k}")

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h, pre = z, []
        for k, act in enumerate(self.acts):
            w, b = self._wb(k)
            a = nn.functional.linear(h, w, b)
            pre.append(a)
            h = act(a)
        w_out, b_out = self._wb(self.n_linear - 1)
        f = nn.functional.linear(h, w_out, b_out).squeeze(-1)
        g = torch.ones_like(f).unsqueeze(1) * w_out  # d f / d h_last: (B, width)
        for k in range(len(self.acts) - 1, -1, -1):
            g = _act_grad(self.acts[k], g, pre[k]).matmul(self._wb(k)[0])
        log_p = f - 0.5 * (z * z).sum(dim=1)
        return f, log_p, g - z


def export_graph(module: nn.Module, d: int, path: str | Path, output_names: Sequence[str],
                 opset: int = OPSET) -> Path:
    """Write ``module`` (``z: (B, d)`` -> outputs) as one ONNX file with a dynamic batch dimension.

    ``torch.onnx.export`` (the ``torch.export`` based exporter), weights inside the file, opset ``opset``.
    Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval().cpu()
    example = torch.zeros(3, d)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with torch.no_grad():
        prog = torch.onnx.export(module, (example,), input_names=["z"], output_names=list(output_names),
                                 opset_version=opset, dynamo=True, dynamic_shapes={"z": {0: batch}},
                                 external_data=False, optimize=True, verbose=False)
    prog.save(str(path), external_data=False)
    return path


# ------------------------------------------------------------------------------------------------
# Running the graphs (onnxruntime) and comparing them with PyTorch
# ------------------------------------------------------------------------------------------------


def run_graphs(folder: str | Path, model: str, z: np.ndarray | Tensor,
               manifest: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Run one model's graphs of an export with ``onnxruntime`` (CPU) at codes ``z: (B, d)``.

    Returns ``{"image": (B, C, H, W)}`` plus, for a model with a prior graph, ``"f": (B,)``,
    ``"log_p": (B,)`` and ``"grad_log_p": (B, d)``."""
    # heavy optional dependency (the book's export and its tests; not needed to train)
    import onnxruntime as ort

    folder = Path(folder)
    manifest = manifest if manifest is not None else json.loads((folder / MANIFEST).read_text())
    graphs = manifest["models"][model]["graphs"]
    z = np.ascontiguousarray(np.asarray(z.detach().cpu() if isinstance(z, Tensor) else z, dtype=np.float32))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    out: dict[str, np.ndarray] = {}
    for kind, names in (("decoder", ("image",)), ("prior", ("f", "log_p", "grad_log_p"))):
        if graphs.get(kind) is None:
            continue
        sess = ort.InferenceSession(str(folder / graphs[kind]["file"]), opts, providers=["CPUExecutionProvider"])
        out.update(zip(names, sess.run(list(names), {"z": z})))
    return out


def pytorch_outputs(learner: nn.Module, z: Tensor) -> dict[str, Tensor]:
    """What the graphs compute, by PyTorch (autograd for the gradient): ``z: (B, d)`` -> ``image``
    ``(B, C, H, W)``, and for a learner with an EBM ``f``, ``log_p`` ``(B,)`` and ``grad_log_p`` ``(B, d)``."""
    dev = next(learner.parameters()).device
    z = z.to(dev).float()
    with torch.no_grad():
        out = {"image": learner.generator(z).float().cpu()}
    prior: JointEBMPrior = learner.prior
    if prior.energy is not None:
        with torch.enable_grad():
            zz = z.detach().clone().requires_grad_(True)
            lp = prior.log_prob_unnorm(zz)
            (g,) = torch.autograd.grad(lp.sum(), zz)
        with torch.no_grad():
            out.update(f=prior.f(z).cpu(), log_p=lp.detach().cpu(), grad_log_p=g.detach().cpu())
    return out


def compare_with_pytorch(folder: str | Path, model: str, learner: nn.Module, z: np.ndarray | Tensor) -> dict[str, float]:
    """Largest absolute difference between onnxruntime and PyTorch per output at codes ``z: (B, d)``."""
    zt = torch.as_tensor(np.asarray(z, dtype=np.float32))
    ref = pytorch_outputs(learner, zt)
    got = run_graphs(folder, model, zt)
    if set(ref) != set(got):
        raise ValueError(f"outputs differ: PyTorch {sorted(ref)}, graphs {sorted(got)}")
    return {k: float(np.abs(got[k] - ref[k].numpy()).max()) for k in ref}


# ------------------------------------------------------------------------------------------------
# Export with a manifest, and the staleness check
# ------------------------------------------------------------------------------------------------


@dataclass
class ExportSource:
    """One trained model to export: its learner (a joint or VLAE learner: ``generator``, ``prior``,
    ``posterior``), its config and its finished run directory. ``codes``: optional posterior means of
    held-out images ``(N, d)`` with their ``labels`` ``(N,)``, drawn on the page as the data's codes.
    ``overrides``: the ``key=value`` overrides that made ``cfg`` from its preset (the staleness check
    rebuilds the config with them)."""

    learner: nn.Module
    cfg: Any
    run: RunDir
    codes: Tensor | None = None
    labels: Tensor | None = None
    overrides: tuple[str, ...] = ()


def _rounded(t: Tensor, digits: int = 7) -> list:
    return np.round(t.detach().cpu().double().numpy(), digits).tolist()


def _run_record(run: RunDir, root: Path | None) -> dict[str, Any]:
    ckpt = run.latest_checkpoint()
    if ckpt is None:
        raise ConfigError(f"{run.path} has no checkpoint: train it first (run_experiment)")
    path = run.path.resolve()
    try:
        shown = path.relative_to(root.resolve()).as_posix() if root is not None else path.name
    except ValueError:
        shown = path.name
    result = run.read_result() if run.is_finished() else {}
    return {"path": shown, "name": path.name, "checkpoint": ckpt.name, "checkpoint_sha256": sha256_file(ckpt),
            "steps": result.get("steps"), "finished": run.is_finished()}


def pad_lims(codes: Tensor, z_dims: Sequence[int], least: float = 3.0, q: float = 0.99) -> list[float]:
    """Half-width of each layer's pad on the page: the ``q`` quantile of ``|z|`` over ``codes: (N, d)``
    in that layer, rounded up to an integer, at least ``least`` (the data's codes on the pad)."""
    out = []
    for part in torch.split(codes.detach().float().cpu().abs(), list(z_dims), dim=1):
        out.append(float(max(least, math.ceil(float(torch.quantile(part.flatten(), q))))))
    return out


def export_models(sources: Mapping[str, ExportSource], out_dir: str | Path, opset: int = OPSET,
                  reference_codes: Sequence[Sequence[float]] = REFERENCE_CODES,
                  runs_root: str | Path | None = None, pad_lim: float = 3.0) -> dict[str, Any]:
    """Export each model's decoder (and its prior graph, when it has an EBM) into ``out_dir`` with a manifest.

    ``sources``: page name (``"joint"``, ``"vlae"``) -> :class:`ExportSource`. Files:
    ``<name>_decoder.onnx``, ``<name>_prior.onnx`` and ``manifest.json``. The manifest holds PyTorch's
    outputs at ``reference_codes`` (``(K, d)``; images as floats), which the tests compare the graphs
    with. Each pad of the page spans ``[-lim, lim]^2`` (``pad_lims``: :func:`pad_lims` of the model's
    codes, else ``pad_lim``). Raises :class:`ConfigError` when the graphs together exceed :data:`MAX_BYTES`.
    Returns the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(runs_root) if runs_root is not None else None
    models: dict[str, Any] = {}
    total = 0
    for name, src in sources.items():
        learner, cfg = src.learner, src.cfg
        learner.eval()
        prior: JointEBMPrior = learner.prior
        d = prior.d
        graphs: dict[str, Any] = {}
        files = {"decoder": (DecoderGraph(learner.generator), ("image",))}
        if prior.energy is not None:
            files["prior"] = (PriorGraph(prior), ("f", "log_p", "grad_log_p"))
        for kind, (module, outputs) in files.items():
            path = export_graph(module, d, out / f"{name}_{kind}.onnx", outputs, opset)
            size = path.stat().st_size
            total += size
            graphs[kind] = {"file": path.name, "sha256": sha256_file(path), "bytes": size,
                            "input": {"z": ["batch", d]}, "outputs": list(outputs)}
        graphs.setdefault("prior", None)
        z_ref = torch.tensor([list(map(float, c)) for c in reference_codes], dtype=torch.float32)
        if z_ref.shape[1] != d:
            raise ValueError(f"reference codes have {z_ref.shape[1]} numbers, the model's latent has {d}")
        ref = pytorch_outputs(learner, z_ref)
        lc = cfg.prior_langevin
        entry: dict[str, Any] = {
            "preset": cfg.name, "profile": cfg.profile, "overrides": list(src.overrides), "method": cfg.method,
            "seed": cfg.train.seed, "config": to_dict(cfg), "run": _run_record(src.run, root),
            "z_dims": list(prior.z_dims), "image_shape": list(ref["image"].shape[1:]),
            "prior_langevin": {"steps": lc.steps, "step_size": lc.step_size, "noise": lc.noise,
                               "exact_gaussian": prior.energy is None},
            "graphs": graphs,
            "reference": {"codes": z_ref.tolist(), **{k: _rounded(v) for k, v in ref.items()}},
        }
        entry["pad_lims"] = [float(pad_lim)] * len(prior.z_dims)
        if src.codes is not None:
            entry["codes"] = {"z": _rounded(src.codes, 3), "labels": [int(y) for y in src.labels]}
            entry["pad_lims"] = pad_lims(src.codes, prior.z_dims, pad_lim)
        models[name] = entry
    if total > MAX_BYTES:
        raise ConfigError(f"the graphs take {total / 2**20:.1f} MiB, more than the {MAX_BYTES / 2**20:.0f} MiB budget")
    manifest = {"format": FORMAT, "opset": opset, "torch": torch.__version__.split("+")[0],
                "total_bytes": total, "models": models}
    text = _dumps(manifest)
    atomic_write(out / MANIFEST, lambda f: f.write(text))
    return manifest


_NUMBERS = re.compile(r"\[\s+([-+0-9.eE,\s]+?)\s+\]")


def _dumps(obj: Any) -> str:
    """Indented JSON with each innermost list of numbers on one line (a readable, small manifest)."""
    text = json.dumps(obj, indent=1)
    return _NUMBERS.sub(lambda m: "[" + ",".join(v.strip() for v in m.group(1).split(",")) + "]", text) + "\n"


def manifest_problems(folder: str | Path, runs_root: str | Path | None = None) -> list[str]:
    """Why an export in ``folder`` is stale or broken; ``[]`` when it is current.

    Checks each graph file against its sha256 and the opset it declares, that the stored config still
    equals the preset's (for the stored profile and overrides; keys that only change reporting are left
    out), that the
    total size stays within :data:`MAX_BYTES`, and, when ``runs_root`` holds the source run, that its
    newest checkpoint is still the file that was exported (same sha256)."""
    # heavy optional dependency (read the graphs' opset)
    import onnx

    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as e:
        return [f"{folder / MANIFEST}: cannot be read ({e})"]
    problems = []
    total = 0
    for name, m in manifest["models"].items():
        for kind, g in m["graphs"].items():
            if g is None:
                continue
            path = folder / g["file"]
            if not path.is_file():
                problems.append(f"{name}/{kind}: {path} is missing")
                continue
            total += path.stat().st_size
            if sha256_file(path) != g["sha256"]:
                problems.append(f"{name}/{kind}: {path.name} does not have the sha256 of the manifest")
            opsets = {o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                      if o.domain in ("", "ai.onnx")}
            if opsets != {manifest["opset"]}:
                problems.append(f"{name}/{kind}: opset {sorted(opsets)}, the manifest says {manifest['opset']}")
        try:
            now = get_config(m["preset"], profile=m["profile"], overrides=list(m.get("overrides") or []))
        except ConfigError as e:
            problems.append(f"{name}: {e}")
            continue
        diffs = config_diff(m["config"], now, ignore=_NOT_WEIGHTS)
        if diffs:
            problems.append(f"{name}: the preset {m['preset']} ({m['profile']}) changed since the export:\n"
                            + format_diff(diffs, "exported", "preset now"))
        if runs_root is not None:
            run = RunDir(Path(runs_root) / m["run"]["name"])
            ckpt = run.latest_checkpoint()
            if ckpt is not None and (ckpt.name != m["run"]["checkpoint"]
                                     or sha256_file(ckpt) != m["run"]["checkpoint_sha256"]):
                problems.append(f"{name}: the run {run.path} now ends in another checkpoint than the exported "
                                f"{m['run']['checkpoint']}: export again")
    if total > MAX_BYTES:
        problems.append(f"the graphs take {total} bytes, more than {MAX_BYTES}")
    return problems


# ------------------------------------------------------------------------------------------------
# Chapter 5's toy runs
# ------------------------------------------------------------------------------------------------

TOY012 = {"joint": "toy012_joint", "vlae": "toy012_vlae"}
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "_static" / "explorer" / "toy012"


def export_toy012(out_dir: str | Path = DEFAULT_OUT, runs_root: str | Path = "runs", profile: str = "cpu",
                  n_codes_per_class: int = 40) -> dict[str, Any]:
    """Chapter 5's joint and VLAE runs (presets ``toy012_joint`` / ``toy012_vlae``) as graphs for its page.

    Loads each finished run from ``runs_root`` (``runs/<preset>-<profile>``) or trains it
    (:func:`~jebm_lite.training.load.run_experiment`; deterministic on one thread), takes the posterior
    means of the first ``n_codes_per_class`` held-out test digits of each class, and calls
    :func:`export_models`. Returns the manifest."""
    sources = {}
    x_test = y_test = None
    for name, preset in TOY012.items():
        cfg = get_config(preset, profile=profile)
        learner, _, run = run_experiment(cfg, run_dir=default_run_dir(cfg, runs_root), device="cpu")
        learner.eval()
        if x_test is None:
            x_test, y_test = as_tensors(get_dataset("mnist", "test", classes=cfg.data.classes), device="cpu")
            keep = torch.cat([torch.nonzero(y_test == c).flatten()[:n_codes_per_class] for c in cfg.data.classes])
            x_test, y_test = x_test[keep], y_test[keep]
        with torch.no_grad():
            mus, _ = learner.posterior(x_test)
        sources[name] = ExportSource(learner, cfg, run, torch.cat(mus, 1), y_test)
    return export_models(sources, out_dir, runs_root=Path(runs_root).resolve().parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the graphs and manifest.json")
    parser.add_argument("--runs", default="runs", help="folder of the run directories (load or train)")
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args(argv)
    manifest = export_toy012(args.out, args.runs, args.profile)
    problems = manifest_problems(args.out, args.runs)
    for name, m in manifest["models"].items():
        sizes = ", ".join(f"{k} {g['bytes'] / 1024:.0f} KiB" for k, g in m["graphs"].items() if g)
        print(f"{name}: {m['preset']} ({m['profile']}) from {m['run']['path']} @ {m['run']['checkpoint']}: {sizes}")
    print(f"total {manifest['total_bytes'] / 2**20:.2f} MiB in {args.out}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
