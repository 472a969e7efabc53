"""Data-parallel training across processes (``torchrun``), kept explicit and small.

Launch with ``torchrun --nproc_per_node N -m jebm_lite train CONFIG ...``. torchrun sets
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_from_env`
reads them and joins the process group (NCCL on CUDA, gloo on CPU). Without those variables (or with
``WORLD_SIZE=1``) every function here is a no-op, so single-process code needs no branches.

How the trainer uses it: every rank starts from rank 0's parameters (:func:`broadcast_module`),
takes its own shard of each batch, and averages gradients with :func:`all_reduce_grads` before each
optimiser step, so all ranks apply the same update and stay identical.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """``$LOCAL_RANK`` as set by torchrun (0 when unset)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True on rank 0, the only rank that writes files and prints."""
    return rank() == 0


def local_device(device: str | torch.device) -> torch.device:
    """The device this rank should use: ``cuda:LOCAL_RANK`` for CUDA under torchrun, else ``device``."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", local_rank())
    return dev


def init_from_env(device: str | torch.device) -> bool:
    """Join the process group described by torchrun's environment variables.

    Args:
        device: the training device; CUDA selects the NCCL backend and ``cuda:LOCAL_RANK`` becomes
            the current device, anything else selects gloo.

    Returns:
        True when running distributed (``WORLD_SIZE > 1``), False otherwise. Calling it again once
        the group exists does nothing and returns True.
    """
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(local_rank())
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return True


def all_reduce_grads(params: Iterable[torch.Tensor]) -> None:
    """Average ``.grad`` over all processes, in place (a no-op when not distributed).

    This is the same arithmetic as :class:`torch.nn.parallel.DistributedDataParallel`: every rank
    ends up with the mean of the ranks' gradients, so with a loss that is a mean over the batch the
    update equals that of one process on the combined batch. We do it by hand rather than wrapping
    the networks in DDP because one iteration of the joint EBM prior model has **two** optimisers
    (generator + inference networks, and the EBM), each stepped after its own backward pass, and
    because Langevin chains call the EBM many times *outside* any loss (gradients with respect to the
    latents, not the parameters). DDP's hooks fire on every backward through the wrapped module and
    expect exactly one reduction per forward, which these chains would break; an explicit reduction
    right before each ``optimizer.step()`` is simple and exact.

    Parameters without a gradient are skipped; all ranks run the same code, so they skip the same
    ones. Gradients are flattened into one buffer per (device, dtype) so that each call is a single
    collective.
    """
    if not is_distributed():
        return
    ws = world_size()
    buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    for grads in buckets.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(ws)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank, in place (no-op when not distributed)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def all_gather_object(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes in place and return it (unchanged when not distributed)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    """Wait for all processes (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
