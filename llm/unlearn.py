"""Local unlearning with the objectives of :mod:`llm.objectives` and one training loop.

A fresh LoRA adapter is attached to the fine-tuned model (or every weight trains, with
``finetune.method = "full"``). NPO's reference pi_ref is the model before unlearning: with LoRA it
is the same model with the adapter disabled (peft ``disable_adapter()``), so no second copy is
held; ``reference = "precomputed"`` instead scores the forget set once before the first step.

Normalisation over an accumulated (and distributed) batch: GA and the retain NLL divide summed
token log-probs by the global labelled-token count; NPO and SimNPO (means over sequences) are
multiplied by ``B_micro / B_global``, so every split of a batch gives the same gradient.

Metrics: one JSON line per optimizer step (loss, forget/retain parts, gradient norm, lr), with
the evaluation fields added every ``eval_every`` steps, plus a step-0 line before unlearning.
If the loss or gradient norm turns non-finite the run stops with :class:`NonFiniteError` and the
lines written so far stay.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm import distributed as D
from llm import objectives as obj
from llm.batches import (
    batch_plan,
    collate_to,
    forward_logprobs,
    labelled_tokens,
    micro_batches,
    model_device,
    score_shards,
    zero_loss,
)
from llm.config import FinetuneConfig, MethodConfig, UnlearnConfig
from llm.loop import LoopSettings, run_loop
from llm.tracking import ScalarLog
from llm.train import attach_lora, enable_checkpointing
from pathdep.io import atomic_write_text


def method_params(method: MethodConfig) -> obj.ObjectiveParams:
    """The objective hyperparameters of a configured method."""
    return obj.ObjectiveParams(method.beta, method.margin, method.length_normalize)


@dataclass
class UnlearnMicro:
    """Indices of one micro-batch into the forget and retain sets."""

    forget: list[int]
    retain: list[int]

    def __len__(self) -> int:
        return len(self.forget) + len(self.retain)


@torch.no_grad()
def reference_logprobs(model, examples: Sequence[Any], pad_token_id: int, batch_size: int = 16):
    """Summed log pi_ref(y|x) of every example, (N,) float64; under ``disable_adapter`` when the
    model is a peft model (the reference is the model before unlearning). Each process scores
    its share and the values are gathered (:func:`llm.batches.score_shards`)."""
    import contextlib

    ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
    with ctx:
        out = score_shards(
            model,
            examples,
            pad_token_id,
            batch_size,
            lambda m, batch: forward_logprobs(m, batch)[0].double().cpu().tolist(),
        )
    return torch.tensor(out, dtype=torch.float64)


@torch.no_grad()
def simnpo_weight(model, examples: Sequence[Any], method: MethodConfig, pad_token_id: int) -> float:
    """Mean over the forget set of sigmoid(beta r + margin), the factor by which SimNPO scales
    GA's gradient of each sequence (d L / d r = 2 sigmoid(beta r + margin), r = log pi(y|x), per
    token when ``length_normalize``). Near 0 the objective is saturated and cannot forget: the
    paper's form (r = log pi of a whole response) on a model that holds S_U."""

    def weights(m, batch) -> list[float]:
        logp, n = forward_logprobs(m, batch)
        r = logp / n.clamp_min(1.0) if method.length_normalize else logp
        return torch.sigmoid(method.beta * r.double() + method.margin).cpu().tolist()

    out = score_shards(model, examples, pad_token_id, 16, weights)
    return float(torch.tensor(out, dtype=torch.float64).mean())


