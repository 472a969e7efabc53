"""Does a later version of the library train the same model? Compare training histories bit for bit.

    python tools/trajectory_check.py OLD_COMMIT [--preset toy012_joint] [--steps 200] [--json OUT.json]

Trains ``--steps`` iterations of a preset (``cpu`` profile, one CPU thread, a history row per
iteration) three times: with the library as it was at ``OLD_COMMIT`` (extracted with ``git archive``),
with the working tree's library and ``optim.fused=false``, and with the working tree's defaults.
Reports the first iteration at which each later history differs from the old one in any logged
number (``None``: identical) and the relative loss difference at the last iteration. Run from the
repository root with ``JEBM_DATA`` set; exits 0 when the unfused history is identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a child process with one library version on sys.path; writes the history as JSON.
_TRAIN = """
import json, sys
import torch
import jebm_lite as jl
from jebm_lite.runtime import device_name
try:
    from jebm_lite.training.load import run_experiment
except ImportError:  # the flat package before the redesign
    from jebm_lite.runs import run_experiment
out, preset, steps, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
cfg = jl.get_config(preset, profile="cpu", overrides=[f"train.max_steps={steps}", "train.log_every=1", *extra])
_, history, _ = run_experiment(cfg, run_dir=out + ".run", device="cpu")
json.dump({"history": history, "seed": cfg.train.seed, "device": device_name(torch.device("cpu"))}, open(out, "w"))
"""

_SKIP = ("step", "epoch", "time_s")  # bookkeeping and wall-clock columns


def first_difference(a: list[dict], b: list[dict]) -> int | None:
    """The first iteration (row index) at which two histories differ in a logged number, or None."""
    for i, (x, y) in enumerate(zip(a, b)):
        if any(x.get(k) != y.get(k) for k in x if k not in _SKIP):
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _train(lib: Path, out: Path, preset: str, steps: int, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(lib), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "TQDM_DISABLE": "1"}
    subprocess.run([sys.executable, "-c", _TRAIN, str(out), preset, str(steps), *extra], check=True, env=env,
                   cwd=out.parent)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old_commit")
    p.add_argument("--preset", default="toy012_joint")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    git = ["git", "-C", str(ROOT)]
    old = subprocess.run([*git, "rev-parse", "--short", a.old_commit], capture_output=True, text=True)
    if old.returncode != 0:
        print(f"error: {a.old_commit!r} is not a commit of this repository", file=sys.stderr)
        return 2
    new = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="trajectory-") as tmp:
        tmp = Path(tmp)
        arch = tmp / "old.tar"
        subprocess.run([*git, "archive", "-o", str(arch), old.stdout.strip(), "jebm_lite"], check=True)
        with tarfile.open(arch) as t:
            t.extractall(tmp / "old", filter="data")
        t0 = time.perf_counter()
        old_run = _train(tmp / "old", tmp / "old.json", a.preset, a.steps, [])
        h_old = old_run["history"]
        h_unfused = _train(ROOT, tmp / "unfused.json", a.preset, a.steps, ["optim.fused=false"])["history"]
        h_new = _train(ROOT, tmp / "new.json", a.preset, a.steps, [])["history"]
        wall = round(time.perf_counter() - t0, 1)
    rel = abs(h_new[-1]["loss"] - h_old[-1]["loss"]) / abs(h_old[-1]["loss"])
    rec = {"preset": a.preset, "profile": "cpu", "steps": a.steps, "seed": old_run["seed"],
           "device": old_run["device"], "threads": 1, "wall_time_s": wall,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "old_commit": old.stdout.strip(), "new_commit": new,
           "first_difference_unfused": first_difference(h_old, h_unfused),
           "first_difference_fused": first_difference(h_old, h_new),
           "final_loss_old": h_old[-1]["loss"], "final_loss_fused": h_new[-1]["loss"], "final_loss_rel_fused": rel}
    print(json.dumps(rec, indent=1))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(rec, indent=1) + "\n")
    return 0 if rec["first_difference_unfused"] is None else 1


if __name__ == "__main__":
    sys.exit(main())
