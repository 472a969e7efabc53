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
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ..runtime import ConfigError

ACTIVATIONS = ("lrelu", "gelu", "silu")


def _activation(name: str) -> nn.Module:
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
            mods += [linear(width, self.nef), _activation(activation)]
            width = self.nef
        mods.append(linear(width, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, z: Tensor) -> Tensor:
        """f(z): ``z: (B, in_dim)`` -> ``(B,)``."""
        return self.net(z).squeeze(-1)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, nef={self.nef}, layers={self.n_layers}, "
            f"activation={self.activation!r}, spectral_norm={self.spectral_norm}"
        )


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
        """log p_alpha(z) + log Z(alpha) + (d/2) log(2 pi) = f(z) - ||z||^2 / 2 (paper Eq. 14 target).

        ``(B, d)`` or the per-layer list -> ``(B,)``.
        """
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
