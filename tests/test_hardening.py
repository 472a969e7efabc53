"""What the trainer promises a careless or hostile user (book/running.md, "Reliability").

* no file the project reads is unpickled with code execution (a planted pickle is refused, nothing runs);
* one writer per run directory (the second is refused naming the first; a stale lock does not block);
* every bad input ends in a one-line error naming the fix, exit 2, nothing changed on disk;
* divergence is caught for every method, with advice that fits the method;
* SIGTERM / SIGINT checkpoint and exit with one line; a resume reaches the uninterrupted final state;
* throw-away runs of the ci profile leave nothing in the temp folder;
* a checkpoint (or FID state) whose bytes differ from the sha256 recorded when it was written is never used;
* a data file is read only up to the size its format allows: a gzip bomb or a lying header is refused in
  seconds, and no partial cache stays behind (nor the one of a killed process).
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same, flip_tensor_byte, shared_data_path

from jebm_lite import io as jio
from jebm_lite.__main__ import main
from jebm_lite.config import get_config
from jebm_lite.io import read_jsonl
from jebm_lite.runtime import CheckpointError, ConfigError
from jebm_lite.training.rundir import RunDir
from jebm_lite.training.trainer import Trainer, TrainingDiverged, divergence_advice, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(*args, cwd=ROOT, env_extra=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "JEBM_DATA": str(shared_data_path()), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "jebm_lite", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def spawn_cli(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "JEBM_DATA": str(shared_data_path()), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "jebm_lite", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (what 'nothing changed on disk' compares)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wait_for_rows(history: Path, n: int, proc, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not (history.exists() and len(history.read_text().splitlines()) >= n):
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        assert time.time() - t0 < timeout, "the run never reached the wanted step"
        time.sleep(0.02)


# ----------------------------------------------------------------------------------------------
# 1. No code execution from a file
# ----------------------------------------------------------------------------------------------


class _Evil:
    """Unpickling this runs ``touch <marker>``: what a crafted file in a shared run directory would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _calls_os_system(path: Path) -> bool:
    """True if the pickle inside a torch file imports ``os.system`` (read with pickletools; nothing is executed)."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    globals_ = {str(arg) for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "STACK_GLOBAL")}
    strings = {str(arg) for op, arg, _ in pickletools.genops(data) if "UNICODE" in op.name or "STRING" in op.name}
    return any(g.split()[-1] == "system" for g in globals_) or {"posix", "system"} <= strings


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"key": _Evil(marker), "done": {"real": 0, "fake": 0}}, path)


def test_planted_pickle_in_the_fid_state_is_refused(tmp_path):
    from jebm_lite.analysis.fid import compute_fid

    marker = tmp_path / "pwned"
    state = tmp_path / "run" / "results" / "fid.state.pt"
    _plant(state, marker)
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    feat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    feat.num_features = 4
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        compute_fid(x, x, n=8, n_real=8, batch_size=4, extractor=feat, run_dir=tmp_path / "run", name="fid",
                    device="cpu", progress=False)
    assert not marker.exists(), "the planted pickle ran"
    # control, without running it: the file really is a pickle that would call os.system on load
    assert _calls_os_system(state)


def test_planted_pickle_in_the_digit_classifier_cache_is_refused(tmp_path):
    from jebm_lite.analysis.metrics import digit_classifier

    marker = tmp_path / "pwned"
    cache = tmp_path / "runs" / "digit_classifier-mnist.pt"
    _plant(cache, marker)
    with pytest.raises(CheckpointError, match="digit-classifier cache"):
        digit_classifier(cache=str(cache), subset=64, epochs=1)
    assert not marker.exists()


def test_planted_pickle_as_a_checkpoint_and_as_fid_weights_is_refused(tmp_path):
    from jebm_lite.analysis.fid import FIDWeightsNotFoundError, inception_metric

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "checkpoints" / "step_00000010.pt"
    _plant(ckpt, marker)
    with pytest.raises(CheckpointError):
        load_checkpoint(ckpt)
    with pytest.raises(FIDWeightsNotFoundError, match="is not that file"):
        inception_metric(weights_path=ckpt)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(FIDWeightsNotFoundError, match="is not that file"):
        inception_metric(weights_path=junk)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# 2. One writer per run directory
# ----------------------------------------------------------------------------------------------


def test_second_writer_is_refused_and_the_first_finishes_consistently(tmp_path):
    out = tmp_path / "run"
    args = ["train", "toy012_joint", "--profile", "ci", "--out", out, "train.ckpt_every=50", "train.log_every=10",
            "train.batch_size=16", "data.subset=128"]
    first = spawn_cli(*args, "train.max_steps=5000")  # long enough to be running whatever the machine's load
    wait_for_rows(out / "history.jsonl", 20, first)
    second = run_cli(*args, "train.max_steps=5000")
    assert second.returncode == 2, second.stderr
    assert f"process {first.pid}" in second.stderr and "another --out" in second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert first.poll() is None, "the first writer must keep running"
    os.kill(first.pid, signal.SIGTERM)  # stop it cleanly (a checkpoint of its last step), then let it finish
    _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err
    stopped = load_checkpoint(RunDir(out).latest_checkpoint())["step"]
    done = run_cli(*args, f"train.max_steps={stopped + 20}")
    assert done.returncode == 0, done.stderr
    rows = [r for r in RunDir(out).read_history() if "event" not in r]
    assert [r["step"] for r in rows] == list(range(1, stopped + 21))  # no row twice, none lost
    assert RunDir(out).read_result()["steps"] == stopped + 20
    assert not (out / ".lock").exists()


def test_stale_lock_does_not_block_a_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "command": "killed"}) + "\n")
    r = run_cli("train", "toy012_joint", "--profile", "ci", "--out", out, "train.max_steps=5")
    assert r.returncode == 0, r.stderr
    assert RunDir(out).is_finished()


def test_run_lock_names_the_holder_and_is_reentrant(tmp_path):
    d = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from jebm_lite.io import RunLock
        with RunLock({str(d)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"process {holder.pid}"):
            jio.RunLock(d).acquire()
    finally:
        holder.kill()
        holder.wait()
    with jio.RunLock(d), jio.RunLock(d):  # re-entrant within one process, free once the holder died
        assert (d / ".lock").exists()
    assert not (d / ".lock").exists()  # released (and removed) when the outer block ends


# ----------------------------------------------------------------------------------------------
# 3. Bad inputs: one line naming the fix, exit 2, nothing changed on disk
# ----------------------------------------------------------------------------------------------

BAD_OVERRIDES = [
    ("optim.lr_e=-1", "optim.lr_e"),
    ("optim.lr_g=nan", "optim.lr_g"),
    ("train.device=banana", "train.device"),
    ("model.sigma=nan", "model.sigma"),
    ("prior_langevin.step_size=nan", "prior_langevin.step_size"),
    ("train.guard_lr_factor=nan", "train.guard_lr_factor"),
    ("train.guard_lr_factor=2", "train.guard_lr_factor"),
    ("optim.betas_e=1.5,0.9", "optim.betas_e"),
    ("optim.lr_decay=0", "optim.lr_decay"),
    ("train.keep_ckpts=0", "train.keep_ckpts"),
]


def _one_line_exit_2(r, must_name: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert must_name in lines[0], r.stderr


@pytest.mark.parametrize("override,key", BAD_OVERRIDES)
def test_bad_numbers_are_refused_before_anything_is_written(tmp_path, override, key, capsys):
    out = tmp_path / "run"
    assert main(["train", "toy012_joint", "--profile", "ci", "--out", str(out), override]) == 2
    err = capsys.readouterr().err
    assert key in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_out_that_is_a_file_or_under_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("keep me")
    for out, words in ((f, "is a file"), (f / "run", "lies under")):
        assert main(["train", "toy012_joint", "--profile", "ci", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
    assert f.read_text() == "keep me"


def test_out_in_a_folder_that_cannot_be_written(tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:  # a real read-only folder (root writes through permissions, so simulate below)
        ro.chmod(0o555)
    else:
        real = jio.tempfile.mkstemp

        def refuse(*a, dir=None, **kw):
            if dir is not None and Path(dir) == ro:
                raise PermissionError(errno.EROFS, "Read-only file system")
            return real(*a, dir=dir, **kw)

        monkeypatch.setattr(jio.tempfile, "mkstemp", refuse)
    try:
        assert main(["train", "toy012_joint", "--profile", "ci", "--out", str(ro / "run")]) == 2
        err = capsys.readouterr().err
        assert "cannot write" in err and len(err.strip().splitlines()) == 1
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_truncated_gz_names_the_file_and_how_to_fetch_it(tmp_path, shared_data, monkeypatch):
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for p in (shared_data / "mnist").glob("*.gz"):
        (root / "mnist" / p.name).write_bytes(p.read_bytes())
    bad = root / "mnist" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:50_000])
    monkeypatch.setenv("JEBM_CACHE", str(tmp_path / "cache"))
    before = snapshot(root)
    r = run_cli("train", "toy012_joint", "--profile", "ci", "--out", tmp_path / "run", f"data.root={root}",
                env_extra={"JEBM_CACHE": str(tmp_path / "cache")})
    _one_line_exit_2(r, str(bad))
    assert "truncated or corrupt" in r.stderr and "fetch it again" in r.stderr
    assert snapshot(root) == before and not (tmp_path / "run").exists()


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import torchvision

    def offline(*a, **kw):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -3] offline>")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)  # never touch the network in tests
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    assert main(["train", "toy012_joint", "--profile", "cpu", "--out", str(out), f"data.root={empty}",
                 "data.download=true"]) == 2
    err = capsys.readouterr().err
    assert "download failed" in err and "train-images-idx3-ubyte.gz" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_corrupted_history_line_is_skipped_and_resume_works(tmp_path):
    out = tmp_path / "run"
    base = ["train", "toy012_joint", "--profile", "ci", "--out", out, "train.ckpt_every=10", "train.log_every=5"]
    assert run_cli(*base, "train.max_steps=20").returncode == 0
    hist = out / "history.jsonl"
    lines = hist.read_text().splitlines()
    lines[6] = '{"step": 7, "loss": 0.1, GARBAGE'
    hist.write_text("\n".join(lines) + "\n")
    (out / "result.json").unlink()  # continue the run further
    with pytest.warns(RuntimeWarning, match=r"skipped 1 unreadable line\(s\) \(7\)"):
        assert len(read_jsonl(hist)) == 19
    r = run_cli(*base, "train.max_steps=30")
    assert r.returncode == 0, r.stderr
    assert "unreadable line" in r.stderr
    steps = [row["step"] for row in RunDir(out).read_history() if "event" not in row]
    assert steps == [s for s in range(1, 31) if s != 7]  # the bad row is gone, every other step once
    assert load_checkpoint(RunDir(out).latest_checkpoint())["step"] == 30


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    import jebm_lite.training.trainer as tr

    out = tmp_path / "run"
    real_save = tr.torch.save
    calls = {"n": 0}

    def full(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint hits a full disk half-way
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(tr.torch, "save", full)
    args = ["train", "toy012_joint", "--profile", "ci", "--out", str(out), "train.max_steps=20", "train.ckpt_every=5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "step_00000005.pt" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in RunDir(out).checkpoints()] == ["step_00000005.pt"]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(out / "checkpoints" / "step_00000005.pt")["step"] == 5
    monkeypatch.setattr(tr.torch, "save", real_save)
    assert main(args) == 0  # space freed: the same command resumes and finishes
    assert RunDir(out).read_result()["steps"] == 20


# ----------------------------------------------------------------------------------------------
# 4. Divergence for every method
# ----------------------------------------------------------------------------------------------


def test_exploding_loss_without_energy_terms_is_caught_with_fitting_advice(tmp_path, capsys):
    """VLAE has no energy metrics: a finite but absurd loss (lr_g = 100 reached ~1e34) must stop it."""
    r = run_cli("train", "toy012_vlae", "--profile", "ci", "--out", tmp_path / "run", "optim.lr_g=100",
                "train.max_steps=30")
    assert r.returncode == 3, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "diverged" in r.stderr and "optim.lr_g" in r.stderr and "EBM" not in r.stderr
    assert not RunDir(tmp_path / "run").is_finished()


def test_guard_checks_every_metric_against_the_limit():
    cfg = get_config("toy012_vlae", profile="ci", overrides=["train.max_steps=6", "train.guard_max_rollbacks=0"])
    from jebm_lite.training.learners import build_learner

    learner = build_learner(cfg, "cpu")
    x = torch.rand(64, 1, 28, 28) * 2 - 1

    def hook(step, metrics):
        return {**metrics, "loss": 3e9} if step == 4 else metrics

    with pytest.raises(TrainingDiverged, match="loss = 3e\\+09 exceeds train.guard_metric_limit") as e:
        Trainer(cfg, learner, x, None, device="cpu", fault_hook=hook).fit()
    assert e.value.step == 4


def test_divergence_advice_fits_the_method():
    for name in ("toy012_vlae", "mnist_conditional"):
        text = divergence_advice(get_config(name, profile="ci"))
        assert "optim.lr_g" in text and "lr_e" not in text and "Langevin" not in text
    for name in ("toy012_joint", "toy012_lebm", "mnist_cond_joint"):
        text = divergence_advice(get_config(name, profile="ci"))
        assert "optim.lr_e" in text and "prior_langevin.step_size" in text


# ----------------------------------------------------------------------------------------------
# 5. Signals and 6. temporary files
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_and_resume_reaches_the_uninterrupted_state(tmp_path, sig):
    common = ["train", "toy012_joint", "--profile", "ci", "train.max_steps=150", "train.ckpt_every=50",
              "train.log_every=5", "train.deterministic=true", "train.batch_size=16", "data.subset=128"]
    victim = tmp_path / "victim"
    proc = spawn_cli(*common, "--out", victim)
    wait_for_rows(victim / "history.jsonl", 20, proc)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + int(sig), err
    assert "Traceback" not in err and f"{sig.name} received" in err and "resume" in err
    assert len([ln for ln in err.strip().splitlines() if ln.strip()]) == 1, err
    stopped = load_checkpoint(RunDir(victim).latest_checkpoint())["step"]
    last_row = [r for r in RunDir(victim).read_history() if "event" not in r][-1]["step"]
    assert 20 <= stopped < 150 and stopped == last_row  # a checkpoint of the step where it stopped
    assert not RunDir(victim).is_finished()
    again = run_cli(*common, "--out", victim)
    assert again.returncode == 0, again.stderr
    ref = run_cli(*common, "--out", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / "step_00000150.pt")
    b = load_checkpoint(victim / "checkpoints" / "step_00000150.pt")
    for key in ("learner", "optimizers", "schedulers", "step"):
        assert_same(a[key], b[key], key)  # same kernels, same order of operations: bit identical


def test_temp_files_of_a_killed_writer_are_cleaned_on_the_next_start(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "toy012_joint", "--profile", "ci", "--out", out, "train.max_steps=10",
                   "train.ckpt_every=5").returncode == 0
    (out / "result.json").unlink()
    dead = out / "checkpoints" / ".step_00000015.pt.999999.deadbeef.tmp"
    alive = out / "checkpoints" / f".step_00000015.pt.{os.getpid()}.0badcafe.tmp"
    dead.write_bytes(b"half a checkpoint")
    alive.write_bytes(b"someone else is writing")
    r = run_cli("train", "toy012_joint", "--profile", "ci", "--out", out, "train.max_steps=15", "train.ckpt_every=5")
    assert r.returncode == 0, r.stderr
    assert not dead.exists() and alive.exists()
    assert "temporary file left by an interrupted write" in r.stderr


def test_ci_runs_leave_nothing_in_the_temp_folder(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp / "jebm-tmp-999999-stale").mkdir()  # left by a killed process: removed by the next one
    code = textwrap.dedent("""
        from jebm_lite.config import get_config
        from jebm_lite.training.load import run_experiment
        cfg = get_config("toy012_joint", profile="ci", overrides=["train.max_steps=3"])
        _, _, rd = run_experiment(cfg)
        assert rd.is_finished()
        print(rd.path)
    """)
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "JEBM_DATA": str(shared_data_path())}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()).is_relative_to(tmp)
    assert list(tmp.iterdir()) == []


def test_a_ci_notebook_leaves_no_run_directory_behind(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent("""
        import jebm_lite as jl
        from jebm_lite.training.load import run_experiment
        cfg = jl.get_config("toy012_joint", overrides=["train.max_steps=3"])
        _, _, rd = run_experiment(cfg)
        assert cfg.profile == "ci" and rd.is_finished()
        results = jl.io.temp_dir("tab1-ci-")
    """))])
    env_keys = {"TMPDIR": str(tmp), "JEBM_PROFILE": "ci", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                "JEBM_DATA": str(shared_data_path())}
    old = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert list(tmp.iterdir()) == []


def test_small_data_sets_download_for_readers_but_never_in_ci_or_tests(monkeypatch, tmp_path):
    from jebm_lite import data as jdata
    from jebm_lite.runtime import downloads_allowed

    assert not downloads_allowed()  # under pytest
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    for k in ("CI", "JEBM_NO_DOWNLOAD", "JEBM_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    assert downloads_allowed()  # a reader's machine, a fresh Colab session
    for k, v in (("JEBM_PROFILE", "ci"), ("CI", "true"), ("JEBM_NO_DOWNLOAD", "1")):
        monkeypatch.setenv(k, v)
        assert not downloads_allowed()
        monkeypatch.delenv(k)
    seen = []

    def fake_load(name, split, folder, download=False):
        seen.append((name, download))
        raise jdata.DataNotFoundError("stop here")

    monkeypatch.setattr(jdata.mnist, "load", fake_load)
    for name in ("mnist", "fashion_mnist"):
        with pytest.raises(jdata.DataNotFoundError):
            jdata.get_dataset(name, root=tmp_path)
    assert seen == [("mnist", True), ("fashion_mnist", True)]
    monkeypatch.setenv("JEBM_PROFILE", "ci")
    with pytest.raises(jdata.DataNotFoundError):
        jdata.get_dataset("mnist", root=tmp_path)
    assert seen[-1] == ("mnist", False)


# ----------------------------------------------------------------------------------------------
# 7. Integrity: a file whose bytes differ from the sha256 recorded when it was written is never used
# ----------------------------------------------------------------------------------------------

INTEGRITY = ["train", "toy012_joint", "--profile", "ci", "train.ckpt_every=5", "train.log_every=5",
             "train.deterministic=true", "train.batch_size=16", "data.subset=128"]


def _one_error_line(err: str, *must_name: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    for name in must_name:
        assert name in lines[0], err
    return lines[0]


def test_a_flipped_byte_in_the_newest_checkpoint_falls_back_and_ends_as_an_uninterrupted_run(tmp_path):
    out = tmp_path / "run"
    assert main([*INTEGRITY, "--out", str(out), "train.max_steps=12"]) == 0
    (out / "result.json").unlink()  # as a run stopped at step 12 (SIGTERM leaves the same files)
    ck = out / "checkpoints"
    assert [p.name for p in RunDir(out).checkpoints()] == ["step_00000005.pt", "step_00000010.pt", "step_00000012.pt"]
    flip_tensor_byte(ck / "step_00000012.pt")
    flipped = (ck / "step_00000012.pt").read_bytes()
    assert torch.load(ck / "step_00000012.pt", weights_only=True)["step"] == 12  # torch alone would train on it
    r = run_cli(*INTEGRITY, "--out", out, "train.max_steps=20")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    said = [ln for ln in r.stderr.splitlines() if "step_00000012.pt" in ln]
    assert len(said) == 1 and said[0].startswith("warning: Corrupt checkpoint step_00000012.pt (sha256"), r.stderr
    assert "kept as step_00000012.pt.corrupt; resuming from step_00000010.pt (step 10)" in said[0]
    assert (ck / "step_00000012.pt.corrupt").read_bytes() == flipped  # kept for inspection, never trained on
    ref = tmp_path / "ref"
    assert main([*INTEGRITY, "--out", str(ref), "train.max_steps=20"]) == 0
    a = load_checkpoint(ref / "checkpoints" / "step_00000020.pt")
    b = load_checkpoint(ck / "step_00000020.pt")
    for key in ("learner", "optimizers", "schedulers", "rng", "step"):
        assert_same(a[key], b[key], key)
    assert [r["step"] for r in RunDir(out).read_history() if "event" not in r] == list(range(1, 21))


def test_every_checkpoint_corrupt_exits_2_naming_them_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*INTEGRITY, "--out", str(out), "train.max_steps=10"]) == 0
    (out / "result.json").unlink()
    for p in RunDir(out).checkpoints():
        flip_tensor_byte(p)
    before = snapshot(out)
    capsys.readouterr()
    assert main([*INTEGRITY, "--out", str(out), "train.max_steps=20"]) == 2
    line = _one_error_line(capsys.readouterr().err, "step_00000010.pt (sha256", "step_00000005.pt (sha256")
    assert "Nothing was changed" in line
    assert snapshot(out) == before


def test_evaluate_and_fid_states_refuse_a_flipped_byte(tmp_path, capsys):
    from jebm_lite.analysis.fid import compute_fid

    out = tmp_path / "run"
    assert main([*INTEGRITY, "--out", str(out), "train.max_steps=5"]) == 0
    flip_tensor_byte(out / "checkpoints" / "step_00000005.pt")
    before = snapshot(out)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--mse", "--mse-n", "8"]) == 2  # a finished run's weights: no fall-back
    _one_error_line(capsys.readouterr().err, "step_00000005.pt is corrupt", "sha256")
    assert snapshot(out) == before
    # the FID's resume state: its hash is written with it, checked when it is read back, removed with it
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    feat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    kw = dict(n=16, n_real=16, batch_size=4, extractor=feat, run_dir=tmp_path / "ev", name="fid", device="cpu")
    first = compute_fid(x, x, keep_state=True, **kw).fid
    state = tmp_path / "ev" / "results" / "fid.state.pt"
    assert (state.parent / "fid.state.pt.sha256").is_file()
    assert compute_fid(x, x, keep_state=True, **kw).fid == first  # an intact state is used
    flip_tensor_byte(state)
    with pytest.raises(CheckpointError, match=r"fid.state.pt is corrupt or truncated \(sha256 .*delete it"):
        compute_fid(x, x, **kw)
    state.unlink()
    compute_fid(x, x, **kw)
    assert not list(state.parent.glob("fid.state.pt*"))


def test_fid_weights_that_differ_from_their_recorded_sha256_are_refused(tmp_path):
    from jebm_lite.analysis.fid import FIDWeightsNotFoundError, inception_metric

    w = tmp_path / "weights.pth"
    jio.atomic_write(w, lambda f: torch.save({"w": torch.arange(4096.0)}, f), mode="wb", record_sha256=True)
    flip_tensor_byte(w)
    with pytest.raises(FIDWeightsNotFoundError, match="is not that file .*corrupt or truncated .*sha256"):
        inception_metric(weights_path=w)


def test_an_empty_out_is_refused_like_any_bad_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # where the default runs/<name>-<profile> would land
    for bad in ("", "  "):
        assert main(["train", "toy012_joint", "--profile", "ci", "--out", bad, "train.max_steps=2"]) == 2
        _one_error_line(capsys.readouterr().err, "--out is empty")
    assert main(["runs", "pack", "somewhere", "--out", ""]) == 2
    _one_error_line(capsys.readouterr().err, "--out is empty")
    with pytest.raises(ConfigError, match="empty string"):
        RunDir("")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# 8. Bounded data reads: a hostile data file cannot fill the disk, a refused one leaves no cache
# ----------------------------------------------------------------------------------------------

MNIST_TRAIN_IMAGES = 4 + 3 * 4 + 60_000 * 28 * 28  # 47,040,016 bytes: what the largest honest file inflates to


def _mnist_copy(shared: Path, root: Path) -> Path:
    (root / "mnist").mkdir(parents=True)
    for p in (shared / "mnist").glob("*.gz"):
        shutil.copyfile(p, root / "mnist" / p.name)
    return root / "mnist"


def _gzip_bomb(path: Path, header: bytes, inflated: int) -> None:
    """A gzip file of ``header`` and then zeros, ``inflated`` bytes in all, streamed through gzip in 64 MiB
    members (gzip readers join them; the file is about 1/1000 of that and nothing large is ever kept)."""
    block = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    with open(path, "wb") as f:
        f.write(gzip.compress(header))
        for _ in range(-(-inflated // (64 << 20))):
            f.write(block)


def _bytes_under(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:  # removed while we looked
                pass
    return total


def test_a_gzip_bomb_is_refused_in_seconds_without_filling_the_disk(tmp_path, shared_data, monkeypatch, capsys):
    folder = _mnist_copy(shared_data, tmp_path / "data")
    bomb = folder / "train-images-idx3-ubyte.gz"
    _gzip_bomb(bomb, struct.pack(">IIII", 2051, 60_000, 28, 28), inflated=2 * 10**9)  # a valid header, 2 GB
    assert bomb.stat().st_size < 3 * 10**6
    cache = tmp_path / "cache"
    monkeypatch.setenv("JEBM_CACHE", str(cache))
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _bytes_under(cache))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    t0 = time.perf_counter()
    try:
        code = main(["train", "toy012_joint", "--profile", "ci", "--out", str(tmp_path / "run"),
                     f"data.root={tmp_path / 'data'}"])
    finally:
        took = time.perf_counter() - t0
        stop.set()
        watcher.join()
    assert code == 2
    _one_error_line(capsys.readouterr().err, str(bomb), f"{MNIST_TRAIN_IMAGES:,} bytes its header announces")
    print(f"bomb refused in {took:.2f} s, peak cache {peak[0] / 1e6:.1f} MB")  # shown with -s
    assert took < 10 and 0 < peak[0] < 100e6, (took, peak[0])
    assert [p for p in cache.rglob("*") if not p.is_dir() or p.name != "idx"] == []  # no partial cache
    assert not (tmp_path / "run").exists()


def test_an_idx_header_that_lies_is_refused_before_anything_is_inflated(tmp_path, shared_data, monkeypatch):
    from jebm_lite.data import DataNotFoundError, get_dataset

    monkeypatch.setenv("JEBM_CACHE", str(tmp_path / "cache"))
    folder = _mnist_copy(shared_data, tmp_path / "data")
    liar = folder / "train-images-idx3-ubyte.gz"
    liar.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 10**9, 28, 28) + b"\0" * 4096))
    with pytest.raises(DataNotFoundError, match=r"claims 1000000000 x 28 x 28, more than MNIST "
                                                r"train-images-idx3-ubyte holds \(60000 x 28 x 28, 47,040,016 bytes"):
        get_dataset("mnist", "test", root=tmp_path / "data")
    assert [p.name for p in (tmp_path / "cache").rglob("*")] == ["idx"]  # no folder left behind
    # decompressed files are held to their header too (torchvision would read all of one into memory)
    plain = tmp_path / "plain" / "mnist"
    plain.mkdir(parents=True)
    for p in folder.glob("*.gz"):
        if p.name != liar.name:
            (plain / p.name[:-3]).write_bytes(gzip.decompress(p.read_bytes()))
    (plain / liar.name[:-3]).write_bytes(struct.pack(">IIII", 2051, 10, 28, 28) + b"\0" * (10 * 784 + 5000))
    with pytest.raises(DataNotFoundError, match=r"has 12,856 bytes, its idx header announces 7,856"):
        get_dataset("mnist", "test", root=tmp_path / "plain")
    assert [p.name for p in (tmp_path / "cache").rglob("*")] == ["idx"]


def test_a_cache_left_by_a_killed_process_is_removed_on_the_next_start(tmp_path, shared_data):
    from jebm_lite.data import get_dataset

    cache = tmp_path / "cache"
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        import jebm_lite.data.mnist as m
        real = m.inflate_bounded
        def slow(src, dst, *a, **k):  # the first file written in full, then a kill arrives
            real(src, dst, *a, **k)
            print("wrote", dst, flush=True)
            time.sleep(120)
        m.inflate_bounded = slow
        from jebm_lite.data import get_dataset
        get_dataset("mnist", "test", root={str(shared_data)!r})
    """)
    env = {**os.environ, "JEBM_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = victim.stdout.readline()
        assert line.startswith("wrote"), line
    finally:
        victim.kill()
        victim.wait()
    idx = cache / "idx"
    left = [p for p in idx.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".MNIST-") and left[0].name.endswith(".tmp")  # half-built
    assert _bytes_under(left[0]) == MNIST_TRAIN_IMAGES
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JEBM_CACHE", str(cache))
        assert len(get_dataset("mnist", "test", root=shared_data)) == 10_000
    built = [p for p in idx.iterdir()]
    assert len(built) == 1 and built[0].name.startswith("MNIST-")  # the stale one removed, a complete one built
    assert sorted(p.name for p in (built[0] / "MNIST" / "raw").iterdir()) == sorted(
        p.name[:-3] for p in (shared_data / "mnist").glob("*.gz"))


def test_a_mat_file_that_holds_or_inflates_past_its_split_is_refused(tmp_path, monkeypatch):
    import numpy as np
    import scipy.io

    from jebm_lite.data import DataNotFoundError, get_dataset, svhn

    monkeypatch.setitem(svhn.MAX_IMAGES, "test", 20)  # a small split: the limit is 20 x 3080 + 1 MiB
    limit = svhn.mat_limit("test")
    path = tmp_path / "svhn" / "test_32x32.mat"
    path.parent.mkdir()
    X, y = np.zeros((32, 32, 3, 12), np.uint8), np.ones((12, 1), np.uint8)
    scipy.io.savemat(path, {"X": X, "y": y}, do_compression=True)
    assert len(get_dataset("svhn", "test", root=tmp_path)) == 12  # control: an honest file loads
    scipy.io.savemat(path, {"X": X, "y": y, "pad": np.zeros(32 << 20, np.uint8)}, do_compression=True)  # 32 MB
    assert path.stat().st_size < 10**6
    t0 = time.perf_counter()
    with pytest.raises(DataNotFoundError, match=f"inflates past the {limit:,} bytes SVHN test can hold"):
        get_dataset("svhn", "test", root=tmp_path)
    assert time.perf_counter() - t0 < 2
    scipy.io.savemat(path, {"X": X, "y": y, "pad": np.zeros(2 << 20, np.uint8)})  # uncompressed: 2 MB on disk
    with pytest.raises(DataNotFoundError, match=f"bytes, more than SVHN test can hold \\({limit:,} bytes\\)"):
        get_dataset("svhn", "test", root=tmp_path)


def test_an_image_that_is_too_large_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    from PIL import Image

    from jebm_lite.data import DataNotFoundError, celeba, get_dataset

    folder = tmp_path / "celeba64" / "train"
    folder.mkdir(parents=True)
    Image.new("RGB", (178, 218), (0, 200, 0)).save(folder / "000001.png")
    Image.new("L", (5000, 5000)).save(folder / "000002.png")  # 25 M pixels in a file of about 25 kB
    ds = get_dataset("celeba64", "train", root=tmp_path)
    assert ds[0][0].shape == (3, 64, 64)
    with pytest.raises(DataNotFoundError, match="000002.png announces 5000 x 5000 pixels, more than the 16,777,216"):
        ds[1]
    monkeypatch.setattr(celeba, "MAX_FILE_BYTES", 1000)
    with pytest.raises(DataNotFoundError, match=r"000002.png has [\d,]+ bytes, more than an image here may have"):
        ds[1]
    (folder / "000003.png").write_bytes(b"\x89PNG junk")
    with pytest.raises(DataNotFoundError, match="000003.png cannot be read as an image"):
        get_dataset("celeba64", "train", root=tmp_path)[2]
