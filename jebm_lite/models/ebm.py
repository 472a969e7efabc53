"""The joint latent-space EBM prior (paper Eq. 3) and its energy network f_alpha.

    p_alpha(z) = exp(f_alpha([z_1, ..., z_L])) N(z; 0, I) / Z(alpha)

``f`` is the *negative* energy (see CONTRIBUTING.md): larger ``f`` means more probable. One MLP reads
the concatenation of all layers (bottom to top), so it can model both the relations inside a layer and
the relations between layers. ``energy=None`` gives f = 0, i.e. the plain N(0, I) prior of VLAE
(``EBMConfig.nef == 0``).

Note on spectral norm: with spectral norm on every Linear layer and 1-Lipschitz activations, f is
(up to the power-iteration estimate) 1-Lipschitz, so ||grad f|| <= 1. The stationary points of
log p = f(z) - ||z||^2 / 2 satisfy z = grad f(z), hence every mode of p_alpha lies in the unit ball
||z|| <= 1. This is the reference setting (``hre``: SN on, EBM tilts a Gaussian gently); toy problems
whose modes lie far from the origin need ``spectral_norm=False`` (as in LEBM).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from jebm_lite.config import ACTIVATIONS
from jebm_lite.runtime import ConfigError


def make_activation(name: str) -> nn.Module:
    """The activation module of ``ebm.activation`` (one of :data:`jebm_lite.config.ACTIVATIONS`)."""
    if name == "lrelu":
        return nn.LeakyReLU(0.2)
    if name == "gelu":
        return nn.GELU()
    if name == "silu":
        return nn.SiLU()
    raise ConfigError(f"Unknown EBM activation {name!r}; use one of {', '.join(ACTIVATIONS)} (ebm.activation).")


class EnergyMLP(nn.Module):
    """f_alpha: an MLP from the concatenated latent code to a scalar negative energy.

    ``layers`` hidden ``Linear`` layers of width ``nef``, each followed by the activation, then
    ``Linear(nef, 1)``. With ``spectral_norm`` every Linear is wrapped in
    :func:`torch.nn.utils.parametrizations.spectral_norm` (as ``add_sn`` in the reference code; in
    train mode every forward pass, including each Langevin step, runs one power iteration).

    Reference sizes: ``EnergyMLP(16, 50, 4)`` (``hre:train_hs.py``, 8,551 parameters) and
    ``EnergyMLP(50, 100, 2)`` (``hre:train_fid.py``, 15,301 parameters).

    Args:
        in_dim: d = sum of the latent sizes of all layers.
        nef: hidden width (> 0).
        layers: number of hidden layers (>= 1).
        activation: ``lrelu`` (slope 0.2) | ``gelu`` | ``silu``.
        spectral_norm: wrap every Linear in spectral norm.
    """

    def __init__(
        self,
        in_dim: int,
        nef: int = 50,
        layers: int = 4,
        activation: str = "lrelu",
        spectral_norm: bool = True,
    ) -> None:
        super().__init__()
        if in_dim < 1 or nef < 1 or layers < 1:
            raise ConfigError(
                f"EnergyMLP needs in_dim >= 1, nef >= 1 and layers >= 1 (got {in_dim}, {nef}, {layers}); "
                "use nef=0 in EBMConfig for 'no EBM'."
            )
        self.in_dim = int(in_dim)
        self.nef = int(nef)
        self.n_layers = int(layers)
        self.activation = activation
        self.spectral_norm = bool(spectral_norm)

        def linear(i: int, o: int) -> nn.Module:
            lin = nn.Linear(i, o)
            return _spectral_norm(lin) if spectral_norm else lin

        mods: list[nn.Module] = []
        width = self.in_dim
        for _ in range(self.n_layers):
            mods += [linear(width, self.nef), make_activation(activation)]
            width = self.nef
        mods.append(linear(width, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, z: Tensor) -> Tensor:
        """f(z): ``z: (B, in_dim)`` -> ``(B,)``."""
        return self.net(z).squeeze(-1)

    # -- the fast path of the prior Langevin sampler (see jebm_lite.sampling) ---------------------

    def _layers(self) -> tuple[list[nn.Linear], list[nn.Module]] | None:
        """The Linear layers and activations of ``net``, or ``None`` if ``net`` is not the plain
        ``[Linear, act] * layers + [Linear]`` stack that :meth:`value_and_grad` understands."""
        mods = list(self.net)
        lins, acts = mods[0::2], mods[1::2]
        if len(lins) != len(acts) + 1:
            return None
        for lin in lins:
            # nn.Linear, or its parametrized subclass (parametrizations.spectral_norm); not the old
            # hook-based torch.nn.utils.spectral_norm (``weight_orig``) nor anything with hooks
            plain = type(lin) is nn.Linear or (isinstance(lin, nn.Linear) and parametrize.is_parametrized(lin))
            if not plain or hasattr(lin, "weight_orig") or _forward_hooks(lin):
                return None
            if parametrize.is_parametrized(lin, "bias"):
                return None
        for act in acts:
            if type(act) not in (nn.LeakyReLU, nn.SiLU, nn.GELU) or getattr(act, "inplace", False):
                return None
            if _forward_hooks(act):
                return None
        return lins, acts

    def supports_value_and_grad(self) -> bool:
        """Whether :meth:`value_and_grad` applies (the stack built by ``__init__``, no hooks)."""
        return self._layers() is not None and not _forward_hooks(self) and not _forward_hooks(self.net)

    @property
    def weights_vary_per_call(self) -> bool:
        """True when every forward pass changes the weights it uses: a parametrization (spectral norm)
        in train mode runs one power iteration per call and updates its ``u`` / ``v`` buffers in place
        (not inside :func:`torch.nn.utils.parametrize.cached`, where the weights are fixed)."""
        if getattr(parametrize, "_cache_enabled", 0):
            return False
        layers = self._layers()
        lins = layers[0] if layers is not None else []
        return any(parametrize.is_parametrized(lin, "weight") and lin.parametrizations.weight.training for lin in lins)

    def effective_params(self) -> list[tuple[Tensor, Tensor | None]]:
        """The ``(W, b)`` each Linear uses in the next forward pass, detached.

        With spectral norm, ``W = W_orig / sigma`` is computed by the very parametrization module that
        ``forward`` calls, so in train mode this runs exactly one power iteration per Linear (and
        updates ``u`` / ``v``), as one ``forward`` would. ``W: (out, in)``, ``b: (out,)``.
        """
        layers = self._layers()
        if layers is None:
            raise RuntimeError("effective_params needs the plain Linear/activation stack of EnergyMLP")
        with torch.no_grad():
            return [(lin.weight.detach(), None if lin.bias is None else lin.bias.detach()) for lin in layers[0]]

    def can_schedule(self) -> bool:
        """Whether :meth:`param_schedule` applies: every Linear carries exactly the spectral norm of
        :func:`torch.nn.utils.parametrizations.spectral_norm` with one power iteration per call."""
        layers = self._layers()
        return layers is not None and all(_plain_spectral_norm(lin) is not None for lin in layers[0])

    def param_schedule(self, calls: int) -> list[tuple[Tensor, Tensor | None]]:
        """The weights of the next ``calls`` train-mode forward passes, all at once.

        Spectral norm in train mode runs one power iteration per forward pass (``u <- N(W v)``,
        ``v <- N(W^T u)``, ``N(x) = x / max(||x||, eps)``) and then uses ``W / sigma`` with
        ``sigma = u^T W v``. The iterates do not depend on the input, so the ``calls`` iterations are
        run here for all layers together (zero-padded to one batch: ``v <- N(W^T W v)``, a few small
        kernels per iteration for all layers), the ``sigma`` of every call follows in one batched
        product, and ``u`` / ``v`` are left where ``calls`` forward passes would leave them. Equal to
        ``calls`` calls of :meth:`effective_params` up to float round-off (~1e-7 relative: ``W^T W v``
        is formed in a different order).

        Returns:
            per Linear ``(W_t, b)`` with ``W_t: (calls, out, in)`` (``W_t[t]`` is the weight of call
            ``t``) and ``b: (out,)``.
        """
        layers = self._layers()
        sns = [_plain_spectral_norm(lin) for lin in layers[0]] if layers is not None else [None]
        if any(sn is None for sn in sns) or calls < 1:
            raise RuntimeError("param_schedule needs spectral norm (one power iteration) on every Linear")
        lins = layers[0]
        with torch.no_grad():
            ws = [lin.parametrizations.weight.original.detach() for lin in lins]
            n_l = len(ws)
            o_max = max(w.shape[0] for w in ws)
            i_max = max(w.shape[1] for w in ws)
            wp = ws[0].new_zeros(n_l, o_max, i_max)
            v = ws[0].new_zeros(n_l, 1, i_max)
            for k, (w, sn) in enumerate(zip(ws, sns)):
                wp[k, : w.shape[0], : w.shape[1]] = w
                v[k, 0, : w.shape[1]] = sn._v
            # (L, 1, 1), built by fill kernels (no host-to-device copy: the chain may be captured as a CUDA graph)
            eps = torch.stack([wp.new_full((1, 1), sn.eps) for sn in sns])
            m = wp.transpose(1, 2).bmm(wp)  # W^T W, (L, i_max, i_max), symmetric; zero padding stays zero
            vs = [v]
            for _ in range(calls):
                # (W^T W) v as a broadcast product and a row sum: a batched matrix-vector product is
                # one of the slowest kernels for these sizes (one column)
                v = (m * v).sum(dim=2).unsqueeze(1)
                v = v / torch.maximum(v.norm(dim=2, keepdim=True), eps)
                vs.append(v)
            vv = torch.stack(vs).transpose(2, 3)  # (calls + 1, L, i_max, 1)
            wv = torch.matmul(wp, vv)  # W v_t: (calls + 1, L, o_max, 1)
            u = wv[:-1] / torch.maximum(wv[:-1].norm(dim=2, keepdim=True), eps)  # u_t = N(W v_{t-1})
            sigma = (u * wv[1:]).sum(dim=(2, 3))  # u_t^T W v_t: (calls, L)
            out = []
            for k, (lin, w, sn) in enumerate(zip(lins, ws, sns)):
                sn._u.copy_(u[-1, k, : w.shape[0], 0])
                sn._v.copy_(vv[-1, k, : w.shape[1], 0])
                out.append((w / sigma[:, k, None, None], None if lin.bias is None else lin.bias.detach()))
            return out

    def value_and_grad(
        self, z: Tensor, params: list[tuple[Tensor, Tensor | None]] | None = None, value: bool = True
    ) -> tuple[Tensor | None, Tensor]:
        """f(z) and grad_z f(z) without autograd: ``z: (B, in_dim)`` -> ``((B,), (B, in_dim))``.

        A forward pass that keeps the pre-activations, then the chain rule by hand with the same ATen
        kernels autograd would call (``mm`` with W, ``*_backward`` of the activation), so the result
        equals ``torch.autograd.grad(f(z).sum(), z)`` up to floating-point summation order (in
        practice bit for bit). ``params`` comes from :meth:`effective_params` (called here if
        ``None``). The caller decides how often to refresh ``params``: once per call of ``forward``
        keeps the spectral-norm power iterations identical to the autograd path. With
        ``value=False`` the output layer's forward is skipped and ``None`` is returned for f.
        """
        layers = self._layers()
        if layers is None:
            raise RuntimeError("value_and_grad needs the plain Linear/activation stack of EnergyMLP")
        _, acts = layers
        if params is None:
            params = self.effective_params()
        with torch.no_grad():
            h = z
            pre: list[Tensor] = []
            for (w, b), act in zip(params[:-1], acts):
                a = nn.functional.linear(h, w, b)
                pre.append(a)
                h = act(a)
            w_out, b_out = params[-1]
            f = nn.functional.linear(h, w_out, b_out).squeeze(-1) if value else None
            # d f / d h_last = the single row of W_out, one copy per chain
            g = w_out.expand(z.shape[0], w_out.shape[1])
            for (w, _), act, a in zip(reversed(params[:-1]), reversed(acts), reversed(pre)):
                g = _act_backward(act, g, a).mm(w)
        return f, g

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, nef={self.nef}, layers={self.n_layers}, "
            f"activation={self.activation!r}, spectral_norm={self.spectral_norm}"
        )


def _plain_spectral_norm(lin: nn.Module) -> nn.Module | None:
    """The ``_SpectralNorm`` parametrization of ``lin.weight`` when it is the only one, works on a 2-D
    weight along dim 0 and runs one power iteration per call (what :meth:`EnergyMLP.param_schedule`
    reproduces); else ``None``."""
    if not parametrize.is_parametrized(lin, "weight"):
        return None
    plist = lin.parametrizations.weight
    if len(plist) != 1 or plist.original.ndim != 2:
        return None
    sn = plist[0]
    if type(sn).__name__ != "_SpectralNorm" or getattr(sn, "n_power_iterations", None) != 1:
        return None
    if getattr(sn, "dim", None) != 0 or not hasattr(sn, "_u") or not hasattr(sn, "_v"):
        return None
    return sn


def _forward_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def _act_backward(act: nn.Module, grad: Tensor, a: Tensor) -> Tensor:
    """grad * act'(a), with the kernel autograd uses for ``act``."""
    if isinstance(act, nn.LeakyReLU):
        return torch.ops.aten.leaky_relu_backward(grad, a, act.negative_slope, False)
    if isinstance(act, nn.GELU):
        return torch.ops.aten.gelu_backward(grad, a, approximate=act.approximate)
    if isinstance(act, nn.SiLU):
        return torch.ops.aten.silu_backward(grad, a)
    raise TypeError(f"no hand-written backward for {type(act).__name__}")


