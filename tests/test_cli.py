"""The command line: ``python -m jebm_lite {configs,show,train}``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jebm_lite.__main__ import main
from jebm_lite.config import available, get_config, to_dict
from jebm_lite.training.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, env_extra=None, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "jebm_lite", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_configs_lists_every_preset():
    r = run_cli("configs")
    assert r.returncode == 0, r.stderr
    listed = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert listed == available()
    assert "toy012_joint" in listed


def test_show_prints_resolved_json(capsys):
    assert main(["show", "toy012_joint", "--profile", "ci", "train.max_steps=5"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["max_steps"] == 5 and cfg["profile"] == "ci" and cfg["name"] == "toy012_joint"
    expected = to_dict(get_config("toy012_joint", profile="ci", overrides=["train.max_steps=5"]))
    assert cfg == expected
    # options and overrides in any order
    assert main(["show", "toy012_joint", "train.max_steps=5", "--profile", "ci", "prior_langevin.steps=3"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["max_steps"] == 5 and cfg["prior_langevin"]["steps"] == 3 and cfg["profile"] == "ci"


def test_show_reads_a_config_json(tmp_path, capsys):
    cfg = get_config("toy012_joint", profile="ci")
    rd = RunDir(tmp_path / "run").create(cfg)
    assert main(["show", str(rd.config_path), "train.seed=7"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train"]["seed"] == 7 and out["train"]["max_steps"] == cfg.train.max_steps


def test_unknown_key_exits_2_listing_valid_keys():
    r = run_cli("show", "toy012_joint", "--profile", "ci", "train.max_stepz=5")
    assert r.returncode == 2
    assert "train.max_stepz" in r.stderr and "Valid keys" in r.stderr and "train.max_steps" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


@pytest.mark.parametrize("command", ["show", "train"])
def test_wrong_type_exits_2(command, capsys):
    assert main([command, "toy012_joint", "--profile", "ci", "train.max_steps=abc"]) == 2
    err = capsys.readouterr().err
    assert "train.max_steps" in err and "expected an integer" in err and "Traceback" not in err


def test_unknown_config_and_bad_arguments(capsys):
    assert main(["show", "no_such_experiment"]) == 2
    assert "toy012_joint" in capsys.readouterr().err  # the known ones are listed
    with pytest.raises(SystemExit) as e:
        main(["show", "toy012_joint", "--bogus"])
    assert e.value.code == 2
    assert main([]) == 2


def test_train_real_run(tmp_path, capsys):
    """A real (tiny) training run through the CLI, then a second call that finds it finished."""
    out = tmp_path / "toy"
    data_root = os.environ.get("JEBM_DATA") or str(ROOT.parent / "shared" / "data")
    r = run_cli("train", "toy012_joint", "--profile", "ci", "--out", out, "train.max_steps=3",
                "train.ckpt_every=3", "train.log_every=1", env_extra={"JEBM_DATA": data_root})
    assert r.returncode == 0, r.stdout + r.stderr
    rd = RunDir(out)
    res = rd.read_result()
    assert res["finished"] is True and res["steps"] == 3 and res["profile"] == "ci"
    assert [row["step"] for row in rd.read_history() if "event" not in row] == [1, 2, 3]
    assert rd.latest_checkpoint().name == "step_00000003.pt"
    assert rd.read_config().train.max_steps == 3
    # a finished run is reported, not retrained or overwritten
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["train", "toy012_joint", "--profile", "ci", "--out", str(out), "train.max_steps=3",
                 "train.ckpt_every=3", "train.log_every=1"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_evaluate_subcommand_delegates_to_jebm_lite_evaluate(tmp_path, capsys):
    from jebm_lite.__main__ import main

    assert main(["evaluate", str(tmp_path / "missing"), "--mse"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_two_table_processes_side_by_side(tmp_path, shared_data):
    """The several-devices pattern of book/running.md on a CPU: two Tab. 1 processes (one seed each,
    one thread each) at once, into one results folder: both finish and write their own cells."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "JEBM_DATA": str(shared_data)}
    results = tmp_path / "results"
    procs = [subprocess.Popen([sys.executable, "-m", "jebm_lite.experiments.latent_table", "--profile", "ci",
                               "--datasets", "mnist", "--methods", "vlae", "--seeds", str(s), "--device", "cpu",
                               "--results", str(results), "--runs", str(tmp_path / "runs")],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for s in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    recs = {p.name: json.loads(p.read_text()) for p in results.glob("*.json")}
    assert sorted(recs) == ["mnist_vlae_seed0_ci.json", "mnist_vlae_seed1_ci.json"]
    assert {r["seed"] for r in recs.values()} == {0, 1}
    assert all(r["device"].startswith("cpu (1 thread") and r["threads"] == 1 for r in recs.values())
