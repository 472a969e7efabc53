"""One learner per method: the networks, their optimisers and one iteration's updates.

| method        | model                                   | learning                                        |
|---------------|-----------------------------------------|-------------------------------------------------|
| ``joint``     | hierarchical G + ladder q + joint EBM   | paper Eqs. 9-12 (variational joint learning)    |
| ``vlae``      | the same networks, N(0, I) prior        | the ELBO (Zhao et al. 2017)                     |
| ``lebm``      | one-layer G + latent EBM, no q          | prior and posterior Langevin (Pang et al. 2020) |
| ``conditional`` | LVAE/BIVA-style conditional hierarchy | the ELBO with free bits                         |

The :class:`~jebm_lite.trainer.Trainer` calls ``train_step`` once per batch; chapters call
``encode`` / ``sample`` / ``reconstruct`` on a trained learner.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from . import objectives as obj
from .config import ExperimentConfig
from .data import image_shape as dataset_image_shape
from .models.conditional import ConditionalHierarchy
from .models.ebm import JointEBMPrior
from .models.hierarchical import build_hierarchical
from .runtime import ConfigError
from .sampling import LangevinTrace, sample_posterior, sample_prior
from .trainer import Learner


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


def _adam(params, lr: float, betas: tuple[float, float], wd: float) -> torch.optim.Adam:
    params = [p for p in params if p.requires_grad]
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)


def ebm_update(learner: Learner, trace: LangevinTrace, z_post: Tensor) -> dict[str, float]:
    """One optimiser step of ``learner.prior`` on the EBM loss (paper Eq. 10).

    ``trace``: short-run prior chains (Eqs. 13-14), ``z_post``: (B, d) detached posterior codes.
    Returns the EBM loss, the mean f of both sample sets (the ebm-anatomy energy-gap diagnostic) and
    the prior chains' last-step gradient norm.
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
        "e_loss": e_loss.item(),
        "energy/prior": f_prior.mean().item(),
        "energy/post": f_post.mean().item(),
        "langevin/grad_norm": float(trace.grad_norm[-1]) if len(trace.grad_norm) else 0.0,
    }


