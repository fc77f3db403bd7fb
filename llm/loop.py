"""The optimisation loop shared by fine-tuning and unlearning, with its optimizer and schedule.

The loop (:func:`run_loop`) knows nothing about the loss; an objective object supplies
per-micro-batch losses already divided by the *global* normaliser of the step (labelled tokens, or
sequences, summed over every micro-batch of every process), so that batch x accumulation x
processes splits give the same gradient:

    grad = sum_{process, micro} d/dθ [ sum_{tokens in micro} -log p ] / N_global.

The data order of a run is a function of (seed, epoch) and every optimizer step reseeds torch from
(seed, step, rank), so a step index is all that resume needs besides weights, optimizer and
scheduler (:mod:`llm.checkpoint`).

Several processes split every global batch; the model is either replicated (``ddp``: gradients
summed by :func:`llm.distributed.sum_gradients`) or sharded with FSDP2 (``fsdp``:
:func:`llm.distributed.shard_model`, the reduce-scatter sums). Both give the one-process update.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from llm import distributed as D
from llm.batches import model_device, stable_seed, zero_loss
from llm.checkpoint import STEP, load_step_checkpoint, save_step_checkpoint


class NonFiniteError(RuntimeError):
    """Loss, gradient norm or parameters became NaN/inf, or the optimizer overflowed; the run
    stopped (a step with a non-finite loss or gradient was not applied)."""


@dataclass(frozen=True)
class LoopSettings:
    """What the optimisation loop needs besides the data and the loss."""

    lr: float
    optimizer: str = "adamw"
    schedule: str = "constant"
    warmup_frac: float = 0.0
    decay_frac: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0
    checkpoint_every: int = 50
    seed: int = 0
    mixed_precision: str = "no"  # "bf16": forward passes under torch.autocast, fp32 weights


# ------------------------------------------------------------------------------------------
# Optimizer and schedule


def lr_multiplier(step: int, total: int, schedule: str, warmup_frac: float, decay_frac: float):
    """Learning-rate factor for 0-based optimizer ``step`` of ``total``.

    Warm-up lasts ``ceil(warmup_frac * total)`` steps rising linearly to 1 ((s+1)/w);
    ``wsd`` then stays at 1 and decays linearly over the last ``ceil(decay_frac * total)`` steps
    (to 1/(d+1) at the last step); ``cosine`` follows 0.5 (1 + cos(pi * progress)) after warm-up;
    ``constant`` ignores warm-up and decay.
    """
    if schedule == "constant":
        return 1.0
    warm = math.ceil(warmup_frac * total)
    if step < warm:
        return (step + 1) / warm
    if schedule == "wsd":
        decay = math.ceil(decay_frac * total)
        if decay and step >= total - decay:
            return (total - step) / (decay + 1)
        return 1.0
    if schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


def make_optimizer(params: list[torch.nn.Parameter], settings: LoopSettings):
    """AdamW with the paper's betas and weight decay, or plain SGD (re-created at every stage)."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(
        params, lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay
    )


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, settings: LoopSettings):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_multiplier(
            s, total_steps, settings.schedule, settings.warmup_frac, settings.decay_frac
        ),
    )


# ------------------------------------------------------------------------------------------
# The loop


