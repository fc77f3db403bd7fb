"""Pre-training of a default model: its transformers config, its data and the training loop.

:func:`model_config` sizes a Llama or Qwen2 config from :class:`DefaultModelConfig`;
:func:`pretraining_documents` gathers generic text, arithmetic facts, repeated phrases and
:func:`pretraining_chats` (chats in the stages' formats); :func:`pretraining_blocks` packs whole
documents into token blocks; :func:`pretrain` runs next-token prediction on them (AdamW,
warm-up + cosine).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from llm import synthetic
from llm.chat import ChatExample, Message
from llm.chat_template import render_chat
from llm.default_models.arch import ARCH_SPECS
from llm.default_models.config import DefaultModelConfig
from llm.prompts import gsm8k_prompt


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
    """The chats of pre-training, rendered with the architecture's template (no BOS), from seed
    ``20_000 + seed`` (the tokenizer uses ``10_000 + seed``, the stage files small seeds).

    ``config.pretrain_chats`` instruction-following and author-QA chats, half each: the stages'
    formats, not their examples (other authors and instructions). Then
    ``config.pretrain_math_chats`` worked arithmetic chats cycling through S_math's question
    types (other instances, all from the training split, so no held-out problem is seen) and
    :data:`llm.synthetic.PRETRAINING_MATH_TASKS`; ``config.math_prompt_share`` of them ask the
    question inside the paper's GSM8K prompt, as the evaluation does.
    """
    chat_seed = 20_000 + config.seed
    n_inst = config.pretrain_chats // 2
    n_tofu = config.pretrain_chats - n_inst
    tofu, _ = synthetic.author_facts(-(-n_tofu // 8), seed=chat_seed) if n_tofu else ([], [])
    tasks = {**synthetic.MATH_TASKS, **synthetic.PRETRAINING_MATH_TASKS}
    rng = random.Random(chat_seed)
    maths = [
        ChatExample((Message("user", gsm8k_prompt(ex.messages[0].content)), ex.messages[1]))
        if rng.random() < config.math_prompt_share
        else ex
        for ex in synthetic.arithmetic(config.pretrain_math_chats, seed=chat_seed, tasks=tasks)
    ]
    chats = synthetic.instruction_following(n_inst, seed=chat_seed) + tofu[:n_tofu] + maths
    # The template may open with BOS; pretraining_blocks adds its own around every document.
    bos = tokenizer.bos_token or ""
    return [render_chat(tokenizer, ex.messages).removeprefix(bos) for ex in chats]


def pretraining_documents(tokenizer: Any, config: DefaultModelConfig) -> list[str]:
    """Every pre-training document, shuffled by ``config.seed``: generic text, arithmetic
    facts, repeated phrases and :func:`pretraining_chats`."""
    docs = (
        synthetic.generic_text(config.pretrain_docs, seed=config.seed + 1)
        + synthetic.arithmetic_facts(config.fact_docs, seed=config.seed)
        + synthetic.repeated_phrases(config.repeat_docs, seed=config.seed)
        + pretraining_chats(tokenizer, config)
    )
    random.Random(config.seed).shuffle(docs)
    return docs


def pretraining_blocks(
    tokenizer: Any, config: DefaultModelConfig, arch: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, seq_len) input ids and labels of :func:`pretraining_documents`.

    Each document is ``[BOS] doc EOS``; whole documents are packed greedily, in order, and never
    split across two blocks, so a math chat is always seen from its question to its answer (a
    document longer than ``seq_len`` is cut to it). The rest of a block is padding, with label
    -100. A model sees the other documents of its block (no attention mask between them), as in
    the usual packed pre-training.
    """
    spec = ARCH_SPECS[arch]
    bos = [tokenizer.convert_tokens_to_ids(spec.bos_token)] if spec.bos_token else []
    eos = [tokenizer.convert_tokens_to_ids(spec.eos_token)]
    pad, seq_len = tokenizer.pad_token_id, config.seq_len
    rows: list[list[int]] = []
    current: list[int] = []
    docs = pretraining_documents(tokenizer, config)
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        doc = (bos + list(ids) + eos)[:seq_len]
        if len(current) + len(doc) > seq_len:
            rows.append(current)
            current = []
        current = current + doc
    if current:
        rows.append(current)
    if not rows:
        raise ValueError("the pre-training corpus is empty: every document count is 0")
    inputs = torch.full((len(rows), seq_len), pad)  # (N, T)
    labels = torch.full((len(rows), seq_len), -100)  # (N, T)
    for i, row in enumerate(rows):
        inputs[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
    return inputs, labels


def pretrain(
    model: Any,
    blocks: torch.Tensor,
    labels: torch.Tensor,
    config: DefaultModelConfig,
    progress: bool,
    desc: str = "pre-training",
    position: int = 0,
) -> list[float]:
    """Next-token pre-training on ``blocks`` (N, T) with ``labels`` (N, T; -100 for padding);
    returns the loss of every step.

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
        rows = next(batches)  # (B,)
        loss = model(input_ids=blocks[rows], labels=labels[rows]).loss
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
