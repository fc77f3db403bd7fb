"""Chat datasets from the files users have: validated on load, saved in one canonical layout.

Every loader returns :class:`ChatExample` objects (a tuple of role/content messages plus a ``meta``
dict). A file is validated record by record *before* anything is returned, so nothing downstream
can train on a file that failed validation; a bad record raises :class:`DatasetError` naming the
file and the line it starts on.

Supported layouts (``fmt``), one record per JSONL line or the elements of a JSON array:

- ``chat``: ``messages`` or ``conversations``, a list of ``{role, content}`` (OpenAI) or
  ``{from, value}`` (ShareGPT: human/gpt/system) messages; optional ``meta`` object.
- ``qa``: ``{question, answer}``.
- ``tofu``: the TOFU release, ``{question, answer}``; other scalar fields (e.g.
  ``paraphrased_answer``) are kept in ``meta``.
- ``gsm8k``: the GSM8K release, ``{question, answer}``, the answer's last line ``#### N``;
  ``meta["answer"]`` holds N with thousands separators removed.
- ``prompt_response``: ``{prompt, response}``, optional ``system``.
- ``sorry_bench``: the SORRY-BENCH release, ``turns`` (a list holding one user prompt; a plain
  ``prompt`` string is accepted too), ``category``, ``question_id``. The release has no answers,
  so training records also need ``response`` (the refusal; see
  :func:`llm.synthetic.pair_with_refusals`); prompt-only files load with
  ``require_response=False`` (evaluation prompts).
- ``skillmix``: Instruct-SkillMix, ``{instruction, output}`` (an Alpaca-style ``input`` is
  appended to the instruction after a blank line) or a ``messages`` list.

Scalar fields outside the layout (ids, categories) are copied into ``meta``.
``fmt="auto"`` detects the layout from the first record's keys and then holds every record to it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm.checkpoint import atomic_write_text

ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "system": "system",
}
FORMATS = ("chat", "qa", "tofu", "gsm8k", "prompt_response", "sorry_bench", "skillmix")
MAX_REPORTED_ERRORS = 10
# "#### 1,234" / "#### -3.5" on the last non-empty line of a GSM8K answer.
_GSM8K_FINAL = re.compile(r"^####\s*(-?[\d,]*\.?\d+)\s*$")


class DatasetError(ValueError):
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
    problem = _conversation_problem(messages, require_response=False)
    if problem:
        raise ValueError(problem)
    return ChatExample(messages, dict(meta or {}))


# ---------------------------------------------------------------------------------------------
# Loading


def load_examples(
    path: str | os.PathLike, fmt: str = "auto", require_response: bool = True
) -> list[ChatExample]:
    """Load and validate every record of a JSON/JSONL dataset file.

    Args:
        path: a JSON array of objects (``.json``), or one JSON object per line (any other
            file, and ``.json`` files not starting with ``[``, as TOFU's are); blank lines are
            skipped.
        fmt: one of :data:`FORMATS` or ``"auto"`` (detect from the first record).
        require_response: every example must end with an assistant turn (training data). False
            admits prompt-only records (e.g. SORRY-BENCH prompts for evaluation).

    Raises:
        DatasetError: unreadable file, bad JSON, or any invalid record; the message is
            ``"<file>:<line>: <problem>"`` for the first bad record (and counts the others).
    """
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; expected 'auto' or one of {FORMATS}")
    records = list(_read_records(path))
    if not records:
        raise DatasetError(f"{path}: no records", path)
    if fmt == "auto":
        fmt = _detect_format(path, *records[0])
    examples: list[ChatExample] = []
    errors: list[tuple[int, str]] = []
    for line, record in records:
        try:
            examples.append(_parse_record(record, fmt, path, line, require_response))
        except _RecordError as exc:
            errors.append((line, str(exc)))
    if errors:
        line, problem = errors[0]
        more = f" (and {len(errors) - 1} more bad records)" if len(errors) > 1 else ""
        raise DatasetError(f"{path}:{line}: {problem}{more}", path, line)
    return examples


def save_examples(examples: Iterable[ChatExample], path: str | os.PathLike) -> Path:
    """Write examples as JSONL in the ``messages`` layout, atomically (temp file then rename).

    ``meta`` is written beside ``messages`` without the provenance keys (``source``, ``line``,
    ``format``), which the loader sets afresh; :func:`load_examples` reads the file back.
    """
    path = Path(path)
    lines = []
    for example in examples:
        meta = {k: v for k, v in example.meta.items() if k not in _PROVENANCE_KEYS}
        record: dict[str, Any] = {"messages": example.to_dicts()}
        if meta:
            record["meta"] = meta
        lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def save_rcu_items(items: Iterable[RCUItem], path: str | os.PathLike) -> Path:
    """Write R/C/U items as JSONL ``{prompt, refusal, compliance_c, compliance_u}``, atomically."""
    text = "".join(
        json.dumps(
            {
                "prompt": it.prompt,
                "refusal": it.refusal,
                "compliance_c": it.compliance_c,
                "compliance_u": it.compliance_u,
            },
            ensure_ascii=False,
        )
        + "\n"
        for it in items
    )
    return atomic_write_text(Path(path), text)


def load_rcu_items(path: str | os.PathLike) -> list[RCUItem]:
    """Load and validate an R/C/U file written by :func:`save_rcu_items` (same error rules)."""
    path = Path(path)
    records = list(_read_records(path))
    if not records:
        raise DatasetError(f"{path}: no records", path)
    items = []
    for line, record in records:
        try:
            fields = [_required_text(record, k) for k in RCU_FIELDS]
        except _RecordError as exc:
            raise DatasetError(f"{path}:{line}: {exc}", path, line) from None
        items.append(RCUItem(*fields))
    return items


RCU_FIELDS = ("prompt", "refusal", "compliance_c", "compliance_u")


# ---------------------------------------------------------------------------------------------
# Internals

_PROVENANCE_KEYS = ("source", "line", "format")


class _RecordError(Exception):
    """A problem with one record; load_examples adds file and line."""


def _read_records(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, record)``; JSON arrays report the line each element starts on."""
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found", path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})", path) from None
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        yield from _json_array_records(path, text)
        return
    # JSONL, and ".json" files holding one object per line (TOFU's release files do).
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: invalid JSON ({exc.msg})", path, number) from None


def _json_array_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    decoder = json.JSONDecoder()

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    pos = _skip_ws(text, 0)
    if not text.startswith("[", pos):
        raise DatasetError(f"{path}:{line_of(pos)}: expected a JSON array of records", path)
    pos = _skip_ws(text, pos + 1)
    if text.startswith("]", pos):
        return
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}:{line_of(exc.pos)}: invalid JSON ({exc.msg})", path, line_of(exc.pos)
            ) from None
        yield line_of(pos), obj
        pos = _skip_ws(text, end)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
        elif text.startswith("]", pos):
            rest = _skip_ws(text, pos + 1)
            if rest != len(text):
                raise DatasetError(
                    f"{path}:{line_of(rest)}: extra data after the JSON array", path, line_of(rest)
                )
            return
        else:
            raise DatasetError(
                f"{path}:{line_of(pos)}: invalid JSON (expected ',' or ']')", path, line_of(pos)
            )


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _detect_format(path: Path, line: int, record: Any) -> str:
    if not isinstance(record, dict):
        raise DatasetError(f"{path}:{line}: record is not a JSON object", path, line)
    keys = set(record)
    if "messages" in keys or "conversations" in keys:
        return "chat"
    if "turns" in keys:
        return "sorry_bench"
    if "instruction" in keys and "output" in keys:
        return "skillmix"
    if "prompt" in keys and ("response" in keys or "question_id" in keys or "category" in keys):
        return "sorry_bench" if "response" not in keys else "prompt_response"
    if "question" in keys and "answer" in keys:
        answer = record["answer"]
        if isinstance(answer, str) and _gsm8k_final_answer(answer) is not None:
            return "gsm8k"
        return "qa"
    raise DatasetError(
        f"{path}:{line}: cannot detect the dataset format from fields {sorted(keys)}; expected "
        "messages/conversations, question+answer, prompt+response, instruction+output or turns",
        path,
        line,
    )


