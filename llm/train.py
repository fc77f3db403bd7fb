"""Staged fine-tuning: one optimisation loop, one stage at a time, LoRA merged after each stage.

The loop (:func:`run_loop`) is shared by fine-tuning and unlearning. It knows nothing about the
loss; an objective object supplies per-micro-batch losses already divided by the *global*
normaliser of the step (labelled tokens, or sequences, summed over every micro-batch of every
process), so that batch x accumulation x processes splits give the same gradient:

    grad = sum_{process, micro} d/dθ [ sum_{tokens in micro} -log p ] / N_global.

The data order of a run is a function of (seed, epoch) and every optimizer step reseeds torch from
(seed, step, rank), so a step index is all that resume needs besides weights, optimizer and
scheduler (:mod:`llm.checkpoint`).

Several processes split every global batch; the model is either replicated (``ddp``: gradients
summed by :func:`llm.distributed.sum_gradients`) or sharded with FSDP2 (``fsdp``:
:func:`llm.distributed.shard_model`, the reduce-scatter sums). Both give the one-process update.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from llm import distributed as D
from llm.checkpoint import atomic_dir, load_step_checkpoint, save_step_checkpoint
from llm.config import FinetuneConfig, StageConfig
from llm.objectives import IGNORE_INDEX, sequence_logprobs


class NonFiniteError(RuntimeError):
    """Loss or gradient norm became NaN/inf; the step was not applied."""


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


# ------------------------------------------------------------------------------------------
# Data order


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts (stable across runs and Python processes)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def batch_plan(n_examples: int, batch_size: int, epochs: float, seed: int) -> list[list[int]]:
    """Global batches of example indices for a stage.

    Each epoch is a fresh permutation drawn from (seed, epoch); ``epochs`` may be fractional, the
    total number of examples seen is ``round(epochs * n_examples)``; the last batch may be short.
    """
    if n_examples < 1:
        raise ValueError("cannot train on an empty dataset")
    total = max(1, round(epochs * n_examples))
    order: list[int] = []
    epoch = 0
    while len(order) < total:
        rng = np.random.default_rng(stable_seed(seed, "epoch", epoch))
        order.extend(int(i) for i in rng.permutation(n_examples))
        epoch += 1
    order = order[:total]
    return [order[i : i + batch_size] for i in range(0, total, batch_size)]


def micro_batches(global_batch: Sequence[int], info: D.DistInfo, grad_accum: int) -> list[list]:
    """This process's share of a global batch, split into ``grad_accum`` contiguous micro-batches
    (some may be empty when the batch is short)."""
    mine = D.shard(list(global_batch), info)
    return [list(part) for part in np.array_split(np.array(mine, dtype=object), grad_accum)]


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
# Model helpers


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


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def collate_to(examples: Sequence[Any], pad_token_id: int, device: torch.device) -> dict:
    """Right-padded batch (F's :func:`llm.tokenization.collate`) moved to ``device``."""
    from llm.tokenization import collate

    batch = collate(list(examples), pad_token_id)
    return {k: v.to(device) for k, v in batch.items()}


def labelled_tokens(examples: Sequence[Any]) -> int:
    """Number of positions that carry loss after the causal shift (labels[1:] != IGNORE)."""
    return sum(sum(1 for t in ex.labels[1:] if t != IGNORE_INDEX) for ex in examples)


def forward_logprobs(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, n_tokens), both (B,), of the labelled tokens of a collated batch."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return sequence_logprobs(out.logits, batch["labels"])


def zero_loss(model, device: torch.device) -> torch.Tensor:
    """0 x the logits of one token: under FSDP a process whose micro-batch is empty must still
    run forward and backward (its shards join every all-gather and reduce-scatter)."""
    ids = torch.zeros((1, 1), dtype=torch.long, device=device)
    return model(input_ids=ids).logits.sum() * 0.0


# ------------------------------------------------------------------------------------------
# Step checkpoints of an FSDP model (full state dicts, gathered on rank 0)


def save_fsdp_step_checkpoint(path, model, optimizer, scheduler, step: int, extra: dict) -> None:
    """Like :func:`llm.checkpoint.save_step_checkpoint` for a sharded model; collective (every
    process gathers, rank 0 writes). Weights and optimizer state are full, keyed by name."""
    model_state, optim_state = D.fsdp_train_state(model, optimizer)
    if D.current().is_main:
        with atomic_dir(path) as tmp:
            torch.save(
                {
                    "strategy": "fsdp",
                    "model": model_state,
                    "optimizer": optim_state,
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "extra": extra,
                },
                tmp / "state.pt",
            )
            (tmp / "step.json").write_text(f'{{"step": {step}, "strategy": "fsdp"}}\n')


def load_any_step_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, dict]:
    """Restore a step checkpoint written under the model's own strategy (ddp or fsdp)."""
    fsdp = D.is_fsdp(model)
    if not fsdp:
        meta = path / "step.json"
        if meta.exists() and json.loads(meta.read_text()).get("strategy") == "fsdp":
            raise ValueError(
                f"step checkpoint {path} was written under FSDP; resume it with "
                "distributed.strategy = 'fsdp' or delete it"
            )
        return load_step_checkpoint(path, model, optimizer, scheduler)
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if state.get("strategy") != "fsdp":
        raise ValueError(
            f"step checkpoint {path} was written without FSDP; resume it with "
            "distributed.strategy = 'ddp' or delete it"
        )
    D.load_fsdp_train_state(model, optimizer, state["model"], state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["step"]), state["extra"]


