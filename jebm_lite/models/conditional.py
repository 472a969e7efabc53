"""A conditional-Gaussian latent hierarchy (LVAE / BIVA style), the model of paper Problem II.

Generative model (poster, Problem II), layers bottom (z_1, index 0) to top (z_L, index L-1), in the default
``topdown="markov"`` form::

    p(z) = N(z_L; 0, I) prod_{i<L} N(z_i; mu_i(z_{i+1}), diag sigma_i^2(z_{i+1})),   p(x | z_1)

sampled with explicit noise (the reparameterised top-down sampler of the paper's Fig. 1)::

    z_L = eps_L,   z_i = mu_i(z_{i+1}) + sigma_i(z_{i+1}) * eps_i,   eps_i ~ N(0, I)

Holding some eps_j fixed and redrawing one eps_i changes z_i and every layer below it, never the layers
above. :meth:`ConditionalHierarchy.eps_from_z` is the exact inverse ("whitening"), the u/eps-space of the
ICML 2024 follow-up.

Networks (dense, ELU, width ``hidden``):

* bottom-up: ``h_1 = MLP(x)`` (2 layers), ``h_{i+1} = MLP(h_i)`` (1 layer);
* top-down prior: ``t_i = MLP(z_{i+1})`` (2 layers), ``(mu_i, logvar_i) = Linear(t_i)``;
* inference (LVAE-style top-down, the merge is an MLP on the concatenation, not LVAE's precision
  weighting): ``q(z_L | x)`` from ``Linear(h_L)``, ``q(z_i | z_{i+1}, x)`` from ``MLP([h_i, t_i])``, so the
  top-down features t_i are shared by p and q as in LVAE / BIVA;
* decoder: ``MLP(z_1)`` (3 layers) giving Bernoulli logits on ``(x + 1) / 2`` or, with
  ``likelihood="gaussian"``, a mean in [-1, 1] (tanh) with fixed ``sigma``.

``topdown="deterministic"`` is the top-down pass of the BIVA / LVAE *code* (``biva/model/stage.py``,
reference report section 4): a deterministic top-down state ``d_i`` runs beside the latents::

    d_L = MLP(z_L),   d_i = MLP([z_i, d_{i+1}])   (2 layers each),
    p(z_i | z_{>i}) = N(mu_i(d_{i+1}), sigma_i^2(d_{i+1})),   (mu_i, logvar_i) = Linear(d_{i+1}),
    q(z_i | x, z_{>i}) from MLP([h_i, d_{i+1}]),   p(x | z) from MLP(d_1) (3 layers),

so every layer reaches the image through a deterministic path (skip connections), not only through the
noise of z_1; the top-down features t_i above are replaced by d_{i+1}. The eps parametrisation is the same
(``z_L = eps_L``, ``z_i = mu_i(d_{i+1}) + sigma_i(d_{i+1}) eps_i``), and so is every method's signature;
:meth:`~ConditionalHierarchy.decode` and :meth:`~ConditionalHierarchy.log_px` then need **all** layers
(a list ``[z_1, ..., z_L]``), and :meth:`~ConditionalHierarchy.prior_params` takes the state ``d_{i+1}``
instead of ``z_{i+1}``. The markov model is unchanged by this option (same parameters, created in the same
order, same operations).

Log-variances (of p and of q) are unconstrained Linear outputs **clamped to [-7, 2]**
(:data:`LOGVAR_RANGE`, sigma in [0.03, 2.7]). BIVA passes log-variances through a softplus, which forces
every sigma >= 1; that quirk is deliberately not reproduced (report section 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jebm_lite.runtime import ConfigError

LOGVAR_RANGE: tuple[float, float] = (-7.0, 2.0)
LIKELIHOODS = ("bernoulli", "gaussian")
CONDITIONAL_DEFAULTS: dict[str, tuple[int, ...]] = {
    "conditional6": (48, 40, 32, 24, 16, 8),  # BIVA's MNIST latent sizes (report section 4)
    "conditional3": (32, 16, 8),
}


def _split(t: Tensor) -> tuple[Tensor, Tensor]:
    mu, lv = t.chunk(2, dim=1)
    return mu, lv.clamp(*LOGVAR_RANGE)


TOPDOWNS = ("markov", "deterministic")


def _gauss_logpdf_nc(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, exp(logvar)) per dimension, without the -0.5 log(2 pi) constant."""
    return -0.5 * (logvar + (z - mu).pow(2) * torch.exp(-logvar))


