"""Trainer, checkpoints, resume, the divergence guard, data parallelism and run directories.

All on CPU with the tiny learner of tests/_train_script.py. The kill/resume and two-process tests
launch that script as real subprocesses.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same, flip_tensor_byte, learner_state, no_time
from torch.utils.data import TensorDataset

from jebm_lite import io as jio
from jebm_lite.config import to_dict
from jebm_lite.io import read_json
from jebm_lite.runtime import CheckpointError, ConfigError
from jebm_lite.training.load import load_learner, load_or_train
from jebm_lite.training.rundir import RunDir
from jebm_lite.training.trainer import (
    Trainer,
    TrainerWarning,
    TrainingDiverged,
    load_checkpoint,
    rank_indices,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCRIPT = HERE / "_train_script.py"


def _load_script():
    name = "_jebm_train_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


ts = _load_script()


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one thread, as in the subprocesses


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def dir_hash(path: Path) -> str:
    """A hash of every file name and its bytes under ``path``."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def ckpt_state(path: Path) -> dict:
    c = load_checkpoint(path)
    return {k: c[k] for k in ("learner", "optimizers", "schedulers")}


def train(max_steps=12, run_dir=None, data=None, learner=None, hook=None, **cfg_kw):
    cfg = ts.make_cfg(max_steps=max_steps, **cfg_kw)
    learner = learner if learner is not None else ts.build()
    tr = Trainer(cfg, learner, ts.make_data() if data is None else data, run_dir, fault_hook=hook)
    history = tr.fit()
    return tr, learner, history


def spawn(args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           **(env_extra or {})}
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=120):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


# ----------------------------------------------------------------------------------------------
# exact resume
# ----------------------------------------------------------------------------------------------


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    """SIGKILL mid-run, resume in a new process: same parameters, optimiser and scheduler states,
    RNG states and history as an uninterrupted run (48 examples / batch 8 = 6 steps per epoch, so
    20 steps cross 3 epoch boundaries and 3 scheduler steps; checkpoints every 4)."""
    victim = tmp_path / "victim"
    proc = spawn(["--run-dir", victim, "--deterministic", "--sleep", "0.15"])
    # the uninterrupted reference, in this process while the victim starts up
    _, ref_learner, ref_hist = train(max_steps=20, run_dir=tmp_path / "ref", deterministic=True)

    # kill once the step-8 checkpoint exists and history.jsonl already holds step 9 (log_every=3),
    # so resume must drop a logged row and redo steps past the checkpoint
    target = victim / "checkpoints" / "step_00000008.pt"
    history = victim / "history.jsonl"
    t0 = time.time()
    while not (target.exists() and history.exists() and len(history.read_text().splitlines()) >= 9):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() - t0 < 120, "the victim never reached step 9"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not RunDir(victim).is_finished()
    assert RunDir(victim).latest_checkpoint().name in ("step_00000008.pt", "step_00000012.pt")
    assert len(RunDir(victim).read_history()) > int(RunDir(victim).latest_checkpoint().name[5:13])

    finish(spawn(["--run-dir", victim, "--deterministic"]))

    ref_ckpt = load_checkpoint(tmp_path / "ref" / "checkpoints" / "step_00000020.pt")
    got_ckpt = load_checkpoint(victim / "checkpoints" / "step_00000020.pt")
    for key in ("learner", "optimizers", "schedulers", "rng", "step", "epoch", "offset", "history_rows"):
        assert_same(ref_ckpt[key], got_ckpt[key], key)
    assert_same(ref_ckpt["learner"], learner_state(ref_learner)["learner"])
    assert got_ckpt["schedulers"]["g"]["last_epoch"] == 3  # 3 epoch ends
    got_hist = RunDir(victim).read_history()
    assert [r["step"] for r in got_hist] == list(range(1, 21))
    assert no_time(got_hist) == no_time(ref_hist) == no_time(RunDir(tmp_path / "ref").read_history())


