"""torch.distributed without a framework: init from env vars, deterministic sharding, reductions.

``accelerate launch`` and ``torchrun`` both export RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; when WORLD_SIZE > 1 :func:`init_from_env` joins the process group (gloo on CPU, nccl
on GPU). Every process holds the full model (data parallel); after the micro-batches of an
optimizer step the gradients are summed across processes (:func:`sum_gradients`). Losses are
already divided by the *global* labelled-token count, so the sum is the gradient of the whole
global batch, identical to one process running the same batch.

With ``strategy = "fsdp"`` (:func:`shard_model`) the model is instead sharded with FSDP2
(``torch.distributed.fsdp.fully_shard``: every decoder layer, then the root) so that each process
holds 1/world of the weights, gradients and optimizer state; FSDP's reduce-scatter then *sums*
the gradients (divide factor 1), which keeps the same global-token normalisation. Every forward
of a sharded model is a collective (all-gathers), so no-grad passes that split examples over
processes (scoring, sampling) run the same number of forwards on every process
(:func:`even_batches`) and give the registered shards back afterwards (:func:`reshard`).
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


# ------------------------------------------------------------------------------------------
# FSDP (FSDP2, ``fully_shard``)


def is_fsdp(model: torch.nn.Module) -> bool:
    """Whether ``model`` was sharded by :func:`shard_model` (its parameters are DTensors)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of an HF causal LM: the first ``ModuleList`` named ``*layers``
    (``model.layers`` of Llama / Qwen2 / Mistral; ``transformer.h`` style models are refused)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers":
            return list(module)
    raise ValueError(
        f"{type(model).__name__} has no ModuleList named 'layers' to shard with FSDP "
        "(supported: Llama / Qwen2-style decoders)"
    )


def shard_model(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """Shard ``model`` in place with FSDP2 over all processes: each decoder layer, then the root
    (embeddings, final norm, LM head, tied or not). Parameters move to the mesh's device (cuda
    with nccl, else cpu) layer by layer, so a model loaded on the CPU never has to fit one GPU.

    Gradients are reduce-scattered as plain sums (divide factor 1, sum-only collectives, which
    gloo also supports), because the losses are already divided by the global token count.
    Build the optimizer *after* this call. One process: returns ``model`` unchanged.
    """
    if info.world_size <= 1:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    device_type = "cuda" if info.backend == "nccl" else "cpu"
    mesh = init_device_mesh(device_type, (info.world_size,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return model


def reshard(model: torch.nn.Module) -> None:
    """Free the unsharded parameters an FSDP model still holds and register its shards again.

    FSDP2 keeps the root's parameters (embeddings, final norm, LM head) unsharded after a forward,
    expecting a backward; after a no-grad pass they would stay gathered, and an optimizer built
    over ``model.parameters()`` then would see them instead of the shards. Local (no
    communication); a no-op for a model that is not sharded or already is.
    """
    if not is_fsdp(model):
        return
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def even_batches(batches: list, model: torch.nn.Module) -> list:
    """This process's batches of a no-grad pass, padded with ``None`` to the longest count over
    processes when ``model`` is sharded (every forward of an FSDP model is a collective: a
    process that ran fewer would leave the others waiting). A ``None`` batch stands for a forward
    whose output is discarded. Unsharded models: ``batches`` unchanged, no communication."""
    batches = list(batches)
    if not is_fsdp(model):
        return batches
    longest = max(gather_objects(len(batches)))
    return batches + [None] * (longest - len(batches))


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's full (unsharded) state dict on the CPU.

    For an FSDP model this is a collective (call it on every process); rank 0 gets every tensor,
    the other ranks an empty dict. Otherwise it is ``model.state_dict()``.
    """
    if not is_fsdp(model):
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def fsdp_train_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(model, optimizer) full state dicts of an FSDP model, on rank 0 (collective; the other
    ranks get empty dicts). Optimizer state is keyed by parameter name, not index."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return (
        get_model_state_dict(model, options=options),
        get_optimizer_state_dict(model, optimizer, options=options),
    )


def load_fsdp_train_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, model_state: dict, optim_state: dict
) -> None:
    """Inverse of :func:`fsdp_train_state`: every process passes the same full state dicts and
    keeps its own shard of them (collective)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    if optim_state.get("state"):
        set_optimizer_state_dict(model, optimizer, optim_state, options=options)
        return
    # No per-parameter state (SGD without momentum), which torch's loader refuses ("Expected
    # device to be set"): only the groups' hyperparameters (the scheduled lr) to restore.
    for group, saved in zip(optimizer.param_groups, optim_state["param_groups"], strict=True):
        group.update({k: v for k, v in saved.items() if k != "params"})


def local_value(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a possibly distributed one (e.g. FSDP's gradient norm, a DTensor)."""
    full = getattr(value, "full_tensor", None)
    return full() if full is not None else value
