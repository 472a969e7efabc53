"""The single-layer latent-space EBM of Pang et al. (NeurIPS 2020), the baseline of paper Problem I.

    p_alpha(z) = exp(f_alpha(z)) N(z; 0, I) / Z(alpha),   x ~ N(g_beta(z), sigma^2 I)

(paper Eq. 3 with L = 1, written with f = negative energy as everywhere in this library; ``lebm`` itself
writes E = -f). There is no inference network: the posterior is sampled by Langevin dynamics
(:mod:`jebm_lite.sampling`), so this module only holds the two networks.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from jebm_lite.models.ebm import JointEBMPrior
from jebm_lite.models.hierarchical import HierarchicalGenerator, build_hierarchical
from jebm_lite.runtime import ConfigError


class LEBM(nn.Module):
    """Generator + single-layer latent EBM prior.

    Args:
        generator: a one-layer :class:`~jebm_lite.models.hierarchical.HierarchicalGenerator`, or any module
            mapping ``z: (B, d)`` to images ``(B, C, H, W)`` in [-1, 1].
        prior: a :class:`~jebm_lite.models.ebm.JointEBMPrior` over one layer (built by the caller).
        z_dim: latent size d; inferred from ``generator.z_dims`` / ``prior.z_dims`` when not given.
    """

    def __init__(self, generator: nn.Module, prior: nn.Module, z_dim: int | None = None) -> None:
        super().__init__()
        self.generator = generator
        self.prior = prior
        if z_dim is None:
            dims = getattr(generator, "z_dims", None) or getattr(prior, "z_dims", None)
            if dims is None:
                raise ValueError("pass z_dim: neither the generator nor the prior has z_dims")
            z_dim = int(sum(dims))
        self.z_dim = int(z_dim)
        g_dims = getattr(generator, "z_dims", None)
        if g_dims is not None and len(g_dims) != 1:
            raise ValueError(f"LEBM needs a one-layer generator, got z_dims={tuple(g_dims)}")
        p_dims = getattr(prior, "z_dims", None)
        if p_dims is not None and sum(p_dims) != self.z_dim:
            raise ValueError(f"prior z_dims {tuple(p_dims)} do not sum to z_dim={self.z_dim}")

    @property
    def z_dims(self) -> tuple[int, ...]:
        """``(z_dim,)``: the one-layer list convention of the rest of the library."""
        return (self.z_dim,)

    def decode(self, z: Tensor | list[Tensor]) -> Tensor:
        """x_hat = g(z). ``z: (B, d)`` (or a one-element list) -> ``(B, C, H, W)`` in [-1, 1]."""
        if isinstance(z, (list, tuple)):
            if len(z) != 1:
                raise ValueError(f"LEBM has one latent layer, got {len(z)}")
            z = z[0]
        if isinstance(self.generator, HierarchicalGenerator):
            return self.generator([z])
        return self.generator(z)

    def forward(self, z: Tensor) -> Tensor:
        """Same as :meth:`decode`."""
        return self.decode(z)

    @classmethod
    def from_config(cls, cfg: Any, image_shape: tuple[int, int, int] | None = None) -> LEBM:
        """Build from an :class:`~jebm_lite.config.ExperimentConfig`.

        The generator comes from :func:`~jebm_lite.models.hierarchical.build_hierarchical` with
        ``cfg.model`` (preset ``lebm_mnist`` unless ``cfg.model.preset`` names another one-layer-capable
        preset); the prior from ``JointEBMPrior.from_config(z_dims, cfg.ebm)``.
        """
        gen, _ = build_hierarchical(cfg.model, image_shape)
        if gen.n_layers != 1:
            raise ConfigError(
                f"LEBM needs one latent layer; model.preset={cfg.model.preset!r} gave z_dims={gen.z_dims} "
                "(use model.preset=lebm_mnist or model.z_dims=(d,))."
            )
        prior = JointEBMPrior.from_config(gen.z_dims, cfg.ebm)
        return cls(gen, prior)
