"""The fast path of the prior Langevin sampler (paper Eqs. 13-14) computes the plain path's chain.

The fast path replaces autograd by a hand-written backward pass of the EnergyMLP and, for spectral
norm in train mode, runs the power iterations of a block of steps at once. These tests check that the
chain, the recorded log-densities / energies / gradient norms and the spectral-norm state ``u`` / ``v``
(the EBM's training behaviour) agree with the plain autograd path started from the same seed.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from jebm_lite import sampling
from jebm_lite.models.ebm import EnergyMLP, JointEBMPrior
from jebm_lite.sampling import fast_path_default, sample_layer, sample_prior, use_fast_path

ATOL = 1e-5

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _pair(z_dims=(2, 2, 2, 10), nef=50, layers=4, activation="lrelu", sn=True, train=True, seed=0,
          device="cpu", dtype=torch.float32):
    """Two identical priors (the second a deep copy), so that both paths start from the same u / v."""
    torch.manual_seed(seed)
    prior = JointEBMPrior(z_dims, EnergyMLP(sum(z_dims), nef, layers, activation=activation, spectral_norm=sn))
    prior = prior.to(device=device, dtype=dtype).train(train)
    return prior, copy.deepcopy(prior)


def _gen(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _assert_same_state(a: nn.Module, b: nn.Module, atol: float = ATOL) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=atol, rtol=0, msg=k)


def _assert_same_trace(a, b, atol: float = ATOL) -> None:
    torch.testing.assert_close(a.z, b.z, atol=atol, rtol=0)
    torch.testing.assert_close(a.grad_norm, b.grad_norm, atol=atol, rtol=0)
    for x, y in ((a.chain, b.chain), (a.log_prob, b.log_prob), (a.energy, b.energy)):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, atol=atol, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("sn", [True, False], ids=["sn", "nosn"])
@pytest.mark.parametrize("activation", ["lrelu", "gelu", "silu"])
def test_fast_chain_equals_plain_chain(activation, sn, train, device):
    plain, fast = _pair(activation=activation, sn=sn, train=train, device=device)
    a = sample_prior(plain, 100, 60, 0.4, generator=_gen(1, device), fast=False, record=True)
    b = sample_prior(fast, 100, 60, 0.4, generator=_gen(1, device), fast=True, record=True)
    _assert_same_trace(a, b)
    _assert_same_state(plain, fast)  # same number of power iterations, same u / v
    # No bit-equality claim: autograd's backward and the hand-derived one are different computations, whose
    # last bits depend on the CPU's kernel dispatch (equal on one machine, 1 ulp apart on the next).


@pytest.mark.parametrize("shape", [((10,) * 5, 100, 2), ((2, 2), 16, 1), ((3,), 8, 3)])
def test_fast_equals_plain_for_other_shapes_without_record(shape):
    z_dims, nef, layers = shape
    plain, fast = _pair(z_dims, nef, layers, train=True)
    a = sample_prior(plain, 37, 100, 0.3, generator=_gen(2), fast=False)
    b = sample_prior(fast, 37, 100, 0.3, generator=_gen(2), fast=True)
    assert a.chain is None and b.chain is None
    _assert_same_trace(a, b)
    _assert_same_state(plain, fast)


def test_train_mode_runs_one_power_iteration_per_step():
    """After T fast steps, u / v are those of T plain forward passes (T + 1 with a recorded end)."""
    for record, calls in ((False, 25), (True, 26)):
        ref, fast = _pair(train=True)
        with torch.no_grad():
            for _ in range(calls):
                ref.energy(torch.zeros(1, ref.d))
        before = copy.deepcopy(fast.state_dict())
        sample_prior(fast, 8, 25, 0.4, record=record, fast=True)
        _assert_same_state(ref, fast)
        assert not torch.equal(before["energy.net.0.parametrizations.weight.0._u"],
                               fast.state_dict()["energy.net.0.parametrizations.weight.0._u"])


def test_eval_mode_leaves_spectral_norm_state_alone():
    _, prior = _pair(train=False)
    before = copy.deepcopy(prior.state_dict())
    sample_prior(prior, 8, 10, 0.4, fast=True, record=True)
    for k, v in prior.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_chains_longer_than_one_block(monkeypatch):
    monkeypatch.setattr(sampling, "_CHUNK", 7)
    plain, fast = _pair(train=True)
    a = sample_prior(plain, 16, 23, 0.4, generator=_gen(3), fast=False, record=True)
    b = sample_prior(fast, 16, 23, 0.4, generator=_gen(3), fast=True, record=True)
    _assert_same_trace(a, b)
    _assert_same_state(plain, fast)


def test_param_schedule_equals_repeated_forward_weights():
    ref, sched = _pair(train=True, dtype=torch.float64)
    ws = [ref.energy.effective_params() for _ in range(12)]
    block = sched.energy.param_schedule(12)
    for t in range(12):
        for (w, b), (wt, bt) in zip(ws[t], block):
            torch.testing.assert_close(wt[t], w, atol=1e-12, rtol=0)
            assert torch.equal(bt, b)
    _assert_same_state(ref, sched, atol=1e-12)


def test_value_and_grad_equals_autograd():
    for act in ("lrelu", "gelu", "silu"):
        torch.manual_seed(0)
        e = EnergyMLP(7, 20, 3, activation=act).eval()
        z = torch.randn(11, 7, requires_grad=True)
        (g,) = torch.autograd.grad(e(z).sum(), z)
        f2, g2 = e.value_and_grad(z.detach())
        torch.testing.assert_close(f2, e(z).detach(), atol=1e-6, rtol=0)
        torch.testing.assert_close(g2, g, atol=1e-6, rtol=0)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_sample_layer_fast_equals_plain(train):
    plain, fast = _pair(train=train)
    zs = plain.split(torch.randn(9, plain.d, generator=_gen(4)))
    for layer in (0, 3, -2):
        a = sample_layer(plain, zs, layer, 30, 0.4, generator=_gen(5), fast=False, record=True)
        b = sample_layer(fast, zs, layer, 30, 0.4, generator=_gen(5), fast=True, record=True)
        _assert_same_trace(a, b)
    _assert_same_state(plain, fast)


def test_z0_inference_mode_and_no_side_effects():
    _, prior = _pair(train=True)
    z0 = torch.randn(6, prior.d)
    z0_copy = z0.clone()
    with torch.inference_mode():
        tr = sample_prior(prior, 6, 5, 0.4, z0=z0, fast=True)
    with torch.no_grad():
        tr2 = sample_prior(prior, 6, 5, 0.4, z0=z0, fast=True, record=True)
    for t in (tr, tr2):
        assert not t.z.requires_grad and t.z.grad_fn is None and torch.isfinite(t.z).all()
    assert all(p.grad is None for p in prior.parameters())
    assert all(m.training for m in prior.modules())
    assert torch.equal(z0, z0_copy)


def test_inside_parametrize_cached_the_weights_are_fixed_in_both_paths():
    plain, fast = _pair(train=True)
    with parametrize.cached():
        a = sample_prior(plain, 10, 15, 0.4, generator=_gen(6), fast=False, record=True)
    with parametrize.cached():
        b = sample_prior(fast, 10, 15, 0.4, generator=_gen(6), fast=True, record=True)
    _assert_same_trace(a, b)
    _assert_same_state(plain, fast)


class _Quadratic(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.in_dim = d
        self.q = nn.Parameter(torch.eye(d))

    def forward(self, z):
        return -0.5 * ((z @ self.q) * z).sum(1)


def test_fallback_to_plain_path():
    """Other energies, hooks, in-place activations and autocast run the plain path (same result)."""
    torch.manual_seed(0)
    prior = JointEBMPrior((3,), _Quadratic(3))
    a = sample_prior(prior, 5, 10, 0.4, generator=_gen(7), fast=True)
    b = sample_prior(prior, 5, 10, 0.4, generator=_gen(7), fast=False)
    assert torch.equal(a.z, b.z)  # the fallback is the plain path itself: same kernels, same bits

    e = EnergyMLP(4, 8, 2)
    assert e.supports_value_and_grad() and e.can_schedule()
    calls = []
    e.net[1].register_forward_hook(lambda *args: calls.append(1))
    assert not e.supports_value_and_grad()
    sample_prior(JointEBMPrior((4,), e), 3, 4, 0.4, fast=True)
    assert len(calls) == 4  # the hook saw every step: plain path
    e2 = EnergyMLP(4, 8, 2)
    e2.net[1] = nn.LeakyReLU(0.2, inplace=True)
    assert not e2.supports_value_and_grad()
    assert not EnergyMLP(4, 8, 2, spectral_norm=False).can_schedule()

    plain, fast = _pair(train=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = sample_prior(plain, 4, 5, 0.4, generator=_gen(8), fast=False)
        b = sample_prior(fast, 4, 5, 0.4, generator=_gen(8), fast=True)
    assert torch.equal(a.z, b.z)  # both ran the plain path: the same kernels, so the same bits


def test_default_and_switch():
    assert fast_path_default() is True
    calls = []
    orig = sampling._run_fast

    def spy(*args, **kw):
        calls.append(1)
        return orig(*args, **kw)

    sampling._run_fast = spy
    try:
        _, prior = _pair()
        sample_prior(prior, 3, 2, 0.4)
        assert len(calls) == 1
        with use_fast_path(False):
            assert fast_path_default() is False
            sample_prior(prior, 3, 2, 0.4)
            sample_prior(prior, 3, 2, 0.4, fast=True)
        assert fast_path_default() is True
        assert len(calls) == 2
    finally:
        sampling._run_fast = orig


def test_learner_training_step_is_unchanged():
    """One joint-learner iteration (paper Algorithm 1) with the fast and the plain prior chains."""
    from jebm_lite.config import get_config
    from jebm_lite.training.learners import build_learner

    cfg = get_config("toy012_joint", profile="ci", overrides={"prior_langevin.steps": 15})
    results = []
    for fast in (False, True):
        torch.manual_seed(0)
        learner = build_learner(cfg, "cpu")
        x = torch.rand(8, 1, 28, 28) * 2 - 1
        torch.manual_seed(1)
        with use_fast_path(fast):
            metrics = [{k: float(v) for k, v in learner.train_step(x, step).items()} for step in (1, 2)]
        results.append((learner, metrics))
    (l1, m1), (l2, m2) = results
    for a, b in zip(m1, m2):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
    _assert_same_state(l1.prior, l2.prior)


# ----------------------------------------------------------------------------------------------
# the captured chain (CUDA graphs)
# ----------------------------------------------------------------------------------------------


def test_graph_request_falls_back_to_the_eager_fast_chain_off_cuda():
    """graph=True on the CPU (or with record / a generator) is the eager fast chain, bit for bit."""
    a, b = _pair()
    torch.manual_seed(3)
    ta = sample_prior(a, 16, 20, 0.4, graph=True)
    torch.manual_seed(3)
    tb = sample_prior(b, 16, 20, 0.4)
    # exact: graph=True off CUDA runs the very same eager kernels in the same order, on any CPU
    assert torch.equal(ta.z, tb.z) and torch.equal(ta.grad_norm, tb.grad_norm)
    _assert_same_state(a, b, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (make gpu-check runs it)")
@pytest.mark.parametrize("sn,train", [(True, True), (True, False), (False, True)])
def test_captured_chain_equals_the_eager_chain_on_fresh_inputs(sn, train):
    """Without noise the chain is deterministic: the replayed graph equals the eager fast chain (float32
    tolerance) for new starting points, leaves the spectral-norm state where the eager chain does, and sees
    weights changed in place (as an optimiser step changes them) on the next replay."""
    a, b = _pair(sn=sn, train=train, device="cuda")
    for rep in range(3):
        z0 = torch.randn(64, a.d, device="cuda", generator=_gen(10 + rep, "cuda"))
        ta = sample_prior(a, 64, 30, 0.4, noise=False, z0=z0, graph=True)
        tb = sample_prior(b, 64, 30, 0.4, noise=False, z0=z0)
        _assert_same_trace(ta, tb, atol=1e-5)
        _assert_same_state(a, b, atol=1e-5)
        with torch.no_grad():  # an in-place update, as Adam's
            for p, q in zip(a.parameters(), b.parameters()):
                p.mul_(1.01)
                q.mul_(1.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (make gpu-check runs it)")
def test_captured_chain_with_noise_samples_the_same_distribution():
    """With noise the replay draws from the default CUDA generator: fresh noise on every replay, and the
    final states' moments agree with the eager chain's over 4096 chains."""
    a, b = _pair(device="cuda")
    t1 = sample_prior(a, 4096, 60, 0.4, graph=True)
    t2 = sample_prior(a, 4096, 60, 0.4, graph=True)
    assert not torch.allclose(t1.z, t2.z)
    te = sample_prior(b, 4096, 60, 0.4)
    torch.testing.assert_close(t1.z.mean(0), te.z.mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(t1.z.std(0), te.z.std(0), atol=0.1, rtol=0)
