"""One run = one TOML file, parsed into frozen dataclasses (:mod:`pathdep.configs`).

The file is read with :mod:`tomllib` (so a duplicated key is a parse error, by the TOML spec), every
table is matched field by field against the dataclasses below (an unknown key is an error naming
the key and its table, a float must be finite), and the resolved config is saved beside the
outputs as ``config.toml`` (a run can be repeated from it) and ``config.json`` with its hash
(:func:`pathdep.configs.config_hash`), so every result can be traced to exactly what produced it.

Dotted overrides (``model.path=/models/Llama-3.2-1B``) are applied to the raw tables before
validation, with the value parsed as a TOML value when it parses and as a string otherwise.

(Over our usual 400 lines: the dataclasses and their validation belong together, and most of the
length is each field's help text.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathdep.configs import (
    ConfigError,
    FrozenMap,
    apply_overrides,
    config_hash,
    from_dict,
    load_toml,
    save_config,
    to_dict,
)
from pathdep.configs import option as _f

__all__ = [
    "CONFIG_DIR",
    "ConfigError",
    "RunConfig",
    "apply_overrides",
    "config_from_dict",
    "config_hash",
    "load_config",
    "lora_shape",
    "path_sequences",
    "retrain_sequence",
    "save_resolved",
    "to_dict",
    "validate",
]

# The configs shipped with the package (tiny, demo, the five paper models).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

DTYPES = ("fp32", "bf16", "fp64")
SCHEDULES = ("wsd", "cosine", "constant")
LORA_MERGES = ("per_stage", "end")
MIXED_PRECISIONS = ("no", "bf16")
OBJECTIVES = ("ga", "npo", "simnpo")
REFERENCES = ("adapter", "precomputed")
STRATEGIES = ("ddp", "fsdp")

# Paper Table 2: LoRA rank / alpha per model. Keys are lower-case model names.
LORA_PRESETS: dict[str, tuple[int, int]] = {
    "llama3.2-1b": (64, 128),
    "qwen2.5-1.5b": (32, 64),
    "llama3.1-8b": (8, 16),
    "llama2-13b": (8, 16),
    "qwen2.5-14b": (8, 16),
}


@dataclass(frozen=True)
class ModelConfig:
    path: str = _f(
        "default:llama",
        "local HF model folder, or default:llama / default:qwen2 for the built-in tiny models",
    )
    template_path: str = _f(
        "", "folder whose tokenizer chat template formats the data (the matching instruct model)"
    )
    name: str = _f("", "model name for the LoRA preset (e.g. llama3.2-1b); empty: no preset")
    dtype: str = _f("fp32", "fp32 | bf16 | fp64 (fp64 for tests)")
    device: str = _f(
        "auto",
        "auto (cuda:LOCAL_RANK if available, else cpu) | cpu | cuda:N | spread (one process, "
        "layers spread over all visible GPUs with accelerate's device map: models > 1 GPU)",
    )
    trust_remote_code: bool = _f(False, "passed to transformers")


@dataclass(frozen=True)
class FinetuneConfig:
    method: str = _f("lora", "lora | full")
    lora_merge: str = _f(
        "per_stage",
        "per_stage: a fresh adapter every stage, merged after it | end: one adapter trained "
        "through every stage of a path and merged once at the end (the paper's code)",
    )
    lora_rank: int = _f(0, "LoRA rank; 0 = the model's Table 2 preset")
    lora_alpha: int = _f(0, "LoRA alpha; 0 = the model's Table 2 preset")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    lora_targets: tuple[str, ...] = _f(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "module names that get adapters",
    )
    schedule: str = _f("wsd", "wsd | cosine | constant; re-initialised at every stage")
    warmup_frac: float = _f(0.02, "fraction of a stage's steps spent warming up")
    decay_frac: float = _f(0.02, "WSD: fraction of a stage's steps spent decaying")
    optimizer: str = _f("adamw", "adamw (the paper's Sec. 4.1) | sgd (its Sec. 4.3 R/C/U runs)")
    betas: tuple[float, float] = _f((0.9, 0.999), "AdamW betas")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "clip the global gradient norm to this; 0 = no clipping")
    max_length: int = _f(512, "tokens per example (longer ones are truncated and counted)")
    gradient_checkpointing: bool = _f(
        False,
        "recompute each decoder layer's activations in backward (fine-tuning and unlearning): "
        "less memory (python -m llm plan), ~1/3 more compute, the same result",
    )
    mixed_precision: str = _f(
        "no",
        "no (the paper's fp32) | bf16: fine-tuning's and unlearning's forward passes autocast "
        "to bfloat16; weights, gradients and AdamW state stay fp32 (needs model.dtype = fp32)",
    )
    checkpoint_every: int = _f(50, "optimizer steps between step checkpoints (resume)")
    replay_docs: int = _f(
        0,
        "pre-training-style documents (llm.synthetic.generic_text, seed data.seed) added to "
        "every stage with the loss on every token; the same documents in every stage and path",
    )


@dataclass(frozen=True)
class StageConfig:
    name: str = _f("", "stage name; also the dataset key in [data]")
    epochs: float = _f(1.0, "passes over the stage data")
    lr: float = _f(1e-5, "peak learning rate")
    batch_size: int = _f(8, "global batch size (examples per optimizer step, all processes)")
    grad_accum: int = _f(1, "micro-batches per optimizer step and process")


@dataclass(frozen=True)
class DataConfig:
    synthetic: bool = _f(True, "write the built-in synthetic datasets (llm.synthetic) first")
    seed: int = _f(0, "seed of the synthetic data")
    sizes: Mapping[str, int] = _f(
        FrozenMap(), "synthetic dataset sizes by name (llm.synthetic defaults)"
    )
    files: Mapping[str, str] = _f(
        FrozenMap(), "dataset name -> JSON/JSONL file; overrides synthetic ones"
    )


@dataclass(frozen=True)
class PathsConfig:
    order: tuple[str, ...] = _f(
        ("inst", "tofu", "math", "unlearn"), "the stages in their fixed order"
    )
    forget_stage: str = _f("unlearn", "the stage that is later unlearned")
    positions: tuple[int, ...] = _f(
        (1, 2, 3, 4), "1-based positions of the forget stage (the others keep their order)"
    )
    permutations: tuple[tuple[str, ...], ...] = _f(
        (), "explicit stage sequences (e.g. the six R/C/U orders); used instead of positions"
    )


@dataclass(frozen=True)
class MethodConfig:
    name: str = _f("ga", "label of this method in reports")
    objective: str = _f("ga", "ga | npo | simnpo")
    beta: float = _f(0.5, "NPO / SimNPO inverse temperature")
    margin: float = _f(0.0, "SimNPO margin (the SimNPO authors' gamma)")
    length_normalize: bool = _f(
        True, "SimNPO: divide log pi by |y| (authors' form); false + margin 0 = paper's form"
    )
    reference: str = _f(
        "adapter", "NPO reference: adapter (adapter disabled) | precomputed (log-probs up front)"
    )
    forget_weight: float = _f(1.0, "weight of the forget objective")
    retain_weight: float = _f(0.0, "weight of the retain NLL (> 0: gradient difference)")
    retain_stage: str = _f("", "dataset of the retain term (needed when retain_weight > 0)")
    lr: float = _f(0.0, "this method's peak learning rate; 0 = unlearn.lr")


@dataclass(frozen=True)
class UnlearnConfig:
    epochs: float = _f(1.0, "passes over the forget set")
    max_steps: int = _f(0, "cap on optimizer steps; 0 = no cap")
    lr: float = _f(1e-5, "peak learning rate")
    batch_size: int = _f(8, "global batch size")
    grad_accum: int = _f(1, "micro-batches per step and process")
    schedule: str = _f("constant", "wsd | cosine | constant")
    warmup_frac: float = _f(0.0, "warm-up fraction")
    decay_frac: float = _f(0.0, "WSD decay fraction")
    optimizer: str = _f("", "adamw | sgd; empty = finetune.optimizer")
    eval_every: int = _f(1, "evaluate every this many steps (and at step 0 and the end)")
    math_every: int = _f(0, "evaluate math every this many steps; 0 = start and end only")
    full_eval_every: int = _f(
        1,
        "score every group (phrases, TOFU, math log-lik) at every this many evaluated steps; "
        "0 = at the start and the end only, the evaluations between score what the per-step "
        "curves need (the label, R/C/U) and Pred, and nothing else",
    )
    methods: tuple[MethodConfig, ...] = _f(
        (MethodConfig(),), "the unlearning methods, each run on every path"
    )


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = _f(16, "sequences per forward pass when scoring")
    n_forget_prompts: int = _f(32, "forget-set prompts for the label / paraphrase log-probs")
    n_tofu: int = _f(32, "TOFU questions for the utility score")
    tofu_stage: str = _f("tofu", "dataset of the TOFU utility")
    math_stage: str = _f("math_test", "dataset of math questions (meta answer or '#### N'); '' off")
    n_math: int = _f(16, "math questions")
    math_prompt: str = _f("plain", "plain (the question as is) | paper (App. F GSM8K prompt)")
    math_samples: int = _f(5, "sampled solutions per question")
    math_batch_size: int = _f(8, "questions per generate call")
    max_new_tokens: int = _f(64, "generation length for math")
    temperature: float = _f(1.0, "sampling temperature for math")
    top_p: float = _f(1.0, "nucleus sampling for math")
    rcu_stage: str = _f("", "dataset of R/C/U items (prompt, refusal, compliance_c/u); '' off")
    n_rcu: int = _f(40, "R/C/U prompts")
    re_stages: tuple[str, ...] = _f(
        ("tofu_paraphrased",), "held-out datasets whose (prompt, answer) pairs define Pred"
    )
    n_re: int = _f(32, "held-out prompts for the RE distance")


@dataclass(frozen=True)
class DistributedConfig:
    strategy: str = _f(
        "ddp",
        "ddp (every process holds the whole model, gradients all-reduced) | fsdp (fine-tuning, "
        "unlearning and evaluation sharded with FSDP2 over the processes; full fine-tuning only)",
    )


@dataclass(frozen=True)
class RunConfig:
    name: str = _f("run", "run name")
    seed: int = _f(0, "seed of data order, adapters and sampling")
    cache_dir: str = _f("", "stage checkpoint cache; '' = OUT/cache")
    model: ModelConfig = _f(ModelConfig(), "base model")
    finetune: FinetuneConfig = _f(FinetuneConfig(), "shared fine-tuning settings")
    stages: tuple[StageConfig, ...] = _f((), "every stage that can appear in a path")
    data: DataConfig = _f(DataConfig(), "datasets")
    paths: PathsConfig = _f(PathsConfig(), "which stage orders to train")
    unlearn: UnlearnConfig = _f(UnlearnConfig(), "local unlearning")
    eval: EvalConfig = _f(EvalConfig(), "evaluation")
    distributed: DistributedConfig = _f(DistributedConfig(), "multi-process strategy")

    def stage(self, name: str) -> StageConfig:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"no [[stages]] entry named {name!r}")


# --------------------------------------------------------------------------------------------
# Parsing


def config_from_dict(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a raw table (as from tomllib) into a :class:`RunConfig`; raises ConfigError."""
    cfg = from_dict(RunConfig, raw)
    validate(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML run config (e.g. a run folder's saved ``config.toml``), apply dotted
    overrides, validate; raises ConfigError naming the file and the key."""
    cfg = load_toml(RunConfig, path, overrides or [])
    try:
        validate(cfg)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that one field's type cannot express."""
    if cfg.model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {DTYPES}, got {cfg.model.dtype!r}")
    ft = cfg.finetune
    if ft.optimizer not in ("adamw", "sgd"):
        raise ConfigError(f"finetune.optimizer must be adamw or sgd, got {ft.optimizer!r}")
    if cfg.unlearn.optimizer not in ("", "adamw", "sgd"):
        raise ConfigError(
            f"unlearn.optimizer must be adamw, sgd or empty, got {cfg.unlearn.optimizer!r}"
        )
    if ft.method not in ("lora", "full"):
        raise ConfigError(f"finetune.method must be lora or full, got {ft.method!r}")
    if ft.lora_merge not in LORA_MERGES:
        raise ConfigError(
            f"finetune.lora_merge must be one of {LORA_MERGES}, got {ft.lora_merge!r}"
        )
    if ft.mixed_precision not in MIXED_PRECISIONS:
        raise ConfigError(
            f"finetune.mixed_precision must be one of {MIXED_PRECISIONS}, "
            f"got {ft.mixed_precision!r}"
        )
    if ft.mixed_precision != "no" and cfg.model.dtype != "fp32":
        raise ConfigError(
            f"finetune.mixed_precision = {ft.mixed_precision!r} keeps fp32 master weights: it "
            f"needs model.dtype = 'fp32', got {cfg.model.dtype!r}"
        )
    for where, sched in (("finetune", ft.schedule), ("unlearn", cfg.unlearn.schedule)):
        if sched not in SCHEDULES:
            raise ConfigError(f"{where}.schedule must be one of {SCHEDULES}, got {sched!r}")
    for where, w, d in (
        ("finetune", ft.warmup_frac, ft.decay_frac),
        ("unlearn", cfg.unlearn.warmup_frac, cfg.unlearn.decay_frac),
    ):
        if not (0 <= w <= 1 and 0 <= d <= 1 and w + d <= 1):
            raise ConfigError(f"{where}: warmup_frac and decay_frac must be in [0,1], sum <= 1")
    if ft.max_length < 2:
        raise ConfigError("finetune.max_length must be >= 2")
    if ft.checkpoint_every < 1:
        raise ConfigError("finetune.checkpoint_every must be >= 1")
    if ft.replay_docs < 0:
        raise ConfigError(f"finetune.replay_docs must be >= 0, got {ft.replay_docs}")
    names = [s.name for s in cfg.stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"duplicated stage names in [[stages]]: {names}")
    for s in cfg.stages:
        if not s.name:
            raise ConfigError("every [[stages]] entry needs a name")
        _check_batch(f"stages.{s.name}", s.batch_size, s.grad_accum, s.lr, s.epochs)
    un = cfg.unlearn
    _check_batch("unlearn", un.batch_size, un.grad_accum, un.lr, un.epochs)
    if un.eval_every < 1:
        raise ConfigError("unlearn.eval_every must be >= 1")
    method_names = [m.name for m in un.methods]
    if len(set(method_names)) != len(method_names) or not method_names:
        raise ConfigError(f"unlearn.methods need distinct names, got {method_names}")
    for m in un.methods:
        if m.objective not in OBJECTIVES:
            raise ConfigError(f"method {m.name!r}: objective must be one of {OBJECTIVES}")
        if m.reference not in REFERENCES:
            raise ConfigError(f"method {m.name!r}: reference must be one of {REFERENCES}")
        if m.objective in ("npo", "simnpo") and not m.beta > 0:
            raise ConfigError(f"method {m.name!r}: beta must be > 0")
        if m.retain_weight < 0:
            raise ConfigError(f"method {m.name!r}: retain_weight must be >= 0")
        if m.retain_weight > 0 and not m.retain_stage:
            raise ConfigError(f"method {m.name!r}: retain_weight > 0 needs retain_stage")
    for seq in path_sequences(cfg.paths).values():
        for name in seq:
            cfg.stage(name)
    if cfg.eval.math_prompt not in ("plain", "paper"):
        raise ConfigError(f"eval.math_prompt must be plain or paper, got {cfg.eval.math_prompt!r}")
    _check_ranges(cfg)
    strategy = cfg.distributed.strategy
    if strategy not in STRATEGIES:
        raise ConfigError(f"distributed.strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "fsdp" and ft.method != "full":
        raise ConfigError(
            "distributed.strategy = 'fsdp' needs finetune.method = 'full' (LoRA under FSDP is "
            "not supported: the adapter is merged into sharded weights); use strategy = 'ddp'"
        )
    if strategy == "fsdp" and cfg.model.device == "spread":
        raise ConfigError(
            "distributed.strategy = 'fsdp' cannot be combined with model.device = 'spread'"
        )


def _at_least(where: str, value: float, low: float) -> None:
    if not value >= low:
        raise ConfigError(f"{where} must be >= {low:g}, got {value!r}")


def _check_ranges(cfg: RunConfig) -> None:
    """Every number in its range (the types and finiteness are checked when parsing)."""
    ev, ft, un = cfg.eval, cfg.finetune, cfg.unlearn
    for name in ("batch_size", "n_forget_prompts", "math_samples", "math_batch_size"):
        _at_least(f"eval.{name}", getattr(ev, name), 1)
    for name in ("max_new_tokens", "n_rcu", "n_re"):
        _at_least(f"eval.{name}", getattr(ev, name), 1)
    for name in ("n_tofu", "n_math"):
        _at_least(f"eval.{name}", getattr(ev, name), 0)
    if not ev.temperature > 0:
        raise ConfigError(f"eval.temperature must be > 0 (sampling), got {ev.temperature!r}")
    if not 0 < ev.top_p <= 1:
        raise ConfigError(f"eval.top_p must be in (0, 1], got {ev.top_p!r}")
    _at_least("unlearn.max_steps", un.max_steps, 0)
    _at_least("unlearn.math_every", un.math_every, 0)
    _at_least("unlearn.full_eval_every", un.full_eval_every, 0)
    for name in ("lora_rank", "lora_alpha", "weight_decay", "max_grad_norm"):
        _at_least(f"finetune.{name}", getattr(ft, name), 0)
    if not 0 <= ft.lora_dropout < 1:
        raise ConfigError(f"finetune.lora_dropout must be in [0, 1), got {ft.lora_dropout!r}")
    if not all(0 <= b < 1 for b in ft.betas):
        raise ConfigError(f"finetune.betas must be in [0, 1), got {list(ft.betas)}")
    for m in un.methods:
        _at_least(f"method {m.name!r}: forget_weight", m.forget_weight, 0)
        _at_least(f"method {m.name!r}: lr", m.lr, 0)
    if cfg.data.synthetic:
        from llm.synthetic import DatasetSizes

        try:
            DatasetSizes.from_mapping(cfg.data.sizes)
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from None


def _check_batch(where: str, batch: int, accum: int, lr: float, epochs: float) -> None:
    if batch < 1 or accum < 1:
        raise ConfigError(f"{where}: batch_size and grad_accum must be >= 1")
    if batch % accum:
        raise ConfigError(f"{where}: batch_size {batch} is not a multiple of grad_accum {accum}")
    if not lr > 0 or not epochs > 0:
        raise ConfigError(f"{where}: lr and epochs must be > 0")


def path_sequences(paths: PathsConfig) -> dict[str, tuple[str, ...]]:
    """Name -> stage sequence of every path to train.

    With ``permutations`` the paths are those sequences (named by joining stage names with '-');
    otherwise the forget stage is placed at each 1-based position of ``positions`` with the other
    stages of ``order`` kept in their order (named ``p1``, ``p2``, ...).
    """
    if paths.permutations:
        out = {}
        for seq in paths.permutations:
            if len(set(seq)) != len(seq) or paths.forget_stage not in seq:
                raise ConfigError(
                    f"paths.permutations entry {list(seq)} must list distinct stages including "
                    f"the forget stage {paths.forget_stage!r}"
                )
            out["-".join(seq)] = tuple(seq)
        return out
    if paths.forget_stage not in paths.order:
        raise ConfigError(f"paths.forget_stage {paths.forget_stage!r} is not in paths.order")
    others = [s for s in paths.order if s != paths.forget_stage]
    out = {}
    for p in paths.positions:
        if not 1 <= p <= len(paths.order):
            raise ConfigError(f"paths.positions: {p} is outside 1..{len(paths.order)}")
        seq = others[: p - 1] + [paths.forget_stage] + others[p - 1 :]
        out[f"p{p}"] = tuple(seq)
    return out


def retrain_sequence(paths: PathsConfig) -> tuple[str, ...]:
    """The retrain baseline: the fixed order without the forget stage."""
    base = paths.permutations[0] if paths.permutations else paths.order
    return tuple(s for s in base if s != paths.forget_stage)


def lora_shape(cfg: RunConfig) -> tuple[int, int]:
    """(rank, alpha): explicit values, else the Table 2 preset of ``model.name``."""
    rank, alpha = cfg.finetune.lora_rank, cfg.finetune.lora_alpha
    if rank > 0 and alpha > 0:
        return rank, alpha
    key = cfg.model.name.lower()
    if key not in LORA_PRESETS:
        raise ConfigError(
            f"finetune.lora_rank/lora_alpha are unset and model.name {cfg.model.name!r} has no "
            f"preset (known: {', '.join(sorted(LORA_PRESETS))})"
        )
    preset = LORA_PRESETS[key]
    return (rank or preset[0], alpha or preset[1])


def save_resolved(cfg: RunConfig, out_dir: str | Path) -> str:
    """Write ``out_dir/config.toml`` and ``out_dir/config.json`` (resolved config + hash)
    atomically; returns the hash."""
    return save_config(cfg, out_dir)
