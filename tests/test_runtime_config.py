"""Runtime (profiles, devices, seeding, run card) and typed configs (presets, overrides, JSON)."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from jebm_lite import runtime
from jebm_lite.config import (
    ExperimentConfig,
    apply_overrides,
    available,
    config_from_json,
    get_config,
    to_dict,
    valid_keys,
    validate,
)
from jebm_lite.runtime import ConfigError, get_device, get_profile, seed_everything, start_run


@pytest.fixture
def no_env(monkeypatch):
    """No profile/device chosen through the environment."""
    monkeypatch.delenv("JEBM_PROFILE", raising=False)
    monkeypatch.delenv("JEBM_DEVICE", raising=False)
    return monkeypatch


@pytest.fixture
def restore_determinism(monkeypatch):
    """seed_everything(deterministic=True) changes global torch state: put it back afterwards."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)
    torch.backends.cudnn.deterministic = False


# ----------------------------------------------------------------------------------------------
# Seeding
# ----------------------------------------------------------------------------------------------


def _small_computation() -> tuple[float, np.ndarray, torch.Tensor]:
    """A little of everything that seed_everything must control."""
    r = random.random()
    a = np.random.randn(5)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(16, 4)
    for _ in range(3):
        opt.zero_grad()
        loss = (net(x) ** 2).mean() + torch.randn(()) * 0.01
        loss.backward()
        opt.step()
    return r, a, net(x).detach()


def test_seed_everything_makes_runs_identical():
    seed_everything(123)
    r1, a1, t1 = _small_computation()
    seed_everything(123)
    r2, a2, t2 = _small_computation()
    assert r1 == r2
    np.testing.assert_array_equal(a1, a2)
    assert torch.equal(t1, t2)

    seed_everything(124)
    r3, a3, t3 = _small_computation()
    assert r3 != r1
    assert not np.array_equal(a3, a1)
    assert not torch.equal(t3, t1)


