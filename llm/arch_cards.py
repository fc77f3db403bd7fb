"""Architecture cards: the public ``config.json`` numbers of the five paper models, and counts.

The memory planner (:mod:`llm.plan`) needs a model's shape before any checkpoint is on disk, so
the five models the repo ships configs for (``llm/configs/*.toml``, keyed by ``model.name``) have
their public Hugging Face ``config.json`` values here. When a model folder exists its own
``config.json`` is read into the same :class:`ArchCard` instead (:func:`read_card`), so a planner
run on the real folder uses the real numbers.

:func:`param_count` is the exact parameter count of a Llama / Qwen2 decoder (checked against
``sum(p.numel())`` of transformers models built from reduced cards in tests/test_llm_plan.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathdep.errors import BadInput

__all__ = [
    "CARDS",
    "ArchCard",
    "CardError",
    "card_for",
    "card_to_hf_config",
    "layer_param_count",
    "lora_params",
    "param_count",
    "read_card",
    "reduced",
]

MODEL_TYPES = ("llama", "qwen2")


class CardError(BadInput):
    """No architecture card or a model folder that disagrees with one (one-line message)."""


@dataclass(frozen=True)
class ArchCard:
    """The shape of a Llama / Qwen2 decoder, as its ``config.json`` states it."""

    model_type: str  # llama | qwen2
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool  # q/k/v projections carry a bias (Qwen2: always; o_proj never)
    max_position_embeddings: int
    rope_theta: float
    torch_dtype: str  # the dtype the checkpoint is stored in
    head_dim: int = 0  # 0 = hidden_size // num_attention_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_size(self) -> int:
        """Width of the query projection's output, heads x head_dim."""
        return self.num_attention_heads * self.head_size

    @property
    def kv_size(self) -> int:
        """Width of the key (and value) projection's output under GQA, kv_heads x head_dim."""
        return self.num_key_value_heads * self.head_size


# Public config.json values (Hugging Face model pages: meta-llama/Llama-3.2-1B,
# meta-llama/Llama-3.1-8B, meta-llama/Llama-2-13b-hf, Qwen/Qwen2.5-1.5B, Qwen/Qwen2.5-14B).
CARDS: dict[str, ArchCard] = {
    "llama3.2-1b": ArchCard(
        "llama", 2048, 8192, 16, 32, 8, 128256, True, False, 131072, 500000.0, "bfloat16", 64
    ),
    "llama3.1-8b": ArchCard(
        "llama", 4096, 14336, 32, 32, 8, 128256, False, False, 131072, 500000.0, "bfloat16", 128
    ),
    "llama2-13b": ArchCard(
        "llama", 5120, 13824, 40, 40, 40, 32000, False, False, 4096, 10000.0, "float16"
    ),
    "qwen2.5-1.5b": ArchCard(
        "qwen2", 1536, 8960, 28, 12, 2, 151936, True, True, 131072, 1000000.0, "bfloat16"
    ),
    "qwen2.5-14b": ArchCard(
        "qwen2", 5120, 13824, 48, 40, 8, 152064, False, True, 131072, 1000000.0, "bfloat16"
    ),
}


def card_for(name: str) -> ArchCard:
    """The card of a ``model.name`` (case-insensitive); :class:`CardError` if there is none."""
    key = name.lower()
    if key not in CARDS:
        raise CardError(
            f"no architecture card for model.name {name!r} (known: {', '.join(sorted(CARDS))}) "
            "and no model folder at model.path"
        )
    return CARDS[key]