@dataclass
class UnlearnObjective:
    """Forget objective (GA / NPO / SimNPO) plus an optional retain NLL term (GradDiff).

    Global totals (all micro-batches, all processes): [forget tokens, forget sequences,
    retain tokens].
    """

    forget: Sequence[Any]
    retain: Sequence[Any]
    method: MethodConfig
    pad_token_id: int
    ref_logp: torch.Tensor | None = None  # (N_forget,) precomputed reference, or None

    def counts(self, micro: UnlearnMicro) -> list[float]:
        f = [self.forget[i] for i in micro.forget]
        r = [self.retain[i] for i in micro.retain]
        return [float(labelled_tokens(f)), float(len(f)), float(labelled_tokens(r))]

    def forget_loss(self, model, idx: list[int], totals: torch.Tensor) -> torch.Tensor:
        m = self.method
        batch = collate_to([self.forget[i] for i in idx], self.pad_token_id, model_device(model))
        logp, n = forward_logprobs(model, batch)
        ref = None
        if m.objective == "npo":
            if self.ref_logp is not None:
                ref = self.ref_logp[idx].to(logp.device, logp.dtype)
            else:
                with torch.no_grad(), model.disable_adapter():
                    ref, _ = forward_logprobs(model, batch)
            ref = ref.detach()
        scores = obj.SequenceScores(
            logp,
            n,
            ref_logp=ref,
            total_tokens=totals[0].clamp_min(1.0),
            total_sequences=totals[1].clamp_min(1.0),
        )
        return obj.forget_loss(m.objective, scores, method_params(m))

    def loss(self, model, micro: UnlearnMicro, totals: torch.Tensor):
        m = self.method
        stats: dict[str, float] = {}
        forget = retain = None
        # FSDP: each forward is a collective, so a process whose share of one part is empty runs
        # a zero-weighted forward in its place (the same forwards, in order, on every process).
        idle = zero_loss if D.is_fsdp(model) else None
        pads = []
        if micro.forget:
            forget = self.forget_loss(model, micro.forget, totals)
            stats["forget_loss"] = float(forget.detach())
        elif idle is not None:
            pads.append(idle(model, model_device(model)))
        if micro.retain and m.retain_weight > 0:
            batch = collate_to(
                [self.retain[i] for i in micro.retain], self.pad_token_id, model_device(model)
            )
            logp, n = forward_logprobs(model, batch)
            retain = obj.nll_loss(
                obj.SequenceScores(logp, n, total_tokens=totals[2].clamp_min(1.0))
            )
            stats["retain_loss"] = float(retain.detach())
        elif idle is not None and m.retain_weight > 0:
            pads.append(idle(model, model_device(model)))
        if forget is None and retain is None:
            return sum(pads), stats  # FSDP: an empty micro-batch (see idle_loss)
        if forget is None:
            loss = m.retain_weight * retain
        else:
            loss = obj.combine(forget, retain, m.forget_weight, m.retain_weight)
        return (loss + sum(pads) if pads else loss), stats

    def idle_loss(self, model, device: torch.device) -> torch.Tensor:
        """The forwards of an empty micro-batch under FSDP, weighted zero: one per part (forget,
        and retain when it is weighted), as a process with data runs them."""
        return self.loss(model, UnlearnMicro([], []), torch.ones(3, device=device))[0]


def unlearn_steps(
    n_forget: int, n_retain: int, cfg: UnlearnConfig, seed: int, with_retain: bool
) -> list[list[UnlearnMicro]]:
    """Per optimizer step, this process's micro-batches of forget (and retain) indices."""
    info = D.current()
    plan = batch_plan(n_forget, cfg.batch_size, cfg.epochs, seed)
    if cfg.max_steps:
        plan = plan[: cfg.max_steps]
    retain_plan: list[list[int]] = [[] for _ in plan]
    if with_retain:
        if n_retain < 1:
            raise ValueError("the retain set is empty")
        epochs = math.ceil(len(plan) * cfg.batch_size / n_retain) + 1
        retain_plan = batch_plan(n_retain, cfg.batch_size, epochs, seed + 1)[: len(plan)]
    steps = []
    for fb, rb in zip(plan, retain_plan, strict=True):
        fm = micro_batches(fb, info, cfg.grad_accum)
        rm = micro_batches(rb, info, cfg.grad_accum) if rb else [[] for _ in fm]
        steps.append([UnlearnMicro(list(f), list(r)) for f, r in zip(fm, rm, strict=True)])
    return steps


class MetricsLog:
    """Append-only JSONL of per-step records, truncated to a step on resume (main process)."""

    def __init__(self, path: str | Path, keep_up_to: int | None = None):
        self.path = Path(path)
        self.enabled = D.current().is_main
        if not self.enabled:
            return
        lines = []
        if self.path.exists() and keep_up_to is not None:
            for line in self.path.read_text().splitlines():
                if line.strip() and json.loads(line)["step"] <= keep_up_to:
                    lines.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in lines))

    def steps(self) -> set[int]:
        if not self.path.exists():
            return set()
        return {json.loads(x)["step"] for x in self.path.read_text().splitlines() if x.strip()}

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
                f.flush()


def checkpoint_step(ckpt_dir: str | Path | None) -> int | None:
    """Step of the checkpoint in ``ckpt_dir`` (None when there is none)."""
    if ckpt_dir is None or not (Path(ckpt_dir) / "step.json").exists():
        return None
    return int(json.loads((Path(ckpt_dir) / "step.json").read_text())["step"])


def unlearn_settings(
    method: MethodConfig, cfg: UnlearnConfig, ft: FinetuneConfig, seed: int = 0
) -> LoopSettings:
    """The optimisation settings of unlearning with ``method`` (its lr, else unlearn.lr;
    unlearn.optimizer, else fine-tuning's; fine-tuning's betas, weight decay and clipping)."""
    return LoopSettings(
        lr=method.lr or cfg.lr,
        optimizer=cfg.optimizer or ft.optimizer,
        schedule=cfg.schedule,
        warmup_frac=cfg.warmup_frac,
        decay_frac=cfg.decay_frac,
        betas=ft.betas,
        weight_decay=ft.weight_decay,
        max_grad_norm=ft.max_grad_norm,
        checkpoint_every=ft.checkpoint_every,
        seed=seed,
        mixed_precision=ft.mixed_precision,
    )


