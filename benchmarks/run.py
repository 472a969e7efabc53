"""Throughput benchmarks: training iterations and prior Langevin chains (paper Eqs. 13-14).

Run from the repository root::

    python -m benchmarks.run                      # CPU, all sections, JSON in benchmarks/results/
    python -m benchmarks.run --device cuda        # a GPU
    python -m benchmarks.run --quick              # a < 30 s smoke test (CI)
    python -m benchmarks.run --profile            # also the torch.profiler table of a plain chain

What is measured (every record also names device, torch version, threads, date, warm-up / repeats):

* ``train_step``: images/s of one full training iteration, ``learner.train_step(x, step)`` on a random
  batch in [-1, 1] (inference + generator step, prior Langevin, EBM step; paper Algorithm 1), for the
  presets of :data:`TRAIN_PRESETS`, with the prior chains on the plain and on the fast path,
  interleaved repeat by repeat. On CPU the large presets (:data:`LARGE`) use ``--large-batch`` images.
* ``langevin``: prior Langevin throughput, chains x steps / s, of the EBM of a preset (train mode, as
  during training: one spectral-norm power iteration per step), for chains x steps in
  ``--chains`` x ``--steps``, plain (``fast=False``) and fast path interleaved; ``ratio`` is
  median(plain time) / median(fast time) measured back to back in one process.
* ``profile`` (``--profile``): the top operators of one plain and one fast chain (torch.profiler).

Not measured here: the wall time of a chapter notebook (the ``cpu`` profile's time is in each
chapter's stored run card).

Timing: ``time.perf_counter`` around each call, after ``--warmup`` untimed calls, with
``torch.cuda.synchronize()`` before and after on CUDA; the median (and min / max) over ``--repeats``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/run.py` works too
    sys.path.insert(0, str(REPO))

from jebm_lite.config import get_config  # noqa: E402
from jebm_lite.io import write_json_atomic  # noqa: E402
from jebm_lite.models.ebm import JointEBMPrior  # noqa: E402
from jebm_lite.models.hierarchical import PRESETS as MODEL_PRESETS  # noqa: E402
from jebm_lite.runtime import bf16_native, git_commit  # noqa: E402
from jebm_lite.sampling import sample_prior, use_fast_path  # noqa: E402

TRAIN_PRESETS = ("toy012_joint", "mnist_joint", "svhn4_joint", "svhn5_joint", "celeba64_joint")
LARGE = ("svhn5_joint", "celeba64_joint")  # smaller batch / fewer repeats on CPU
CHAIN_PRESETS = ("svhn4_joint", "svhn5_joint")  # EBM(16, 50, 4) and EBM(50, 100, 2) of the reference code
SCHEMA = 1


# ----------------------------------------------------------------------------------------------
# environment and timing
# ----------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """What the numbers depend on: hardware, software, threads, load, date."""
    env: dict[str, Any] = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "commit": git_commit(REPO),
    }
    if hasattr(os, "getloadavg"):
        env["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    return env


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int) -> dict:
    """Time each callable ``repeats`` times, interleaved (a, b, b, a, a, b, ...) so that a change of
    machine load hits every variant alike. Returns per name ``{"times_s", "median_s", "min_s", "max_s"}``."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    _sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else reversed(names):
            _sync(device)
            t0 = time.perf_counter()
            fns[n]()
            _sync(device)
            times[n].append(time.perf_counter() - t0)
    return {
        n: {"times_s": [round(t, 6) for t in ts], "median_s": statistics.median(ts), "min_s": min(ts),
            "max_s": max(ts)}
        for n, ts in times.items()
    }


# ----------------------------------------------------------------------------------------------
# the benchmarks
# ----------------------------------------------------------------------------------------------


def _prior_of(preset: str, device: torch.device) -> JointEBMPrior:
    cfg = get_config(preset, profile="full")
    z_dims = cfg.model.z_dims or MODEL_PRESETS[cfg.model.preset]["z_dims"]
    return JointEBMPrior.from_config(z_dims, cfg.ebm).to(device).train()


