"""Tokenisation for training and scoring: ids, labels on assistant tokens only, and batches.

Conventions (shared with :mod:`llm.objectives`): ``labels`` has the length of ``input_ids`` and
holds the token id where the token carries loss, ``IGNORE_INDEX`` (-100) elsewhere; the causal
shift happens inside the loss.

How the assistant mask is found. The template is rendered to text (:mod:`llm.chat_template`); for
every assistant turn i the prefix ``messages[:i]`` rendered *with* the generation prompt and
``messages[:i+1]`` rendered without it are compared: the characters between them are that turn
(its content and the end-of-turn marker; trailing whitespace after the marker is not labelled;
:func:`llm.chat_template.assistant_char_spans`). The full text is then tokenised once with
character offsets, and a token is labelled iff its characters overlap such a span (so a token
straddling the start of an answer, like ``" b"`` after ``"assistant:"``, is labelled: it is the
first token the model has to produce).
This needs only that the template renders a conversation as a concatenation of its turns
("prefix-consistent"), which Llama 2/3 and ChatML/Qwen templates are; a template that is not
raises :class:`llm.chat_template.ChatTemplateError`. Templates with ``{% generation %}`` blocks
use the tokenizer's own ``return_assistant_tokens_mask`` instead.

``template_tokenizer`` (every encoder takes it) is where the chat template comes from when it is
not the model's tokenizer; see :mod:`llm.chat_template`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from llm.chat import ChatExample, Message
from llm.chat_template import (
    GENERATION_BLOCK,
    assistant_char_spans,
    chat_template_of,
    generation_block_mask,
    render_prompt,
    template_hash,
)
from llm.logprobs import IGNORE_INDEX


@dataclass(frozen=True)
class TokenizedExample:
    """One sequence: ``input_ids`` and ``labels`` (same length; ``IGNORE_INDEX`` = no loss).

    ``truncated`` says the rendered conversation was longer than ``max_length`` and was cut on
    the right.
    """

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(
                f"input_ids and labels differ in length: {len(self.input_ids)} vs "
                f"{len(self.labels)}"
            )

    @property
    def n_labelled(self) -> int:
        """Number of tokens that carry loss."""
        return sum(1 for t in self.labels if t != IGNORE_INDEX)


@dataclass(frozen=True)
class EncodedDataset:
    """A tokenised dataset.

    ``examples[j]`` encodes the input example ``kept_indices[j]``. Examples left with no labelled
    token after truncation (the prompt alone filled ``max_length``) are dropped and counted in
    ``n_dropped``; ``n_truncated`` counts every example that was cut (dropped ones included).
    ``template_hash`` is :func:`template_hash` of the template used.
    """

    examples: list[TokenizedExample]
    kept_indices: list[int]
    n_truncated: int
    n_dropped: int
    template_hash: str

    def __len__(self) -> int:
        return len(self.examples)


# ---------------------------------------------------------------------------------------------
# Encoding


def encode_prompt(
    tokenizer: Any, prompt_messages: Sequence[Message], template_tokenizer: Any = None
) -> list[int]:
    """Token ids of :func:`render_prompt`, ready for ``model.generate``."""
    text = render_prompt(tokenizer, prompt_messages, template_tokenizer)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_chat(
    tokenizer: Any,
    example: ChatExample,
    max_length: int,
    template_tokenizer: Any = None,
) -> TokenizedExample:
    """Tokenise a conversation; labels on assistant tokens (content + end-of-turn) only.

    Args:
        tokenizer: the model's (fast) tokenizer; produces the ids.
        example: a conversation with at least one assistant turn.
        max_length: longer sequences are cut on the right (``truncated=True``).
        template_tokenizer: where the chat template comes from, if not ``tokenizer``.
    """
    _check_max_length(max_length)
    messages = example.messages
    if not any(m.role == "assistant" for m in messages):
        raise ValueError("example has no assistant message to label")
    template = chat_template_of(tokenizer, template_tokenizer)
    if GENERATION_BLOCK.search(template):
        input_ids, mask = generation_block_mask(tokenizer, messages, template_tokenizer)
    else:
        text, spans = assistant_char_spans(tokenizer, messages, template_tokenizer)
        input_ids, mask = _offset_mask(tokenizer, text, spans)
    labels = [t if m else IGNORE_INDEX for t, m in zip(input_ids, mask, strict=True)]
    truncated = len(input_ids) > max_length
    return TokenizedExample(input_ids[:max_length], labels[:max_length], truncated)


def encode_prompt_completion(
    tokenizer: Any,
    prompt_messages: Sequence[Message],
    completion: str,
    max_length: int,
    template_tokenizer: Any = None,
) -> TokenizedExample:
    """Prompt (template + generation prompt) followed by a FIXED ``completion``, labelled.

    Used to score a phrase (e.g. the unlearn label) as the model's answer: the completion is
    appended as raw text after the generation prompt, with no end-of-turn marker, and only its
    tokens are labelled. Raises ValueError if the whole sequence does not fit ``max_length``
    (a cut completion would silently change the score).
    """
    _check_max_length(max_length)
    if not completion:
        raise ValueError("completion is empty")
    prompt = render_prompt(tokenizer, prompt_messages, template_tokenizer)
    text = prompt + completion
    input_ids, mask = _offset_mask(tokenizer, text, [(len(prompt), len(text))])
    if len(input_ids) > max_length:
        raise ValueError(
            f"prompt + completion is {len(input_ids)} tokens, more than max_length={max_length}"
        )
    if not any(mask):
        raise ValueError("completion produced no tokens")
    labels = [t if m else IGNORE_INDEX for t, m in zip(input_ids, mask, strict=True)]
    return TokenizedExample(input_ids, labels, False)


def encode_text(tokenizer: Any, text: str, max_length: int) -> TokenizedExample:
    """Plain text (no chat template) for next-token loss on every token, EOS-terminated and cut
    to ``max_length`` (replay of pre-training text)."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if tokenizer.eos_token_id is not None:
        ids = [*ids, tokenizer.eos_token_id]
    truncated = len(ids) > max_length
    ids = ids[:max_length]
    return TokenizedExample(ids, list(ids), truncated)


