"""Multi-process training helpers: who am I (torchrun or SLURM), restarts, gathering with grad.

Launchers tell each process its place through the environment: torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_WORLD_SIZE`` and, after an elastic restart,
``TORCHELASTIC_RESTART_COUNT``; ``srun`` sets ``SLURM_PROCID``, ``SLURM_NTASKS``,
``SLURM_NTASKS_PER_NODE`` and, for a requeued job, ``SLURM_RESTART_COUNT``. Reading them
needs no process group, so paths and the Trainer's devices can be decided before one
exists. Nothing here imports Lightning.

Shapes: b = rows on this process, w = world size, e = feature size.
"""

from __future__ import annotations

import os
import re

import torch
import torch.distributed as dist

# Lightning treats a SLURM job with one of these names as an interactive shell, not srun.
_SLURM_INTERACTIVE_NAMES = ("bash", "interactive")


def _under_srun() -> bool:
    env = os.environ
    return (
        "WORLD_SIZE" not in env
        and "SLURM_NTASKS" in env
        and "SLURM_PROCID" in env
        and env.get("SLURM_JOB_NAME") not in _SLURM_INTERACTIVE_NAMES
    )


def world_size() -> tuple[int, int]:
    """(processes in the job, processes on this node): torchrun's or srun's, (1, 1) alone."""
    env = os.environ
    if _under_srun():
        world = int(env["SLURM_NTASKS"])
        # "4" or "4(x2)": Lightning's SLURM support needs --ntasks-per-node, so it is set.
        match = re.match(r"\d+", env.get("SLURM_NTASKS_PER_NODE", str(world)))
        return world, int(match.group()) if match else world
    world = int(env.get("WORLD_SIZE", "1"))
    return world, int(env.get("LOCAL_WORLD_SIZE", str(world)))


def process_rank() -> int:
    """This process's global rank (0 alone)."""
    if _under_srun():
        return int(os.environ["SLURM_PROCID"])
    return int(os.environ.get("RANK", "0"))


def is_rank_zero() -> bool:
    return process_rank() == 0


def restart_count() -> int:
    """How often the launcher restarted this job: torchrun's elastic restarts
    (``MAX_RESTARTS``) or SLURM requeues; 0 on a first start."""
    env = os.environ
    return int(env.get("TORCHELASTIC_RESTART_COUNT") or env.get("SLURM_RESTART_COUNT") or 0)


def is_distributed() -> bool:
    """A process group with more than one process is up (inside ``trainer.fit``)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows, in rank order: [b, ...] → [w·b, ...]; ``x`` itself alone.

    Gradients flow back to each process's own rows: the backward sums the gradients every
    process computed for those rows. Every process must call this with the same b.
    Tensors that need no gradient (masks) are gathered as they are (bool as uint8).
    """
    if not is_distributed():
        return x
    if x.requires_grad:
        return _GatherRows.apply(x)
    as_int = x.to(torch.uint8) if x.dtype == torch.bool else x
    return _all_gather(as_int).to(x.dtype)


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


class _GatherRows(torch.autograd.Function):
    """all_gather with a backward that works on every backend (gloo has no
    reduce_scatter, and torch.distributed.nn's all_gather is deprecated in torch 2.13):
    all_reduce the [w·b, ...] gradient, keep this process's b rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rows = x.shape[0]
        return _all_gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # sum over processes
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]