def bench_langevin(preset: str, chains: int, steps: int, device: torch.device, warmup: int, repeats: int) -> dict:
    """Prior chains of ``preset``'s EBM (train mode), plain vs fast, interleaved."""
    torch.manual_seed(0)
    prior = _prior_of(preset, device)
    step_size = get_config(preset, profile="full").prior_langevin.step_size
    fns = {
        "plain": lambda: sample_prior(prior, chains, steps, step_size, fast=False),
        "fast": lambda: sample_prior(prior, chains, steps, step_size, fast=True),
    }
    if device.type == "cuda":  # the fast chain captured as one CUDA graph and replayed
        fns["captured"] = lambda: sample_prior(prior, chains, steps, step_size, fast=True, graph=True)
    t = time_calls(fns, device, warmup, repeats)
    e = prior.energy
    rec = {
        "preset": preset, "ebm": {"in_dim": e.in_dim, "nef": e.nef, "layers": e.n_layers,
                                  "spectral_norm": e.spectral_norm, "mode": "train"},
        "chains": chains, "steps": steps, "step_size": step_size, "warmup": warmup, "repeats": repeats,
    }
    for k in fns:
        rec[k] = {**t[k], "chain_steps_per_s": chains * steps / t[k]["median_s"]}
    rec["ratio"] = t["plain"]["median_s"] / t["fast"]["median_s"]
    if "captured" in t:
        rec["ratio_captured"] = t["plain"]["median_s"] / t["captured"]["median_s"]
    rec["ratio_per_repeat_median"] = statistics.median(
        p / f for p, f in zip(t["plain"]["times_s"], t["fast"]["times_s"])
    )
    return rec


#: Variants of a whole training iteration, each ``(prior chain on the fast path?, config overrides)``.
#: ``plain``: autograd chain, per-tensor Adam, float32 (the path before any speed-up); ``fast``: the
#: hand-derived chain gradient (the baseline of issue 23's ratios); ``fused``: + Adam's fused kernel;
#: ``bf16``: + bfloat16 autocast of the generator and inference networks (where native, else float32).
TRAIN_VARIANTS: dict[str, tuple[bool, dict[str, Any]]] = {
    "plain": (False, {"optim.fused": False, "train.amp_bf16": False}),
    "fast": (True, {"optim.fused": False, "train.amp_bf16": False}),
    "fused": (True, {"optim.fused": True, "train.amp_bf16": False}),
    "bf16": (True, {"optim.fused": True, "train.amp_bf16": True}),
    "graph": (True, {"optim.fused": True, "train.amp_bf16": False, "prior_langevin.cuda_graph": True}),
}
CUDA_ONLY = ("graph",)  # on a CPU the same as `fused`