class ConditionalHierarchy(nn.Module):
    """Dense L-layer conditional-Gaussian VAE with explicit eps per layer (paper Problem II; LVAE / BIVA).

    Args:
        image_shape: ``(C, H, W)``; images are in [-1, 1].
        z_dims: latent sizes, bottom (z_1) to top (z_L); 3-6 layers in the book (any L >= 1 works).
        hidden: width of every MLP.
        likelihood: ``"bernoulli"`` (logits on ``(x + 1) / 2``; non-binary targets are allowed) or
            ``"gaussian"`` (``N(x; tanh(.), sigma^2 I)``).
        sigma: the Gaussian likelihood's standard deviation.
        topdown: ``"markov"`` (z_{i+1} -> z_i -> ... -> z_1 -> x) or ``"deterministic"`` (a deterministic
            top-down state d_i carries every layer to the decoder; module docstring).
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (1, 28, 28),
        z_dims: Sequence[int] = (48, 40, 32, 24, 16, 8),
        hidden: int = 512,
        likelihood: str = "bernoulli",
        sigma: float = 0.3,
        topdown: str = "markov",
    ) -> None:
        super().__init__()
        self.image_shape: tuple[int, int, int] = tuple(int(s) for s in image_shape)  # type: ignore[assignment]
        self.z_dims: tuple[int, ...] = tuple(int(d) for d in z_dims)
        if len(self.image_shape) != 3:
            raise ConfigError(f"image_shape must be (C, H, W), got {tuple(image_shape)!r}")
        if not self.z_dims or any(d < 1 for d in self.z_dims):
            raise ConfigError(f"z_dims must be a non-empty tuple of positive sizes, got {tuple(z_dims)!r}")
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"likelihood={likelihood!r} is not one of {', '.join(LIKELIHOODS)}")
        if sigma <= 0 or hidden < 1:
            raise ConfigError("sigma must be > 0 and hidden >= 1")
        if topdown not in TOPDOWNS:
            raise ConfigError(f"topdown={topdown!r} is not one of {', '.join(TOPDOWNS)}")
        self.topdown = topdown
        self.hidden = int(hidden)
        self.likelihood = likelihood
        self.sigma = float(sigma)
        D = math.prod(self.image_shape)
        h, z, L = self.hidden, self.z_dims, len(self.z_dims)
        act = nn.ELU
        bu: list[nn.Module] = [nn.Sequential(nn.Flatten(), nn.Linear(D, h), act(), nn.Linear(h, h), act())]
        bu += [nn.Sequential(nn.Linear(h, h), act()) for _ in range(L - 1)]
        self.bottom_up = nn.ModuleList(bu)
        det = topdown == "deterministic"
        # top-down prior p(z_i | z_{i+1}), i = 0 .. L-2 (deterministic: the state d_{i+1} is the feature t_i)
        self.p_features = nn.ModuleList(
            [nn.Identity() if det else nn.Sequential(nn.Linear(z[i + 1], h), act(), nn.Linear(h, h), act())
             for i in range(L - 1)]
        )
        self.p_heads = nn.ModuleList([nn.Linear(h, 2 * z[i]) for i in range(L - 1)])
        # inference q(z_L | x), q(z_i | z_{i+1}, x)
        self.q_top = nn.Linear(h, 2 * z[L - 1])
        self.q_heads = nn.ModuleList(
            [nn.Sequential(nn.Linear(2 * h, h), act(), nn.Linear(h, 2 * z[i])) for i in range(L - 1)]
        )
        self.decoder = nn.Sequential(nn.Linear(h if det else z[0], h), act(), nn.Linear(h, h), act(),
                                     nn.Linear(h, D))
        # deterministic top-down state d_L = MLP(z_L), d_i = MLP([z_i, d_{i+1}]) (created last: a markov model's
        # parameters and their seeded initialisation are those of the model without the option)
        self.td_state: nn.ModuleList | None = None
        if det:
            self.td_state = nn.ModuleList(
                [nn.Sequential(nn.Linear(z[i] + (h if i < L - 1 else 0), h), act(), nn.Linear(h, h), act())
                 for i in range(L)]
            )

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls, cfg: Any, image_shape: Sequence[int] | None = None, likelihood: str | None = None
    ) -> ConditionalHierarchy:
        """Build from a :class:`~jebm_lite.config.ModelConfig` with ``preset`` in ``conditional3 | conditional6``.

        ``cfg.z_dims`` / ``cfg.hidden`` override the preset (defaults: :data:`CONDITIONAL_DEFAULTS`, 512);
        ``cfg.sigma`` is the Gaussian likelihood's sigma; ``likelihood`` defaults to ``cfg.likelihood``
        (when the config has that field) else ``"bernoulli"``; ``cfg.topdown`` (default ``"markov"``) the
        top-down path.
        """
        if likelihood is None:
            likelihood = getattr(cfg, "likelihood", None) or "bernoulli"
        if cfg.preset not in CONDITIONAL_DEFAULTS:
            raise ConfigError(
                f"model.preset={cfg.preset!r} is not a conditional hierarchy; valid options: "
                f"{', '.join(CONDITIONAL_DEFAULTS)}"
            )
        z_dims = tuple(cfg.z_dims) if cfg.z_dims is not None else CONDITIONAL_DEFAULTS[cfg.preset]
        hidden = cfg.hidden if cfg.hidden is not None else 512
        return cls(image_shape or (1, 28, 28), z_dims, hidden, likelihood, cfg.sigma,
                   getattr(cfg, "topdown", "markov"))

    @property
    def n_layers(self) -> int:
        return len(self.z_dims)

    # ------------------------------------------------------------------------------------------
    # Generative side
    # ------------------------------------------------------------------------------------------
    @property
    def deterministic(self) -> bool:
        """True for ``topdown="deterministic"``: the decoder reads the top-down state d_1, not z_1."""
        return self.td_state is not None

    def prior_features(self, i: int, above: Tensor) -> Tensor:
        """Top-down features t_i shared by p and q, ``(B, hidden)``.

        markov: ``t_i = MLP(z_{i+1})``, ``above = z_{i+1}: (B, z_dims[i+1])``; deterministic: ``t_i = d_{i+1}``,
        the top-down state itself (``above = d_{i+1}: (B, hidden)``, :meth:`topdown_state`).
        """
        return self.p_features[i](above)

    def prior_params(self, i: int, above: Tensor) -> tuple[Tensor, Tensor]:
        """p(z_i | z_{>i}) = N(mu_i, exp(logvar_i)) for code index ``i < L - 1``.

        ``above``: markov: ``z_{i+1}: (B, z_dims[i+1])`` (p(z_i | z_{i+1})); deterministic: the top-down state
        ``d_{i+1}: (B, hidden)`` of :meth:`topdown_state`, a function of every layer above. Returns ``(mu,
        logvar)``, each ``(B, z_dims[i])``; logvar in [-7, 2].
        """
        if not 0 <= i < self.n_layers - 1:
            raise IndexError(f"layer {i} has no conditional prior (valid: 0 .. {self.n_layers - 2}; the top is N(0, I))")
        return _split(self.p_heads[i](self.prior_features(i, above)))

    def topdown_state(self, i: int, z_i: Tensor, d_above: Tensor | None = None) -> Tensor:
        """The deterministic top-down state (``topdown="deterministic"`` only), ``(B, hidden)``:
        ``d_i = MLP([z_i, d_{i+1}])`` for ``i < L - 1``, ``d_L = MLP(z_L)`` for the top (``d_above=None``)."""
        if self.td_state is None:
            raise RuntimeError("topdown_state exists for topdown='deterministic' only (this model is markov)")
        return self.td_state[i](z_i if d_above is None else torch.cat([z_i, d_above], dim=1))

    def sample_eps(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> list[Tensor]:
        """Standard normal noise ``[(n, z_dims[i])]``, bottom to top."""
        device = device if device is not None else self.q_top.weight.device
        return [torch.randn(n, d, device=device, generator=generator) for d in self.z_dims]

    def sample(self, eps: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """The reparameterised top-down sampler: ``z_L = eps_L``, ``z_i = mu_i + sigma_i
        eps_i`` (mu_i, sigma_i of z_{i+1}, or of the state d_{i+1} in deterministic mode),
        then the decoder mean.

        Args:
            eps: ``[(B, z_dims[i])]`` bottom to top.

        Returns:
            ``(zs, x_mean)``: ``zs[i]: (B, z_dims[i])`` bottom to top; ``x_mean: (B, C, H,
            W)`` in [-1, 1].
        """
        zs, inp = self._top_down(eps)
        return zs, self._mean(self._logits(inp))

    def top_down(self, eps: Sequence[Tensor]) -> list[Tensor]:
        """The map z = T(eps) of :meth:`sample` without decoding: ``z_L = eps_L``,
        ``z_i = mu_i(z_{i+1}) + sigma_i(z_{i+1}) eps_i`` (deterministic mode: mu_i, sigma_i of d_{i+1}).

        ``eps``: ``[(B, z_dims[i])]`` bottom to top -> ``zs``: ``[(B, z_dims[i])]`` bottom to top
        (differentiable in ``eps``: the eps-space prior Langevin of :mod:`jebm_lite.models.cond_ebm`).
        """
        return self._top_down(eps)[0]

    def _top_down(self, eps: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """``(zs, decoder input)``: the top-down sampler and what the decoder reads (z_1, or d_1)."""
        eps = list(eps)
        if len(eps) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} eps tensors (bottom -> top), got {len(eps)}")
        zs: list[Tensor] = [eps[-1]] * self.n_layers  # zs[-1] = z_L = eps_L; lower entries are overwritten
        d = self.topdown_state(self.n_layers - 1, zs[-1]) if self.deterministic else None
        for i in range(self.n_layers - 2, -1, -1):
            mu, lv = self.prior_params(i, zs[i + 1] if d is None else d)
            zs[i] = mu + torch.exp(0.5 * lv) * eps[i]
            if d is not None:
                d = self.topdown_state(i, zs[i], d)
        return zs, zs[0] if d is None else d

    def _prior_chain(self, zs: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """``[(mu_i, logvar_i)]`` of p(z_i | z_{>i}) for ``i = 0 .. L-2`` (bottom to top), at the codes ``zs``."""
        zs = list(zs)
        if len(zs) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} layers (bottom -> top), got {len(zs)}")
        L = self.n_layers
        if not self.deterministic:
            return [self.prior_params(i, zs[i + 1]) for i in range(L - 1)]
        params: list[tuple[Tensor, Tensor]] = [(zs[0], zs[0])] * (L - 1)  # overwritten below
        d = self.topdown_state(L - 1, zs[-1])
        for i in range(L - 2, -1, -1):
            params[i] = self.prior_params(i, d)
            if i > 0:  # d_1 is not needed for the prior
                d = self.topdown_state(i, zs[i], d)
        return params

    def eps_from_z(self, zs: Sequence[Tensor]) -> list[Tensor]:
        """Whitening, the exact inverse of :meth:`sample`: ``eps_L = z_L``, ``eps_i = (z_i - mu_i) / sigma_i``.

        ``zs``: ``[(B, z_dims[i])]`` bottom to top -> ``[(B, z_dims[i])]``.
        """
        zs = list(zs)
        eps: list[Tensor] = [zs[-1]] * self.n_layers
        for i, (mu, lv) in enumerate(self._prior_chain(zs)):
            eps[i] = (zs[i] - mu) * torch.exp(-0.5 * lv)
        return eps

    def log_prior_layers(self, zs: Sequence[Tensor]) -> Tensor:
        """Per-layer log-densities of the Gaussian hierarchy p_beta (poster, Problem II), with constants.

        Column i is ``log N(z_i; mu_i, diag sigma_i^2)`` (of z_{i+1}; deterministic mode: of d_{i+1}) for
        ``i < L - 1`` and ``log N(z_L; 0, I)`` for the top. ``zs``: ``[(B, z_dims[i])]`` bottom to top -> ``(B, L)``.
        Differentiable in ``zs`` and in the prior nets (``p_features``, ``p_heads``; ``td_state``).
        """
        zs = list(zs)
        half_log_2pi = 0.5 * math.log(2 * math.pi)
        cols = []
        for i, (mu, lv) in enumerate(self._prior_chain(zs)):
            cols.append((_gauss_logpdf_nc(zs[i], mu, lv) - half_log_2pi).sum(1))
        cols.append((-0.5 * zs[-1].pow(2) - half_log_2pi).sum(1))
        return torch.stack(cols, dim=1)

    def log_prior(self, zs: Sequence[Tensor]) -> Tensor:
        """log p_beta(z) = sum_{i<L} log p_beta(z_i | z_{>i}) + log N(z_L; 0, I) (poster, Problem II), with
        the Gaussian constants. ``zs``: ``[(B, z_dims[i])]`` bottom to top -> ``(B,)``."""
        return self.log_prior_layers(zs).sum(1)

    def decoder_input(self, zs: Tensor | Sequence[Tensor]) -> Tensor:
        """What the decoder reads. markov: z_1, ``(B, z_dims[0])`` (``zs`` is z_1 itself or the list of layers,
        of which only ``zs[0]`` is read); deterministic: the top-down state d_1, ``(B, hidden)``, of the full list
        ``[z_1, ..., z_L]`` (a lone tensor is refused: the image depends on every layer)."""
        if isinstance(zs, Tensor):
            if self.deterministic:
                raise ValueError("topdown='deterministic': the decoder reads every layer; pass the list "
                                 "[z_1, ..., z_L] (bottom to top), not z_1 alone")
            return zs
        zs = list(zs)
        if not self.deterministic:
            return zs[0]
        if len(zs) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} layers (bottom -> top), got {len(zs)}")
        d = self.topdown_state(self.n_layers - 1, zs[-1])
        for i in range(self.n_layers - 2, -1, -1):
            d = self.topdown_state(i, zs[i], d)
        return d

    def _logits(self, inp: Tensor) -> Tensor:
        return self.decoder(inp).reshape(inp.shape[0], *self.image_shape)

    def _mean(self, out: Tensor) -> Tensor:
        return 2 * torch.sigmoid(out) - 1 if self.likelihood == "bernoulli" else torch.tanh(out)

    def decode_logits(self, zs: Tensor | Sequence[Tensor]) -> Tensor:
        """Raw decoder output ``(B, C, H, W)``: Bernoulli logits, or the pre-tanh Gaussian mean.

        ``zs``: markov: z_1 ``(B, z_dims[0])`` or the list of layers (only ``zs[0]`` is read); deterministic: the
        list ``[z_1, ..., z_L]`` bottom to top (every layer is read, through d_1; :meth:`decoder_input`).
        """
        return self._logits(self.decoder_input(zs))

    def decode(self, zs: Tensor | Sequence[Tensor]) -> Tensor:
        """Mean of p(x | z) on the image scale [-1, 1]: ``2 sigmoid(logits) - 1`` or ``tanh``. ``(B, C, H, W)``.

        ``zs`` as in :meth:`decode_logits`: markov p(x | z_1) takes z_1 or the list; deterministic needs the list
        of all layers.
        """
        return self._mean(self.decode_logits(zs))

    def log_px(self, x: Tensor, zs: Tensor | Sequence[Tensor]) -> Tensor:
        """log p(x | z) summed over pixels, ``(B,)`` (Gaussian: with its normalising constant); ``zs`` as in
        :meth:`decode_logits` (markov: p(x | z_1), z_1 alone is enough)."""
        return self._log_px_logits(x, self.decode_logits(zs))

    def _log_px_logits(self, x: Tensor, out: Tensor) -> Tensor:
        if self.likelihood == "bernoulli":
            target = ((x + 1) / 2).clamp(0, 1)
            return -F.binary_cross_entropy_with_logits(out, target, reduction="none").flatten(1).sum(1)
        mean = torch.tanh(out)
        lp = -0.5 * ((x - mean) / self.sigma).pow(2) - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)
        return lp.flatten(1).sum(1)

    # ------------------------------------------------------------------------------------------
    # Inference side
    # ------------------------------------------------------------------------------------------
    def posterior(
        self, x: Tensor, use_mean: bool = False, generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
        """Bottom-up pass, then the top-down q(z_L | x), q(z_i | z_{>i}, x), one reparameterised draw.

        Returns ``(zs, stats)``: ``zs[i]: (B, z_dims[i])`` bottom to top; ``stats[i]`` holds ``q_mu, q_logvar,
        p_mu, p_logvar`` (each ``(B, z_dims[i])``; the top prior is N(0, I)). ``use_mean`` takes z = q_mu
        (in deterministic mode the states d_i below are then those of the means). ``generator``: torch RNG for
        the draws (default: the global one).
        """
        zs, stats, _ = self._posterior(x, use_mean, generator)
        return zs, stats

    def _posterior(
        self, x: Tensor, use_mean: bool = False, generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], list[dict[str, Tensor]], Tensor]:
        """:meth:`posterior` plus the decoder input of the draw (z_1, or d_1 in deterministic mode)."""
        h = []
        r = x
        for stage in self.bottom_up:
            r = stage(r)
            h.append(r)
        L = self.n_layers
        zs: list[Tensor] = [x] * L
        stats: list[dict[str, Tensor]] = [{}] * L

        def draw(mu: Tensor, lv: Tensor) -> Tensor:
            if use_mean:
                return mu
            noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            return mu + torch.exp(0.5 * lv) * noise

        qm, qv = _split(self.q_top(h[-1]))
        zs[-1] = draw(qm, qv)
        stats[-1] = dict(q_mu=qm, q_logvar=qv, p_mu=torch.zeros_like(qm), p_logvar=torch.zeros_like(qv))
        d = self.topdown_state(L - 1, zs[-1]) if self.deterministic else None
        for i in range(L - 2, -1, -1):
            t = self.prior_features(i, zs[i + 1] if d is None else d)
            pm, pv = _split(self.p_heads[i](t))
            qm, qv = _split(self.q_heads[i](torch.cat([h[i], t], dim=1)))
            zs[i] = draw(qm, qv)
            stats[i] = dict(q_mu=qm, q_logvar=qv, p_mu=pm, p_logvar=pv)
            if d is not None:
                d = self.topdown_state(i, zs[i], d)
        return zs, stats, zs[0] if d is None else d

    def elbo(
        self, x: Tensor, free_bits: float = 0.0, n_samples: int = 1
    ) -> tuple[Tensor, dict[str, Any]]:
        """Negative ELBO with single-sample KL terms and optional free bits (as in BIVA).

        ``ELBO(x) = log p(x | z_1) - sum_i [log q(z_i | .) - log p(z_i | z_{i+1})]`` with
        ``z ~ q`` (deterministic
        mode: p(x | z) through d_1 and p(z_i | d_{i+1})); one draw per sample, ``n_samples``
        draws are averaged (an average of ELBOs, not an importance-weighted bound).

        Free bits (``free_bits > 0``, nats per layer): the KL of layer i used in the loss is
        ``sum_dims max(kl_dim, free_bits / d_i)`` where ``kl_dim: (d_i,)`` is the
        per-dimension KL averaged over the batch (the minibatch form of Kingma et al. 2016;
        BIVA spreads its 2 nats evenly over the dimensions the same way). With ``free_bits =
        0`` the plain batch-mean KL is used.

        Args:
            x: ``(B, C, H, W)`` in [-1, 1].

        Returns:
            ``(loss, info)``: ``loss`` = mean_b nll + sum_i kl_used_i (a scalar to
            minimise); ``info`` holds ``nll (B,)``, ``kl`` (list of ``(B,)`` per layer),
            ``kl_per_dim`` (list of ``(d_i,)``), ``kl_used`` (list of scalars), ``elbo
            (B,)`` (= -(nll + sum kl)), ``zs`` (posterior draws of the last sample, bottom
            to top).
        """
        if n_samples < 1:
            raise ValueError("n_samples must be >= 1")
        B = x.shape[0]
        xr = x if n_samples == 1 else x.repeat(n_samples, *([1] * (x.dim() - 1)))
        zs, stats, inp = self._posterior(xr)
        nll = -self._log_px_logits(xr, self._logits(inp)).reshape(n_samples, B).mean(0)
        kl, kl_dim, kl_used = [], [], []
        for i, (z, s) in enumerate(zip(zs, stats)):
            k = _gauss_logpdf_nc(z, s["q_mu"], s["q_logvar"]) - _gauss_logpdf_nc(
                z, s["p_mu"], s["p_logvar"]
            )
            kl.append(k.sum(1).reshape(n_samples, B).mean(0))
            kd = k.mean(0)
            kl_dim.append(kd)
            if free_bits > 0:
                kl_used.append(torch.clamp(kd, min=free_bits / self.z_dims[i]).sum())
            else:
                kl_used.append(kd.sum())
        loss = nll.mean() + torch.stack(kl_used).sum()
        elbo = -(nll + torch.stack(kl, 0).sum(0))
        zs_last = [z[-B:] for z in zs]
        return loss, dict(
            nll=nll, kl=kl, kl_per_dim=kl_dim, kl_used=kl_used, elbo=elbo, zs=zs_last
        )

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """Same as :meth:`elbo` with the defaults."""
        return self.elbo(x)
