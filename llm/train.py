"""Staged fine-tuning: one stage at a time on the shared loop; LoRA merged after each stage, or
one adapter continued through the stages and merged at the end (``finetune.lora_merge``).

A stage is a :func:`llm.batches.batch_plan` of the tokenized examples, trained by
:func:`llm.loop.run_loop` on the assistant-token NLL (:class:`NLLObjective`, normalised by the
global labelled-token count of each step) with a fresh LoRA adapter or every weight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm import distributed as D
from llm.batches import (
    batch_plan,
    collate_to,
    forward_logprobs,
    labelled_tokens,
    micro_batches,
    model_device,
)
from llm.config import FinetuneConfig, StageConfig
from llm.loop import LoopSettings, run_loop


def attach_lora(
    model: torch.nn.Module,
    rank: int,
    alpha: int,
    dropout: float = 0.0,
    targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    seed: int = 0,
):
    """Wrap ``model`` with a fresh LoRA adapter (peft), seeded; only the adapter trains."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    chosen = [t for t in targets if t in present]
    if not chosen:
        raise ValueError(f"none of the LoRA targets {list(targets)} are modules of the model")
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=chosen, bias="none"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Activation checkpointing of every decoder layer (transformers), non-reentrant: it needs
    no input that requires grad, so a frozen base under a LoRA adapter works as well."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # the same switch under its older name
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@dataclass
class NLLObjective:
    """Fine-tuning: summed token NLL / global labelled-token count."""

    examples: Sequence[Any]
    pad_token_id: int

    def counts(self, micro: list[int]) -> list[float]:
        return [float(labelled_tokens([self.examples[i] for i in micro]))]

    def loss(self, model, micro: list[int], totals: torch.Tensor):
        batch = collate_to(
            [self.examples[i] for i in micro], self.pad_token_id, model_device(model)
        )
        logp, _ = forward_logprobs(model, batch)
        return -logp.sum() / totals[0].clamp_min(1.0), {}


def stage_settings(stage: StageConfig, ft: FinetuneConfig, seed: int) -> LoopSettings:
    return LoopSettings(
        lr=stage.lr,
        optimizer=ft.optimizer,
        schedule=ft.schedule,
        warmup_frac=ft.warmup_frac,
        decay_frac=ft.decay_frac,
        betas=ft.betas,
        weight_decay=ft.weight_decay,
        max_grad_norm=ft.max_grad_norm,
        checkpoint_every=ft.checkpoint_every,
        seed=seed,
        mixed_precision=ft.mixed_precision,
    )


def train_stage(
    model: torch.nn.Module,
    examples: Sequence[Any],
    stage: StageConfig,
    ft: FinetuneConfig,
    *,
    pad_token_id: int,
    seed: int,
    lora: tuple[int, int] | None = None,
    ckpt_dir: str | Path | None = None,
    merge: bool = True,
    adapter: str | Path | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
    strategy: str = "ddp",
) -> tuple[torch.nn.Module, list[dict]]:
    """Fine-tune ``model`` on one stage; returns (model, per-step records).

    With ``lora=(rank, alpha)`` a fresh adapter is attached, trained and (``merge=True``) merged
    into the weights, so the next stage starts from plain weights and a fresh adapter; with
    ``adapter`` (a saved peft adapter folder of the same shape) that adapter is loaded onto
    ``model`` and trained on instead of a fresh one (``lora_merge = "end"``: one adapter through
    every stage, merged once); otherwise every parameter trains. ``examples`` are tokenized
    (``input_ids``, ``labels``) examples; the loss is the assistant-token NLL normalised by the
    global labelled-token count of each step.

    ``strategy="fsdp"`` (full fine-tuning only) shards the model with FSDP2 before the optimizer
    is built when there are several processes; the returned model is then sharded: gather it
    with :func:`llm.distributed.full_state_dict` (on every process) to save it.
    """
    info = D.current()
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"unknown distributed strategy {strategy!r} (ddp | fsdp)")
    if strategy == "fsdp" and lora is not None:
        raise ValueError("FSDP supports full fine-tuning only (lora=None); use strategy='ddp'")
    if ft.gradient_checkpointing:
        enable_checkpointing(model)
    if lora is not None and adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    elif lora is not None:
        model = attach_lora(model, lora[0], lora[1], ft.lora_dropout, ft.lora_targets, seed)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
        if strategy == "fsdp":
            model = D.shard_model(model, info)
    plan = batch_plan(len(examples), stage.batch_size, stage.epochs, seed)
    steps = [micro_batches(b, info, stage.grad_accum) for b in plan]
    records = run_loop(
        model,
        steps,
        NLLObjective(examples, pad_token_id),
        stage_settings(stage, ft, seed),
        ckpt_dir=ckpt_dir,
        on_step=on_step,
        desc=f"stage {stage.name}",
        progress=progress,
    )
    model.eval()
    if lora is not None and merge:
        model = model.merge_and_unload()
    return model, records


@torch.no_grad()
def mean_nll(model, examples: Sequence[Any], pad_token_id: int, batch_size: int = 16) -> float:
    """Token-averaged NLL of ``examples`` (sum of token NLLs / labelled tokens), no grad."""
    model.eval()
    total, count = 0.0, 0.0
    device = model_device(model)
    for i in range(0, len(examples), batch_size):
        batch = collate_to(examples[i : i + batch_size], pad_token_id, device)
        logp, n = forward_logprobs(model, batch)
        total -= float(logp.sum())
        count += float(n.sum())
    return total / max(count, 1.0)
