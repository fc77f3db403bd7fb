"""Chat templates: rendering conversations to text, and the facts about a template we rely on.

Templates that print today's date (Llama 3.x) are pinned to :data:`PINNED_DATE`: ``date_string``
is passed to the renderer and ``strftime_now`` is shadowed by a macro returning the pinned date,
so the same data always gives the same tokens. :func:`template_hash` fingerprints the rendered
template on a fixed probe conversation; record it with every run.

:func:`assistant_char_spans` locates each assistant turn in the rendered text by comparing
renderings of growing prefixes of the conversation; this needs a "prefix-consistent" template
(Llama 2/3, ChatML/Qwen), and one that is not raises :class:`ChatTemplateError`. Templates with
``{% generation %}`` blocks give their own assistant mask (:func:`generation_block_mask`).

The chat template may come from a different tokenizer than the one that tokenises (the paper
formats *base* models with the matching *instruct* model's template): pass it as
``template_tokenizer``; its template and special-token strings are used for rendering, the
model's tokenizer for the ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from llm.chat import Message
from pathdep.errors import BadInput

PINNED_DATE = datetime(2024, 7, 26)
PINNED_DATE_STRING = "26 Jul 2024"  # the form Llama 3.1 templates print
_STRFTIME_CALL = re.compile(r"strftime_now\(\s*(['\"])(.*?)\1\s*\)")
GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")
PROBE_CONVERSATION = (
    Message("system", "You are a helpful assistant."),
    Message("user", "What is 2 + 3?"),
    Message("assistant", "2 + 3 = 5."),
    Message("user", "And 4 + 4?"),
    Message("assistant", "4 + 4 = 8."),
)


class ChatTemplateError(BadInput):
    """The tokenizer has no chat template, or one this module cannot mask reliably."""


# ---------------------------------------------------------------------------------------------
# Rendering


def chat_template_of(tokenizer: Any, template_tokenizer: Any = None) -> str:
    """The Jinja chat template to use: ``template_tokenizer``'s if given, else ``tokenizer``'s."""
    source = template_tokenizer if template_tokenizer is not None else tokenizer
    template = getattr(source, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one formats chats
        template = template.get("default")
    if not template:
        raise ChatTemplateError(
            "tokenizer has no chat template; pass the matching instruct model's tokenizer folder "
            "(tokenizer_path / template_tokenizer), as the paper does for base models"
        )
    return template


def pinned_template(template: str) -> str:
    """``template`` with ``strftime_now(fmt)`` calls shadowed by the pinned date.

    A macro of the same name defined at the top of the template takes precedence over the
    renderer's global, and returns :data:`PINNED_DATE` formatted with the literal format strings
    found in the template (passed in as ``pathdep_pinned_dates``).
    """
    if "strftime_now" not in template:
        return template
    macro = "{%- macro strftime_now(format) -%}{{ pathdep_pinned_dates[format] }}{%- endmacro -%}\n"
    return macro + template


def render_chat(
    tokenizer: Any,
    messages: Sequence[Message] | Sequence[dict],
    add_generation_prompt: bool = False,
    template_tokenizer: Any = None,
) -> str:
    """Render ``messages`` with the chat template (date pinned) to text, without tokenising."""
    source = template_tokenizer if template_tokenizer is not None else tokenizer
    template = chat_template_of(tokenizer, template_tokenizer)
    dates = {fmt: PINNED_DATE.strftime(fmt) for _, fmt in _STRFTIME_CALL.findall(template)}
    conversation = [
        {"role": m.role, "content": m.content} if isinstance(m, Message) else dict(m)
        for m in messages
    ]
    return source.apply_chat_template(
        conversation,
        chat_template=pinned_template(template),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        date_string=PINNED_DATE_STRING,
        pathdep_pinned_dates=dates,
    )


def render_prompt(
    tokenizer: Any, prompt_messages: Sequence[Message], template_tokenizer: Any = None
) -> str:
    """The prompt as the model sees it before answering (chat template + generation prompt).

    Tokenise the result with ``add_special_tokens=False`` (the template already holds BOS), or
    use :func:`encode_prompt`.
    """
    return render_chat(tokenizer, prompt_messages, True, template_tokenizer)


def template_hash(tokenizer: Any, template_tokenizer: Any = None) -> str:
    """sha256 (hex) of the template rendered on :data:`PROBE_CONVERSATION`.

    Both the full conversation and the generation prompt after its first user turn are hashed,
    so any change in what the model sees (template, special-token strings, pinned date) shows.
    """
    full = render_chat(tokenizer, PROBE_CONVERSATION, False, template_tokenizer)
    prompt = render_chat(tokenizer, PROBE_CONVERSATION[:2], True, template_tokenizer)
    return hashlib.sha256(f"{full}\x00{prompt}".encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# What the template marks as the assistant's


def assistant_char_spans(
    tokenizer: Any, messages: Sequence[Message], template_tokenizer: Any = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the ``[start, end)`` character span of each assistant turn.

    A span runs from the end of the generation prompt to the end of the turn's end-of-turn
    marker (trailing whitespace excluded).
    """
    full = render_chat(tokenizer, messages, False, template_tokenizer)
    spans = []
    for i, message in enumerate(messages):
        if message.role != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], True, template_tokenizer)
        through = render_chat(tokenizer, messages[: i + 1], False, template_tokenizer)
        if not through.startswith(before) or not full.startswith(through):
            raise ChatTemplateError(
                "chat template is not prefix-consistent (rendering a conversation is not the "
                "concatenation of its turns), so assistant tokens cannot be located"
            )
        turn = through[len(before) :]
        if message.content.strip() not in turn:
            raise ChatTemplateError(
                f"assistant message {i} does not appear verbatim in its rendered turn; the "
                "template rewrites content, so the mask cannot be computed"
            )
        spans.append((len(before), len(before) + len(turn.rstrip())))
    return full, spans


def end_of_turn_token_ids(tokenizer: Any, template_tokenizer: Any = None) -> list[int]:
    """Ids that end an assistant turn under the template (stop tokens for generation).

    Found by rendering a probe answer: the labelled tokens after the answer's content (e.g.
    ``<|eot_id|>`` for Llama 3, ``<|im_end|>`` for ChatML), plus the tokenizer's EOS.
    """
    probe = PROBE_CONVERSATION[:3]
    text, spans = assistant_char_spans(tokenizer, probe, template_tokenizer)
    start, end = spans[-1]
    content_end = text.index(probe[-1].content, start) + len(probe[-1].content)
    tail = text[content_end:end]
    ids = list(tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail.strip() else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def generation_block_mask(
    tokenizer: Any, messages: Sequence[Message], template_tokenizer: Any
) -> tuple[list[int], list[bool]]:
    # Rendered with the template tokenizer's special-token strings, tokenised by the model's.
    source = template_tokenizer if template_tokenizer is not None else tokenizer
    template = chat_template_of(tokenizer, template_tokenizer)
    dates = {fmt: PINNED_DATE.strftime(fmt) for _, fmt in _STRFTIME_CALL.findall(template)}
    out = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        chat_template=pinned_template(template),
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        date_string=PINNED_DATE_STRING,
        pathdep_pinned_dates=dates,
        **source.special_tokens_map,
    )
    return list(out["input_ids"]), [bool(m) for m in out["assistant_masks"]]