def read_card(folder: str | os.PathLike) -> ArchCard:
    """A model folder's ``config.json`` as an :class:`ArchCard` (Llama and Qwen2 only)."""
    path = Path(folder) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CardError(f"{path}: unreadable config.json ({exc})") from None
    kind = raw.get("model_type")
    if kind not in MODEL_TYPES:
        raise CardError(f"{path}: model_type {kind!r} is not one of {MODEL_TYPES}")
    try:
        heads = int(raw["num_attention_heads"])
        return ArchCard(
            model_type=kind,
            hidden_size=int(raw["hidden_size"]),
            intermediate_size=int(raw["intermediate_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(raw.get("num_key_value_heads") or heads),
            vocab_size=int(raw["vocab_size"]),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            attention_bias=kind == "qwen2" or bool(raw.get("attention_bias", False)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 0)),
            rope_theta=float(raw.get("rope_theta") or _rope_theta(raw)),
            torch_dtype=str(raw.get("torch_dtype") or raw.get("dtype") or "float32"),
            head_dim=int(raw.get("head_dim") or 0),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CardError(f"{path}: missing or bad field ({exc})") from None


def _rope_theta(raw: dict[str, Any]) -> float:
    params = raw.get("rope_parameters") or {}
    return float(params.get("rope_theta", 10000.0))


def reduced(card: ArchCard, hidden: int = 64, layers: int = 2, vocab: int = 512) -> ArchCard:
    """A small card of the same structure (GQA ratio, MLP ratio, ties, biases): for tests and
    for measuring memory on a CPU. Heads of about 16 dimensions (even, for RoPE); heads x
    head_dim may fall short of ``hidden`` as it does in some real models."""
    group = card.num_attention_heads // card.num_key_value_heads  # queries per kv head
    kv = max(hidden // 16 // group, 1)
    heads = kv * group
    head_dim = max(2 * (hidden // (2 * heads)), 2)  # even, for RoPE
    inter = round(card.intermediate_size * hidden / card.hidden_size)
    return dataclasses.replace(
        card,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        head_dim=head_dim,
        max_position_embeddings=max(2048, min(card.max_position_embeddings, 4096)),
    )


def layer_param_count(card: ArchCard) -> int:
    """Parameters of one decoder layer.

    attention: q (h x q) + k, v (h x kv each) + o (q x h), plus q/k/v biases (q + 2 kv) when
    ``attention_bias``; MLP (SwiGLU): gate, up (h x i each) + down (i x h); two RMSNorms (h each).
    """
    h, i, q, kv = card.hidden_size, card.intermediate_size, card.q_size, card.kv_size
    attention = h * q + 2 * h * kv + q * h + (q + 2 * kv if card.attention_bias else 0)
    return attention + 3 * h * i + 2 * h


def param_count(card: ArchCard) -> int:
    """Exact parameter count: embeddings (V x h) + layers + final norm (h) + lm_head (V x h,
    absent when tied to the embeddings)."""
    embed = card.vocab_size * card.hidden_size
    head = 0 if card.tie_word_embeddings else embed
    return embed + card.num_hidden_layers * layer_param_count(card) + card.hidden_size + head


def lora_params(card: ArchCard, rank: int, targets: tuple[str, ...]) -> int:
    """LoRA parameters: r (in + out) per targeted projection per layer (peft's A: r x in, B:
    out x r; targets absent from the model are skipped, as :func:`llm.train.attach_lora` does)."""
    h, i, q, kv = card.hidden_size, card.intermediate_size, card.q_size, card.kv_size
    shapes = {
        "q_proj": h + q,
        "k_proj": h + kv,
        "v_proj": h + kv,
        "o_proj": q + h,
        "gate_proj": h + i,
        "up_proj": h + i,
        "down_proj": i + h,
    }
    return card.num_hidden_layers * rank * sum(shapes[t] for t in targets if t in shapes)


def card_to_hf_config(card: ArchCard, **overrides: Any) -> Any:
    """The transformers config object (``LlamaConfig`` / ``Qwen2Config``) of a card; keyword
    ``overrides`` are passed on (e.g. ``attn_implementation="sdpa"``)."""
    from transformers import LlamaConfig, Qwen2Config

    kwargs: dict[str, Any] = {
        "hidden_size": card.hidden_size,
        "intermediate_size": card.intermediate_size,
        "num_hidden_layers": card.num_hidden_layers,
        "num_attention_heads": card.num_attention_heads,
        "num_key_value_heads": card.num_key_value_heads,
        "vocab_size": card.vocab_size,
        "tie_word_embeddings": card.tie_word_embeddings,
        "max_position_embeddings": card.max_position_embeddings,
        "rope_theta": card.rope_theta,
        "head_dim": card.head_size,
    }
    if card.model_type == "llama":
        kwargs["attention_bias"] = card.attention_bias
        kwargs["mlp_bias"] = False
        cls = LlamaConfig
    else:
        cls = Qwen2Config
    kwargs.update(overrides)
    return cls(**kwargs)
