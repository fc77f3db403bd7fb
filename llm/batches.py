"""Data order and batch plumbing: which examples each step sees, and how a batch reaches the model.

The data order of a run is a function of (seed, epoch) (:func:`batch_plan`); every process takes
its share of a global batch and splits it into micro-batches (:func:`micro_batches`). The helpers
below collate tokenized examples onto the model's device and score their labelled tokens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from llm import distributed as D
from llm.logprobs import IGNORE_INDEX, sequence_logprobs

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
# Batches on the model


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


@torch.no_grad()
def score_shards(
    model,
    examples: Sequence[Any],
    pad_token_id: int,
    batch_size: int,
    score,
    by_length: bool = False,
    progress=None,
) -> list:
    """``score(model, batch)`` (one value per row) of every example, in input order, no grad.

    Each process scores its share (:func:`llm.distributed.shard`; sorted by length first with
    ``by_length``, which keeps padding small) in batches of ``batch_size``, and the values are
    gathered from every process. Under FSDP a process with fewer batches runs zero-weighted
    one-token forwards in place of the missing ones, so that every process joins every
    collective; the root's gathered weights are given back at the end. ``progress`` wraps the
    batch list (e.g. a tqdm bar).
    """
    info = D.current()
    mine = D.shard(list(range(len(examples))), info)
    if by_length:
        mine.sort(key=lambda i: len(examples[i].input_ids))
    chunks = [mine[s : s + batch_size] for s in range(0, len(mine), batch_size)]
    chunks = D.even_batches(chunks, model)
    was_training = model.training
    model.eval()
    device = model_device(model)
    values: dict[int, Any] = {}
    for chunk in progress(chunks) if progress else chunks:
        if chunk is None:  # FSDP: this process's shards still join the all-gathers
            zero_loss(model, device)
            continue
        batch = collate_to([examples[i] for i in chunk], pad_token_id, device)
        values.update(zip(chunk, score(model, batch), strict=True))
    model.train(was_training)
    D.reshard(model)
    merged: dict[int, Any] = {}
    for part in D.gather_objects(values):
        merged.update(part)
    return [merged[i] for i in range(len(examples))]
