"""The size and pre-training of the default models (:class:`DefaultModelConfig`) and its hash.

:meth:`DefaultModelConfig.config_hash` names the cache folder of a build: the project's one
content hash (:func:`pathdep.io.content_hash`) over the config and :data:`BUILD_FORMAT_VERSION`,
so a changed config or build never reuses an old folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pathdep.io import content_hash

BUILD_FORMAT_VERSION = 3  # bump when the build changes, so cached folders are rebuilt


@dataclass(frozen=True)
class DefaultModelConfig:
    """Size and pre-training of the default base models (both architectures share it).

    Attributes:
        vocab_size: BPE vocabulary size, special tokens and the 256 byte symbols included.
        hidden_size: model width.
        intermediate_size: MLP width (SwiGLU).
        num_layers: transformer blocks.
        num_heads: attention heads (``hidden_size`` must divide by it).
        num_kv_heads: key/value heads (grouped-query attention, as Llama 3 and Qwen2 use).
        max_position_embeddings: longest sequence the model accepts.
        tie_word_embeddings: share input and output embeddings (Llama 3.2-1B, Qwen2.5-1.5B do).
        tokenizer_docs: generic documents in the tokenizer's training corpus (plus rendered
            chats of every synthetic stage, ``tokenizer_docs // 4`` per stage, and
            ``tokenizer_docs // 10`` arithmetic questions inside the paper's GSM8K prompt).
        pretrain_docs: generic documents (:func:`llm.synthetic.generic_text`) in pre-training.
        pretrain_steps: optimizer steps of pre-training (0 = random init).
        pretrain_chats: chat-rendered instruction-following and author-QA conversations, half
            each, in pre-training: a real base model has seen chats and QA. They share the
            stages' formats, not their examples. No refusals: the base model must not already
            hold S_U.
        pretrain_math_chats: worked-arithmetic chats in pre-training, S_math's question types
            (other instances, from the training split) and the pre-training-only types, as the
            paper's base models solve grade-school problems before S_math.
        math_prompt_share: fraction of those asked through the paper's GSM8K prompt (App. F),
            so that the model can read a problem inside it at evaluation.
        fact_docs: documents of arithmetic facts (:func:`llm.synthetic.arithmetic_facts`).
        repeat_docs: documents that repeat a phrase (:func:`llm.synthetic.repeated_phrases`):
            copying, which a worked solution's first step does.
        batch_size: sequences per pre-training step.
        seq_len: tokens per pre-training sequence. Whole documents are packed into it, never
            split across two sequences (one longer than ``seq_len`` is cut), so every math chat
            is seen from its question to its answer.
        learning_rate: peak AdamW learning rate (10% linear warm-up, cosine to 10% of peak).
        seed: seeds tokenizer corpus, initialisation and data order.
        build_threads: torch CPU threads during the build. A fixed count makes the build
            reproducible across machines with different core counts (the float reduction order
            depends on it); 1 is also the fastest choice on a shared machine, where extra
            threads mostly spin.
    """

    vocab_size: int = 2560
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    tokenizer_docs: int = 2000
    pretrain_docs: int = 3000
    pretrain_steps: int = 2000
    pretrain_chats: int = 2000
    pretrain_math_chats: int = 4000
    math_prompt_share: float = 0.5
    fact_docs: int = 1000
    repeat_docs: int = 3000
    batch_size: int = 8
    seq_len: int = 256
    learning_rate: float = 2e-3
    seed: int = 0
    build_threads: int = 1

    def __post_init__(self) -> None:
        positive = [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "max_position_embeddings",
            "tokenizer_docs",
            "pretrain_docs",
            "batch_size",
            "seq_len",
            "build_threads",
        ]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(
                    f"DefaultModelConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        if self.vocab_size < 300:
            raise ValueError(
                f"vocab_size must be >= 300 (256 bytes + specials), got {self.vocab_size}"
            )
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                "hidden_size must divide by num_heads and num_heads by num_kv_heads; got "
                f"{self.hidden_size}, {self.num_heads}, {self.num_kv_heads}"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("head dimension hidden_size/num_heads must be even (rotary embedding)")
        for name in ("pretrain_chats", "pretrain_math_chats", "fact_docs", "repeat_docs"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"DefaultModelConfig.{name} must be >= 0, got {getattr(self, name)}"
                )
        if not 0.0 <= self.math_prompt_share <= 1.0:
            raise ValueError(f"math_prompt_share must be in [0, 1], got {self.math_prompt_share}")
        if self.pretrain_steps < 0 or self.learning_rate <= 0:
            raise ValueError("pretrain_steps must be >= 0 and learning_rate > 0")
        if self.seq_len > self.max_position_embeddings:
            raise ValueError("seq_len must not exceed max_position_embeddings")

    @classmethod
    def tiny(cls) -> DefaultModelConfig:
        """A model of a few ten thousand parameters that builds in seconds (tests)."""
        return cls(
            vocab_size=384,
            hidden_size=32,
            intermediate_size=64,
            num_layers=2,
            num_heads=2,
            num_kv_heads=1,
            max_position_embeddings=512,
            tokenizer_docs=200,
            pretrain_docs=100,
            pretrain_steps=4,
            pretrain_chats=30,
            pretrain_math_chats=20,
            fact_docs=10,
            repeat_docs=10,
            batch_size=4,
            seq_len=64,
            learning_rate=3e-3,
        )

    def config_hash(self) -> str:
        """First 12 hex digits of :func:`pathdep.io.content_hash` over the config and
        :data:`BUILD_FORMAT_VERSION` (names the build's cache folder)."""
        return content_hash({"v": BUILD_FORMAT_VERSION, **dataclasses.asdict(self)}, digits=12)