def test_seed_everything_deterministic_on_cpu(restore_determinism):
    seed_everything(7, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    _, _, t1 = _small_computation()
    seed_everything(7, deterministic=True)
    _, _, t2 = _small_computation()
    assert torch.equal(t1, t2)
    seed_everything(7, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


# ----------------------------------------------------------------------------------------------
# Profiles and devices
# ----------------------------------------------------------------------------------------------


def test_profile_precedence(no_env):
    no_env.setattr(torch.cuda, "is_available", lambda: False)
    assert get_profile() == "cpu"  # default without CUDA
    no_env.setenv("JEBM_PROFILE", "ci")
    assert get_profile() == "ci"  # environment beats the default
    assert get_profile("full") == "full"  # argument beats the environment
    assert get_profile(" CPU ") == "cpu"  # case and spaces are forgiven


def test_default_profile_is_full_with_cuda(no_env):
    no_env.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile() == "full"


def test_bad_profile_is_a_config_error(no_env):
    with pytest.raises(ConfigError, match="ci, cpu, full"):
        get_profile("gpu")
    no_env.setenv("JEBM_PROFILE", "fast")
    with pytest.raises(ConfigError, match="JEBM_PROFILE"):
        get_profile()


def test_get_device_explicit_and_env(no_env):
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(torch.device("cpu")).type == "cpu"
    no_env.setattr(torch.cuda, "is_available", lambda: False)
    assert get_device() == torch.device("cpu")
    no_env.setenv("JEBM_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


def test_cuda_unavailable_is_a_config_error(no_env):
    no_env.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        get_device("cuda")
    no_env.setenv("JEBM_DEVICE", "cuda:0")
    with pytest.raises(ConfigError):
        get_device()


# ----------------------------------------------------------------------------------------------
# Run card
# ----------------------------------------------------------------------------------------------


def test_start_run_card(no_env, capsys):
    card, profile, device = start_run("Test chapter", seed=11, profile="cpu", device="cpu")
    printed = capsys.readouterr().out
    assert profile == "cpu" and device == torch.device("cpu")
    text = card.render()
    assert printed.strip() == text.strip()
    assert text.startswith("RUN CARD")
    for word in (
        "Test chapter",
        "profile",
        "cpu",
        "device",
        "torch",
        torch.__version__,
        "commit",
        "seed",
        "11",
    ):
        assert word in text, word
    assert card.commit and card.wall_time_s is None and "in the final run card" in text and "running" not in text

    card.finish()
    assert card.wall_time_s is not None and card.wall_time_s >= 0
    assert "wall time" in capsys.readouterr().out
    d = json.loads(card.to_json())
    assert d["profile"] == "cpu" and d["seed"] == 11 and "_t0" not in d


def test_start_run_quiet_and_seeds(no_env, capsys):
    start_run("t", seed=5, profile="ci", device="cpu", quiet=True)
    assert capsys.readouterr().out == ""
    a = torch.randn(3)
    start_run("t", seed=5, profile="ci", device="cpu", quiet=True)
    assert torch.equal(a, torch.randn(3))


def test_git_commit_outside_a_repository(tmp_path):
    assert runtime.git_commit(tmp_path) == "unknown"


# ----------------------------------------------------------------------------------------------
# Presets per profile
# ----------------------------------------------------------------------------------------------


def test_profiles_switch_presets():
    ci = get_config("toy012_joint", profile="ci")
    cpu = get_config("toy012_joint", profile="cpu")
    full = get_config("toy012_joint", profile="full")
    assert ci.profile == "ci" and cpu.profile == "cpu" and full.profile == "full"
    assert ci.train.max_steps != cpu.train.max_steps
    assert ci.train.max_steps < cpu.train.max_steps <= full.train.max_steps
    assert ci.data.subset is not None and ci.data.subset > 0  # ci trains on a subset
    assert cpu.data.subset is None
    assert ci.data.classes == cpu.data.classes == (0, 1, 2)  # the experiment itself is the same


def test_get_config_uses_env_profile(no_env):
    no_env.setenv("JEBM_PROFILE", "ci")
    assert get_config("toy012_joint").profile == "ci"


def test_get_config_unknown_names():
    with pytest.raises(ConfigError, match="toy012_joint"):  # lists the known experiments
        get_config("no_such_experiment", profile="cpu")
    with pytest.raises(ConfigError):
        get_config("toy012_joint", profile="huge")


def test_every_preset_builds_and_validates_in_every_profile():
    assert "toy012_joint" in available()
    for name in available():
        for profile in ("ci", "cpu", "full"):
            cfg = get_config(name, profile=profile)
            validate(cfg)
            assert cfg.name == name


# ----------------------------------------------------------------------------------------------
# Typed overrides
# ----------------------------------------------------------------------------------------------


def test_overrides_are_type_checked():
    base = get_config("toy012_joint", profile="cpu")
    cfg = apply_overrides(
        base,
        [
            "train.max_steps=5",
            "model.z_dims=2,2",
            "train.progress=false",
            "optim.betas_g=0.5,0.999",
            "model.sigma=0.25",
            "data.subset=none",
            "name=my_run",
        ],
    )
    assert cfg.train.max_steps == 5 and isinstance(cfg.train.max_steps, int)
    assert cfg.model.z_dims == (2, 2)
    assert cfg.train.progress is False
    assert cfg.optim.betas_g == (0.5, 0.999)
    assert cfg.model.sigma == 0.25
    assert cfg.data.subset is None
    assert cfg.name == "my_run"
    # the original is untouched
    assert base.train.max_steps != 5 and base.model.z_dims != (2, 2) and base.train.progress is True
    # a dict works too
    assert apply_overrides(base, {"train.max_steps": 7}).train.max_steps == 7
    assert apply_overrides(base, ["train.progress=true"]).train.progress is True


def test_unknown_override_lists_valid_keys():
    cfg = get_config("toy012_joint", profile="cpu")
    with pytest.raises(ConfigError) as info:
        apply_overrides(cfg, ["train.max_stepz=3"])
    msg = str(info.value)
    assert "train.max_stepz" in msg and "train.max_steps" in msg and "prior_langevin.step_size" in msg
    assert "train.max_steps" in valid_keys(cfg)
    for bad in (["nosuchsection.x=1"], ["train=3"], ["train.max_steps.deeper=1"]):
        with pytest.raises(ConfigError):
            apply_overrides(cfg, bad)


@pytest.mark.parametrize(
    "override",
    [
        "train.max_steps=abc",
        "train.max_steps=2.5",
        "train.progress=maybe",
        "model.sigma=wide",
        "optim.betas_g=0.5",  # a pair is needed
        "train.batch_size=true",
        "train.max_steps",  # not key=value
    ],
)
def test_wrong_types_are_rejected(override):
    cfg = get_config("toy012_joint", profile="cpu")
    with pytest.raises(ConfigError):
        apply_overrides(cfg, [override])


# ----------------------------------------------------------------------------------------------
# JSON round trip and validation
# ----------------------------------------------------------------------------------------------


def test_config_json_round_trip():
    for name in available():
        cfg = get_config(name, profile="ci", overrides=["train.max_steps=4"])
        text = json.dumps(to_dict(cfg))
        back = config_from_json(text)
        assert back == cfg, name
        assert config_from_json(json.loads(text)) == cfg
        assert isinstance(back.optim.betas_g, tuple)


def test_config_json_rejects_unknown_keys():
    d = to_dict(get_config("toy012_joint", profile="ci"))
    d["train"]["warp_speed"] = 9
    with pytest.raises(ConfigError, match="warp_speed"):
        config_from_json(d)


@pytest.mark.parametrize(
    "override",
    [
        "train.max_steps=-1",
        "train.batch_size=0",
        "prior_langevin.steps=-5",
        "prior_langevin.step_size=0",
        "posterior_langevin.step_size=-0.1",
        "model.sigma=0",
        "model.z_dims=2,0",
        "ebm.nef=-1",
        "model.kl_warmup=-1",
        "method=magic",
    ],
)
def test_validate_rejects_bad_values(override):
    cfg = get_config("toy012_joint", profile="cpu")
    with pytest.raises(ConfigError):
        apply_overrides(cfg, [override])


def test_kl_warmup_is_refused_where_it_would_be_ignored():
    cfg = get_config("toy012_lebm", profile="cpu")
    with pytest.raises(ConfigError, match="model.kl_warmup=0"):
        apply_overrides(cfg, ["model.kl_warmup=100"])
    assert apply_overrides(get_config("mnist_vlae", profile="cpu"), ["model.kl_warmup=100"]).model.kl_warmup == 100


def test_validate_directly():
    cfg = get_config("toy012_joint", profile="cpu")
    validate(cfg)
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=-3))
    with pytest.raises(ConfigError, match="max_steps"):
        validate(bad)
    validate(ExperimentConfig())  # the plain defaults are valid


def test_section_timer_counts_cpu_and_wall_time_per_section():
    import time

    from jebm_lite.runtime import SectionTimer

    timed = SectionTimer()
    with timed("busy"):
        t_end = time.process_time() + 0.05
        while time.process_time() < t_end:  # burn CPU time on purpose: the section must count it
            pass
    with timed("sleep"):
        time.sleep(0.05)
    rows = timed.rows()
    assert list(rows) == ["busy", "sleep"]
    assert rows["busy"]["CPU (s)"] >= 0.05 and rows["busy"]["wall (s)"] >= rows["busy"]["CPU (s)"] - 0.01
    assert rows["sleep"]["wall (s)"] >= 0.05 and rows["sleep"]["CPU (s)"] < 0.04
    with timed("busy"):  # timing a section again adds to it
        time.sleep(0.02)
    assert timed.rows()["busy"]["wall (s)"] >= rows["busy"]["wall (s)"] + 0.02