def unlearn(
    model: torch.nn.Module,
    forget: Sequence[Any],
    method: MethodConfig,
    cfg: UnlearnConfig,
    ft: FinetuneConfig,
    *,
    pad_token_id: int,
    seed: int,
    lora: tuple[int, int] | None = None,
    retain: Sequence[Any] = (),
    ckpt_dir: str | Path | None = None,
    metrics_path: str | Path | None = None,
    evaluator: Callable[[torch.nn.Module, int, bool], dict] | None = None,
    progress: bool = True,
    tensorboard: str | Path | None = None,
    strategy: str = "ddp",
) -> tuple[torch.nn.Module, list[dict]]:
    """Unlearn ``forget`` (tokenized examples) from ``model`` with ``method``.

    ``strategy="fsdp"`` (full fine-tuning only) shards the model with FSDP2 before anything runs
    on it when there are several processes (NPO's precomputed reference, the evaluations, the
    optimizer), as :func:`llm.train.train_stage` does; the returned model is then sharded.

    ``tensorboard``: a folder that also gets every record's numbers as TensorBoard scalars
    (:mod:`llm.tracking`).

    ``evaluator(model, step, final)`` returns the evaluation fields of a step (called at step 0,
    every ``cfg.eval_every`` steps and at the last step, ``final`` marking the last; it must be
    called on every process). Returns
    the model (still carrying its adapter) and the per-step records.
    """
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"unknown distributed strategy {strategy!r} (ddp | fsdp)")
    if strategy == "fsdp" and lora is not None:
        raise ValueError("FSDP supports full fine-tuning only (lora=None); use strategy='ddp'")
    if ft.gradient_checkpointing:
        enable_checkpointing(model)
    if lora is not None:
        model = attach_lora(model, lora[0], lora[1], ft.lora_dropout, ft.lora_targets, seed)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
        if strategy == "fsdp":
            model = D.shard_model(model, D.current())
    ref_logp = None
    if method.objective == "npo":
        if method.reference == "precomputed" or lora is None:
            if method.reference == "adapter":
                raise ValueError(
                    "NPO with reference = 'adapter' needs LoRA; use reference = 'precomputed' "
                    "for full fine-tuning"
                )
            ref_logp = reference_logprobs(model, forget, pad_token_id)
    with_retain = method.retain_weight > 0
    steps = unlearn_steps(len(forget), len(retain), cfg, seed, with_retain)
    resumed = checkpoint_step(ckpt_dir)
    log = (
        MetricsLog(metrics_path, keep_up_to=resumed if resumed is not None else -1)
        if (metrics_path)
        else None
    )
    info = D.current()
    events = ScalarLog(tensorboard, resumed) if tensorboard and info.is_main else None
    run_info = {
        "method": method.name,
        "objective": method.objective,
        "beta": method.beta,
        "margin": method.margin,
        "length_normalize": method.length_normalize,
        "reference": method.reference,
        "retain_weight": method.retain_weight,
        "world_size": info.world_size,
        "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum,
        "micro_batch": cfg.batch_size // (cfg.grad_accum * info.world_size),
    }

    def eval_fields(step: int) -> dict:
        if evaluator is None:
            return {}
        return evaluator(model, step, step == len(steps))

    def emit(record: dict) -> None:
        if log is not None:
            log.write(record)
        if events is not None:  # the run's constants (beta, batch size, ...) are no curves
            events.write({k: v for k, v in record.items() if k not in run_info})

    if resumed is None:
        record = {"step": 0, **run_info, **eval_fields(0)}
        if method.objective == "simnpo":
            record["simnpo_weight"] = simnpo_weight(model, forget, method, pad_token_id)
        emit(record)

    def on_step(step: int, record: dict) -> None:
        fields = dict(record)
        if step % cfg.eval_every == 0 or step == len(steps):
            fields.update(eval_fields(step))
        emit({**run_info, **fields})

    settings = unlearn_settings(method, cfg, ft, seed)
    objective = UnlearnObjective(forget, retain, method, pad_token_id, ref_logp)
    try:
        records = run_loop(
            model,
            steps,
            objective,
            settings,
            ckpt_dir=ckpt_dir,
            on_step=on_step,
            desc=f"unlearn {method.name}",
            progress=progress,
        )
    finally:
        if events is not None:
            events.close()
    model.eval()
    return model, records