class HierarchicalLearner(Learner):
    """Joint EBM prior (``method="joint"``) or VLAE (``method="vlae"``, f ≡ 0) on a VLAE layout.

    One iteration (reference ``fit`` of the official code, paper Algorithm 1):

    1. inference + generator step on ``Gfactor·rec + Σ_i KL_i − f(z_q)`` (Eqs. 11-12), z_q by
       reparameterisation from q_φ(z|x) (Eq. 8);
    2. EBM step on ``mean f(z_prior) − mean f(z_q)`` (Eq. 10), z_prior from short-run prior
       Langevin started at N(0, I) (Eqs. 13-14), z_q detached.
    """

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu"):
        super().__init__()
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
                       o.lr_g, o.betas_g, o.weight_decay_g)
        }
        if self.prior.energy is not None:
            self.optimizers["e"] = _adam(self.prior.parameters(), o.lr_e, o.betas_e, o.weight_decay_e)
        self.schedulers = {
            k: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=o.lr_decay) for k, opt in self.optimizers.items()
        }

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def _autocast(self):
        on = self.cfg.train.amp_bf16 and self.device.type == "cuda"
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=on)

    def posterior(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """q_φ(z|x) (Eq. 8): per-layer means and log-variances, bottom to top, each (B, d_i)."""
        with self._autocast():
            heads = self.inference(x)
        mus = [m.float() for m, _ in heads]
        logvars = [lv.float() for _, lv in heads]
        return mus, logvars

    def train_step(self, x: Tensor, step: int) -> dict[str, float]:
        cfg = self.cfg
        sigma = cfg.model.sigma
        # -- 1. inference + generator (Eqs. 11-12) ------------------------------------------
        mus, logvars = self.posterior(x)
        zs = [obj.reparameterize(m, lv) for m, lv in zip(mus, logvars)]
        with self._autocast():
            x_hat = self.generator(zs)
        x_hat = x_hat.float()
        with frozen(self.prior):
            f_q = self.prior.f(zs)
        loss, parts = obj.joint_inference_loss(x, x_hat, zs, mus, logvars, f_q, sigma)
        opt_g = self.optimizers["g"]
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.sync_grads(list(self.generator.parameters()) + list(self.inference.parameters()))
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(opt_g.param_groups[0]["params"], cfg.optim.grad_clip)
        opt_g.step()

        metrics: dict[str, float] = {
            "loss": float(parts["loss"]),
            "rec": float(parts["rec"]),
            "mse": float(((x_hat.detach() - x) ** 2).mean()),
        }
        for i, kl in enumerate(parts["kl"]):
            metrics[f"kl/{i + 1}"] = float(kl)

        # -- 2. EBM (Eq. 10) on short-run prior chains (Eqs. 13-14) ------------------------
        if self.prior.energy is not None:
            lc = cfg.prior_langevin
            trace = sample_prior(self.prior, x.shape[0], lc.steps, lc.step_size, noise=lc.noise)
            metrics.update(ebm_update(self, trace, self.prior.cat([z.detach() for z in zs])))
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


class LEBMLearner(Learner):
    """Latent-space EBM prior of Pang et al. (2020): one latent layer, no inference network.

    Per iteration: posterior Langevin (from N(0, I)) on log p(x|z) + f(z) − ||z||²/2, prior Langevin on
    f(z) − ||z||²/2, a generator step on the posterior samples, then the EBM step (Eq. 10).
    """

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu"):
        super().__init__()
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
        if self.prior.energy is None:
            raise ConfigError("method='lebm' needs an EBM: set ebm.nef > 0")
        self.to(device)
        o = cfg.optim
        self.optimizers = {
            "g": _adam(self.generator.parameters(), o.lr_g, o.betas_g, o.weight_decay_g),
            "e": _adam(self.prior.parameters(), o.lr_e, o.betas_e, o.weight_decay_e),
        }
        self.schedulers = {
            k: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=o.lr_decay) for k, opt in self.optimizers.items()
        }

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def infer(self, x: Tensor, steps: int | None = None, record: bool = False):
        """Posterior Langevin from N(0, I) (Pang et al. 2020); returns the LangevinTrace."""
        lc = self.cfg.posterior_langevin
        with frozen(self.generator), frozen(self.prior):
            return sample_posterior(
                self.generator, self.prior, x, self.cfg.model.sigma, lc.steps if steps is None else steps,
                lc.step_size, noise=lc.noise, record=record,
            )

    def train_step(self, x: Tensor, step: int) -> dict[str, float]:
        cfg = self.cfg
        z_post = self.infer(x).z.detach()
        lc = cfg.prior_langevin
        trace = sample_prior(self.prior, x.shape[0], lc.steps, lc.step_size, noise=lc.noise)

        x_hat = self.generator(self.prior.split(z_post))
        g_loss = obj.lebm_generator_loss(x, x_hat, cfg.model.sigma)
        opt_g = self.optimizers["g"]
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.sync_grads(list(self.generator.parameters()))
        opt_g.step()

        return {
            "loss": g_loss.item(),
            "mse": float(((x_hat.detach() - x) ** 2).mean()),
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


class ConditionalLearner(Learner):
    """LVAE/BIVA-style conditional Gaussian hierarchy trained on its ELBO (with free bits)."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg
        shape = dataset_image_shape(cfg.data.name)
        z_dims = cfg.model.z_dims or (48, 40, 32, 24, 16, 8)
        self.model = ConditionalHierarchy(
            image_shape=shape, z_dims=tuple(z_dims), hidden=cfg.model.hidden or 512,
            likelihood=cfg.model.likelihood, sigma=cfg.model.sigma,
        )
        self.z_dims = tuple(z_dims)
        self.to(device)
        o = cfg.optim
        self.optimizers = {"g": _adam(self.model.parameters(), o.lr_g, o.betas_g, o.weight_decay_g)}
        self.schedulers = {"g": torch.optim.lr_scheduler.ExponentialLR(self.optimizers["g"], gamma=o.lr_decay)}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train_step(self, x: Tensor, step: int) -> dict[str, float]:
        loss, parts = self.model.elbo(x, free_bits=self.cfg.model.free_bits)
        opt = self.optimizers["g"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.sync_grads(list(self.model.parameters()))
        if self.cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        opt.step()
        metrics = {"loss": loss.item(), "nll": parts["nll"].mean().item()}
        for i, kl in enumerate(parts["kl"]):
            metrics[f"kl/{i + 1}"] = kl.mean().item()
        return metrics

    @torch.no_grad()
    def sample(self, n: int, eps: list[Tensor] | None = None) -> Tensor:
        if eps is None:
            eps = [torch.randn(n, d, device=self.device) for d in self.z_dims]
        return self.model.sample(eps)[1]


LEARNERS: dict[str, type[Learner]] = {
    "joint": HierarchicalLearner,
    "vlae": HierarchicalLearner,
    "lebm": LEBMLearner,
    "conditional": ConditionalLearner,
}


def build_learner(cfg: ExperimentConfig, device: torch.device | str = "cpu") -> Learner:
    """The learner for ``cfg.method``, on ``device``."""
    if cfg.method not in LEARNERS:
        raise ConfigError(f"method={cfg.method!r} is not one of {', '.join(LEARNERS)}")
    return LEARNERS[cfg.method](cfg, device)