def encode_examples(
    tokenizer: Any,
    examples: Sequence[ChatExample],
    max_length: int,
    template_tokenizer: Any = None,
    progress: bool = False,
) -> EncodedDataset:
    """:func:`encode_chat` over a dataset, with truncation and drop counts and the template hash."""
    encoded, kept = [], []
    n_truncated = n_dropped = 0
    for index, example in enumerate(
        tqdm(examples, desc="tokenising", disable=not progress, leave=False)
    ):
        item = encode_chat(tokenizer, example, max_length, template_tokenizer)
        n_truncated += item.truncated
        if item.n_labelled == 0:
            n_dropped += 1
            continue
        encoded.append(item)
        kept.append(index)
    return EncodedDataset(
        encoded, kept, n_truncated, n_dropped, template_hash(tokenizer, template_tokenizer)
    )


# ---------------------------------------------------------------------------------------------
# Batching


def collate(batch: Sequence[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest sequence.

    Returns ``input_ids`` (B, T) padded with ``pad_token_id``, ``attention_mask`` (B, T) 1 on real
    tokens, ``labels`` (B, T) with ``IGNORE_INDEX`` on padding; all int64.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    width = max(len(item.input_ids) for item in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    for row, item in enumerate(batch):
        n = len(item.input_ids)
        input_ids[row, :n] = torch.tensor(item.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(item.labels, dtype=torch.long)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batch_indices(
    lengths: Sequence[int],
    batch_size: int,
    seed: int | None = None,
    group_by_length: bool = False,
) -> list[list[int]]:
    """Split ``range(len(lengths))`` into batches (the last may be smaller).

    ``seed`` shuffles (None keeps order). ``group_by_length`` sorts shuffled indices into chunks
    of 50 batches by length so each batch holds similar lengths (less padding), then shuffles the
    batch order; the multiset of indices is unchanged.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(order)
    if group_by_length:
        chunk = 50 * batch_size
        order = [
            i
            for start in range(0, len(order), chunk)
            for i in sorted(order[start : start + chunk], key=lambda j: lengths[j])
        ]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length and seed is not None:
        rng.shuffle(batches)
    return batches


# ---------------------------------------------------------------------------------------------
# Internals


def _check_max_length(max_length: int) -> None:
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")


def _offset_mask(
    tokenizer: Any, text: str, spans: Sequence[tuple[int, int]]
) -> tuple[list[int], list[bool]]:
    """Tokenise ``text`` and mark tokens whose characters overlap one of ``spans``.

    Overlap, not containment: a token that straddles the start of an answer (``" b"`` after a
    prompt ending in a space) is the token the model must predict first, so it is labelled.
    Overlap is also indifferent to tokenizers that trim leading spaces from offsets.
    """
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    mask = []
    for start, end in encoding["offset_mapping"]:
        if start == end:  # zero-width offsets (rare byte-level pieces) count by position
            mask.append(any(s <= start < e for s, e in spans))
        else:
            mask.append(any(start < e and end > s for s, e in spans))
    return input_ids, mask
