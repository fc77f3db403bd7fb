"""Step checkpoints (resume) of the optimisation loop, without pickle.

A checkpoint is a folder written whole by :func:`pathdep.io.atomic_dir` (into ``NAME.tmp-PID``,
then renamed to ``NAME``), so a run killed at any moment leaves the old checkpoint or the new one:

- ``tensors.safetensors``: every tensor (trainable weights, optimizer moments, step counters);
- ``state.json``: everything else (step, scheduler, optimizer hyperparameters, the run's
  records), with each tensor replaced by a reference into the safetensors file;
- ``step.json``: the step index and the strategy (read without loading anything).

Nothing is unpickled on resume: a folder holding a pickled ``state.pt`` (the old format, or a
crafted file) is refused with an error instead of being loaded. RNG states need not be stored:
every optimizer step reseeds torch from (seed, step, rank) (:func:`llm.batches.stable_seed` in
:func:`llm.loop.run_loop`), and the data order is a function of (seed, epoch), so the step index
is the whole of the remaining state.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from llm import distributed as D
from pathdep.errors import BadInput
from pathdep.io import atomic_dir

TENSORS = "tensors.safetensors"
STATE = "state.json"
STEP = "step.json"


class CheckpointError(BadInput):
    """A step checkpoint that cannot be resumed (pickled, from another strategy, mismatched)."""


# ------------------------------------------------------------------------------------------
# Nested state <-> (JSON skeleton, flat tensors)


def flatten_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (dicts with str or int keys, lists, tuples, tensors, numbers) into a
    JSON skeleton and a flat ``{name: tensor}`` dict. In the skeleton every dict is
    ``{"dict": [[key, value], ...]}``, a tuple ``{"tuple": [...]}``, a tensor ``{"tensor": name}``
    and a non-finite float ``{"float": "inf"}``, so decoding is unambiguous."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = x.detach().cpu().clone().contiguous()
            return {"tensor": name}
        if isinstance(x, dict):
            for k in x:
                if not isinstance(k, str | int) or isinstance(k, bool):
                    raise TypeError(f"cannot store a state key of type {type(k).__name__}")
            return {"dict": [[k, walk(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"tuple": [walk(v) for v in x]}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, float) and not math.isfinite(x):
            return {"float": repr(x)}
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(f"cannot store a state value of type {type(x).__name__}")

    return walk(obj), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    if isinstance(skeleton, dict):
        if "tensor" in skeleton:
            return tensors[skeleton["tensor"]]
        if "dict" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["dict"]}
        if "tuple" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["tuple"])
        if "float" in skeleton:
            return float(skeleton["float"])
        raise CheckpointError(f"unknown node in a checkpoint's state: {sorted(skeleton)}")
    return skeleton


def write_checkpoint(path: str | Path, state: dict[str, Any], step: int, strategy: str) -> None:
    """Write a nested ``state`` (see :func:`flatten_state`) as a checkpoint folder, atomically."""
    from safetensors.torch import save_file

    skeleton, tensors = flatten_state(state)
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / TENSORS))
        (tmp / STATE).write_text(json.dumps(skeleton, allow_nan=False) + "\n")
        (tmp / STEP).write_text(json.dumps({"step": step, "strategy": strategy}) + "\n")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The nested state of a checkpoint folder (tensors on the CPU); refuses a pickled one."""
    from safetensors.torch import load_file

    path = Path(path)
    if (path / "state.pt").exists():
        raise CheckpointError(
            f"{path / 'state.pt'} is a pickled checkpoint; pathdep never unpickles files (they "
            f"can run code). Delete {path} to restart that run from its last finished stage"
        )
    try:
        skeleton = json.loads((path / STATE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / TENSORS))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"step checkpoint {path} is unreadable ({err})") from err
    return unflatten_state(skeleton, tensors)


def checkpoint_strategy(path: str | Path) -> str | None:
    """The strategy a checkpoint was written under (None when there is no checkpoint)."""
    meta = Path(path) / STEP
    if not meta.exists():
        return None
    return json.loads(meta.read_text()).get("strategy", "ddp")


# ------------------------------------------------------------------------------------------
# The loop's checkpoints


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require grad (LoRA adapter, or the whole model), detached, on CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_step_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    extra: dict | None = None,
) -> None:
    """Write trainable weights, optimizer, scheduler and the step index to ``path`` atomically.

    Under FSDP (``model`` sharded) this is collective: every process gathers the full weights
    and optimizer state (keyed by name), the main process writes them.
    """
    if D.is_fsdp(model):
        model_state, optim_state = D.fsdp_train_state(model, optimizer)
        state = {"model": model_state, "optimizer": optim_state}
        strategy = "fsdp"
    else:
        state = {"trainable": trainable_state(model), "optimizer": optimizer.state_dict()}
        strategy = "ddp"
    if D.current().is_main:
        state |= {"scheduler": scheduler.state_dict(), "step": step, "extra": extra or {}}
        write_checkpoint(path, state, step, strategy)


def load_step_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> tuple[int, dict]:
    """Restore a checkpoint written by :func:`save_step_checkpoint` under the model's own
    strategy; returns (step, extra)."""
    path = Path(path)
    fsdp = D.is_fsdp(model)
    written = checkpoint_strategy(path)
    if written is not None and written != ("fsdp" if fsdp else "ddp"):
        raise CheckpointError(
            f"step checkpoint {path} was written under {written}; resume it with "
            f"distributed.strategy = '{written}' or delete it"
        )
    state = read_checkpoint(path)
    if fsdp:
        D.load_fsdp_train_state(model, optimizer, state["model"], state["optimizer"])
    else:
        params = dict(model.named_parameters())
        missing = set(state["trainable"]) - set(params)
        if missing:
            raise CheckpointError(
                f"checkpoint {path} has parameters the model lacks: {sorted(missing)[:3]}"
            )
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"]), state["extra"]