def autocast(device: torch.device, mixed_precision: str):
    """The forward's precision context: bf16 autocast (the parameters, their gradients and the
    optimizer state stay in their own dtype, fp32) or nothing."""
    if mixed_precision == "no":
        return contextlib.nullcontext()
    if mixed_precision != "bf16":
        raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {mixed_precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def all_finite(params: list[torch.nn.Parameter]) -> bool:
    """Every entry of every parameter (this process's shards, agreed over processes) is finite."""
    shards = [p.to_local() if hasattr(p, "to_local") else p for p in params]  # FSDP: DTensors
    local = torch.stack([torch.isfinite(x.detach()).all() for x in shards])
    bad = D.all_reduce_sum((~local).sum().to(torch.float64))
    return float(bad) == 0.0


class Objective(Protocol):
    def counts(self, micro: Any) -> list[float]:
        """Local normaliser counts of one micro-batch (summed over micro-batches, processes)."""

    def loss(self, model, micro: Any, totals: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Loss of one micro-batch divided by the global totals, and scalar stats to log."""


def idle_loss(objective: Objective, model, device: torch.device) -> torch.Tensor:
    """Under FSDP, what a process with an empty micro-batch runs: zero-weighted forwards, as many
    as the objective runs on data (its ``idle_loss`` when it has one, else one forward), so that
    its shards join every all-gather and reduce-scatter of the other processes."""
    own = getattr(objective, "idle_loss", None)
    return own(model, device) if own is not None else zero_loss(model, device)


@contextlib.contextmanager
def flush_denormals():
    """While the loop runs, subnormal floats are read and written as zero on the CPU (x86
    FTZ/DAZ), then the default again.

    Why: a saturated objective (the paper's SimNPO on whole responses, NPO once its loss is ~0)
    scales every gradient by ~1e-30, and the backward pass then computes in subnormals, which a
    CPU runs 5-10x slower (the demo Llama, SimNPO in the paper's form: 5.5-10.6 s a step against
    1.0-1.1 s flushed). An fp32 subnormal (< 1.2e-38) moves no weight: AdamW's epsilon is 1e-8.
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@flush_denormals()
def run_loop(
    model: torch.nn.Module,
    steps: list[list[Any]],
    objective: Objective,
    settings: LoopSettings,
    ckpt_dir: str | Path | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    desc: str = "train",
    progress: bool = True,
) -> list[dict]:
    """Run the optimizer over ``steps`` (each a list of this process's micro-batches).

    Resumes from ``ckpt_dir`` when a checkpoint is there; writes one every
    ``settings.checkpoint_every`` steps and at the end. ``on_step(step, record)`` is called after
    every applied step (1-based step). Raises :class:`NonFiniteError` before applying a step whose
    loss or gradient norm is not finite.
    """
    info = D.current()
    fsdp = D.is_fsdp(model)  # sharded: the optimizer below sees only this process's shards
    D.reshard(model)  # FSDP: a no-grad pass before (scoring, a reference) left the root gathered
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = make_optimizer(params, settings)
    scheduler = make_scheduler(optimizer, len(steps), settings)
    start, records = 0, []
    ckpt = Path(ckpt_dir) if ckpt_dir else None
    if ckpt is not None and ((ckpt / STEP).exists() or (ckpt / "state.pt").exists()):
        start, extra = load_step_checkpoint(ckpt, model, optimizer, scheduler)
        records = list(extra.get("records", []))
    device = model_device(model)
    bar = tqdm(total=len(steps), initial=start, desc=desc, disable=not (progress and info.is_main))
    for step in range(start, len(steps)):
        torch.manual_seed(stable_seed(settings.seed, "step", step, info.rank))
        model.train()  # on_step may have evaluated in eval mode
        micros = steps[step]
        # A process may get no example of a short last batch; it still joins the reductions.
        local = torch.tensor(
            np.sum([objective.counts(m) for m in micros], axis=0),
            dtype=torch.float64,
            device=device,
        )
        totals = D.all_reduce_sum(local)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        stats: dict[str, float] = {}
        for micro in micros:
            if not len(micro):
                if fsdp:
                    idle_loss(objective, model, device).backward()
                continue
            with autocast(device, settings.mixed_precision):
                loss, micro_stats = objective.loss(model, micro, totals)
            loss.backward()
            loss_sum += loss.detach().double()
            for k, v in micro_stats.items():
                stats[k] = stats.get(k, 0.0) + float(v)
        loss_sum = D.all_reduce_sum(loss_sum)
        if info.world_size > 1:  # the parts of the loss are sums over processes too
            stats = {
                k: sum(part.get(k, 0.0) for part in D.gather_objects(stats))
                for k in sorted(set().union(*D.gather_objects(set(stats))))
            }
        if not fsdp:  # FSDP already summed them (reduce-scatter in backward)
            D.sum_gradients(params)
        for p in params:  # a process whose micro-batches were all empty still has zero grads
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        max_norm = settings.max_grad_norm if settings.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        loss_value, norm_value = float(loss_sum), float(D.local_value(grad_norm))
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            raise NonFiniteError(
                f"{desc}: non-finite loss ({loss_value}) or gradient norm ({norm_value}) at "
                f"step {step + 1}; the step was not applied and the run stopped"
            )
        lr = scheduler.get_last_lr()[0]
        try:
            optimizer.step()
        except RuntimeError as err:  # AdamW's scalar step size overflows at huge rates
            if "overflow" not in str(err):
                raise
            raise NonFiniteError(
                f"{desc}: the optimizer overflowed at step {step + 1} (lr {lr:g}): {err}"
            ) from None
        if not all_finite(params):
            raise NonFiniteError(
                f"{desc}: non-finite parameters after step {step + 1} (lr {lr:g}); the run stopped"
            )
        scheduler.step()
        record = {
            "step": step + 1,
            "loss": loss_value,
            "grad_norm": norm_value,
            "lr": lr,
            "time": time.time(),
            **stats,
        }
        records.append(record)
        if on_step is not None:
            on_step(step + 1, record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        done = step + 1 == len(steps)
        if ckpt is not None and ((step + 1) % settings.checkpoint_every == 0 or done):
            save_step_checkpoint(ckpt, model, optimizer, scheduler, step + 1, {"records": records})
            D.barrier()
    bar.close()
    if steps:  # also when resumed past the end: a run this check stopped kept its last checkpoint
        _check_outputs(model, objective, steps[-1], desc)
    return records


@torch.no_grad()
def _check_outputs(model, objective: Objective, micros: list[Any], desc: str) -> None:
    """The loss of the last step's data, after the last update, is finite: a final step can leave
    finite weights whose outputs are not (the guard above only sees losses before a step)."""
    device = model_device(model)
    was_training = model.training
    model.eval()  # no dropout: the check draws no random numbers
    local = torch.tensor(
        np.sum([objective.counts(m) for m in micros], axis=0), dtype=torch.float64, device=device
    )
    totals = D.all_reduce_sum(local)
    losses = []
    for m in micros:
        if len(m):
            losses.append(float(objective.loss(model, m, totals)[0]))
        elif D.is_fsdp(model):  # this process's shards still join the all-gathers
            idle_loss(objective, model, device)
    D.reshard(model)
    finite = all(map(math.isfinite, losses))
    bad = float(D.all_reduce_sum(torch.tensor(0.0 if finite else 1.0, device=device)))
    model.train(was_training)
    if bad:
        raise NonFiniteError(f"{desc}: non-finite outputs after the last step; the run stopped")