def _parse_record(
    record: Any, fmt: str, path: Path, line: int, require_response: bool
) -> ChatExample:
    if not isinstance(record, dict):
        raise _RecordError("record is not a JSON object")
    meta: dict[str, Any] = {"source": str(path), "line": line, "format": fmt}
    if fmt == "chat":
        messages = _chat_messages(record)
        extra_meta = record.get("meta", {})
        if not isinstance(extra_meta, dict):
            raise _RecordError("'meta' must be an object")
        meta.update({k: v for k, v in extra_meta.items() if k not in _PROVENANCE_KEYS})
        skip = {"messages", "conversations", "meta"}
    elif fmt in ("qa", "tofu", "gsm8k"):
        pairs = [("user", _required_text(record, "question"))]
        answer = _optional_response(record, "answer", require_response)
        if fmt == "gsm8k" and answer is not None:
            final = _gsm8k_final_answer(answer)
            if final is None:
                raise _RecordError("GSM8K answer must end with a line '#### <number>'")
            meta["answer"] = final
        if answer is not None:
            pairs.append(("assistant", answer))
        messages = tuple(Message(r, c) for r, c in pairs)
        skip = {"question", "answer"}
    elif fmt == "prompt_response":
        messages = _with_system(record, _required_text(record, "prompt"))
        response = _optional_response(record, "response", require_response)
        if response is not None:
            messages += (Message("assistant", response),)
        skip = {"prompt", "response", "system"}
    elif fmt == "sorry_bench":
        prompt = _sorry_bench_prompt(record)
        messages = (Message("user", prompt),)
        response = _optional_response(record, "response", require_response)
        if response is not None:
            messages += (Message("assistant", response),)
        skip = {"turns", "prompt", "response"}
    elif fmt == "skillmix":
        if "messages" in record or "conversations" in record:
            messages = _chat_messages(record)
            skip = {"messages", "conversations"}
        else:
            instruction = _required_text(record, "instruction")
            extra = record.get("input", "")
            if not isinstance(extra, str):
                raise _RecordError("'input' must be a string")
            prompt = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
            messages = (Message("user", prompt),)
            output = _optional_response(record, "output", require_response)
            if output is not None:
                messages += (Message("assistant", output),)
            skip = {"instruction", "input", "output"}
    else:  # pragma: no cover - fmt validated by the caller
        raise _RecordError(f"unknown format {fmt!r}")
    for key, value in record.items():
        if key not in skip and key not in meta and isinstance(value, str | int | float | bool):
            meta[key] = value
    problem = _conversation_problem(messages, require_response)
    if problem:
        raise _RecordError(problem)
    return ChatExample(messages, meta)