class JointEBMPrior(nn.Module):
    """The joint EBM prior of paper Eq. 3 on an N(0, I) base.

    ``p_alpha(z) = exp(f([z_1, ..., z_L])) N(z; 0, I) / Z(alpha)`` with ``z_dims`` the per-layer sizes,
    bottom (z_1, next to x) to top (z_L). With ``energy=None``, f = 0 and the prior is exactly N(0, I).

    Args:
        z_dims: per-layer latent sizes, bottom to top.
        energy: f_alpha, a module mapping ``(B, d)`` to ``(B,)`` with ``d = sum(z_dims)``, or ``None``.
    """

    def __init__(self, z_dims: Sequence[int], energy: nn.Module | None = None) -> None:
        super().__init__()
        self.z_dims: tuple[int, ...] = tuple(int(k) for k in z_dims)
        if not self.z_dims or any(k < 1 for k in self.z_dims):
            raise ConfigError(f"z_dims must be a non-empty tuple of positive sizes, got {tuple(z_dims)!r}")
        in_dim = getattr(energy, "in_dim", None)
        if energy is not None and in_dim is not None and in_dim != self.d:
            raise ConfigError(
                f"The energy network reads {in_dim} inputs but sum(z_dims) = {self.d}; "
                f"build it as EnergyMLP(in_dim={self.d}, ...)."
            )
        self.energy = energy

    @classmethod
    def from_config(cls, z_dims: Sequence[int], ebm_cfg) -> JointEBMPrior:
        """Build from an :class:`~jebm_lite.config.EBMConfig`; ``nef == 0`` gives ``energy=None``."""
        d = sum(int(k) for k in z_dims)
        if ebm_cfg.nef == 0:
            return cls(z_dims, None)
        energy = EnergyMLP(
            d, nef=ebm_cfg.nef, layers=ebm_cfg.layers, activation=ebm_cfg.activation,
            spectral_norm=ebm_cfg.spectral_norm,
        )
        return cls(z_dims, energy)

    @property
    def d(self) -> int:
        """Total latent size ``sum(z_dims)``."""
        return sum(self.z_dims)

    @property
    def n_layers(self) -> int:
        return len(self.z_dims)

    @property
    def has_energy(self) -> bool:
        """Whether there is an EBM term (``energy is not None``)."""
        return self.energy is not None

    def cat(self, zs: Sequence[Tensor] | Tensor) -> Tensor:
        """Per-layer list ``[(B, z_dims[i])]`` (bottom to top) -> ``(B, d)``; a tensor passes through."""
        if isinstance(zs, Tensor):
            z = zs
        else:
            zs = list(zs)
            if len(zs) != self.n_layers:
                raise ValueError(f"expected {self.n_layers} layers, got {len(zs)}")
            z = torch.cat([t.flatten(1) for t in zs], dim=1)
        if z.dim() != 2 or z.shape[1] != self.d:
            raise ValueError(f"expected a (B, {self.d}) latent, got shape {tuple(z.shape)}")
        return z

    def split(self, z: Tensor) -> list[Tensor]:
        """``(B, d)`` -> per-layer list ``[(B, z_dims[i])]``, bottom to top (views of ``z``)."""
        return list(torch.split(self.cat(z), self.z_dims, dim=1))

    def f(self, z_or_zs: Tensor | Sequence[Tensor]) -> Tensor:
        """The negative energy f_alpha(z): ``(B, d)`` or the per-layer list -> ``(B,)`` (0 without EBM)."""
        z = self.cat(z_or_zs)
        if self.energy is None:
            return z.new_zeros(z.shape[0])
        return self.energy(z)

    def forward(self, z_or_zs: Tensor | Sequence[Tensor]) -> Tensor:
        """Same as :meth:`f`."""
        return self.f(z_or_zs)

    def log_prob_unnorm(self, z_or_zs: Tensor | Sequence[Tensor]) -> Tensor:
        """log p_alpha(z) + log Z(alpha) + (d/2) log(2 pi) = f(z) - ||z||^2 / 2 (paper Eq.
        14 target).

        ``(B, d)`` or the per-layer list -> ``(B,)``. """
        z = self.cat(z_or_zs)
        return self.f(z) - 0.5 * z.pow(2).sum(dim=1)

    def sample_base(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """n draws from the base p_0 = N(0, I): ``(n, d)``."""
        if device is None:
            device = self.device
        return torch.randn(n, self.d, device=device, generator=generator)

    @property
    def device(self) -> torch.device:
        """Device of the energy network's parameters (CPU when there are none)."""
        for p in self.parameters():
            return p.device
        return torch.device("cpu")
