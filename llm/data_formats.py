"""Per-layout record parsing: one JSON record of a dataset file to a validated ChatExample.

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
:func:`detect_format` guesses the layout from a record's keys. A bad record raises
:class:`RecordError`; :mod:`llm.data` adds the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm.answers import final_line_answer
from llm.chat import ChatExample, DatasetError, Message, conversation_problem

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "system": "system",
}
FORMATS = ("chat", "qa", "tofu", "gsm8k", "prompt_response", "sorry_bench", "skillmix")
PROVENANCE_KEYS = ("source", "line", "format")


class RecordError(Exception):
    """A problem with one record; load_examples adds file and line."""


def detect_format(path: Path, line: int, record: Any) -> str:
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
        if isinstance(answer, str) and final_line_answer(answer) is not None:
            return "gsm8k"
        return "qa"
    raise DatasetError(
        f"{path}:{line}: cannot detect the dataset format from fields {sorted(keys)}; expected "
        "messages/conversations, question+answer, prompt+response, instruction+output or turns",
        path,
        line,
    )


def parse_record(
    record: Any, fmt: str, path: Path, line: int, require_response: bool
) -> ChatExample:
    if not isinstance(record, dict):
        raise RecordError("record is not a JSON object")
    meta: dict[str, Any] = {"source": str(path), "line": line, "format": fmt}
    if fmt == "chat":
        messages = _chat_messages(record)
        extra_meta = record.get("meta", {})
        if not isinstance(extra_meta, dict):
            raise RecordError("'meta' must be an object")
        meta.update({k: v for k, v in extra_meta.items() if k not in PROVENANCE_KEYS})
        skip = {"messages", "conversations", "meta"}
    elif fmt in ("qa", "tofu", "gsm8k"):
        pairs = [("user", required_text(record, "question"))]
        answer = _optional_response(record, "answer", require_response)
        if fmt == "gsm8k" and answer is not None:
            final = final_line_answer(answer)
            if final is None:
                raise RecordError("GSM8K answer must end with a line '#### <number>'")
            meta["answer"] = final
        if answer is not None:
            pairs.append(("assistant", answer))
        messages = tuple(Message(r, c) for r, c in pairs)
        skip = {"question", "answer"}
    elif fmt == "prompt_response":
        messages = _with_system(record, required_text(record, "prompt"))
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
            instruction = required_text(record, "instruction")
            extra = record.get("input", "")
            if not isinstance(extra, str):
                raise RecordError("'input' must be a string")
            prompt = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
            messages = (Message("user", prompt),)
            output = _optional_response(record, "output", require_response)
            if output is not None:
                messages += (Message("assistant", output),)
            skip = {"instruction", "input", "output"}
    else:  # pragma: no cover - fmt validated by the caller
        raise RecordError(f"unknown format {fmt!r}")
    for key, value in record.items():
        if key not in skip and key not in meta and isinstance(value, str | int | float | bool):
            meta[key] = value
    problem = conversation_problem(messages, require_response)
    if problem:
        raise RecordError(problem)
    return ChatExample(messages, meta)


def required_text(record: dict, key: str) -> str:
    if key not in record:
        raise RecordError(f"missing field {key!r} (fields present: {sorted(record)})")
    value = record[key]
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RecordError(f"field {key!r} is empty")
    return value


def _optional_response(record: dict, key: str, require_response: bool) -> str | None:
    if key not in record and not require_response:
        return None
    if key not in record:
        raise RecordError(
            f"missing field {key!r}: training records need a response "
            "(pass require_response=False to load prompts only)"
        )
    return required_text(record, key)


def _with_system(record: dict, prompt: str) -> tuple[Message, ...]:
    system = record.get("system")
    if system is None or system == "":
        return (Message("user", prompt),)
    if not isinstance(system, str):
        raise RecordError("field 'system' must be a string")
    return (Message("system", system), Message("user", prompt))


def _sorry_bench_prompt(record: dict) -> str:
    if "turns" in record:
        turns = record["turns"]
        if not isinstance(turns, list) or not turns:
            raise RecordError("field 'turns' must be a non-empty list of strings")
        if len(turns) != 1:
            raise RecordError(
                f"field 'turns' has {len(turns)} prompts; only single-turn SORRY-BENCH records "
                "are supported (split multi-turn records into separate lines)"
            )
        if not isinstance(turns[0], str) or not turns[0].strip():
            raise RecordError("field 'turns' must hold a non-empty string")
        return turns[0]
    return required_text(record, "prompt")


def _chat_messages(record: dict) -> tuple[Message, ...]:
    key = "messages" if "messages" in record else "conversations"
    if key not in record:
        raise RecordError(f"missing field 'messages' (fields present: {sorted(record)})")
    raw = record[key]
    if not isinstance(raw, list) or not raw:
        raise RecordError(f"field {key!r} must be a non-empty list of messages")
    messages = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise RecordError(f"{key}[{i}] is not an object")
        if "role" in item:
            role, content = item["role"], item.get("content")
        elif "from" in item:
            role = SHAREGPT_ROLES.get(str(item["from"]).lower())
            if role is None:
                raise RecordError(
                    f"{key}[{i}]: unknown ShareGPT speaker {item['from']!r}; expected one of "
                    f"{sorted(SHAREGPT_ROLES)}"
                )
            content = item.get("value")
        else:
            raise RecordError(f"{key}[{i}] needs 'role'/'content' or 'from'/'value'")
        if not isinstance(content, str):
            raise RecordError(f"{key}[{i}]: content must be a string")
        messages.append(Message(role, content))
    return tuple(messages)
