"""Pre-training of a default model: its transformers config, its data and the training loop.

:func:`model_config` sizes a Llama or Qwen2 config from :class:`DefaultModelConfig`;
:func:`pretraining_blocks` packs generic documents and :func:`pretraining_chats` (chats in the
stages' formats) into token blocks; :func:`pretrain` runs packed next-token prediction on them
(AdamW, warm-up + cosine).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from llm import synthetic
from llm.chat_template import render_chat
from llm.default_models.arch import ARCH_SPECS
from llm.default_models.config import DefaultModelConfig


def model_config(config: DefaultModelConfig, arch: str, tokenizer: Any) -> Any:
    """The transformers config of ``arch`` at ``config``'s size, ids from ``tokenizer``."""
    from transformers import LlamaConfig, Qwen2Config

    spec = ARCH_SPECS[arch]
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids(spec.bos_token) if spec.bos_token else None,
        eos_token_id=tokenizer.convert_tokens_to_ids(spec.eos_token),
        pad_token_id=tokenizer.convert_tokens_to_ids(spec.pad_token),
    )
    if arch == "llama":
        return LlamaConfig(rms_norm_eps=1e-5, **common)
    return Qwen2Config(rms_norm_eps=1e-6, **common)


def pretraining_chats(tokenizer: Any, config: DefaultModelConfig) -> list[str]:
    """``config.pretrain_chats`` rendered chats, a third each instruction following, author QA
    and worked arithmetic, from seed ``20_000 + seed`` (the tokenizer uses ``10_000 + seed``, the
    stage files small seeds). They share the stages' formats, not their examples: other authors
    and instructions, and arithmetic of other question types
    (:data:`llm.synthetic.PRETRAINING_MATH_TASKS`) in S_math's solution format, so S_math still
    has problems to teach."""
    n = config.pretrain_chats
    if n == 0:
        return []
    chat_seed = 20_000 + config.seed
    per_kind = max(1, n // 3)
    tofu, _ = synthetic.author_facts(-(-per_kind // 8), seed=chat_seed)  # 8 QA per author
    chats = (
        synthetic.instruction_following(per_kind, seed=chat_seed)
        + tofu[:per_kind]
        + synthetic.arithmetic(
            n - 2 * per_kind, seed=chat_seed, tasks=synthetic.PRETRAINING_MATH_TASKS
        )
    )
    # The template may open with BOS; pretraining_blocks adds its own around every document.
    bos = tokenizer.bos_token or ""
    return [render_chat(tokenizer, ex.messages).removeprefix(bos) for ex in chats]


def pretraining_blocks(tokenizer: Any, config: DefaultModelConfig, arch: str) -> torch.Tensor:
    """(N, seq_len) token blocks: generic documents (and :func:`pretraining_chats`, shuffled
    in) as ``[BOS] doc EOS``, concatenated, cut."""
    spec = ARCH_SPECS[arch]
    bos = [tokenizer.convert_tokens_to_ids(spec.bos_token)] if spec.bos_token else []
    eos = [tokenizer.convert_tokens_to_ids(spec.eos_token)]
    stream: list[int] = []
    docs = synthetic.generic_text(config.pretrain_docs, seed=config.seed + 1)
    chats = pretraining_chats(tokenizer, config)
    if chats:
        docs = docs + chats
        random.Random(config.seed).shuffle(docs)
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        stream.extend(bos + list(ids) + eos)
    n_blocks = len(stream) // config.seq_len
    if n_blocks == 0:
        raise ValueError("pretrain_docs too small to fill one sequence of seq_len tokens")
    return torch.tensor(stream[: n_blocks * config.seq_len]).view(n_blocks, config.seq_len)


def pretrain(
    model: Any,
    blocks: torch.Tensor,
    config: DefaultModelConfig,
    progress: bool,
    desc: str = "pre-training",
    position: int = 0,
) -> list[float]:
    """Next-token pre-training on ``blocks``; returns the loss of every step.

    AdamW (betas 0.9/0.95, no weight decay), 10% linear warm-up then cosine to 10% of the peak
    rate; batches drawn without replacement, reshuffled each pass, from a seeded generator.
    """
    steps = config.pretrain_steps
    if steps == 0:
        return []
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.0
    )
    warmup = max(1, steps // 10)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(config.seed)
    batches = _batch_stream(blocks.shape[0], config.batch_size, generator)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, position=position)
    for _ in bar:
        batch = blocks[next(batches)]  # (B, T)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def _batch_stream(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]
        if n < batch_size:  # fewer blocks than a batch: sample with replacement
            yield torch.randint(n, (batch_size,), generator=generator)
