"""Chat datasets from the files users have: validated on load, saved in one canonical layout.

Every loader returns :class:`llm.chat.ChatExample` objects. A file is validated record by record
*before* anything is returned, so nothing downstream can train on a file that failed validation;
a bad record raises :class:`llm.chat.DatasetError` naming the file and the line it starts on.

The supported layouts are those of :mod:`llm.data_formats` (:data:`llm.data_formats.FORMATS`),
one record per JSONL line or the elements of a JSON array. ``fmt="auto"`` detects the layout from
the first record's keys and then holds every record to it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llm.chat import ChatExample, DatasetError, RCUItem
from llm.data_formats import (
    FORMATS,
    PROVENANCE_KEYS,
    RecordError,
    detect_format,
    parse_record,
    required_text,
)
from pathdep.io import atomic_write_text

MAX_REPORTED_ERRORS = 10


# ---------------------------------------------------------------------------------------------
# Loading


def load_examples(
    path: str | os.PathLike,
    fmt: str = "auto",
    require_response: bool = True,
    text: str | None = None,
) -> list[ChatExample]:
    """Load and validate every record of a JSON/JSONL dataset file.

    Args:
        path: a JSON array of objects (``.json``), or one JSON object per line (any other
            file, and ``.json`` files not starting with ``[``, as TOFU's are); blank lines are
            skipped.
        fmt: one of :data:`FORMATS` or ``"auto"`` (detect from the first record).
        require_response: every example must end with an assistant turn (training data). False
            admits prompt-only records (e.g. SORRY-BENCH prompts for evaluation).
        text: the file's content, when it is still to be written (a run checks every dataset
            before it writes anything); ``path`` then only names it.

    Raises:
        DatasetError: unreadable file, bad JSON, or any invalid record; the message is
            ``"<file>:<line>: <problem>"`` for the first bad record (and counts the others).
    """
    path = Path(path)
    if fmt != "auto" and fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; expected 'auto' or one of {FORMATS}")
    records = list(_read_records(path, text))
    if not records:
        raise DatasetError(f"{path}: no records", path)
    if fmt == "auto":
        fmt = detect_format(path, *records[0])
    examples: list[ChatExample] = []
    errors: list[tuple[int, str]] = []
    for line, record in records:
        try:
            examples.append(parse_record(record, fmt, path, line, require_response))
        except RecordError as exc:
            errors.append((line, str(exc)))
    if errors:
        line, problem = errors[0]
        more = f" (and {len(errors) - 1} more bad records)" if len(errors) > 1 else ""
        raise DatasetError(f"{path}:{line}: {problem}{more}", path, line)
    return examples


def examples_jsonl(examples: Iterable[ChatExample]) -> str:
    """Examples as JSONL text in the ``messages`` layout.

    ``meta`` is written beside ``messages`` without the provenance keys (``source``, ``line``,
    ``format``), which the loader sets afresh; :func:`load_examples` reads the text back.
    """
    lines = []
    for example in examples:
        meta = {k: v for k, v in example.meta.items() if k not in PROVENANCE_KEYS}
        record: dict[str, Any] = {"messages": example.to_dicts()}
        if meta:
            record["meta"] = meta
        lines.append(json.dumps(record, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)


def save_examples(examples: Iterable[ChatExample], path: str | os.PathLike) -> Path:
    """Write :func:`examples_jsonl` of ``examples`` to ``path``, atomically."""
    return atomic_write_text(Path(path), examples_jsonl(examples))


def rcu_items_jsonl(items: Iterable[RCUItem]) -> str:
    """R/C/U items as JSONL text ``{prompt, refusal, compliance_c, compliance_u}``."""
    return "".join(
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


def save_rcu_items(items: Iterable[RCUItem], path: str | os.PathLike) -> Path:
    """Write :func:`rcu_items_jsonl` of ``items`` to ``path``, atomically."""
    return atomic_write_text(Path(path), rcu_items_jsonl(items))


def load_rcu_items(path: str | os.PathLike, text: str | None = None) -> list[RCUItem]:
    """Load and validate an R/C/U file written by :func:`save_rcu_items` (same error rules;
    ``text`` as in :func:`load_examples`)."""
    path = Path(path)
    records = list(_read_records(path, text))
    if not records:
        raise DatasetError(f"{path}: no records", path)
    items = []
    for line, record in records:
        try:
            fields = [required_text(record, k) for k in RCU_FIELDS]
        except RecordError as exc:
            raise DatasetError(f"{path}:{line}: {exc}", path, line) from None
        items.append(RCUItem(*fields))
    return items


RCU_FIELDS = ("prompt", "refusal", "compliance_c", "compliance_u")


# ---------------------------------------------------------------------------------------------
# Reading records


def _read_records(path: Path, text: str | None = None) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, record)``; JSON arrays report the line each element starts on."""
    if text is None:
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