def bench_train_step(preset: str, batch: int, device: torch.device, warmup: int, repeats: int,
                     steps: int | None = None, variants: tuple[str, ...] = tuple(TRAIN_VARIANTS)) -> dict:
    """Images/s of ``learner.train_step`` for ``preset`` in each of ``variants`` (:data:`TRAIN_VARIANTS`),
    interleaved; every variant's learner starts from the same weights. ``ratio``: plain / fast;
    ``speedup_vs_fast``: fast time / variant time."""
    from jebm_lite.data import image_shape
    from jebm_lite.training.learners import build_learner

    base: dict[str, Any] = {"train.batch_size": batch}
    if steps is not None:
        base["prior_langevin.steps"] = steps
    learners, fns = {}, {}
    x = None
    counter = iter(range(1, 10**9))
    for name in variants:
        fast, over = TRAIN_VARIANTS[name]
        cfg = get_config(preset, profile="full", overrides={**base, **over})
        torch.manual_seed(0)
        learners[name] = build_learner(cfg, device)
        if x is None:
            x = torch.rand(batch, *image_shape(cfg.data.name), device=device) * 2 - 1

        def step(lrn=learners[name], fast=fast, x=x) -> None:
            with use_fast_path(fast):
                lrn.train_step(x, next(counter))

        fns[name] = step
    t = time_calls(fns, device, warmup, repeats)
    first = learners[variants[0]]
    rec = {
        "preset": preset, "batch": batch, "prior_langevin_steps": first.cfg.prior_langevin.steps,
        "image_shape": list(x.shape[1:]), "warmup": warmup, "repeats": repeats,
        "params": sum(p.numel() for p in first.parameters()), "variants": list(variants),
        "bf16_native": bf16_native(device),
    }
    for k in fns:
        rec[k] = {**t[k], "images_per_s": batch / t[k]["median_s"]}
    if "plain" in fns and "fast" in fns:
        rec["ratio"] = t["plain"]["median_s"] / t["fast"]["median_s"]
    if "fast" in fns:
        rec["speedup_vs_fast"] = {k: t["fast"]["median_s"] / t[k]["median_s"] for k in fns}
    return rec


def profile_chain(preset: str, chains: int, steps: int, device: torch.device, rows: int = 12) -> dict:
    """Top operators (self time) of one plain and one fast prior chain, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    prior = _prior_of(preset, device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out: dict[str, Any] = {"preset": preset, "chains": chains, "steps": steps}
    for name, fast in (("plain", False), ("fast", True)):
        sample_prior(prior, chains, 5, 0.4, fast=fast)
        _sync(device)
        with profile(activities=acts) as prof:
            sample_prior(prior, chains, steps, 0.4, fast=fast)
            _sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
        total = sum(getattr(e, key) for e in events) or 1.0
        out[name] = {
            "total_ms": total / 1e3,
            "ops": [{"op": e.key, "calls": e.count, "self_ms": round(getattr(e, key) / 1e3, 3),
                     "share": round(getattr(e, key) / total, 4)} for e in events[:rows]],
            "table": prof.key_averages().table(sort_by=key, row_limit=rows),
        }
    return out


def profile_train_step(preset: str, batch: int, device: torch.device, variant: str = "fast", iters: int = 3,
                       rows: int = 12) -> dict:
    """Where one training iteration's time goes: CPU time per phase (the ``jebm/<phase>`` ranges of
    :meth:`HierarchicalLearner.train_step`: posterior, generator, loss, g_backward, g_adam, prior_chain,
    ebm_step) and the top operators by self time, over ``iters`` iterations after two warm-up ones."""
    from torch.profiler import ProfilerActivity, profile

    from jebm_lite.data import image_shape
    from jebm_lite.training.learners import build_learner

    fast, over = TRAIN_VARIANTS[variant]
    cfg = get_config(preset, profile="full", overrides={"train.batch_size": batch, **over})
    torch.manual_seed(0)
    learner = build_learner(cfg, device)
    x = torch.rand(batch, *image_shape(cfg.data.name), device=device) * 2 - 1
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with use_fast_path(fast):
        for i in range(2):
            learner.train_step(x, i + 1)
        _sync(device)
        t0 = time.perf_counter()
        with profile(activities=acts) as prof:
            for i in range(iters):
                learner.train_step(x, 10 + i)
            _sync(device)
        wall = (time.perf_counter() - t0) / iters
    events = prof.key_averages()
    phases = {e.key.split("/", 1)[1]: e.cpu_time_total / 1e3 / iters for e in events if e.key.startswith("jebm/")}
    ops = sorted((e for e in events if not e.key.startswith("jebm/")), key=lambda e: e.self_cpu_time_total,
                 reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) or 1.0
    return {
        "preset": preset, "batch": batch, "variant": variant, "iters": iters,
        "ms_per_iter_under_profiler": wall * 1e3,
        "phases_ms": {k: round(v, 3) for k, v in sorted(phases.items(), key=lambda kv: -kv[1])},
        "ops": [{"op": e.key, "calls": e.count // iters, "self_ms": round(e.self_cpu_time_total / 1e3 / iters, 3),
                 "share": round(e.self_cpu_time_total / total, 4)} for e in ops[:rows]],
    }


# ----------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    """The results as markdown tables."""
    env = result["environment"]
    lines = [
        f"device: {env['device_name']} ({env['device']}), torch {env['torch']}, {env['threads']} threads, "
        f"{env['date']}, load average at start {env.get('loadavg_start')}",
        "",
    ]
    if result["train_step"]:
        names = [v for v in TRAIN_VARIANTS if any(v in r for r in result["train_step"])]
        lines += ["| preset | batch | Langevin steps | " + " | ".join(f"{v} img/s" for v in names)
                  + " | " + " | ".join(f"{v} speed vs fast" for v in names if v != "fast") + " | repeats |",
                  "|---|---:|---:|" + "---:|" * (2 * len(names) - ("fast" in names)) + "---:|"]
        for r in result["train_step"]:
            sp = r.get("speedup_vs_fast", {})
            cells = [f"{r[v]['images_per_s']:.1f}" if v in r else "" for v in names]
            ratios = [f"{sp[v]:.2f}x" if v in sp else "" for v in names if v != "fast"]
            lines.append(f"| {r['preset']} | {r['batch']} | {r['prior_langevin_steps']} | " + " | ".join(cells)
                         + " | " + " | ".join(ratios) + f" | {r['repeats']} |")
        lines.append("")
    if result["langevin"]:
        lines += ["| EBM (preset) | chains | steps | plain chain-steps/s | fast chain-steps/s | fast / plain | "
                  "repeats |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in result["langevin"]:
            e = r["ebm"]
            lines.append(f"| {e['in_dim']}-{e['nef']}x{e['layers']} ({r['preset']}) | {r['chains']} | "
                         f"{r['steps']} | {r['plain']['chain_steps_per_s']:,.0f} | "
                         f"{r['fast']['chain_steps_per_s']:,.0f} | {r['ratio']:.2f}x | {r['repeats']} |")
        lines.append("")
    return "\n".join(lines)


def save(result: dict, path: Path) -> Path:
    """Write a benchmark's JSON record atomically (:func:`jebm_lite.io.write_json_atomic`) and say where."""
    write_json_atomic(path, result)
    print(f"written: {path}")
    return path


