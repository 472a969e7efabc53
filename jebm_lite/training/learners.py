"""One learner per method: the networks, their optimisers and one iteration's updates.

| method        | model                                   | learning                                        |
|---------------|-----------------------------------------|-------------------------------------------------|
| ``joint``     | hierarchical G + ladder q + joint EBM   | paper Eqs. 9-12 (variational joint learning)    |
| ``vlae``      | the same networks, N(0, I) prior        | the ELBO (Zhao et al. 2017)                     |
| ``lebm``      | one-layer G + latent EBM, no q          | prior and posterior Langevin (Pang et al. 2020) |
| ``conditional`` | LVAE/BIVA-style conditional hierarchy | the ELBO with free bits                         |
| ``cond_joint`` | the conditional hierarchy + one EBM per layer (CVPR 2023) | ``amortized``: q + eps-space prior Langevin, one loss; ``langevin``: posterior + prior Langevin (hje) |
| ``udiffusion`` | a frozen finished ``conditional`` run + one f_i(z_i, t) per layer (ICML 2024) | DRL in u-space, recovery Langevin (``jebm_lite.models.diffusion``) |

The :class:`~jebm_lite.training.trainer.Trainer` calls ``train_step`` once per batch; chapters call
``encode`` / ``sample`` / ``reconstruct`` on a trained learner.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from jebm_lite import objectives as obj
from jebm_lite.config import ExperimentConfig, config_from_json, validate
from jebm_lite.data import image_shape as dataset_image_shape
from jebm_lite.models.cond_ebm import LayerEnergies, log_prior_unnorm, resample_layers_eps, sample_prior_eps
from jebm_lite.models.conditional import CONDITIONAL_DEFAULTS, ConditionalHierarchy
from jebm_lite.models.diffusion import (
    DiffusionEBMPrior,
    DiffusionSample,
    drl_train_step,
    sample_diffusion_prior,
)
from jebm_lite.models.ebm import JointEBMPrior
from jebm_lite.models.hierarchical import build_hierarchical
from jebm_lite.runtime import ConfigError, adam_fused_ok, bf16_autocast
from jebm_lite.sampling import LangevinTrace, langevin, sample_posterior, sample_prior
from jebm_lite.training.learner import Learner
from jebm_lite.training.rundir import RunDir
from jebm_lite.training.trainer import load_checkpoint, restore_learner
from jebm_lite.uspace import diffusion_schedule, flatten_u, to_u


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients into ``module``'s parameters (inputs still get gradients)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def phase(name: str) -> torch.profiler.record_function:
    """A ``jebm/<name>`` range in :mod:`torch.profiler` traces (what ``benchmarks.run --profile`` sums
    per phase of an iteration); a no-op cost of about a microsecond when no profiler runs."""
    return torch.profiler.record_function(f"jebm/{name}")


def _adam(params, lr: float, betas: tuple[float, float], wd: float, fused: bool = True) -> torch.optim.Adam:
    """Adam on the trainable ``params``; the fused kernel where it applies (3-4x faster than the
    per-tensor loop on CPU for the MNIST networks, see the performance page; same update up to float
    rounding). A checkpoint saved by the per-tensor Adam resumes with it (the group options are stored)."""
    params = [p for p in params if p.requires_grad]
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd, fused=(fused and adam_fused_ok(params)) or None)


def ebm_update(learner: Learner, trace: LangevinTrace, z_post: Tensor) -> dict[str, Tensor]:
    """One optimiser step of ``learner.prior`` on the EBM loss (paper Eq. 10).

    ``trace``: short-run prior chains (Eqs. 13-14), ``z_post``: (B, d) detached posterior codes.
    Returns the EBM loss, the mean f of both sample sets (the ebm-anatomy energy-gap diagnostic) and
    the prior chains' last-step gradient norm, as 0-d tensors left on the device (no host sync).
    """
    prior = learner.prior
    f_prior = prior.f(trace.z)
    f_post = prior.f(z_post)
    e_loss = obj.ebm_loss(f_prior, f_post)
    opt_e = learner.optimizers["e"]
    opt_e.zero_grad(set_to_none=True)
    e_loss.backward()
    learner.sync_grads(list(prior.parameters()))
    opt_e.step()
    return {
        "e_loss": e_loss.detach(),
        "energy/prior": f_prior.detach().mean(),
        "energy/post": f_post.detach().mean(),
        "langevin/grad_norm": trace.grad_norm[-1] if len(trace.grad_norm) else e_loss.new_zeros(()),
    }


class _CodeState:
    """The LayeredModel protocol for learners whose state is the codes z and whose prior is a
    :class:`~jebm_lite.models.ebm.JointEBMPrior` (``self.prior``; f = 0 for VLAE): the joint and VLAE
    learners and the single-layer LEBM."""

    prior: JointEBMPrior
    generator: nn.Module
    cfg: ExperimentConfig
    z_dims: tuple[int, ...]
    state_kind = "codes"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.generator.image_shape)

    @property
    def prior_langevin(self):
        """The prior Langevin settings (``cfg.prior_langevin``; the JointPriorModel protocol)."""
        return self.cfg.prior_langevin

    def _langevin_layers(self, zs: list[Tensor], layers: tuple[int, ...],
                         generator: torch.Generator | None = None) -> list[Tensor]:
        """Short-run Langevin on the layers ``layers`` of the joint EBM prior, the other layers held fixed:
        a sample of p_alpha(z_S | z_{-S}) (paper Sec. 5.1) with the ``prior_langevin`` settings; the noise
        comes from ``generator`` (the global RNG when ``None``)."""
        fixed = [z.detach() for z in zs]
        sizes = [self.z_dims[i] for i in layers]

        def log_prob(u: Tensor) -> Tensor:
            parts = list(fixed)
            for i, part in zip(layers, torch.split(u, sizes, dim=1)):
                parts[i] = part
            return self.prior.log_prob_unnorm(parts)

        lc = self.cfg.prior_langevin
        u = langevin(log_prob, torch.cat([zs[i] for i in layers], dim=1), lc.steps, lc.step_size, noise=lc.noise,
                     generator=generator).z
        out = list(fixed)
        for i, part in zip(layers, torch.split(u, sizes, dim=1)):
            out[i] = part
        return out

    @torch.no_grad()
    def sample_state(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """VLAE: z ~ N(0, I); joint EBM prior: the prior Langevin (Eq. 14) from those N(0, I) draws."""
        eps = [torch.randn(n, d, device=self.device, generator=generator) for d in self.z_dims]
        return eps if self.prior.energy is None else self._langevin_layers(eps, tuple(range(len(self.z_dims))), generator)

    @torch.no_grad()
    def resample_layers(self, state: list[Tensor], layers: tuple[int, ...],
                        generator: torch.Generator | None = None) -> list[Tensor]:
        """New z_i ~ N(0, I) for ``i`` in ``layers`` (VLAE: exact); with the joint EBM prior then Langevin on
        p_alpha(z_S | z_{-S}) from those draws."""
        new = [s.detach() for s in state]
        for i in layers:
            new[i] = torch.randn(state[i].shape, device=state[i].device, generator=generator)
        return new if self.prior.energy is None else self._langevin_layers(new, tuple(layers), generator)

    def decode_state(self, state: list[Tensor]) -> Tensor:
        return self.decode(list(state))


class _LogJointScore:
    """The ScoredModel protocol for learners with a :class:`~jebm_lite.models.ebm.JointEBMPrior` on an N(0, I)
    base (``self.prior``; f = 0 for VLAE): the joint and VLAE learners and the LEBM. The score is
    -log p(x, z) = -log N(x; g(z), sigma^2 I) - f(z) - log N(z; 0, I) (:func:`jebm_lite.objectives.log_joint`,
    log Z(alpha) dropped); a learner supplies z through :meth:`_score_latents`."""

    prior: JointEBMPrior
    cfg: ExperimentConfig

    def _score_latents(self, x: Tensor, use_mean: bool, generator: torch.Generator | None,
                       langevin_steps: int | None) -> tuple[list[Tensor], list[Tensor] | None, list[Tensor] | None]:
        """Per-layer z for ``x`` (bottom to top) and, with an inference net, q's means and log-variances
        (``None, None`` without one). Abstract: each learner using this mixin (joint / VLAE, LEBM) overrides it."""
        raise NotImplementedError(f"{type(self).__name__} must define _score_latents to use _LogJointScore")

    def anomaly_score_parts(self, x: Tensor, use_mean: bool = False, generator: torch.Generator | None = None,
                            langevin_steps: int | None = None) -> dict[str, Tensor]:
        """One z per image: the additive parts of -log p(x, z) and the per-layer KLs, each ``(B,)``
        (the ScoredModel protocol; the keys are those of :func:`jebm_lite.analysis.anomaly.ood_scores`)."""
        zs, mus, logvars = self._score_latents(x, use_mean, generator, langevin_steps)
        x_hat = self.decode(zs)
        f_z = self.prior.f(zs)
        sigma = self.cfg.model.sigma
        score = -obj.log_joint(x, x_hat, zs, f_z, sigma)
        D = x[0].numel()
        rec = obj.reconstruction_nll(x, x_hat, sigma) + 0.5 * D * np.log(2.0 * np.pi * float(sigma) ** 2)
        parts = {"score": score, "rec": rec, "ebm": -f_z}
        for i, z in enumerate(zs):
            parts[f"prior/{i + 1}"] = -obj.standard_normal_log_prob(z)
        if mus is not None:
            for i, (m, lv) in enumerate(zip(mus, logvars)):
                parts[f"kl/{i + 1}"] = obj.kl_analytic(m, lv)
            parts["neg_elbo"] = rec + sum(parts[f"kl/{i + 1}"] for i in range(len(mus))) - f_z
        return parts


class HierarchicalLearner(_CodeState, _LogJointScore, Learner):
    """Joint EBM prior (``method="joint"``) or VLAE (``method="vlae"``, f ≡ 0) on a VLAE layout.

    One iteration (reference ``fit`` of the official code, paper Algorithm 1):

    1. inference + generator step on ``Gfactor·rec + Σ_i KL_i − f(z_q)`` (Eqs. 11-12), z_q by
       reparameterisation from q_φ(z|x) (Eq. 8);
    2. EBM step on ``mean f(z_prior) − mean f(z_q)`` (Eq. 10), z_prior from short-run prior
       Langevin started at N(0, I) (Eqs. 13-14), z_q detached.
    """

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu"):
        super().__init__()
        validate(cfg)  # the one place config values are checked (also for a cfg changed after get_config)
        self.cfg = cfg
        shape = dataset_image_shape(cfg.data.name)
        self.generator, self.inference = build_hierarchical(cfg.model, shape)
        z_dims = tuple(self.generator.z_dims)
        ebm_cfg = cfg.ebm
        if cfg.method == "vlae" and ebm_cfg.nef != 0:
            ebm_cfg = type(ebm_cfg)(**{**ebm_cfg.__dict__, "nef": 0})
        self.prior = JointEBMPrior.from_config(z_dims, ebm_cfg)
        self.z_dims = z_dims
        self.to(device)
        o = cfg.optim
        self.optimizers = {
            "g": _adam(list(self.generator.parameters()) + list(self.inference.parameters()),
                       o.lr_g, o.betas_g, o.weight_decay_g, o.fused)
        }
        if self.prior.energy is not None:
            self.optimizers["e"] = _adam(self.prior.parameters(), o.lr_e, o.betas_e, o.weight_decay_e, o.fused)
        self.schedulers = {
            k: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=o.lr_decay) for k, opt in self.optimizers.items()
        }

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def _autocast(self):
        """bf16 autocast of the generator and inference networks (``train.amp_bf16``) where the device
        has native bf16; float32 elsewhere (:func:`jebm_lite.runtime.bf16_autocast`)."""
        return bf16_autocast(self.device, self.cfg.train.amp_bf16)

    def posterior(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """q_φ(z|x) (Eq. 8): per-layer means and log-variances, bottom to top, each (B, d_i)."""
        with self._autocast():
            heads = self.inference(x)
        mus = [m.float() for m, _ in heads]
        logvars = [lv.float() for _, lv in heads]
        return mus, logvars

    def train_step(self, x: Tensor, step: int) -> dict[str, Tensor | float]:
        cfg = self.cfg
        sigma = cfg.model.sigma
        # -- 1. inference + generator (Eqs. 11-12) -----------------------------------------
        with phase("posterior"):
            mus, logvars = self.posterior(x)
            zs = [obj.reparameterize(m, lv) for m, lv in zip(mus, logvars)]
        with phase("generator"), self._autocast():
            x_hat = self.generator(zs)
        x_hat = x_hat.float()
        with phase("loss"):
            with frozen(self.prior):
                f_q = self.prior.f(zs)
            weight = obj.kl_warmup_weight(step, cfg.model.kl_warmup)
            loss, parts = obj.joint_inference_loss(
                x, x_hat, zs, mus, logvars, f_q, sigma, prior_weight=weight
            )
        opt_g = self.optimizers["g"]
        opt_g.zero_grad(set_to_none=True)
        with phase("g_backward"):
            loss.backward()
        self.sync_grads(
            list(self.generator.parameters()) + list(self.inference.parameters())
        )
        with phase("g_adam"):
            if cfg.optim.grad_clip:
                nn.utils.clip_grad_norm_(
                    opt_g.param_groups[0]["params"], cfg.optim.grad_clip
                )
            opt_g.step()

        # metrics stay 0-d device tensors: the trainer reads them back once per log interval
        metrics: dict[str, Tensor | float] = {
            "loss": parts["loss"].detach(),
            "rec": parts["rec"].detach(),
            "mse": ((x_hat.detach() - x) ** 2).mean(),
        }
        for i, kl in enumerate(parts["kl"]):
            metrics[f"kl/{i + 1}"] = kl.detach()
        if cfg.model.kl_warmup:
            metrics["kl_weight"] = weight

        # -- 2. EBM (Eq. 10) on short-run prior chains (Eqs. 13-14) ------------------------
        if self.prior.energy is not None:
            lc = cfg.prior_langevin
            with phase("prior_chain"):
                trace = sample_prior(
                    self.prior, x.shape[0], lc.steps, lc.step_size,
                    noise=lc.noise, graph=lc.cuda_graph,
                )
            with phase("ebm_step"):
                metrics.update(
                    ebm_update(self, trace, self.prior.cat([z.detach() for z in zs]))
                )
        return metrics

    # -- what chapters use ------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor, sample: bool = False) -> list[Tensor]:
        """Per-layer codes of ``x`` (bottom to top): the means of q_φ, or one sample."""
        mus, logvars = self.posterior(x)
        if sample:
            return [obj.reparameterize(m, lv) for m, lv in zip(mus, logvars)]
        return mus

    @torch.no_grad()
    def decode(self, zs: list[Tensor]) -> Tensor:
        """g_β(z) (Eq. 5): images (B, C, H, W) in [-1, 1]."""
        return self.generator(zs).float()

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def sample_latents(self, n: int, steps: int | None = None, step_size: float | None = None) -> list[Tensor]:
        """Joint prior samples (Eq. 14 Langevin from N(0, I)), split per layer."""
        lc = self.cfg.prior_langevin
        trace = sample_prior(
            self.prior, n, lc.steps if steps is None else steps, lc.step_size if step_size is None else step_size,
            noise=lc.noise, z0=torch.randn(n, self.prior.d, device=self.device),
        )
        return self.prior.split(trace.z.detach())

    def sample(self, n: int, **kw) -> Tensor:
        return self.decode(self.sample_latents(n, **kw))

    # -- the ScoredModel protocol (anomaly_score_parts: _LogJointScore) -------------------------------
    has_posterior_mean = True

    def _score_latents(self, x: Tensor, use_mean: bool, generator: torch.Generator | None,
                       langevin_steps: int | None) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """z ~ q_φ(z|x) (Eq. 8), or its mean with ``use_mean`` (``langevin_steps`` does not apply)."""
        mus, logvars = self.posterior(x)
        zs = mus if use_mean else [obj.reparameterize(m, lv, generator=generator) for m, lv in zip(mus, logvars)]
        return zs, mus, logvars

    # -- the LayerwisePosterior protocol ------------------------------------------------------------
    @torch.no_grad()
    def layer_codes(self, x: Tensor, whiten: bool = False) -> list[Tensor]:
        """The means of q_φ(z_i | x) (Eq. 8), :meth:`encode`; ``whiten`` changes nothing (the base prior is
        N(0, I))."""
        return self.encode(x)

    @torch.no_grad()
    def layer_kl(self, x: Tensor) -> list[Tensor]:
        """``KL(q_φ(z_i | x) || N(0, I))`` in closed form, ``[(B,)]`` (for the joint prior the KL to the base
        p_0, the term of paper Eq. 11; the EBM's f is not included)."""
        mus, logvars = self.posterior(x)
        return [obj.kl_analytic(m, lv) for m, lv in zip(mus, logvars)]


class LEBMLearner(_CodeState, _LogJointScore, Learner):
    """Latent-space EBM prior of Pang et al. (2020): one latent layer, no inference network.

    Per iteration: posterior Langevin (from N(0, I)) on log p(x|z) + f(z) − ||z||²/2, prior Langevin on
    f(z) − ||z||²/2, a generator step on the posterior samples, then the EBM step (Eq. 10).
    """

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu"):
        super().__init__()
        validate(cfg)  # the one place config values are checked (also for a cfg changed after get_config)
        self.cfg = cfg
        shape = dataset_image_shape(cfg.data.name)
        self.generator, _ = build_hierarchical(cfg.model, shape)
        if len(self.generator.z_dims) != 1:
            raise ConfigError(
                f"method='lebm' needs a single latent layer; model.z_dims={self.generator.z_dims}. "
                "Use model.preset=lebm_mnist or model.z_dims=<d>."
            )
        self.z_dims = tuple(self.generator.z_dims)
        self.prior = JointEBMPrior.from_config(self.z_dims, cfg.ebm)
        self.to(device)
        o = cfg.optim
        self.optimizers = {
            "g": _adam(self.generator.parameters(), o.lr_g, o.betas_g, o.weight_decay_g, o.fused),
            "e": _adam(self.prior.parameters(), o.lr_e, o.betas_e, o.weight_decay_e, o.fused),
        }
        self.schedulers = {
            k: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=o.lr_decay) for k, opt in self.optimizers.items()
        }

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def infer(self, x: Tensor, steps: int | None = None, record: bool = False,
              generator: torch.Generator | None = None):
        """Posterior Langevin from N(0, I) (Pang et al. 2020), noise from ``generator`` (the global RNG when
        ``None``); returns the LangevinTrace."""
        lc = self.cfg.posterior_langevin
        with frozen(self.generator), frozen(self.prior):
            return sample_posterior(
                self.generator, self.prior, x, self.cfg.model.sigma, lc.steps if steps is None else steps,
                lc.step_size, noise=lc.noise, record=record, rng=generator,
            )

    def train_step(self, x: Tensor, step: int) -> dict[str, float]:
        cfg = self.cfg
        z_post = self.infer(x).z.detach()
        lc = cfg.prior_langevin
        trace = sample_prior(
            self.prior, x.shape[0], lc.steps, lc.step_size, noise=lc.noise
        )

        x_hat = self.generator(self.prior.split(z_post))
        g_loss = obj.lebm_generator_loss(x, x_hat, cfg.model.sigma)
        opt_g = self.optimizers["g"]
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.sync_grads(list(self.generator.parameters()))
        opt_g.step()

        return {
            "loss": g_loss.detach(),
            "mse": ((x_hat.detach() - x) ** 2).mean(),
            **ebm_update(self, trace, z_post),
        }

    @torch.no_grad()
    def decode(self, z: Tensor | list[Tensor]) -> Tensor:
        zs = z if isinstance(z, (list, tuple)) else self.prior.split(z)
        return self.generator(list(zs)).float()

    def encode(self, x: Tensor, steps: int | None = None) -> list[Tensor]:
        return self.prior.split(self.infer(x, steps=steps).z.detach())

    def sample_latents(self, n: int, steps: int | None = None, step_size: float | None = None) -> list[Tensor]:
        lc = self.cfg.prior_langevin
        trace = sample_prior(self.prior, n, lc.steps if steps is None else steps,
                             lc.step_size if step_size is None else step_size, noise=lc.noise,
                             z0=torch.randn(n, self.prior.d, device=self.device))
        return self.prior.split(trace.z.detach())

    def sample(self, n: int, **kw) -> Tensor:
        return self.decode(self.sample_latents(n, **kw))

    # -- the ScoredModel protocol (anomaly_score_parts: _LogJointScore) -------------------------------
    has_posterior_mean = False

    def _score_latents(self, x: Tensor, use_mean: bool, generator: torch.Generator | None,
                       langevin_steps: int | None) -> tuple[list[Tensor], None, None]:
        """Posterior Langevin from N(0, I) (:meth:`infer`, ``cfg.posterior_langevin``; ``langevin_steps``
        overrides the number of steps). ``use_mean`` does not apply: there is no posterior mean in closed form."""
        trace = self.infer(x, steps=None if langevin_steps is None else int(langevin_steps), generator=generator)
        return self.prior.split(trace.z), None, None


