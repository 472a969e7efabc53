"""The learner contract: what the trainer drives and what the analyses may call.

* :class:`Learner` (an ``nn.Module``) is the base class of every method in :mod:`jebm_lite.training.learners`:
  networks, optimisers and one iteration's updates (:meth:`Learner.train_step`), which is all the
  :class:`~jebm_lite.training.trainer.Trainer` needs.
* :class:`LatentModel` is the protocol the analyses (:mod:`jebm_lite.analysis`) use: codes of images, images of
  codes, samples of the prior. Layers are ordered bottom (``zs[0] = z_1``, next to x) to top.
* Narrower protocols for single analyses: :class:`AmortizedPosterior` (the latent attack),
  :class:`JointPriorModel` (long-run chains), :class:`LayeredModel` (hierarchical sampling),
  :class:`ScoredModel` (anomaly / OOD scores) and :class:`LayerwisePosterior` (per-layer codes and KL). An
  analysis checks the protocol with ``isinstance`` (they are ``runtime_checkable``) and calls its methods;
  what differs between methods lives in the learners rather than in a dispatch on the learner's type.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from jebm_lite.training import distributed


@runtime_checkable
class LatentModel(Protocol):
    """What an analysis may ask of a trained learner (every learner in :mod:`jebm_lite.training.learners`
    that has latent codes implements it).

    * ``encode(x)``: per-layer codes of images ``x: (B, C, H, W)`` -> ``[(B, d_1), ..., (B, d_L)]``
      (posterior means of an amortised posterior; posterior Langevin where there is none);
    * ``decode(zs)``: images ``(B, C, H, W)`` of per-layer codes;
    * ``sample_latents(n)``: ``n`` codes per layer from the learned prior (Langevin for an EBM prior);
    * ``sample(n)``: ``decode(sample_latents(n))``;
    * ``device``: where the networks live.
    """

    @property
    def device(self) -> torch.device: ...

    def encode(self, x: Tensor) -> list[Tensor]: ...

    def decode(self, zs: list[Tensor]) -> Tensor: ...

    def sample_latents(self, n: int) -> list[Tensor]: ...

    def sample(self, n: int) -> Tensor: ...


@runtime_checkable
class AmortizedPosterior(Protocol):
    """A learner with an inference network q_phi(z|x) = prod_i N(mu_i, exp(logvar_i)) (paper Eq. 8):
    ``posterior(x)`` returns ``([mu_i (B, d_i)], [logvar_i (B, d_i)])`` bottom to top, differentiable in
    ``x`` (the latent attack and the per-layer KL use it)."""

    def posterior(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]: ...


@runtime_checkable
class JointPriorModel(LatentModel, Protocol):
    """A learner whose prior is one :class:`~jebm_lite.models.ebm.JointEBMPrior` over all its layers
    (paper Eq. 3): the joint prior, VLAE (f = 0) and the LEBM. ``prior`` is that prior (``prior.energy`` is
    f_alpha, ``None`` for VLAE), ``prior_langevin`` the Langevin settings it was trained with
    (:class:`~jebm_lite.config.LangevinConfig`); the long-run chains of paper Fig. 8 use only these and
    ``decode``."""

    prior: nn.Module

    @property
    def prior_langevin(self): ...


@runtime_checkable
class LayeredModel(LatentModel, Protocol):
    """A multi-layer :class:`LatentModel` whose layers can be redrawn one at a time (hierarchical sampling,
    paper Fig. 4; :mod:`jebm_lite.analysis.hierarchy` uses only this).

    Its *state* is a per-layer list ``[(n, d_i)]`` bottom to top: the codes z (``state_kind == "codes"``,
    the architectural hierarchy: VLAE, joint EBM prior) or the top-down noises eps (``"eps"``, the
    conditional hierarchy, where redrawing eps_i changes z_i and every layer below it).

    * ``sample_state(n, generator)``: ``n`` states from the prior;
    * ``resample_layers(state, layers, generator)``: a copy of ``state`` with ``layers`` redrawn from the
      prior given the other layers;
    * ``decode_state(state)``: mean images ``(n, C, H, W)`` in [-1, 1];
    * ``z_dims``, ``image_shape``, ``state_kind``.
    """

    z_dims: tuple[int, ...]
    state_kind: str

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    def sample_state(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]: ...

    def resample_layers(self, state: list[Tensor], layers: tuple[int, ...],
                        generator: torch.Generator | None = None) -> list[Tensor]: ...

    def decode_state(self, state: list[Tensor]) -> Tensor: ...


@runtime_checkable
class ScoredModel(Protocol):
    """A learner with a log-joint anomaly score (paper Sec. 5.4, Tabs. 3 and 7;
    :mod:`jebm_lite.analysis.anomaly` uses only this).

    * ``anomaly_score_parts(x, use_mean, generator, langevin_steps)``: one z per image of ``x: (B, C, H, W)``
      from the learner's own posterior (a draw of q(z | x) from ``generator``, its mean with ``use_mean``, or
      posterior Langevin with ``langevin_steps`` steps, ``None``: the configured number) and the additive
      parts of the score at that z, each ``(B,)``: ``score`` = -log p(x, z) (log Z dropped), ``rec`` = -log
      p(x | z), ``ebm`` = -f(z) and ``prior/i`` = -(log-density of layer i under the base prior), with
      ``score = rec + ebm + sum_i prior/i``; with an amortised posterior also ``kl/i`` (closed form) and
      ``neg_elbo``. Called in eval mode under ``torch.no_grad()`` (a Langevin posterior re-enables
      gradients with respect to z only);
    * ``has_posterior_mean``: whether ``use_mean`` makes the parts deterministic (an amortised posterior's
      mean: one call is enough); ``False`` where z comes from posterior Langevin, which ignores
      ``use_mean``;
    * ``device``: where the networks live.
    """

    @property
    def device(self) -> torch.device: ...

    @property
    def has_posterior_mean(self) -> bool: ...

    def anomaly_score_parts(self, x: Tensor, use_mean: bool = False, generator: torch.Generator | None = None,
                            langevin_steps: int | None = None) -> dict[str, Tensor]: ...


@runtime_checkable
class LayerwisePosterior(Protocol):
    """A learner whose posterior has a closed form per layer (:func:`jebm_lite.analysis.metrics.layer_codes`
    and :func:`~jebm_lite.analysis.metrics.layer_kl` use only this). For images ``x: (B, C, H, W)``:

    * ``layer_codes(x, whiten)``: the posterior means ``[(B, d_i)]`` bottom to top (a conditional hierarchy:
      computed top-down with each z_{i+1} at its mean); ``whiten`` maps them to the noise space of the prior,
      ``(mu_q,i - mu_p,i) / sigma_p,i`` (no change for an N(0, I) prior);
    * ``layer_kl(x)``: the closed-form KL term of each layer per image, ``[(B,)]`` bottom to top:
      ``KL(q(z_i | x) || N(0, I))`` for the architectural hierarchy, ``KL(q(z_i | z_{i+1}, x) || p(z_i |
      z_{i+1}))`` at one draw z_{>i} ~ q for a conditional one.
    """

    def layer_codes(self, x: Tensor, whiten: bool = False) -> list[Tensor]: ...

    def layer_kl(self, x: Tensor) -> list[Tensor]: ...


@runtime_checkable
class ConditionalHierarchyModel(LayeredModel, Protocol):
    """A :class:`LayeredModel` built on a :class:`~jebm_lite.models.conditional.ConditionalHierarchy` (the
    conditional learners: LVAE / BIVA-style, and the CVPR 2023 joint prior on it). The analyses that need the
    hierarchy's own networks (Zhao et al.'s bottom-layer Gibbs chain, the poster's redraw statistics, the
    ELBO of a conditional model) use only these:

    * ``model``: the ``ConditionalHierarchy``;
    * ``energies``: the per-layer energies f_i of the CVPR 2023 prior (an ``nn.ModuleList``), ``None`` for f = 0;
    * ``prior_langevin``: the eps-space prior Langevin settings (:class:`~jebm_lite.config.LangevinConfig`).
    """

    model: nn.Module
    energies: nn.Module | None

    @property
    def prior_langevin(self): ...


class Learner(nn.Module):
    """Owns networks, optimisers and one iteration's updates.

    Subclasses call ``super().__init__()``, build their networks as submodules, then fill
    :attr:`optimizers` (name -> optimiser) and :attr:`schedulers` (name -> LR scheduler, stepped once
    per epoch by the Trainer). ``state_dict()`` (the networks) plus the optimiser and scheduler
    states are what a checkpoint stores.

    Within :meth:`train_step` call :meth:`sync_grads` on each parameter group right before its
    ``optimizer.step()``: under data parallelism that averages the gradients over processes (a no-op
    otherwise). Losses should be means over the batch so that this averaging is exact.
    """

    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]

    def __init__(self) -> None:
        super().__init__()
        self.optimizers = {}
        self.schedulers = {}

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor | float]:
        """Do all updates for one batch ``x: (B, C, H, W)`` (iteration ``step``, counted from 1) and
        return scalar metrics: 0-d tensors left on the device (preferred: no host sync; the
        :class:`~jebm_lite.training.trainer.Trainer` reads all of an interval's metrics back at once) or
        Python numbers. ``"energy/..."`` ones are checked for explosion.

        Abstract: every learner in :mod:`jebm_lite.training.learners` implements it."""
        raise NotImplementedError

    def on_epoch_end(self, epoch: int) -> None:
        """Called by the Trainer after the last step of ``epoch`` (0-based): steps the schedulers."""
        for sched in self.schedulers.values():
            sched.step()

    def sync_grads(self, params) -> None:
        """Average the ``.grad`` of ``params`` over processes (no-op unless distributed)."""
        distributed.all_reduce_grads(params)

    def energy_keys(self) -> tuple[str, ...]:
        """Metric names the guard checks against ``train.guard_energy_limit``. An entry ending in
        ``/`` is a prefix: the default ``("energy/",)`` matches every ``energy/...`` metric."""
        return ("energy/",)
