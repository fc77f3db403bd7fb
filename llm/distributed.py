"""torch.distributed without a framework: init from env vars, deterministic sharding, reductions.

``accelerate launch`` and ``torchrun`` both export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; when WORLD_SIZE > 1 :func:`init_from_env` joins the process group (gloo on CPU, nccl
on GPU). Every process holds the full model (data parallel); after the micro-batches of an
optimizer step the gradients are summed across processes (:func:`sum_gradients`). Losses are
already divided by the *global* labelled-token count, so the sum is the gradient of the whole
global batch, identical to one process running the same batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group described by the environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def current() -> DistInfo:
    """The DistInfo of an already initialised process group (single process otherwise)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    rank = dist.get_rank()
    return DistInfo(
        rank=rank,
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", rank)),
        backend=dist.get_backend(),
    )


def resolve_device(device: str, info: DistInfo) -> torch.device:
    """Where inputs go: ``auto``/``spread`` -> cuda:LOCAL_RANK if CUDA is available, else cpu."""
    if device in ("auto", "spread"):
        if torch.cuda.is_available():
            return torch.device(f"cuda:{info.local_rank}")
        return torch.device("cpu")
    return torch.device(device)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (returns the input unchanged for one process)."""
    if current().world_size > 1:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def sum_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum the ``.grad`` of ``params`` over processes, in one flat buffer per dtype."""
    if current().world_size <= 1:
        return
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def gather_objects(obj: Any) -> list[Any]:
    """List of ``obj`` from every process, in rank order (``[obj]`` for one process)."""
    info = current()
    if info.world_size <= 1:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if current().world_size > 1:
        dist.barrier()


def shard(indices: list[int], info: DistInfo) -> list[int]:
    """This process's share of a global list: every ``world_size``-th item from ``rank``.

    Deterministic and independent of timing, like DistributedSampler without padding; the union
    over ranks is exactly ``indices``.
    """
    return list(indices[info.rank :: info.world_size])
