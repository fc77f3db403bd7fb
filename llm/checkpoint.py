"""Atomic file writes and step checkpoints (resume).

Every file a run leaves behind is written to a temporary sibling and renamed into place, so a run
killed at any moment leaves either the old file or the new one, never half of one. A directory
(a stage checkpoint, a step checkpoint) is written the same way: into ``NAME.tmp-PID`` and then
renamed to ``NAME``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file in the same folder and an atomic
    rename; on any error the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` when the block exits without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)


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
    (see :func:`llm.train.step_seed`), and the data order is a function of (seed, epoch), so the
    step index is the whole of the remaining state.
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
