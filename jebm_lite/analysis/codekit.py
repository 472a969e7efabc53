"""Code kits: what a trained Tab. 1 model leaves behind so that it can be probed again without retraining.

A kit holds, for every training and test image of the data set, the posterior means (float32) and
log-variances (float16) of q_phi(z_i | x) (paper Eq. 8) over all layers, concatenated bottom to top, and,
for the joint prior, the state of the EBM f_alpha (paper Eq. 4). That is all a latent probe (means or samples,
standardised or raw) and the "is the EBM active?" measures read. About 2.5 MB per MNIST model, against
13 MB for the generator and inference networks, so that every model of a campaign fits in the repository.

Files: ``<name>.pt`` (a dict of tensors, loaded with ``weights_only=True``: no code runs on load) and
``<name>.json`` (provenance and the sha256 of the ``.pt``; :func:`load_kit` refuses a file whose hash differs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jebm_lite.io import atomic_write, read_json, safe_torch_load, sha256_file, write_json_atomic
from jebm_lite.runtime import CheckpointError

KIT_FORMAT = "jebm_lite.codekit/1"


@dataclass
class CodeKit:
    """Posterior codes of one trained model. Shapes: ``mu_*`` (N, D) float32, ``logvar_*`` (N, D) float16 with
    D = sum(z_dims); ``y_*`` (N,) int64 labels; ``ebm`` the EBM's state dict (joint prior) or None."""

    z_dims: tuple[int, ...]
    mu_train: Tensor
    logvar_train: Tensor
    y_train: Tensor
    mu_test: Tensor
    logvar_test: Tensor
    y_test: Tensor
    ebm: dict[str, Tensor] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def layers(self, split: str = "train", kind: str = "mean",
               generator: torch.Generator | None = None) -> list[Tensor]:
        """Per-layer codes ``[(N, d_i)]`` of ``split`` (``train`` | ``test``): the posterior means
        (``kind="mean"``) or one draw z = mu + sigma * eps (``kind="sample"``, paper Eq. 8, float32)."""
        mu = getattr(self, f"mu_{split}")
        if kind == "sample":
            std = (0.5 * getattr(self, f"logvar_{split}").float()).exp()
            mu = mu + std * torch.randn(mu.shape, generator=generator)
        elif kind != "mean":
            raise ValueError(f"kind must be 'mean' or 'sample', not {kind!r}")
        return list(mu.split(list(self.z_dims), dim=1))


@torch.no_grad()
def extract_kit(learner, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], batch_size: int = 500,
                meta: dict[str, Any] | None = None) -> CodeKit:
    """The kit of a learner with ``posterior(x) -> (mus, logvars)`` (a joint or VLAE learner).

    ``train``, ``test``: ``(images (N, C, H, W) in [-1, 1], labels (N,))``."""
    dev = next(learner.parameters()).device

    def codes(x_all: Tensor) -> tuple[Tensor, Tensor]:
        mus, lvs = [], []
        for i in range(0, x_all.shape[0], batch_size):
            m, lv = learner.posterior(x_all[i:i + batch_size].to(dev))
            mus.append(torch.cat(m, 1).float().cpu())
            lvs.append(torch.cat(lv, 1).float().cpu())
        return torch.cat(mus), torch.cat(lvs).half()

    mu_tr, lv_tr = codes(train[0])
    mu_te, lv_te = codes(test[0])
    prior = getattr(learner, "prior", None)
    ebm = None
    if prior is not None and getattr(prior, "energy", None) is not None:
        ebm = {k: v.detach().float().cpu().clone() for k, v in prior.state_dict().items()}
    return CodeKit(tuple(int(d) for d in learner.z_dims), mu_tr, lv_tr, train[1].long().cpu(), mu_te, lv_te,
                   test[1].long().cpu(), ebm, dict(meta or {}))


def kit_paths(path: str | Path) -> tuple[Path, Path]:
    """``(<name>.pt, <name>.json)`` for ``<name>`` with or without a suffix."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix in (".pt", ".json") else p
    return base.with_suffix(".pt"), base.with_suffix(".json")


def save_kit(kit: CodeKit, path: str | Path) -> Path:
    """Write ``<name>.pt`` then ``<name>.json`` (with its sha256), each atomically. Returns the ``.pt`` path."""
    pt, js = kit_paths(path)
    blob = {"z_dims": torch.tensor(kit.z_dims), "mu_train": kit.mu_train, "logvar_train": kit.logvar_train,
            "y_train": kit.y_train.to(torch.uint8), "mu_test": kit.mu_test, "logvar_test": kit.logvar_test,
            "y_test": kit.y_test.to(torch.uint8)}
    if kit.ebm is not None:
        blob.update({f"ebm.{k}": v for k, v in kit.ebm.items()})
    atomic_write(pt, lambda f: torch.save(blob, f), mode="wb")
    write_json_atomic(js, {"format": KIT_FORMAT, "sha256": sha256_file(pt), "bytes": pt.stat().st_size,
                           "z_dims": list(kit.z_dims), **kit.meta})
    return pt


def load_kit(path: str | Path) -> CodeKit:
    """Read a kit written by :func:`save_kit`, after checking its sha256.

    Raises:
        CheckpointError: a missing file, a hash that differs (a corrupt or changed file), or a wrong format.
    """
    pt, js = kit_paths(path)
    if not js.exists() or not pt.exists():
        raise CheckpointError(f"code kit {pt} or {js.name} is missing; run the campaign lane for this cell again")
    meta = read_json(js)
    if meta.get("format") != KIT_FORMAT:
        raise CheckpointError(f"{js} is not a code kit ({KIT_FORMAT})")
    if sha256_file(pt) != meta.get("sha256"):
        raise CheckpointError(f"code kit {pt} does not match the sha256 in {js.name} (corrupt or changed); "
                              "restore it with git or write it again from its run")
    blob = safe_torch_load(pt, "code kit", "restore it with git or write it again from its run")
    ebm = {k[4:]: v for k, v in blob.items() if k.startswith("ebm.")} or None
    info = {k: v for k, v in meta.items() if k not in ("format", "sha256", "bytes", "z_dims")}
    return CodeKit(tuple(int(d) for d in blob["z_dims"]), blob["mu_train"], blob["logvar_train"],
                   blob["y_train"].long(), blob["mu_test"], blob["logvar_test"], blob["y_test"].long(), ebm, info)