def test_dataset_mid_epoch_resume_with_longer_run(tmp_path):
    """A Dataset (image, label) gives the same batches as the tensor; stopping at step 9 (mid-epoch)
    and resuming with a larger train.max_steps equals one uninterrupted run."""
    _, ref, ref_hist = train(max_steps=14)
    data = ts.make_data()
    ds = TensorDataset(data, torch.arange(len(data)))
    d = tmp_path / "run"
    train(max_steps=9, run_dir=d, data=ds)
    assert read_json(RunDir(d).config_path)["train"]["max_steps"] == 9
    tr, got, hist = train(max_steps=14, run_dir=d, data=ds)
    assert tr.step == 14
    assert_same(learner_state(ref), learner_state(got))
    assert no_time(hist) == no_time(ref_hist)
    assert read_json(RunDir(d).config_path)["train"]["max_steps"] == 14  # updated, not refused
    # a finished trainer does nothing more
    tr2, again, hist2 = train(max_steps=14, run_dir=d, data=ds)
    assert again.calls == 0 and no_time(hist2) == no_time(hist)


def test_rank_shards_make_up_the_global_batch():
    b, world = 4, 2
    perm = rank_indices(48, 3, 1)
    shards = [rank_indices(48, 3, 1, r, world) for r in range(world)]
    for i in range(48 // (b * world)):
        together = torch.cat([s[i * b : (i + 1) * b] for s in shards])
        assert sorted(together.tolist()) == sorted(perm[i * b * world : (i + 1) * b * world].tolist())


# ----------------------------------------------------------------------------------------------
# bad checkpoints
# ----------------------------------------------------------------------------------------------


def test_corrupt_and_truncated_checkpoints(tmp_path):
    d = tmp_path / "run"
    train(max_steps=8, run_dir=d)
    ck = d / "checkpoints"
    good8 = (ck / "step_00000008.pt").read_bytes()

    for name, payload in (("garbage", os.urandom(5000)), ("truncated", good8[: len(good8) // 2])):
        (ck / "step_00000008.pt").write_bytes(payload)
        before = dir_hash(d)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(ck / "step_00000008.pt")
        msg = str(e.value)
        assert "step_00000008.pt" in msg and "corrupt or truncated" in msg and "delete it" in msg, name
        with pytest.raises(CheckpointError, match="step_00000008.pt"):
            load_learner(d, lambda cfg, dev: ts.build())  # the newest is used, strictly
        assert dir_hash(d) == before, f"a failed load changed the run directory ({name})"

    # every checkpoint bad: one error naming each file, nothing touched
    both = tmp_path / "both"
    train(max_steps=8, run_dir=both)
    for p in (both / "checkpoints").glob("step_*.pt"):
        p.write_bytes(b"not a checkpoint")
    before = dir_hash(both)
    with pytest.raises(CheckpointError, match="No usable checkpoint") as e:
        train(max_steps=12, run_dir=both)
    assert "step_00000008.pt (" in str(e.value) and "step_00000004.pt (" in str(e.value)
    assert dir_hash(both) == before

    # resume falls back to step 4 (one warning naming both), keeps the corrupt file aside, ends as an
    # uninterrupted run would
    truncated = (ck / "step_00000008.pt").read_bytes()
    _, ref, ref_hist = train(max_steps=12)
    with pytest.warns(TrainerWarning) as rec:
        _, got, hist = train(max_steps=12, run_dir=d)
    messages = [str(w.message) for w in rec]
    assert len(messages) == 1, messages
    assert "step_00000008.pt" in messages[0] and "kept as step_00000008.pt.corrupt" in messages[0]
    assert "resuming from step_00000004.pt (step 4)" in messages[0]
    assert_same(learner_state(ref), learner_state(got))
    assert no_time(hist) == no_time(ref_hist)
    # the corrupt file was kept aside, with the hash recorded for it, and step 8 written afresh
    assert (ck / "step_00000008.pt.corrupt").read_bytes() == truncated
    assert (ck / "step_00000008.pt.corrupt.sha256").is_file()
    assert load_checkpoint(ck / "step_00000008.pt")["step"] == 8


def test_a_flipped_byte_is_caught_by_the_recorded_sha256(tmp_path):
    """torch's zip reader does not check CRCs: a flipped byte in the tensor data loads silently. The sha256
    recorded at write time catches it; a checkpoint without one (an older run) loads with a one-line note."""
    d = tmp_path / "run"
    train(max_steps=8, run_dir=d)
    path = d / "checkpoints" / "step_00000008.pt"
    side = path.with_name(path.name + ".sha256")
    assert side.read_text().split() == [hashlib.sha256(path.read_bytes()).hexdigest(), path.name]  # sha256sum -c
    good = load_checkpoint(path)
    flip_tensor_byte(path)
    # control: without the hash the flipped file still loads, with other numbers (so only the hash can catch it)
    raw = torch.load(path, weights_only=True)
    with pytest.raises(AssertionError):
        assert_same(good, raw)
    before = dir_hash(d)
    with pytest.raises(CheckpointError, match=r"step_00000008.pt is corrupt or truncated \(sha256 .* differs"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="step_00000008.pt"):
        load_learner(d, lambda cfg, dev: ts.build())  # a finished run's final weights: refused, not replaced
    assert dir_hash(d) == before
    # an unreadable record is no better than a wrong one
    side.write_text("not a hash\n")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(path)
    # no record at all (written before hashes were kept): loaded, with a note
    side.unlink()
    with pytest.warns(TrainerWarning, match="no recorded sha256.*loaded without an integrity check") as rec:
        assert load_checkpoint(path)["step"] == 8
    assert len(rec) == 1


def test_config_and_shape_mismatch_leave_run_dir_intact(tmp_path):
    d = tmp_path / "run"
    train(max_steps=4, run_dir=d)
    before = dir_hash(d)

    with pytest.raises(CheckpointError) as e:
        train(max_steps=8, run_dir=d, batch_size=4, seed=5)
    msg = str(e.value)
    assert "train.batch_size" in msg and "train.seed" in msg and "checkpoint=8" in msg and "now=4" in msg
    assert "--out" in msg and "max_steps" not in msg.split("\n")[1]
    assert dir_hash(d) == before

    with pytest.raises(CheckpointError) as e:
        train(max_steps=8, run_dir=d, learner=ts.build(hidden=16))
    msg = str(e.value)
    assert "enc.0.weight" in msg and "(8, 16)" in msg and "(16, 16)" in msg
    assert dir_hash(d) == before

    with pytest.raises(CheckpointError, match=r"checkpoint shape \(8, 16\) vs model shape \(16, 16\)"):
        load_learner(d, lambda cfg, dev: ts.build(hidden=16))
    assert dir_hash(d) == before


# ----------------------------------------------------------------------------------------------
# the guard
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["nan_metric", "energy", "nan_param"])
def test_guard_rolls_back_once_and_finishes(tmp_path, fault):
    ref_tr, ref, _ = train(max_steps=12)
    learner = ts.build()
    fired = []

    def hook(step, metrics):
        if step == 7 and not fired:
            fired.append(step)
            if fault == "nan_metric":
                return {**metrics, "loss/g": float("nan")}
            if fault == "energy":
                return {**metrics, "energy/neg": -1e6}
            with torch.no_grad():
                learner.dec.weight[0, 0] = float("nan")
        return metrics

    d = tmp_path / "run"
    with pytest.warns(TrainerWarning, match="Rolled back to step 4"):
        tr, got, hist = train(max_steps=12, run_dir=d, learner=learner, hook=hook)
    events = [r for r in hist if r.get("event")]
    assert len(events) == 1 and tr.rollbacks == 1
    ev = events[0]
    assert ev["event"] == "rollback" and ev["step"] == 7 and ev["restored_step"] == 4
    expected = {"nan_metric": "loss/g", "energy": "energy/neg", "nan_param": "non-finite parameter"}[fault]
    assert expected in ev["reason"]
    assert [r["step"] for r in hist if not r.get("event")] == list(range(1, 13))
    assert all(math.isfinite(v) for r in hist if not r.get("event") for k, v in r.items() if k != "step")
    for name in ("g", "e"):
        lr_ref = ref.optimizers[name].param_groups[0]["lr"]
        lr_got = got.optimizers[name].param_groups[0]["lr"]
        assert lr_got == pytest.approx(0.5 * lr_ref, rel=1e-12)
    assert all(torch.isfinite(p).all() for p in got.parameters())
    assert RunDir(d).read_history() == hist  # the file holds the event too
    assert load_checkpoint(d / "checkpoints" / "step_00000012.pt")["guard"] == {"rollbacks": 1, "lr_scale": 0.5}


def test_guard_gives_up_after_max_rollbacks(tmp_path):
    d = tmp_path / "run"
    with pytest.warns(TrainerWarning), pytest.raises(TrainingDiverged) as e:
        train(max_steps=12, run_dir=d, hook=lambda step, m: {**m, "loss/e": float("inf")},
              guard_max_rollbacks=2)
    msg = str(e.value)
    assert "diverged at step 1" in msg and "loss/e" in msg and "2 roll-back" in msg
    assert "optim.lr_e" in msg and "step_size" in msg and "spectral_norm" in msg
    events = [r for r in RunDir(d).read_history() if r.get("event") == "rollback"]
    assert len(events) == 2


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------


def test_interrupted_checkpoint_write_leaves_previous_intact(tmp_path, monkeypatch):
    d = tmp_path / "run"
    real_save = torch.save
    calls = []

    def flaky_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the step-8 checkpoint: write half a file, then fail
            f.write(b"\x80PARTIAL" * 512)
            raise OSError("disk full (simulated)")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(CheckpointError, match=r"disk full \(simulated\).*keeps step_00000004.pt"):
        train(max_steps=8, run_dir=d)
    monkeypatch.setattr(torch, "save", real_save)
    # no temp files, and no hash of the failed write: the one recorded is the surviving checkpoint's
    assert sorted(os.listdir(d / "checkpoints")) == ["latest", "step_00000004.pt", "step_00000004.pt.sha256"]
    assert (d / "checkpoints" / "latest").read_text().strip() == "step_00000004.pt"
    _, ref4, _ = train(max_steps=4)
    assert_same(ckpt_state(d / "checkpoints" / "step_00000004.pt"), learner_state(ref4))


def test_keep_ckpts_keeps_newest(tmp_path):
    d = tmp_path / "run"
    train(max_steps=12, run_dir=d, ckpt_every=2, keep_ckpts=3)
    names = sorted(p.name for p in (d / "checkpoints").iterdir())
    assert names == ["latest", *(f"step_000000{n}.pt{ext}" for n in ("08", "10", "12") for ext in ("", ".sha256"))]
    assert RunDir(d).latest_checkpoint().name == "step_00000012.pt"
    ck = load_checkpoint(d / "checkpoints" / "step_00000012.pt")
    assert ck["format"] == "jebm_lite.ckpt/1" and ck["step"] == 12 and ck["epoch"] == 2 and ck["offset"] == 0
    # weights_only loading works with plain torch too
    assert torch.load(d / "checkpoints" / "step_00000012.pt", weights_only=True)["history_rows"] == 12


# ----------------------------------------------------------------------------------------------
# data parallel
# ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_equals_one_process_on_the_combined_batch(tmp_path):
    """2 ranks x 4 examples with averaged gradients == 1 process x 8 examples (7 steps, one
    epoch boundary). The learner has no randomness here and its losses are batch means."""
    port = str(_free_port())
    ddp = tmp_path / "ddp"
    args = ["--run-dir", ddp, "--no-noise", "--max-steps", 7, "--ckpt-every", 7, "--batch-size", 8]
    procs = [
        spawn(args, {"WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r), "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": port, "GLOO_SOCKET_IFNAME": "lo"})
        for r in range(2)
    ]
    init = ts.build(noise=False).state_dict()
    train(max_steps=7, run_dir=tmp_path / "single", learner=ts.build(noise=False), ckpt_every=7)
    for p in procs:
        finish(p)
    single = load_checkpoint(tmp_path / "single" / "checkpoints" / "step_00000007.pt")["learner"]
    both = load_checkpoint(ddp / "checkpoints" / "step_00000007.pt")
    assert both["world_size"] == 2 and len(both["rng"]) == 2
    for k, v in single.items():
        torch.testing.assert_close(both["learner"][k], v, atol=1e-6, rtol=0)
        assert not torch.allclose(v, init[k]), f"{k} did not train"
    assert [r["step"] for r in RunDir(ddp).read_history()] == list(range(1, 8))


# ----------------------------------------------------------------------------------------------
# runs.py
# ----------------------------------------------------------------------------------------------


def test_rundir_create_refuses_other_config(tmp_path):
    rd = RunDir(tmp_path / "run")
    cfg = ts.make_cfg(max_steps=10)
    rd.create(cfg)
    assert read_json(rd.config_path) == to_dict(cfg)
    rd.create(cfg)  # same config: fine
    longer = ts.make_cfg(max_steps=20)
    rd.create(longer)  # only a resumable key differs: accepted and recorded
    assert read_json(rd.config_path)["train"]["max_steps"] == 20
    before = dir_hash(rd.path)
    with pytest.raises(ConfigError, match=r"train\.batch_size: stored=8  requested=16"):
        rd.create(ts.make_cfg(max_steps=20, batch_size=16))
    with pytest.raises(ConfigError, match="already exists"):
        rd.create(longer, exist_ok_if_same_config=False)
    assert dir_hash(rd.path) == before
    assert not rd.is_finished() and rd.read_history() == [] and rd.latest_checkpoint() is None


def test_write_result_is_atomic(tmp_path, monkeypatch):
    rd = RunDir(tmp_path / "run")
    rd.create(ts.make_cfg())
    rd.write_result({"finished": True, "steps": 1})

    def boom(*a, **k):
        raise OSError("crash before rename (simulated)")

    monkeypatch.setattr(jio.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        rd.write_result({"finished": True, "steps": 2})
    monkeypatch.undo()
    assert rd.read_result() == {"finished": True, "steps": 1}
    assert sorted(os.listdir(rd.path)) == ["config.json", "result.json"]


def test_load_or_train_trains_once_then_loads(tmp_path):
    cfg = ts.make_cfg(max_steps=8)
    built = []

    def build_learner(c, device):
        learner = ts.build()
        built.append(learner)
        return learner

    d = tmp_path / "run"
    first, h1 = load_or_train(cfg, d, build_learner, ts.make_data())
    assert first.calls == 8
    res = RunDir(d).read_result()
    assert res["finished"] is True and res["steps"] == 8 and res["seed"] == cfg.train.seed
    assert {"wall_time_s", "device", "torch", "profile"} <= set(res)

    second, h2 = load_or_train(cfg, d, build_learner, ts.make_data())
    assert len(built) == 2 and second is built[1] and second.calls == 0  # loaded, not trained
    assert_same(learner_state(first), learner_state(second))
    assert h2 == h1
    # the Trainer itself, on a finished run: loads the final state, trains nothing
    third = ts.build()
    assert Trainer(cfg, third, ts.make_data(), d).fit() == h1 and third.calls == 0
    assert_same(learner_state(first), learner_state(third))

    with pytest.raises(ConfigError, match="refusing to overwrite"):
        load_or_train(cfg, d, build_learner, ts.make_data(), force_train=True)
    with pytest.raises(CheckpointError, match="train.batch_size"):
        load_or_train(ts.make_cfg(max_steps=8, batch_size=4), d, build_learner, ts.make_data())
    assert json.loads(RunDir(d).result_path.read_text())["steps"] == 8


# ----------------------------------------------------------------------------------------------
# host syncs
# ----------------------------------------------------------------------------------------------

_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")


@pytest.mark.parametrize("preset", ["mnist_joint", "toy012_lebm", "mnist_conditional", "mnist_cond_joint"])
def test_training_reads_metrics_back_once_per_log_interval(monkeypatch, preset):
    """Spy on every tensor-to-host read (``.item()``, ``float()``, ``bool()``, ``.cpu()``, ...) made by
    jebm_lite code during training: the learner, sampler and objectives make none, and the trainer
    makes one per log interval (``_settle``), besides the checkpoint's copies of the state. (The u-space
    diffusion learner, which trains on a frozen base run, still reads its per-level gaps each step.)"""
    from jebm_lite.config import get_config
    from jebm_lite.training.learners import build_learner

    calls: list[tuple[str, str]] = []

    def spy(name):
        orig = getattr(torch.Tensor, name)

        def wrapper(self, *a, **kw):
            f = sys._getframe(1)
            mod = f.f_globals.get("__name__", "")
            if mod.startswith("jebm_lite"):
                calls.append((mod, f.f_code.co_name))
            return orig(self, *a, **kw)

        return wrapper

    torch.manual_seed(0)
    cfg = get_config(preset, profile="ci", overrides={
        "train.max_steps": 20, "train.log_every": 5, "train.ckpt_every": 20, "train.batch_size": 8,
        "prior_langevin.steps": 5, "posterior_langevin.steps": 3, "train.progress": False, "optim.fused": True})
    learner = build_learner(cfg, "cpu")
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    tr = Trainer(cfg, learner, x, None, device="cpu")
    for name in _READS:
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    history = tr.fit()
    monkeypatch.undo()
    assert [r["step"] for r in history] == list(range(1, 21))
    assert all(isinstance(v, float) for r in history for k, v in r.items() if k not in ("step", "epoch"))
    outside = [c for c in calls if c[1] not in ("_settle", "_clone_to_cpu")]
    assert outside == [], outside  # no per-step read in train_step, the sampler, the guard, ...
    settles = [c for c in calls if c[1] == "_settle"]
    assert len(settles) == 20 // 5 * 2, settles  # .cpu() and .tolist() of one stacked tensor, 4 intervals
