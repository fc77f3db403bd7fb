"""Step checkpoints (resume) of the optimisation loop.

A checkpoint is a folder written whole by :func:`pathdep.io.atomic_dir` (into ``NAME.tmp-PID``,
then renamed to ``NAME``), so a run killed at any moment leaves the old checkpoint or the new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from pathdep.io import atomic_dir


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

    RNG states need not be stored: every optimizer step reseeds torch from (seed, step, rank)
    (:func:`llm.batches.stable_seed` in :func:`llm.loop.run_loop`), and the data order is a
    function of (seed, epoch), so the step index is the whole of the remaining state.
    """
    with atomic_dir(path) as tmp:
        torch.save(
            {
                "trainable": trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "extra": extra or {},
            },
            tmp / "state.pt",
        )
        (tmp / "step.json").write_text(json.dumps({"step": step}) + "\n")


def load_step_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> tuple[int, dict]:
    """Restore a checkpoint written by :func:`save_step_checkpoint`; returns (step, extra)."""
    state = torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)
    params = dict(model.named_parameters())
    missing = set(state["trainable"]) - set(params)
    if missing:
        raise ValueError(f"checkpoint {path} has parameters the model lacks: {sorted(missing)[:3]}")
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"]), state["extra"]