class _ConditionalPosterior:
    """The LayerwisePosterior protocol of a learner built on a :class:`ConditionalHierarchy` (``self.model``):
    its q(z_i | z_{i+1}, x) and p(z_i | z_{i+1}) are Gaussians, so per-layer means and KLs have a closed form.
    The conditional learners and the u-space diffusion (whose base hierarchy it is) share it."""

    model: ConditionalHierarchy

    @torch.no_grad()
    def layer_codes(self, x: Tensor, whiten: bool = False) -> list[Tensor]:
        """The means of q(z_L | x), q(z_i | z_{i+1}, x) computed top-down with each z_{i+1} at its mean; with
        ``whiten`` ``(mu_q,i - mu_p,i) / sigma_p,i`` (what layer i adds beyond what the layer above predicts)."""
        _, stats = self.model.posterior(x, use_mean=True)
        if whiten:
            return [(s["q_mu"] - s["p_mu"]) * torch.exp(-0.5 * s["p_logvar"]) for s in stats]
        return [s["q_mu"] for s in stats]

    @torch.no_grad()
    def layer_kl(self, x: Tensor) -> list[Tensor]:
        """``KL(q(z_i | z_{i+1}, x) || p(z_i | z_{i+1}))`` in closed form at one draw z_{>i} ~ q, ``[(B,)]``
        (an unbiased estimate of the layer's term of the ELBO)."""
        _, stats = self.model.posterior(x)
        return [obj.kl_analytic(s["q_mu"], s["q_logvar"], s["p_mu"], s["p_logvar"]) for s in stats]


