"""The CPU speed-ups (issue 23): fused Adam and bf16 autocast are switches with a float32 fallback, they
change the numbers only by rounding, and the numerics check applies its rule as written."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from benchmarks import numerics
from jebm_lite import runtime
from jebm_lite.config import get_config
from jebm_lite.runtime import bf16_autocast, bf16_native, cpu_flags, seed_everything
from jebm_lite.training.learners import _adam, build_learner

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NATIVE = frozenset({"avx512f", "avx512_bf16"})
NONE = frozenset({"avx2", "fma"})


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "sse", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_bf16_native_follows_the_cpu_flags():
    assert bf16_native("cpu", NATIVE) and bf16_native("cpu", frozenset({"amx_bf16"}))
    assert not bf16_native("cpu", NONE) and not bf16_native("meta", NATIVE)


def test_bf16_autocast_falls_back_to_float32_with_one_warning(monkeypatch):
    monkeypatch.setattr(runtime, "_BF16_WARNED", set())
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with pytest.warns(UserWarning, match="no native bfloat16; training in float32"):
        with bf16_autocast("cpu", True, NONE):
            assert lin(x).dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second time: silent
        with bf16_autocast("cpu", True, NONE):
            pass  # entering the context is what is tested: no second warning (an error under this filter)
        with bf16_autocast("cpu", True, NATIVE):
            assert lin(x).dtype == torch.bfloat16
        with bf16_autocast("cpu", False, NATIVE):
            assert lin(x).dtype == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_learner_autocasts_only_where_bf16_is_native(monkeypatch, native):
    monkeypatch.setattr(runtime, "cpu_flags", lambda *a: NATIVE if native else NONE)
    monkeypatch.setattr(runtime, "_BF16_WARNED", {"cpu"})
    seed_everything(0)
    learner = build_learner(get_config("mnist_joint", profile="ci", overrides={"train.amp_bf16": True}), "cpu")
    dtypes = []
    learner.generator.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    m = learner.train_step(torch.rand(8, 1, 28, 28) * 2 - 1, 1)
    assert dtypes == [torch.bfloat16 if native else torch.float32]
    assert all(math.isfinite(float(v)) for v in m.values())
    # the EBM and its chains stay float32 in both cases
    assert all(p.dtype == torch.float32 for p in learner.prior.parameters())


def test_bf16_iteration_is_close_to_float32(monkeypatch):
    """One iteration from the same state: bf16 autocast moves the loss by rounding only."""
    monkeypatch.setattr(runtime, "cpu_flags", lambda *a: NATIVE)
    losses = {}
    for amp in (False, True):
        seed_everything(0)
        learner = build_learner(get_config("mnist_joint", profile="ci", overrides={"train.amp_bf16": amp}), "cpu")
        seed_everything(1)
        losses[amp] = float(learner.train_step(torch.rand(16, 1, 28, 28) * 2 - 1, 1)["loss"])
    assert losses[True] == pytest.approx(losses[False], rel=2e-2)
    assert losses[True] != losses[False]  # it did compute in bf16


def test_fused_adam_is_the_switch_and_equals_the_loop():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(50, 40)), torch.nn.Parameter(torch.randn(40))]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    fused, loop = _adam(ps, 1e-3, (0.0, 0.9), 5e-4, fused=True), _adam(qs, 1e-3, (0.0, 0.9), 5e-4, fused=False)
    assert fused.param_groups[0]["fused"] is True and not loop.param_groups[0]["fused"]
    for _ in range(5):
        g = [torch.randn_like(p) for p in ps]
        for p, q, gi in zip(ps, qs, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        fused.step()
        loop.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # a run keeps the Adam it started with: a loop checkpoint resumes as the loop
    again = _adam(ps, 1e-3, (0.0, 0.9), 5e-4, fused=True)
    again.load_state_dict(loop.state_dict())
    assert not again.param_groups[0]["fused"]


def test_learners_follow_optim_fused():
    for fused in (True, False):
        learner = build_learner(get_config("mnist_joint", profile="ci", overrides={"optim.fused": fused}), "cpu")
        assert {bool(o.param_groups[0]["fused"]) for o in learner.optimizers.values()} == {fused}


def test_numerics_rule():
    h = [{"step": s, "loss": float(s)} for s in range(1, 21)]
    assert numerics.window_means(h, 10) == [5.5, 15.5]
    ref = {"loss_windows": [100.0, 50.0], "accuracy": [30.0, 50.0]}
    close = {"loss_windows": [101.0, 50.5], "accuracy": [31.0, 49.0]}
    far = {"loss_windows": [110.0, 50.0], "accuracy": [30.0, 50.0]}
    d = numerics.compare(close, ref)
    assert d == pytest.approx({"loss_rel": 0.01, "acc_points": 1.0})
    small_drift = {"loss_rel": 0.001, "acc_points": 0.5}
    assert numerics.verdict(d, small_drift)["passes"]
    assert not numerics.verdict(numerics.compare(far, ref), small_drift)["passes"]
    # a drift between seeds larger than the floor widens the tolerance
    assert numerics.verdict(numerics.compare(far, ref), {"loss_rel": 0.2, "acc_points": 0.5})["passes"]
