"""Memory planner: bytes per GPU of every phase of a run config, before anything is loaded.

(Longer than our usual 400 lines: the formulas, the search over settings and the per-phase
advice read together; most of the length is the formulas' docstrings.)

``plan(cfg, gpus, gpu_memory_gib)`` answers "does this config fit, and if not, what is the
cheapest change that makes it fit" for fine-tuning, unlearning, evaluation (scoring) and
generation (math sampling). The architecture comes from the model folder's ``config.json`` when
``model.path`` exists, else from the card of ``model.name`` (:mod:`llm.arch_cards`).

Notation: P parameters, P_t trainable parameters, b bytes per parameter / activation element of
``model.dtype`` (fp32 4, bf16 2, fp64 8), L layers, h hidden, i MLP width, q = heads x head_dim,
kv = kv_heads x head_dim, V vocabulary, r LoRA rank, B rows of a micro-batch, T tokens per row
(``finetune.max_length``), t = B T, N GPUs, S = N with FSDP, else 1.

Training, per GPU (what the code does: AdamW keeps exp_avg and exp_avg_sq in the parameters'
dtype; peft keeps bf16 models' adapters in fp32; ``finetune.mixed_precision = "bf16"`` is
planned as fp32: see ``MIXED_PRECISION_NOTE``)::

    weights     = P b / S            (+ LoRA adapters, P_t max(b, 4))
    gradients   = P_t b_t / S        (b_t: the trainable parameters' bytes)
    optimizer   = 2 P_t b_t / S      (AdamW; SGD without momentum: 0)
    activations = L t a_layer b + t top b + 3 t V max(b, 4) + B T^2      (see activations())
    fsdp_gather = 2 max(root unit, 2 layers) b   (FSDP: unsharded parameters + their gradients)
    autocast_copies = 2 (L' (layer - 2h) + V h)  (FSDP + bf16 autocast; L' = L, 1 checkpointed)
    step_temp   = P_t b_t / S        (foreach AdamW's sqrt(exp_avg_sq) temporary, at the step)
    total       = weights + gradients + optimizer
                  + max(activations + fsdp_gather + autocast_copies, step_temp)

Unlearning is planned as training (FSDP shards it as it shards fine-tuning). Scoring and
sampling under FSDP hold ``P b / N`` plus ``fsdp_gather = (root + 2 layers) b``: FSDP2 keeps the
root unit (embeddings, final norm, LM head) gathered through a forward, and gathers the layers
one at a time.

Gradients count in full beside the activations because with ``grad_accum > 1`` (every shipped
config) the earlier micro-batches' gradients are live while the next one runs its backward.
Activations were derived by counting the tensors autograd saves in transformers' Llama / Qwen2
(SDPA attention with a padding mask, so k and v are repeated to q heads; the memory-efficient
kernel keeps no T x T matrix) and checked against a live-tensor count of real training steps on
the CPU (tests/test_llm_plan.py counts live tensor bytes): it is an estimate for GPU kernels
that keep extra workspace, and excludes the CUDA context and allocator fragmentation
(``HEADROOM`` is kept free for those).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path
from typing import Any

from llm.arch_cards import (
    ArchCard,
    CardError,
    card_for,
    layer_param_count,
    lora_params,
    param_count,
    read_card,
)
from llm.config import ConfigError, RunConfig, lora_shape

__all__ = [
    "HEADROOM",
    "PlanError",
    "Setting",
    "activations",
    "plan",
    "resolve_card",
    "train_memory",
]

GIB = 1024**3
HEADROOM = 0.9  # a plan fits when its total is <= 90% of the GPU (CUDA context, fragmentation)
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp64": 8}
# finetune.mixed_precision = "bf16" keeps fp32 weights, gradients and AdamW state; autocast
# saves part of the activations in bf16 (less) but adds bf16 logits beside their fp32 copy
# (more). Measured on the CPU, a mixed step is 0.88-1.05x the fp32 plan (tests/test_llm_plan.py,
# benchmarks/gpu.py; docs/full_scale.md), so it is planned as fp32, not derived on its own.
MIXED_PRECISION_NOTE = (
    "finetune.mixed_precision = 'bf16' is planned as fp32 (weights, gradients and AdamW state "
    "are fp32; measured mixed steps were within 15% of the fp32 plan, not derived separately)"
)
# Under FSDP the bf16 copies of the weights that autocast saves for backward are not sharded:
# FSDP frees its gathered fp32 weights after each layer's forward, but not the copies (2 bytes
# per linear weight of every layer, or of the one recomputed with checkpointing, and the LM
# head; measured on two processes by tests/test_llm_fsdp.py). They are planned on their own.
FSDP_MIXED_PRECISION_NOTE = (
    "under FSDP, autocast's bf16 weight copies (held from forward to backward, not sharded) "
    "are planned as autocast_copies"
)


class PlanError(CardError):
    """Bad planner input: GPU count, memory, or a folder that disagrees with its card."""


@dataclass(frozen=True)
class Setting:
    """One way to run a training phase; ``cost`` orders them cheapest first (0: as configured;
    then a smaller micro-batch, checkpointing, a change of FSDP, LoRA for full fine-tuning)."""

    micro: int  # rows per micro-batch and process
    checkpointing: bool = False  # activation (gradient) checkpointing of every decoder layer
    fsdp: bool = False  # shard weights, gradients and optimizer state over the GPUs
    lora: bool = True

    def cost(self, configured: Setting) -> int:
        return (
            (self.micro != configured.micro)
            + 2 * self.checkpointing
            + 4 * (self.fsdp != configured.fsdp)
            + 8 * (self.lora != configured.lora)
        )


def resolve_card(cfg: RunConfig) -> tuple[ArchCard, str]:
    """(card, where it came from): the folder's config.json if ``model.path`` is a folder
    (checked against the card of ``model.name`` when there is one), else the card."""
    folder = Path(cfg.model.path).expanduser()
    if (folder / "config.json").is_file():
        card = read_card(folder)
        try:
            named = card_for(cfg.model.name) if cfg.model.name else None
        except CardError:
            named = None
        if named is not None and named.model_type != card.model_type:
            raise PlanError(
                f"{folder}/config.json has model_type {card.model_type!r} but model.name "
                f"{cfg.model.name!r} is a {named.model_type!r} model"
            )
        return card, f"{folder}/config.json"
    return card_for(cfg.model.name), f"card {cfg.model.name.lower()}"


def activations(
    card: ArchCard,
    rows: int,
    tokens: int,
    b: int,
    *,
    lora_rank: int = 0,
    n_targets: int = 7,
    checkpointing: bool = False,
    attention: str = "sdpa",
) -> int:
    """Peak activation bytes of one micro-batch's forward + backward (autograd's saved tensors).

    Saved per layer per token (elements): full fine-tuning ``6h + 5q + 4i`` (layer input, the two
    RMSNorm outputs and normed inputs, q, repeated k and v, the SDPA output and its contiguous
    copy for o_proj; SwiGLU's gate, silu(gate), up and their product); LoRA saves ``2h`` less
    (frozen norm weights keep no normed input) and ``n_targets r`` more (each adapter's x A);
    eager attention saves ``heads x T`` probabilities instead of the SDPA output. Top: ``3h``
    (last hidden, final norm, its output; LoRA ``h``). Logits: ``3 t V`` fp32 elements at the
    start of backward (the saved log-softmax, its incoming and outgoing gradients). Mask: the
    4-D boolean padding mask, ``B T^2`` bytes. Checkpointing keeps each layer's input (``h``)
    and recomputes one layer at a time, so the peak is the larger of the logits and one layer.
    """
    h, i, q = card.hidden_size, card.intermediate_size, card.q_size
    t, layers = rows * tokens, card.num_hidden_layers
    per_layer = 6 * h + 5 * q + 4 * i
    top = 3 * h
    if lora_rank:
        per_layer += n_targets * lora_rank - 2 * h
        top = h
    if attention == "eager":
        per_layer += card.num_attention_heads * tokens - q
    logits = 3 * t * card.vocab_size * max(b, 4)
    mask = rows * tokens * tokens
    if checkpointing:
        return layers * t * h * b + t * top * b + max(logits, t * per_layer * b) + mask
    first = t * h * b if lora_rank else 0  # LoRA: the embeddings' output needs no grad
    return layers * t * per_layer * b + t * top * b + logits + mask - first


def train_memory(
    card: ArchCard,
    s: Setting,
    *,
    tokens: int,
    b: int,
    gpus: int,
    rank: int,
    targets: tuple[str, ...],
    optimizer: str = "adamw",
    attention: str = "sdpa",
    foreach: bool = True,
    mixed_precision: bool = False,
) -> dict[str, int]:
    """Per-GPU bytes of one training setting (formulas in the module docstring);
    ``mixed_precision``: bf16 autocast (planned as fp32, plus ``autocast_copies`` under FSDP)."""
    shard = gpus if s.fsdp else 1
    total = param_count(card)
    if s.lora:
        trainable, tb = lora_params(card, rank, targets), max(b, 4)
        weights = total * b + trainable * tb
    else:
        trainable, tb = total, b
        weights = total * b // shard
    states = 2 if optimizer == "adamw" else 0
    gather = copies = 0
    if s.fsdp:
        head = 1 if card.tie_word_embeddings else 2
        root = head * card.vocab_size * card.hidden_size + card.hidden_size
        gather = 2 * max(root, 2 * layer_param_count(card)) * b
    if s.fsdp and mixed_precision:
        kept = 1 if s.checkpointing else card.num_hidden_layers
        linear = layer_param_count(card) - 2 * card.hidden_size  # not the two norms
        copies = 2 * (kept * linear + card.vocab_size * card.hidden_size)
    n_targets = sum(1 for t in targets if t.endswith("_proj")) if s.lora else 0
    act = activations(
        card,
        s.micro,
        tokens,
        b,
        lora_rank=rank if s.lora else 0,
        n_targets=n_targets,
        checkpointing=s.checkpointing,
        attention=attention,
    )
    step_temp = trainable * tb // shard if (states and foreach) else 0
    parts = {
        "params": total,
        "trainable_params": trainable,
        "weights": weights,
        "gradients": trainable * tb // shard,
        "optimizer": states * trainable * tb // shard,
        "activations": act,
        "fsdp_gather": gather,
        "autocast_copies": copies,
        "step_temp": step_temp,
    }
    parts["total"] = (
        weights + parts["gradients"] + parts["optimizer"] + max(act + gather + copies, step_temp)
    )
    return parts


def _layer_live(card: ArchCard, t: int, b: int) -> int:
    """No-grad live tensors inside one layer: residual, normed input, and SwiGLU's silu(gate),
    up and their product, ``(2h + 3i) t b``."""
    return (2 * card.hidden_size + 3 * card.intermediate_size) * t * b


def inference_memory(card: ArchCard, rows: int, tokens: int, b: int, weights: int) -> dict:
    """No-grad scoring of ``rows`` x ``tokens`` (t = rows tokens)::

    weights + kv_cache + max(one layer, logits) + mask
    kv_cache = 2 L kv t b                (transformers fills a cache even when scoring)
    one layer = (2h + 3i) t b
    logits   = t V (b + max(b, 4) + (4 if b < 4)) + h t b   (logits, fp32 copy, log-softmax)
    """
    t = rows * tokens
    cache = 2 * card.num_hidden_layers * card.kv_size * t * b
    logits = t * card.vocab_size * (b + max(b, 4) + (4 if b < 4 else 0))
    act = max(_layer_live(card, t, b), logits + card.hidden_size * t * b)
    return {"weights": weights, "kv_cache": cache, "activations": act + rows * tokens * tokens}


def generate_memory(
    card: ArchCard, rows: int, prompt: int, new: int, b: int, weights: int
) -> dict[str, int]:
    """Sampling ``rows`` sequences of ``prompt + new`` tokens::

        weights + max(cache(prompt + new) + sampling, cache(prompt) + prefill)
        cache(n)  = 2 L kv n rows b
        sampling  = 4 rows V 4               (last-token logits, fp32 copies, probabilities)
        prefill   = (2h + 3i) rows prompt b + rows prompt^2   (one layer + the padding mask)

    ``activations`` is the peak less the full cache (the prefill's excess when it is the peak).
    """
    per_token = 2 * card.num_hidden_layers * card.kv_size * rows * b
    cache = per_token * (prompt + new)
    sampling = 4 * rows * card.vocab_size * 4
    prefill = per_token * prompt + _layer_live(card, rows * prompt, b) + rows * prompt * prompt
    peak = max(cache + sampling, prefill)
    return {"weights": weights, "kv_cache": cache, "activations": peak - cache}


def _fits(total: int, gib: float) -> bool:
    return total <= HEADROOM * gib * GIB


def _advice(s: Setting, configured: Setting, accum: str) -> list[str]:
    out = []
    if s.lora != configured.lora:
        out.append("LoRA instead of full fine-tuning (changes the experiment)")
    if s.fsdp != configured.fsdp:
        out.append(
            "distributed.strategy = 'fsdp' (shards weights/grads/optimizer)"
            if s.fsdp
            else "distributed.strategy = 'ddp'"
        )
    if s.micro != configured.micro:
        out.append(f"{accum} (micro-batch 1; same result, slower)")
    if s.checkpointing != configured.checkpointing:
        out.append(f"finetune.gradient_checkpointing = {str(s.checkpointing).lower()}")
    return out or ["as configured"]


def _train_phase(cfg, card, where, batch, accum, rows_factor, gpus, gib, b, extra=None) -> dict:
    """The configured setting's memory and the cheapest setting that fits (``where``: the
    config key whose value sets the micro-batch)."""
    try:
        rank = lora_shape(cfg)[0]
    except ConfigError:  # full fine-tuning of a model without a preset: LoRA option at r = 8
        if cfg.finetune.method == "lora":
            raise
        rank = 8
    per_proc = math.ceil(batch / gpus)
    micro = math.ceil(per_proc / accum) * rows_factor
    configured = Setting(
        micro,
        cfg.finetune.gradient_checkpointing,
        cfg.distributed.strategy == "fsdp" and gpus > 1,
        cfg.finetune.method == "lora",
    )
    kw = dict(
        tokens=cfg.finetune.max_length,
        b=b,
        gpus=gpus,
        rank=rank,
        targets=tuple(cfg.finetune.lora_targets),
        optimizer=cfg.finetune.optimizer,
        mixed_precision=cfg.finetune.mixed_precision != "no",
    )
    options = []
    for m, ck, fs, lo in product(
        {micro, rows_factor},
        (False, True),
        (False, gpus > 1),
        {configured.lora, True},
    ):
        s = Setting(m, ck, fs, lo)
        if s.fsdp and s.lora:  # llm.config refuses LoRA under FSDP
            continue
        parts = train_memory(card, s, **kw)
        if extra is not None:
            parts["total"] = max(parts["total"], extra(card, s, parts))
        options.append((s.cost(configured), s, parts))
    options.sort(key=lambda o: o[0])
    base = next(p for c, s, p in options if s == configured)
    ckpt = next(p for c, s, p in options if s == replace(configured, checkpointing=True))
    fit = next(((s, p) for c, s, p in options if _fits(p["total"], gib)), None)
    out = {
        **base,
        "micro_batch": micro,
        "tokens": cfg.finetune.max_length,
        "lora": configured.lora,
        "total_checkpointing": ckpt["total"],
        "fits": _fits(base["total"], gib),
    }
    if fit is None:
        out["recommended"] = ["does not fit: no setting of the planner fits"]
    else:
        out["recommended"] = _advice(fit[0], configured, f"{where} = {per_proc}")
        out["recommended_total"] = fit[1]["total"]
    return out


def _npo_reference(cfg, b):
    """NPO with ``reference = 'adapter'`` (LoRA) runs a no-grad forward of the adapter-disabled
    model while the policy's graph is held: no second model, but the reference's scoring
    tensors on top of the saved activations (one log-softmax instead of three logits copies)."""
    npo = [m for m in cfg.unlearn.methods if m.objective == "npo" and m.reference == "adapter"]
    if not npo or cfg.finetune.method != "lora":
        return None

    def extra(card, s, parts):
        if not s.lora:
            return 0
        logits = s.micro * cfg.finetune.max_length * card.vocab_size * max(b, 4)
        ref = inference_memory(card, s.micro, cfg.finetune.max_length, b, 0)
        held = parts["activations"] - 2 * logits + ref["kv_cache"] + ref["activations"]
        return parts["weights"] + parts["gradients"] + parts["optimizer"] + held

    return extra


def _inference_phase(kind, card, count, unit, gpus, gib, knob, fn, sharded=False) -> dict:
    """``count`` x ``unit`` rows (prompts x samples); if they do not fit, the largest ``count``
    that does, else one row per call with the layers spread over the GPUs (not under FSDP,
    which the config does not combine with ``model.device = 'spread'``)."""
    parts = fn(count * unit)
    total = sum(parts.values())
    out = {
        **parts,
        "params": param_count(card),
        "trainable_params": 0,
        "rows": count * unit,
        "total": total,
        "fits": _fits(total, gib),
        "recommended": ["as configured"],
    }
    if out["fits"]:
        return out
    for smaller in range(count - 1, 0, -1):
        if _fits(sum(fn(smaller * unit).values()), gib):
            out["recommended"] = [f"{knob} = {smaller}"]
            out["recommended_total"] = sum(fn(smaller * unit).values())
            return out
    spread = sum(fn(unit).values()) // gpus
    if gpus > 1 and not sharded and _fits(spread, gib):
        out["recommended"] = [f"{knob} = 1", f"model.device = 'spread' over {gpus} GPUs"]
        out["recommended_total"] = spread
    else:
        out["recommended"] = [f"does not fit: not even one {kind} call fits"]
    return out


def plan(
    cfg: RunConfig,
    gpus: int = 1,
    gpu_memory_gib: float = 80.0,
    prompt_tokens: int = 0,
    card: ArchCard | None = None,
) -> dict[str, Any]:
    """Per-phase memory per GPU of ``cfg`` on ``gpus`` GPUs of ``gpu_memory_gib`` GiB.

    Returns ``{"model", "source", "gpus", "gpu_memory_gib", "phases": {finetune, unlearn,
    evaluate, generate}}``; each phase holds its components (bytes), ``total``, ``fits`` and
    ``recommended`` (the cheapest setting that fits, ordered: a smaller micro-batch, then
    checkpointing, then FSDP, then LoRA). ``prompt_tokens`` (0: ``finetune.max_length``) is the
    prompt length assumed for generation.
    """
    if gpus < 1:
        raise PlanError(f"--gpus must be >= 1, got {gpus}")
    if not (gpu_memory_gib > 0 and math.isfinite(gpu_memory_gib)):
        raise PlanError(f"--gpu-memory must be a positive number of GiB, got {gpu_memory_gib}")
    if prompt_tokens < 0:
        raise PlanError(f"--prompt-tokens must be >= 0, got {prompt_tokens}")
    source = "given"
    if card is None:
        card, source = resolve_card(cfg)
    b = DTYPE_BYTES[cfg.model.dtype]
    stages = [cfg.stage(n) for n in dict.fromkeys(cfg.paths.order)] or list(cfg.stages)
    big = max(stages, key=lambda s: math.ceil(s.batch_size / gpus / s.grad_accum))
    un = cfg.unlearn
    retain = 2 if any(m.retain_weight > 0 for m in un.methods) else 1
    ev, weights = cfg.eval, param_count(card) * b
    T = cfg.finetune.max_length
    # FSDP shards scoring and sampling too: 1/N of the weights, plus the root (embeddings, final
    # norm, LM head), which FSDP2 keeps gathered through a forward, and two gathered layers.
    sharded = cfg.distributed.strategy == "fsdp" and gpus > 1
    held = {"weights": weights}
    if sharded:
        root = (1 if card.tie_word_embeddings else 2) * card.vocab_size * card.hidden_size
        gather = (root + card.hidden_size + 2 * layer_param_count(card)) * b
        held = {"weights": weights // gpus, "fsdp_gather": gather}
    phases = {
        "finetune": _train_phase(
            cfg,
            card,
            "[[stages]] grad_accum",
            big.batch_size,
            big.grad_accum,
            1,
            gpus,
            gpu_memory_gib,
            b,
        ),
        "unlearn": _train_phase(
            cfg,
            card,
            "unlearn.grad_accum",
            un.batch_size,
            un.grad_accum,
            retain,
            gpus,
            gpu_memory_gib,
            b,
            _npo_reference(cfg, b),
        ),
        "evaluate": _inference_phase(
            "scoring",
            card,
            ev.batch_size,
            1,
            gpus,
            gpu_memory_gib,
            "eval.batch_size",
            lambda r: inference_memory(card, r, T, b, held["weights"]) | held,
            sharded,
        ),
    }
    if ev.math_stage and ev.n_math > 0:
        phases["generate"] = _inference_phase(
            "sampling",
            card,
            ev.math_batch_size,
            ev.math_samples,  # generate() expands every prompt to math_samples rows
            gpus,
            gpu_memory_gib,
            "eval.math_batch_size",
            lambda r: (
                generate_memory(card, r, prompt_tokens or T, ev.max_new_tokens, b, held["weights"])
                | held
            ),
            sharded,
        )
    notes = []
    if cfg.finetune.mixed_precision != "no":
        notes.append(MIXED_PRECISION_NOTE)
        if cfg.distributed.strategy == "fsdp" and gpus > 1:
            notes.append(FSDP_MIXED_PRECISION_NOTE)
    return {
        "model": cfg.model.name,
        "source": source,
        "dtype": cfg.model.dtype,
        "mixed_precision": cfg.finetune.mixed_precision,
        "gpus": gpus,
        "gpu_memory_gib": gpu_memory_gib,
        "headroom": HEADROOM,
        "phases": phases,
        "notes": notes,
    }