# ------------------------------------------------------------------------------------------
# The loop


class Objective(Protocol):
    def counts(self, micro: Any) -> list[float]:
        """Local normaliser counts of one micro-batch (summed over micro-batches, processes)."""

    def loss(self, model, micro: Any, totals: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Loss of one micro-batch divided by the global totals, and scalar stats to log."""


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
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = make_optimizer(params, settings)
    scheduler = make_scheduler(optimizer, len(steps), settings)
    start, records = 0, []
    ckpt = Path(ckpt_dir) if ckpt_dir else None
    if ckpt is not None and (ckpt / "state.pt").exists():
        start, extra = load_any_step_checkpoint(ckpt, model, optimizer, scheduler)
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
                    zero_loss(model, device).backward()
                continue
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
        optimizer.step()
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
            if fsdp:
                save_fsdp_step_checkpoint(
                    ckpt, model, optimizer, scheduler, step + 1, {"records": records}
                )
            elif info.is_main:
                save_step_checkpoint(
                    ckpt, model, optimizer, scheduler, step + 1, {"records": records}
                )
            D.barrier()
    bar.close()
    return records


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
    progress: bool = True,
    on_step: Callable[[int, dict], None] | None = None,
    strategy: str = "ddp",
) -> tuple[torch.nn.Module, list[dict]]:
    """Fine-tune ``model`` on one stage; returns (model, per-step records).

    With ``lora=(rank, alpha)`` a fresh adapter is attached, trained and (``merge=True``) merged
    into the weights, so the next stage starts from plain weights and a fresh adapter; otherwise
    every parameter trains. ``examples`` are tokenized (``input_ids``, ``labels``) examples; the
    loss is the assistant-token NLL normalised by the global labelled-token count of each step.

    ``strategy="fsdp"`` (full fine-tuning only) shards the model with FSDP2 before the optimizer
    is built when there are several processes; the returned model is then sharded: gather it
    with :func:`llm.distributed.full_state_dict` (on every process) to save it.
    """
    info = D.current()
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"unknown distributed strategy {strategy!r} (ddp | fsdp)")
    if strategy == "fsdp" and lora is not None:
        raise ValueError("FSDP supports full fine-tuning only (lora=None); use strategy='ddp'")
    if lora is not None:
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
