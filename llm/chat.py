"""The chat data model: messages, conversations and R/C/U items, and what makes them valid.

A :class:`ChatExample` is a tuple of role/content messages plus a ``meta`` dict;
:func:`conversation_problem` states the structure every conversation must have, and
:func:`chat_example` builds a validated one. :class:`DatasetError` is the error of a malformed
dataset file (:mod:`llm.data` loads files, :mod:`llm.data_formats` parses their records).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pathdep.errors import BadInput

ROLES = ("system", "user", "assistant")


class DatasetError(BadInput):
    """A dataset file (or one of its records) is malformed; the message names file and line."""

    def __init__(
        self, message: str, path: str | os.PathLike | None = None, line: int | None = None
    ):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line


@dataclass(frozen=True)
class Message:
    """One chat turn: ``role`` is one of ``system``, ``user``, ``assistant``."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatExample:
    """A conversation, plus where it came from.

    ``meta`` holds provenance (``source`` file, ``line``, ``format``) and ids from the record
    (e.g. ``question_id``, ``category``, ``author``, GSM8K ``answer``). It is not part of equality
    semantics beyond being a dict; treat it as read-only.
    """

    messages: tuple[Message, ...]
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def prompt_messages(self) -> tuple[Message, ...]:
        """Messages before the final assistant turn (all messages if there is none)."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[:-1]
        return self.messages

    @property
    def response(self) -> str | None:
        """Content of the final assistant turn, or None for a prompt-only example."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[-1].content
        return None

    def to_dicts(self) -> list[dict[str, str]]:
        """Messages as ``[{"role": ..., "content": ...}]``, the form chat templates take."""
        return [{"role": m.role, "content": m.content} for m in self.messages]


@dataclass(frozen=True)
class RCUItem:
    """One prompt of the superficial-forgetting set (paper Sec. 4.3, App. G.2).

    ``refusal`` is R, ``compliance_c`` is C (the phrasing never unlearned) and ``compliance_u``
    is U (the phrasing gradient ascent is applied to).
    """

    prompt: str
    refusal: str
    compliance_c: str
    compliance_u: str


def chat_example(
    pairs: Iterable[tuple[str, str]], meta: Mapping[str, Any] | None = None
) -> ChatExample:
    """Build a validated :class:`ChatExample` from ``(role, content)`` pairs."""
    messages = tuple(Message(role, content) for role, content in pairs)
    problem = conversation_problem(messages, require_response=False)
    if problem:
        raise ValueError(problem)
    return ChatExample(messages, dict(meta or {}))


def conversation_problem(messages: tuple[Message, ...], require_response: bool) -> str | None:
    """The first structural problem of a conversation, or None if it is well formed.

    Well formed: an optional leading system message, then user/assistant alternating starting
    with user; non-empty user/assistant contents; ends with assistant if a response is required.
    """
    if not messages:
        return "conversation has no messages"
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            return f"message {i}: unknown role {m.role!r}; expected one of {ROLES}"
        if m.role != "system" and not m.content.strip():
            return f"message {i} ({m.role}) is empty"
    body = messages[1:] if messages[0].role == "system" else messages
    if not body:
        return "conversation has only a system message"
    for i, m in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if m.role != expected:
            offset = len(messages) - len(body)
            return (
                f"message {i + offset}: expected role {expected!r}, got {m.role!r} (after an "
                "optional system message, turns must alternate user/assistant)"
            )
    if require_response and body[-1].role != "assistant":
        return "conversation does not end with an assistant message"
    return None