def dated(stem: str) -> Path:
    """``benchmarks/results/<stem>-<today>.json``."""
    return REPO / "benchmarks" / "results" / f"{stem}-{datetime.date.today().isoformat()}.json"


def default_out(device: torch.device) -> Path:
    return dated(device.type)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test (< 30 s on CPU): toy012 at batch 8, chains 100 x 10 steps, 1 repeat")
    ap.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/<device>-<date>.json)")
    ap.add_argument("--batch", type=int, default=None, help="train_step batch (default 100; --quick 8)")
    ap.add_argument("--large-batch", type=int, default=None,
                    help=f"batch of {', '.join(LARGE)} (default: --batch on CUDA, 16 on CPU)")
    ap.add_argument("--presets", default=None, help="comma-separated train_step presets (default: all five)")
    ap.add_argument("--chain-presets", default=None, help="comma-separated presets whose EBM is chained")
    ap.add_argument("--chains", default=None, help="comma-separated chain counts (default 100,1000)")
    ap.add_argument("--steps", default=None, help="comma-separated chain lengths (default 60,100)")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="override prior_langevin.steps in train_step (default: the preset's)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 2; --quick 1)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls (default 5 chains / 3 steps; --quick 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--variants", default=None,
                    help=f"comma-separated train_step variants (default: all of {', '.join(TRAIN_VARIANTS)})")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-langevin", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one plain and one fast chain, and training iterations by phase and operator")
    ap.add_argument("--profile-presets", default="mnist_joint,svhn4_joint",
                    help="presets whose iteration --profile breaks down (fast and bf16 variants)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available on this machine")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    q = a.quick
    batch = a.batch or (8 if q else 100)
    large_batch = a.large_batch or (batch if device.type == "cuda" or q else min(batch, 16))
    presets = a.presets.split(",") if a.presets else (["toy012_joint"] if q else list(TRAIN_PRESETS))
    chain_presets = a.chain_presets.split(",") if a.chain_presets else (
        ["svhn4_joint"] if q else list(CHAIN_PRESETS))
    chains = _ints(a.chains) if a.chains else ([100] if q else [100, 1000])
    steps = _ints(a.steps) if a.steps else ([10] if q else [60, 100])
    warmup = a.warmup if a.warmup is not None else (1 if q else 2)
    rep_chain = a.repeats or (1 if q else 5)
    rep_train = a.repeats or (1 if q else 3)
    train_steps = a.train_steps if a.train_steps is not None else (5 if q else None)
    variants = tuple(a.variants.split(",")) if a.variants else tuple(
        v for v in TRAIN_VARIANTS if device.type == "cuda" or v not in CUDA_ONLY)
    unknown = [v for v in variants if v not in TRAIN_VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; use some of {', '.join(TRAIN_VARIANTS)}")

    result: dict[str, Any] = {
        "schema": SCHEMA,
        "environment": environment(device),
        "settings": {"quick": q, "batch": batch, "large_batch": large_batch, "warmup": warmup,
                     "repeats_langevin": rep_chain, "repeats_train": rep_train, "train_langevin_steps": train_steps,
                     "timer": "time.perf_counter per call, interleaved plain/fast, median over repeats"},
        "train_step": [],
        "langevin": [],
    }
    t0 = time.perf_counter()
    if not a.skip_langevin:
        for p in chain_presets:
            for n in chains:
                for t in steps:
                    rec = bench_langevin(p, n, t, device, warmup, rep_chain)
                    result["langevin"].append(rec)
                    print(f"langevin {p} {n}x{t}: plain {rec['plain']['median_s'] * 1e3:.1f} ms, "
                          f"fast {rec['fast']['median_s'] * 1e3:.1f} ms ({rec['ratio']:.2f}x)"
                          + (f", captured {rec['captured']['median_s'] * 1e3:.1f} ms ({rec['ratio_captured']:.2f}x)"
                             if "captured" in rec else ""), flush=True)
    if not a.skip_train:
        for p in presets:
            b = large_batch if p in LARGE else batch
            r = max(1, rep_train - 1) if (p in LARGE and device.type == "cpu" and not a.repeats) else rep_train
            w = min(warmup, 1) if (p in LARGE and device.type == "cpu") else warmup
            rec = bench_train_step(p, b, device, w, r, steps=train_steps, variants=variants)
            result["train_step"].append(rec)
            print(f"train_step {p} batch {b}: " + ", ".join(
                f"{v} {rec[v]['images_per_s']:.1f} img/s" for v in rec["variants"]), flush=True)
    if a.profile:
        result["profile"] = profile_chain(chain_presets[0], chains[0], steps[0], device)
        for k in ("plain", "fast"):
            print(f"\nprofile, {k} chain ({chains[0]} chains x {steps[0]} steps):\n{result['profile'][k]['table']}")
        result["profile_train"] = []
        for p in a.profile_presets.split(","):
            for v in ("fast", "bf16"):
                rec = profile_train_step(p, large_batch if p in LARGE else batch, device, v, iters=1 if q else 3)
                result["profile_train"].append(rec)
                print(f"\nprofile, {p} iteration ({v}), ms per iteration by phase: {rec['phases_ms']}")
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    if hasattr(os, "getloadavg"):
        result["environment"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(markdown(result))
    save(result, a.out or default_out(device))
    return result


if __name__ == "__main__":
    main()
