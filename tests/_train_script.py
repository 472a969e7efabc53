"""A tiny deterministic learner for the trainer tests, and a script that trains it.

Imported by tests/test_trainer.py (``DummyLearner``, ``make_cfg``, ``make_data``, ``build``) and run
as a subprocess for the kill/resume and the two-process (gloo) tests::

    python tests/_train_script.py --run-dir DIR [--max-steps N] [--sleep S] [--no-noise] ...

Under ``WORLD_SIZE=2 RANK=r LOCAL_RANK=r MASTER_ADDR=... MASTER_PORT=...`` it trains data-parallel.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from jebm_lite.config import ExperimentConfig, TrainConfig  # noqa: E402
from jebm_lite.training.learner import Learner  # noqa: E402
from jebm_lite.training.trainer import Trainer  # noqa: E402

DIM, LATENT = 16, 4


class DummyLearner(Learner):
    """An autoencoder (optimiser "g") and a small energy net on its latents (optimiser "e").

    Both losses are means over the batch, so averaging gradients over processes equals one process
    on the combined batch. With ``noise`` the latents get torch noise and the EBM's negatives use
    torch, NumPy and Python randomness, so exact resume needs every RNG state restored. Each
    optimiser has an ExponentialLR scheduler (stepped per epoch by the Trainer).
    """

    def __init__(self, hidden: int = 8, noise: bool = True, lr_g: float = 1e-2, lr_e: float = 5e-3,
                 gamma: float = 0.9):
        super().__init__()
        self.noise = noise
        self.enc = nn.Sequential(nn.Linear(DIM, hidden), nn.Tanh(), nn.Linear(hidden, LATENT))
        self.dec = nn.Linear(LATENT, DIM)
        self.ebm = nn.Sequential(nn.Linear(LATENT, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.g_params = [*self.enc.parameters(), *self.dec.parameters()]
        self.optimizers = {
            "g": torch.optim.Adam(self.g_params, lr=lr_g, weight_decay=1e-4),
            "e": torch.optim.Adam(self.ebm.parameters(), lr=lr_e, betas=(0.5, 0.9)),
        }
        self.schedulers = {k: torch.optim.lr_scheduler.ExponentialLR(o, gamma) for k, o in self.optimizers.items()}
        self.calls = 0

    def train_step(self, x: torch.Tensor, step: int) -> dict[str, float]:
        self.calls += 1
        x = x.flatten(1)
        opt_g, opt_e = self.optimizers["g"], self.optimizers["e"]
        z = self.enc(x)
        z_in = z + 0.1 * torch.randn_like(z) if self.noise else z
        loss_g = ((self.dec(z_in) - x) ** 2).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.sync_grads(self.g_params)
        opt_g.step()

        z_pos = z.detach()
        if self.noise:
            z_neg = torch.randn_like(z_pos) * (1.0 + 0.1 * (np.random.rand() + random.random()))
        else:
            z_neg = 0.5 * z_pos + 1.0
        f_pos = self.ebm(z_pos).squeeze(-1)
        f_neg = self.ebm(z_neg).squeeze(-1)
        loss_e = f_neg.mean() - f_pos.mean() + 0.1 * (f_pos**2 + f_neg**2).mean()
        opt_e.zero_grad(set_to_none=True)
        loss_e.backward()
        self.sync_grads(self.ebm.parameters())
        opt_e.step()
        return {"loss/g": loss_g.item(), "loss/e": loss_e.item(),
                "energy/pos": f_pos.mean().item(), "energy/neg": f_neg.mean().item()}


def make_cfg(max_steps: int = 20, batch_size: int = 8, ckpt_every: int = 4, log_every: int = 3,
             keep_ckpts: int = 3, seed: int = 3, deterministic: bool = False, **train) -> ExperimentConfig:
    return ExperimentConfig(
        name="dummy",
        train=TrainConfig(batch_size=batch_size, max_steps=max_steps, seed=seed, deterministic=deterministic,
                          device="cpu", log_every=log_every, ckpt_every=ckpt_every, keep_ckpts=keep_ckpts,
                          progress=False, **train),
    )


def make_data(n: int = 48) -> torch.Tensor:
    """(n, 1, 4, 4) images in [-1, 1], the same on every call."""
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 4, 4, generator=g).clamp(-1, 1)


def build(cfg: ExperimentConfig | None = None, device=None, hidden: int = 8, noise: bool = True) -> DummyLearner:
    """A freshly initialised learner (seeded, so every process builds the same one)."""
    torch.manual_seed(0)
    return DummyLearner(hidden=hidden, noise=noise)


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ckpt-every", type=int, default=4)
    p.add_argument("--log-every", type=int, default=3)
    p.add_argument("--keep", type=int, default=3)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep after each step")
    p.add_argument("--no-noise", action="store_true")
    p.add_argument("--deterministic", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = make_cfg(a.max_steps, a.batch_size, a.ckpt_every, a.log_every, a.keep, deterministic=a.deterministic)
    learner = build(noise=not a.no_noise)

    def hook(step, metrics):
        if a.sleep:
            time.sleep(a.sleep)
        return metrics

    Trainer(cfg, learner, make_data(), a.run_dir, fault_hook=hook).fit()
    from jebm_lite.training import distributed

    distributed.cleanup()


if __name__ == "__main__":
    main()