def _required_text(record: dict, key: str) -> str:
    if key not in record:
        raise _RecordError(f"missing field {key!r} (fields present: {sorted(record)})")
    value = record[key]
    if not isinstance(value, str):
        raise _RecordError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise _RecordError(f"field {key!r} is empty")
    return value


def _optional_response(record: dict, key: str, require_response: bool) -> str | None:
    if key not in record and not require_response:
        return None
    if key not in record:
        raise _RecordError(
            f"missing field {key!r}: training records need a response "
            "(pass require_response=False to load prompts only)"
        )
    return _required_text(record, key)


def _with_system(record: dict, prompt: str) -> tuple[Message, ...]:
    system = record.get("system")
    if system is None or system == "":
        return (Message("user", prompt),)
    if not isinstance(system, str):
        raise _RecordError("field 'system' must be a string")
    return (Message("system", system), Message("user", prompt))


def _sorry_bench_prompt(record: dict) -> str:
    if "turns" in record:
        turns = record["turns"]
        if not isinstance(turns, list) or not turns:
            raise _RecordError("field 'turns' must be a non-empty list of strings")
        if len(turns) != 1:
            raise _RecordError(
                f"field 'turns' has {len(turns)} prompts; only single-turn SORRY-BENCH records "
                "are supported (split multi-turn records into separate lines)"
            )
        if not isinstance(turns[0], str) or not turns[0].strip():
            raise _RecordError("field 'turns' must hold a non-empty string")
        return turns[0]
    return _required_text(record, "prompt")


def _chat_messages(record: dict) -> tuple[Message, ...]:
    key = "messages" if "messages" in record else "conversations"
    if key not in record:
        raise _RecordError(f"missing field 'messages' (fields present: {sorted(record)})")
    raw = record[key]
    if not isinstance(raw, list) or not raw:
        raise _RecordError(f"field {key!r} must be a non-empty list of messages")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _RecordError(f"{key}[{i}] is not an object")
        if "role" in item:
            role, content = item["role"], item.get("content")
        elif "from" in item:
            role = SHAREGPT_ROLES.get(str(item["from"]).lower())
            if role is None:
                raise _RecordError(
                    f"{key}[{i}]: unknown ShareGPT speaker {item['from']!r}; expected one of "
                    f"{sorted(SHAREGPT_ROLES)}"
                )
            content = item.get("value")
        else:
            raise _RecordError(f"{key}[{i}] needs 'role'/'content' or 'from'/'value'")
        if not isinstance(content, str):
            raise _RecordError(f"{key}[{i}]: content must be a string")
        messages.append(Message(role, content))
    return tuple(messages)


def _conversation_problem(messages: tuple[Message, ...], require_response: bool) -> str | None:
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


def _gsm8k_final_answer(answer: str) -> str | None:
    """N from a final line ``#### N`` (commas dropped), or None if there is no such line."""
    lines = [ln.strip() for ln in answer.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    match = _GSM8K_FINAL.match(lines[-1])
    return None if match is None else match.group(1).replace(",", "")


def gsm8k_final_answer(text: str) -> str | None:
    """The number after the last line starting ``####`` of a solution, or None.

    Lenient reader for *generated* solutions (evaluation): the first number on the last line that
    starts with ``####``, thousands separators removed. Training data is held to the strict rule
    (the final line is exactly ``#### N``).
    """
    found = None
    for ln in text.splitlines():
        stripped = ln.strip()
        if stripped.startswith("####"):
            match = re.search(r"-?[\d,]*\.?\d+", stripped[4:])
            found = None if match is None else match.group(0).replace(",", "")
    return found
