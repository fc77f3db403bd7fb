"""The size and pre-training of the default models (:class:`DefaultModelConfig`) and its hash.

:meth:`DefaultModelConfig.config_hash` names the cache folder of a build: the project's one
content hash (:func:`pathdep.io.content_hash`) over the config and :data:`BUILD_FORMAT_VERSION`,
so a changed config or build never reuses an old folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pathdep.io import content_hash

BUILD_FORMAT_VERSION = 2  # bump when the build changes, so cached folders are rebuilt


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
            chats of every synthetic stage, ``tokenizer_docs // 4`` per stage).
        pretrain_docs: generic documents packed into the pre-training stream.
        pretrain_steps: optimizer steps of pre-training (0 = random init).
        pretrain_chats: chat-rendered conversations in the formats of the instruction, author
            QA and arithmetic stages (:func:`pretraining_chats`) shuffled into the pre-training
            documents, as a real base model has seen chats, QA and worked arithmetic. No
            refusals: the base model must not already hold S_U.
        batch_size: sequences per pre-training step.
        seq_len: tokens per pre-training sequence.
        learning_rate: peak AdamW learning rate (10% linear warm-up, cosine to 10% of peak).
        seed: seeds tokenizer corpus, initialisation and data order.
        build_threads: torch CPU threads during the build. A fixed count makes the build
            reproducible across machines with different core counts (the float reduction order
            depends on it); 1 is also the fastest choice on a shared machine, where extra
            threads mostly spin.
    """

    vocab_size: int = 2560
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    tokenizer_docs: int = 2000
    pretrain_docs: int = 3000
    pretrain_steps: int = 360
    pretrain_chats: int = 3000
    batch_size: int = 8
    seq_len: int = 128
    learning_rate: float = 3e-3
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
        if self.pretrain_chats < 0:
            raise ValueError(f"pretrain_chats must be >= 0, got {self.pretrain_chats}")
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
            batch_size=4,
            seq_len=64,
            learning_rate=3e-3,
        )

    def config_hash(self) -> str:
        """First 12 hex digits of :func:`pathdep.io.content_hash` over the config and
        :data:`BUILD_FORMAT_VERSION` (names the build's cache folder)."""
        return content_hash({"v": BUILD_FORMAT_VERSION, **dataclasses.asdict(self)}, digits=12)