class _ConditionalCodes(_ConditionalPosterior):
    """The codes and images of a :class:`ConditionalHierarchy` learner (``self.model``): the LatentModel methods
    that the conditional learners share, and their log-joint score (ScoredModel) with the hierarchy's own
    prior p_beta."""

    model: ConditionalHierarchy
    cfg: ExperimentConfig

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def prior_langevin(self):
        """The eps-space prior Langevin settings (``cfg.prior_langevin``; the ConditionalHierarchyModel protocol)."""
        return self.cfg.prior_langevin

    @torch.no_grad()
    def encode(self, x: Tensor, sample: bool = False) -> list[Tensor]:
        """Per-layer codes of ``x`` bottom to top ``[(B, d_i)]``: the top-down posterior means of q (one draw
        with ``sample``)."""
        return self.model.posterior(x, use_mean=not sample)[0]

    @torch.no_grad()
    def decode(self, zs: list[Tensor]) -> Tensor:
        """Mean of p(x | z): images ``(B, C, H, W)`` in [-1, 1] (``model.topdown="markov"``: p(x | z_1), only
        ``zs[0]`` is read; ``"deterministic"``: every layer is read, through the top-down state d_1)."""
        return self.model.decode(list(zs))

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # -- the LayeredModel protocol: the state is the top-down noises eps -----------------------------
    state_kind = "eps"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.model.image_shape

    def _randn_state(self, n: int, generator: torch.Generator | None) -> list[Tensor]:
        return [torch.randn(n, d, device=self.device, generator=generator) for d in self.z_dims]

    @torch.no_grad()
    def sample_state(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """eps_i ~ N(0, I) (a learner with an eps-space prior overrides this)."""
        return self._randn_state(n, generator)

    @torch.no_grad()
    def resample_layers(self, state: list[Tensor], layers: tuple[int, ...],
                        generator: torch.Generator | None = None) -> list[Tensor]:
        """New eps_i ~ N(0, I) for ``i`` in ``layers``: the top-down sampler then changes z_i and every layer
        below it."""
        new = [s.detach() for s in state]
        for i in layers:
            new[i] = torch.randn(state[i].shape, device=state[i].device, generator=generator)
        return new

    @torch.no_grad()
    def decode_state(self, state: list[Tensor]) -> Tensor:
        """z_L = eps_L, z_i = mu_i + sigma_i eps_i, then the mean of p(x | z) (:meth:`ConditionalHierarchy.sample`)."""
        return self.model.sample(list(state))[1]

    # -- the ScoredModel protocol: -log p(x, z) = -log p(x | z_1) - sum_i f_i(z_i) - log p_beta(z) ------------
    has_posterior_mean = True

    def _score_latents(self, x: Tensor, use_mean: bool, generator: torch.Generator | None,
                       langevin_steps: int | None) -> tuple[list[Tensor], list[dict[str, Tensor]] | None]:
        """z ~ q(z | x) (or its top-down mean) and q's per-layer statistics (``None`` without q)."""
        return self.model.posterior(x, use_mean=use_mean, generator=generator)

    def _score_energy(self, zs: list[Tensor], rec: Tensor) -> Tensor:
        """sum_i f_i(z_i), ``(B,)`` like ``rec``: 0 without layer energies."""
        return torch.zeros_like(rec)

    def anomaly_score_parts(self, x: Tensor, use_mean: bool = False, generator: torch.Generator | None = None,
                            langevin_steps: int | None = None) -> dict[str, Tensor]:
        """-log p(x, z) = -log p(x | z_1) - sum_i f_i(z_i) - log p_beta(z) and its parts, each ``(B,)``
        (the ScoredModel protocol): ``prior/i`` = -log p_beta(z_i | z_{i+1}), ``kl/i`` = KL(q(z_i | z_{i+1}, x)
        || p_beta(z_i | z_{i+1})) in closed form given the drawn z_{i+1} (with q only)."""
        model = self.model
        zs, stats = self._score_latents(x, use_mean, generator, langevin_steps)
        rec = -model.log_px(x, zs)  # markov: p(x | z_1); topdown=deterministic: every layer
        lp = model.log_prior_layers(zs)  # (B, L), with constants
        f_z = self._score_energy(zs, rec)
        parts = {"score": rec - f_z - lp.sum(1), "rec": rec, "ebm": -f_z}
        for i in range(lp.shape[1]):
            parts[f"prior/{i + 1}"] = -lp[:, i]
        if stats is not None:
            for i, st in enumerate(stats):
                parts[f"kl/{i + 1}"] = obj.kl_analytic(st["q_mu"], st["q_logvar"], st["p_mu"], st["p_logvar"])
            parts["neg_elbo"] = rec + sum(parts[f"kl/{i + 1}"] for i in range(len(stats))) - f_z
        return parts


class ConditionalLearner(_ConditionalCodes, Learner):
    """LVAE/BIVA-style conditional Gaussian hierarchy trained on its ELBO (with free bits)."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu"):
        super().__init__()
        validate(cfg)  # the one place config values are checked (also for a cfg changed after get_config)
        self.cfg = cfg
        shape = dataset_image_shape(cfg.data.name)
        z_dims = cfg.model.z_dims or (48, 40, 32, 24, 16, 8)
        self.model = ConditionalHierarchy(
            image_shape=shape, z_dims=tuple(z_dims), hidden=cfg.model.hidden or 512,
            likelihood=cfg.model.likelihood, sigma=cfg.model.sigma, topdown=cfg.model.topdown,
        )
        self.energies = None  # f = 0 (ConditionalHierarchyModel; CondJointLearner has per-layer energies)
        self.z_dims = tuple(z_dims)
        self.to(device)
        o = cfg.optim
        self.optimizers = {"g": _adam(self.model.parameters(), o.lr_g, o.betas_g, o.weight_decay_g, o.fused)}
        self.schedulers = {"g": torch.optim.lr_scheduler.ExponentialLR(self.optimizers["g"], gamma=o.lr_decay)}

    def train_step(self, x: Tensor, step: int) -> dict[str, float]:
        loss, parts = self.model.elbo(x, free_bits=self.cfg.model.free_bits)
        opt = self.optimizers["g"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.sync_grads(list(self.model.parameters()))
        if self.cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        opt.step()
        metrics = {"loss": loss.detach(), "nll": parts["nll"].detach().mean()}
        for i, kl in enumerate(parts["kl"]):
            metrics[f"kl/{i + 1}"] = kl.detach().mean()
        return metrics

    # -- the LatentModel protocol (encode / decode: _ConditionalCodes) ---------------------------------
    @torch.no_grad()
    def sample_latents(self, n: int, eps: list[Tensor] | None = None) -> list[Tensor]:
        """Prior samples ``[(n, d_i)]`` bottom to top (the top-down sampler from ``eps`` ~ N(0, I))."""
        if eps is None:
            eps = [torch.randn(n, d, device=self.device) for d in self.z_dims]
        return self.model.top_down(eps)

    @torch.no_grad()
    def sample(self, n: int, eps: list[Tensor] | None = None) -> Tensor:
        """Images ``(n, C, H, W)`` in [-1, 1] from the prior."""
        return self.decode(self.sample_latents(n, eps))


class CondJointLearner(_ConditionalCodes, Learner):
    """The CVPR 2023 joint EBM prior on a conditional-Gaussian hierarchy (``method="cond_joint"``).

    Prior (poster): ``p(z) ∝ exp(sum_i f_i(z_i)) prod_{i<L} p_beta(z_i | z_{i+1}) N(z_L; 0, I)``, decoder
    p(x | z_1); networks: a :class:`~jebm_lite.models.conditional.ConditionalHierarchy` (``model``) and one
    energy MLP per layer (``energies``, :class:`~jebm_lite.models.cond_ebm.LayerEnergies`). Negative samples
    z- come from eps-space prior Langevin (:func:`~jebm_lite.models.cond_ebm.sample_prior_eps`, started from
    N(0, I), ``cfg.prior_langevin``), detached. Two modes (``cfg.model.posterior``):

    * ``"amortized"`` (default; ICCV-style variational learning of this prior): z+ ~ q(z | x)
      reparameterised and one loss, one backward, two Adam steps::

          L = -mean_b[log p(x|z1+) + sum_i f_i(z_i+) + log p_beta(z+) - log q(z+|x)] + mean_b[sum_i f_i(z_i-) + log p_beta(z-)]

      Which term reaches which parameters: the decoder gets -log p(x|z1+) only; the inference nets
      (bottom-up, ``q_top``, ``q_heads``) get the reparameterised gradient of the whole first bracket
      (the ELBO with the unnormalised joint prior: log Z(alpha, beta) does not depend on q); the energies
      get ``mean f(z-) - mean f(z+)`` (the EBM loss of paper Eq. 10); the prior heads ``p_heads`` get
      ``mean log p_beta(z-) - mean log p_beta(z+)``: p_beta sits inside the normalised prior, so
      d log Z / d beta = E_prior[d log p_beta(z) / d beta] and the contrast is the MLE gradient (reference
      5.1). The top-down features ``p_features`` are shared by p and q (LVAE), so they get that contrast
      plus q's part of the ELBO gradient. Optimisers: ``"g"`` (the whole ConditionalHierarchy; ``optim.lr_g``
      ...) and ``"e"`` (the energies; ``optim.lr_e`` ...).
    * ``"langevin"`` (the hje joint-training script, reference 5.1): z+ by posterior Langevin on
      (z_1 .. z_L) jointly from N(0, I) with target ``log p(x|z1) + sum_i f_i(z_i) + log p_beta(z)``
      (``cfg.posterior_langevin``), detached; updates: decoder on ``-mean log p(x|z1+)``, prior nets on
      ``mean log p_beta(z-) - mean log p_beta(z+)``, energies on ``mean f(z-) - mean f(z+)`` (one backward:
      the three losses reach disjoint parameters). The inference nets are **unused** (not in any optimiser;
      they stay at their initial values).
    """

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu"):
        super().__init__()
        validate(cfg)  # the one place config values are checked (also for a cfg changed after get_config)
        self.cfg = cfg
        shape = dataset_image_shape(cfg.data.name)
        if cfg.model.preset not in CONDITIONAL_DEFAULTS:
            raise ConfigError(
                f"method='cond_joint' needs a conditional hierarchy, got model.preset={cfg.model.preset!r}; "
                f"use model.preset={' or model.preset='.join(CONDITIONAL_DEFAULTS)} (e.g. preset mnist_cond_joint)."
            )
        self.model = ConditionalHierarchy.from_config(cfg.model, shape)
        self.z_dims = tuple(self.model.z_dims)
        self.energies = LayerEnergies.from_config(self.z_dims, cfg.ebm)
        self.posterior_mode = cfg.model.posterior
        self.to(device)
        o = cfg.optim
        self.optimizers = {
            "g": _adam(self._g_params(), o.lr_g, o.betas_g, o.weight_decay_g, o.fused),
            "e": _adam(self.energies.parameters(), o.lr_e, o.betas_e, o.weight_decay_e, o.fused),
        }
        self.schedulers = {
            k: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=o.lr_decay) for k, opt in self.optimizers.items()
        }

    def _g_params(self) -> list[nn.Parameter]:
        """What optimiser ``"g"`` updates: the whole hierarchy, or (``"langevin"``) decoder + prior nets."""
        m = self.model
        if self.posterior_mode == "langevin":
            return [*m.decoder.parameters(), *m.p_features.parameters(), *m.p_heads.parameters()]
        return list(m.parameters())

    # -- samplers ---------------------------------------------------------------------------------
    def prior_sample(self, n: int, steps: int | None = None, step_size: float | None = None,
                     eps0: list[Tensor] | None = None, record: bool = False,
                     generator: torch.Generator | None = None):
        """Eps-space prior Langevin (``cfg.prior_langevin`` unless overridden): ``(zs, eps, trace)``,
        see :func:`~jebm_lite.models.cond_ebm.sample_prior_eps`; ``zs``, ``eps``: ``[(n, d_i)]`` bottom to top."""
        lc = self.cfg.prior_langevin
        return sample_prior_eps(self.model, self.energies, n, lc.steps if steps is None else int(steps),
                                lc.step_size if step_size is None else step_size, eps0=eps0, record=record,
                                noise=lc.noise, generator=generator)

    def langevin_posterior(self, x: Tensor, steps: int | None = None, record: bool = False,
                           generator: torch.Generator | None = None) -> LangevinTrace:
        """Posterior Langevin on (z_1 .. z_L) jointly from N(0, I) (reference 5.1; ``cfg.posterior_langevin``).

        Target ``log p(x | z_1) + sum_i f_i(z_i) + log p_beta(z)`` (:meth:`log_joint`). ``x: (B, C, H, W)``;
        ``trace.z: (B, sum z_dims)`` (split with ``torch.split(trace.z, z_dims, 1)``), detached.
        """
        lc = self.cfg.posterior_langevin
        sizes = list(self.z_dims)
        z0 = torch.randn(x.shape[0], sum(sizes), device=x.device, generator=generator)
        return langevin(lambda u: self.log_joint(x, list(torch.split(u, sizes, dim=1))), z0,
                        lc.steps if steps is None else int(steps), lc.step_size, noise=lc.noise, record=record,
                        generator=generator)

    def log_joint(self, x: Tensor, zs: list[Tensor]) -> Tensor:
        """Unnormalised log p(x, z) = log p(x | z_1) + sum_i f_i(z_i) + log p_beta(z), ``(B,)``.

        The CVPR anomaly decision function (poster: "un-normalized log-posterior"; log Z dropped, a constant
        of the model). ``x: (B, C, H, W)``, ``zs: [(B, d_i)]`` bottom to top. Differentiable.
        """
        return self.model.log_px(x, zs[0]) + log_prior_unnorm(self.model, self.energies, zs)

    # -- one iteration ------------------------------------------------------------------------------
    def amortized_loss(self, x: Tensor, zs_neg: list[Tensor]) -> tuple[Tensor, dict]:
        """The ``"amortized"`` loss L of the class docstring for ``x: (B, C, H, W)`` and
        detached prior samples ``zs_neg: [(B', d_i)]``. Returns ``(L, info)``; ``info``
        holds the posterior draws ``zs`` (detached), ``log_px``, ``f_pos``, ``f_neg``,
        ``lp_pos``, ``lp_neg`` (``(B,)`` / ``(B',)``, detached) and ``kl`` (``(B, L)``:
        per-layer log q - log p_beta at z+, detached)."""
        model = self.model
        zs, stats = model.posterior(x)
        log_px = model.log_px(x, zs[0])
        log_q = torch.stack(
            [obj.gaussian_log_prob(z, s["q_mu"], s["q_logvar"]) for z, s in zip(zs, stats)],
            1,
        )
        # log p_beta(z_i | z_{i+1}) with the p_mu / p_logvar that q already computed on the
        # same draw (top: N(0, I))
        lp = torch.stack(
            [obj.gaussian_log_prob(z, s["p_mu"], s["p_logvar"]) for z, s in zip(zs, stats)],
            1,
        )
        f_pos = self.energies.f(zs)
        f_neg = self.energies.f(zs_neg)
        lp_neg = model.log_prior(zs_neg)
        elbo = log_px + f_pos + lp.sum(1) - log_q.sum(1)
        loss = -elbo.mean() + (f_neg + lp_neg).mean()
        info = dict(
            zs=[z.detach() for z in zs],
            log_px=log_px.detach(),
            f_pos=f_pos.detach(),
            f_neg=f_neg.detach(),
            lp_pos=lp.sum(1).detach(),
            lp_neg=lp_neg.detach(),
            kl=(log_q - lp).detach(),
        )
        return loss, info

    def train_step(self, x: Tensor, step: int) -> dict[str, float]:
        lc = self.cfg.prior_langevin
        zs_neg, _, trace = sample_prior_eps(self.model, self.energies, x.shape[0], lc.steps, lc.step_size,
                                            noise=lc.noise)
        opt_g, opt_e = self.optimizers["g"], self.optimizers["e"]
        metrics: dict[str, Tensor | float] = {}  # 0-d device tensors: read back by the trainer once per interval
        if self.posterior_mode == "amortized":
            loss, info = self.amortized_loss(x, zs_neg)
            zs_pos, log_px, f_pos, f_neg = info["zs"], info["log_px"], info["f_pos"], info["f_neg"]
            lp_pos, lp_neg = info["lp_pos"], info["lp_neg"]
            for i in range(len(self.z_dims)):
                metrics[f"kl/{i + 1}"] = info["kl"][:, i].detach().mean()
        else:
            post = self.langevin_posterior(x)
            zs_pos = list(torch.split(post.z, list(self.z_dims), dim=1))
            log_px_t = self.model.log_px(x, zs_pos[0])
            lp_layers = self.model.log_prior_layers(zs_pos)
            lp_neg_t = self.model.log_prior(zs_neg)
            f_pos_t, f_neg_t = self.energies.f(zs_pos), self.energies.f(zs_neg)
            # three losses on disjoint parameters: decoder | prior nets (MLE contrast) | energies (Eq. 10)
            prior_loss = lp_neg_t.mean() - lp_layers.sum(1).mean()
            loss = -log_px_t.mean() + prior_loss + obj.ebm_loss(f_neg_t, f_pos_t)
            log_px, f_pos, f_neg = log_px_t.detach(), f_pos_t.detach(), f_neg_t.detach()
            lp_pos, lp_neg = lp_layers.sum(1).detach(), lp_neg_t.detach()
            for i in range(len(self.z_dims)):
                metrics[f"log_pbeta/{i + 1}"] = lp_layers[:, i].detach().mean()
            metrics["prior_loss"] = prior_loss.detach()
            metrics["post_langevin/grad_norm"] = post.grad_norm[-1] if len(post.grad_norm) else 0.0
        opt_g.zero_grad(set_to_none=True)
        opt_e.zero_grad(set_to_none=True)
        loss.backward()
        g_params = opt_g.param_groups[0]["params"]
        self.sync_grads(g_params)
        self.sync_grads(list(self.energies.parameters()))
        if self.cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(g_params, self.cfg.optim.grad_clip)
        opt_g.step()
        opt_e.step()
        with torch.no_grad():
            mse = ((self.model.decode(zs_pos[0]) - x) ** 2).mean()
        metrics.update({
            "loss": loss.detach(), "nll": (-log_px).mean(), "mse": mse,
            "e_loss": f_neg.mean() - f_pos.mean(),
            "energy/prior": f_neg.mean(), "energy/post": f_pos.mean(),
            "log_pbeta/prior": lp_neg.mean(), "log_pbeta/post": lp_pos.mean(),
            "langevin/grad_norm": trace.grad_norm[-1] if len(trace.grad_norm) else 0.0,
        })
        return metrics

    # -- what chapters use --------------------------------------------------------------------------
    def encode(self, x: Tensor, sample: bool = False, steps: int | None = None) -> list[Tensor]:
        """Per-layer codes of ``x`` bottom to top ``[(B, d_i)]``: the top-down posterior means of q (or one
        draw with ``sample``); for ``model.posterior="langevin"`` a posterior Langevin sample."""
        if self.posterior_mode == "langevin":
            return list(torch.split(self.langevin_posterior(x, steps=steps).z, list(self.z_dims), dim=1))
        return super().encode(x, sample)

    def sample_latents(self, n: int, steps: int | None = None, step_size: float | None = None) -> list[Tensor]:
        """Joint prior samples ``[(n, d_i)]`` bottom to top (eps-space Langevin from N(0, I))."""
        return self.prior_sample(n, steps=steps, step_size=step_size)[0]

    def sample(self, n: int, steps: int | None = None, step_size: float | None = None) -> Tensor:
        """Images ``(n, C, H, W)`` in [-1, 1] from the joint prior."""
        return self.decode(self.sample_latents(n, steps=steps, step_size=step_size))

    # -- the LayeredModel protocol: eps with the eps-space joint prior ---------------------------------
    @torch.no_grad()
    def sample_state(self, n: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """The eps-space prior Langevin of ``prior_langevin`` from eps ~ N(0, I)."""
        return self.prior_sample(n, eps0=self._randn_state(n, generator), generator=generator)[1]

    @torch.no_grad()
    def resample_layers(self, state: list[Tensor], layers: tuple[int, ...],
                        generator: torch.Generator | None = None) -> list[Tensor]:
        """New eps_S by eps-space Langevin given the other layers
        (:func:`~jebm_lite.models.cond_ebm.resample_layers_eps`)."""
        lc = self.cfg.prior_langevin
        return resample_layers_eps(self.model, self.energies, [s.detach() for s in state], tuple(layers), lc.steps,
                                   lc.step_size, noise=lc.noise, generator=generator)[1]

    # -- the ScoredModel protocol (anomaly_score_parts: _ConditionalCodes): the poster's decision function ------
    @property
    def has_posterior_mean(self) -> bool:
        """``model.posterior="langevin"`` draws z by posterior Langevin: no mean in closed form."""
        return self.posterior_mode != "langevin"

    def _score_latents(self, x: Tensor, use_mean: bool, generator: torch.Generator | None,
                       langevin_steps: int | None) -> tuple[list[Tensor], list[dict[str, Tensor]] | None]:
        """``"amortized"``: z ~ q(z | x) (or its mean); ``"langevin"``: posterior Langevin
        (:meth:`langevin_posterior`, ``langevin_steps`` overrides the number of steps), no q statistics."""
        if self.posterior_mode == "langevin":
            trace = self.langevin_posterior(x, steps=langevin_steps, generator=generator)
            return list(torch.split(trace.z, list(self.model.z_dims), dim=1)), None
        return super()._score_latents(x, use_mean, generator, langevin_steps)

    def _score_energy(self, zs: list[Tensor], rec: Tensor) -> Tensor:
        """sum_i f_i(z_i), ``(B,)``: the layer energies (score = ``-log_joint(x, z)``)."""
        return self.energies.f(zs)


# ----------------------------------------------------------------------------------------------
# The learner (method "udiffusion"): two-stage, on a frozen finished "conditional" run
# ----------------------------------------------------------------------------------------------


def load_base_run(cfg: ExperimentConfig, device: torch.device | str = "cpu"):
    """The frozen base learner of a ``udiffusion`` config: the finished method-``conditional`` run at
    ``cfg.diffusion.base_run`` (a path relative to the working directory, e.g. ``runs/...`` from the
    chapters' ``notebooks/``), loaded from its newest checkpoint.

    Raises:
        ConfigError: no path, no run there, an unfinished run, a run of another method or of other data;
            the message names the fix.
    """
    hint_preset = "mnist_anomaly_conditional" if cfg.data.hold_out is not None else "mnist_conditional"
    how = (f"train it first, e.g. `python -m jebm_lite train {hint_preset} --out <dir>` (add the same "
           "data.* overrides as this run), then set diffusion.base_run=<dir>")
    path = cfg.diffusion.base_run
    if not path:
        raise ConfigError(f"method='udiffusion' needs a finished base run of method 'conditional' in "
                          f"diffusion.base_run (unset); {how}.")
    rd = RunDir(path)
    if not rd.exists():
        raise ConfigError(f"diffusion.base_run={path!r}: no run directory there "
                          f"(looked for {Path(path).resolve() / 'config.json'}); {how}.")
    if not rd.is_finished() or rd.latest_checkpoint() is None:
        raise ConfigError(f"diffusion.base_run={path!r} is not a finished run (no result.json or no checkpoint); "
                          f"finish it with `python -m jebm_lite train {path}/config.json --out {path}` (it resumes), "
                          "then train this run again.")
    base_cfg = rd.read_config()
    if base_cfg.method != "conditional":
        raise ConfigError(f"diffusion.base_run={path!r} is a run of method {base_cfg.method!r}; the u-space "
                          f"diffusion needs a ConditionalHierarchy trained with method 'conditional'; {how}.")
    if base_cfg.model.topdown != "markov":
        raise ConfigError(f"diffusion.base_run={path!r} has model.topdown={base_cfg.model.topdown!r}; the u-space "
                          "diffusion needs the markov conditional hierarchy (p(z_i | z_{i+1}), decoder on z_1); "
                          f"{how} with model.topdown=markov.")
    mine, theirs = cfg.data, base_cfg.data
    for key in ("name", "classes", "hold_out"):
        if getattr(mine, key) != getattr(theirs, key):
            raise ConfigError(f"diffusion.base_run={path!r} was trained on data.{key}={getattr(theirs, key)!r}, this "
                              f"run uses data.{key}={getattr(mine, key)!r}; set data.{key} to match, or use a base "
                              "run trained on the same data.")
    path_ckpt = rd.latest_checkpoint()
    ckpt = load_checkpoint(path_ckpt)
    base = build_learner(config_from_json(ckpt["config"]), torch.device(device))
    restore_learner(base, ckpt, path_ckpt)
    return base.to(device)


class UDiffusionLearner(_ConditionalPosterior, Learner):
    """Hierarchical EBM diffusion in u-space (Cui & Han, ICML 2024) on a frozen conditional hierarchy.

    Stage 1 (another run, method ``"conditional"``): the LVAE-style :class:`ConditionalHierarchy`, trained on
    its ELBO. Stage 2 (this learner): the T conditional EBMs :class:`DiffusionEBMPrior`, learned by DRL on the
    whitened posterior codes; the base is loaded from ``cfg.diffusion.base_run`` (:func:`load_base_run`),
    frozen (no gradients, not in any optimiser) and kept as ``self.model`` (its weights are part of this
    learner's checkpoints, so a run stays tied to the base it was trained on). Per-layer codes and KLs
    (LayerwisePosterior) are the base's; it has no log-joint anomaly score (not a ScoredModel: the
    diffusion prior has no tractable density at a single z).

    One iteration (:meth:`train_step`, report 6.1): ``eps+ = to_u(z)`` with ``z ~ q(z | x)`` (one
    reparameterised draw), then :func:`drl_train_step`. ``T = 1`` is the single-step latent EBM baseline on the
    same u-space (one unconditional EBM sampled by Langevin from N(0, I)).

    Config: ``diffusion.{T, langevin_steps, base_step, t_dim, zero_init}``; the energy nets ``ebm.{nef, layers,
    spectral_norm, activation}``; Adam ``optim.{lr_e, betas_e, weight_decay_e}`` with ExponentialLR
    ``optim.lr_decay`` per epoch.
    """

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu"):
        super().__init__()
        validate(cfg)  # the one place config values are checked (also for a cfg changed after get_config)
        self.cfg = cfg
        dc = cfg.diffusion
        base = load_base_run(cfg, device)
        self.model: ConditionalHierarchy = base.model
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.z_dims = tuple(self.model.z_dims)
        self.schedule = diffusion_schedule(dc.T)
        e = cfg.ebm
        self.prior = DiffusionEBMPrior(self.z_dims, dc.T, e.nef, e.layers, dc.t_dim, e.spectral_norm, e.activation,
                                       dc.zero_init)
        self.to(device)
        o = cfg.optim
        self.optimizers = {"e": _adam(self.prior.parameters(), o.lr_e, o.betas_e, o.weight_decay_e, o.fused)}
        self.schedulers = {"e": torch.optim.lr_scheduler.ExponentialLR(self.optimizers["e"], gamma=o.lr_decay)}

    @property
    def device(self) -> torch.device:
        return self.prior.device

    def train(self, mode: bool = True) -> UDiffusionLearner:
        """Train/eval mode for the energies; the frozen base always stays in eval mode."""
        super().train(mode)
        self.model.eval()
        return self

    def train_step(self, x: Tensor, step: int) -> dict[str, float]:
        """One DRL step on the posterior codes of ``x: (B, C, H, W)`` (report 6.1 steps 1-6)."""
        dc = self.cfg.diffusion
        with torch.no_grad():
            zs, _ = self.model.posterior(x)
            u = flatten_u(to_u(self.model, zs))
        return drl_train_step(self.prior, self.model, self.optimizers["e"], u, self.schedule,
                              dc.langevin_steps, dc.base_step, sync=self.sync_grads)

    # -- what chapters use ------------------------------------------------------------------
    def sample_u(self, n: int, steps: int | None = None, base_step: float | None = None,
                 record_levels: bool = False) -> DiffusionSample:
        """:func:`sample_diffusion_prior` with the config's Langevin settings (overridable)."""
        dc = self.cfg.diffusion
        return sample_diffusion_prior(self.prior, self.model, n, dc.langevin_steps if steps is None else steps,
                                      dc.base_step if base_step is None else base_step, record_levels, self.schedule)

    def sample_latents(self, n: int, steps: int | None = None, base_step: float | None = None) -> list[Tensor]:
        """Prior samples ``z = T(y_0)``, ``[(n, d_i)]`` bottom to top."""
        return self.sample_u(n, steps, base_step).z

    @torch.no_grad()
    def decode(self, zs: Sequence[Tensor]) -> Tensor:
        """The base decoder's mean image ``(B, C, H, W)`` in [-1, 1] from ``zs`` (bottom to top)."""
        return self.model.decode(zs[0])

    def sample(self, n: int, **kw) -> Tensor:
        """Decoded prior samples ``(n, C, H, W)`` in [-1, 1]."""
        return self.decode(self.sample_latents(n, **kw))

    @torch.no_grad()
    def encode(self, x: Tensor) -> list[Tensor]:
        """The base's posterior means ``[(B, d_i)]`` bottom to top."""
        return self.model.posterior(x, use_mean=True)[0]

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))


LEARNERS: dict[str, type[Learner]] = {
    "joint": HierarchicalLearner,
    "vlae": HierarchicalLearner,
    "lebm": LEBMLearner,
    "conditional": ConditionalLearner,
    "cond_joint": CondJointLearner,
    "udiffusion": UDiffusionLearner,
}


def build_learner(cfg: ExperimentConfig, device: torch.device | str = "cpu") -> Learner:
    """The learner for ``cfg.method``, on ``device``."""
    if cfg.method not in LEARNERS:
        raise ConfigError(f"method={cfg.method!r} is not one of {', '.join(LEARNERS)}")
    return LEARNERS[cfg.method](cfg, device)
