"""Atomic file output and the canonical-JSON hash, for every package of pathdep.

Every file a run leaves behind is written to a temporary sibling and renamed over the target, so a
run killed at any moment leaves the old file or the new one, never half of one. Temporary files get
the usual permissions (0666 minus the umask), not ``mkstemp``'s private 0600, so outputs are
readable by the group like any other file.

JSON is written strictly: NaN and infinities become ``null`` (a reader in any language can parse
every file pathdep writes), tuples become arrays, dataclasses become objects.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pathdep.errors import BadInput


class OutputPathError(BadInput):
    """An output location that cannot be a folder (it is a file, or under one)."""


def check_output_folder(path: str | os.PathLike) -> Path:
    """Check, writing nothing, that ``path`` is or can become a writable folder.

    Raises:
        OutputPathError: ``path`` (or an ancestor) is a file.
        OSError: the nearest existing ancestor is not writable (EACCES; exit status 1).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"output folder {path} is a file")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"cannot create {path}: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, "the folder is not writable", str(ancestor))
    return path


def check_output_file(path: str | os.PathLike, flag: str = "--json") -> Path:
    """Check, writing nothing, that ``path`` can be written as a file (``flag`` names the option
    in the message).

    Raises:
        OutputPathError: ``path`` is a folder, or its folder cannot be one.
        OSError: the folder is not writable (EACCES; exit status 1).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag} {path} is a folder; give a file name")
    check_output_folder(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new file under the current umask (0666 minus the umask)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """Permissions of a new folder under the current umask (0777 minus the umask)."""
    return 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it replaces ``path``, on any
    error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(obj: Any) -> Any:
    """Plain JSON values of dataclasses, mappings, tuples, paths and numpy scalars/arrays;
    non-finite floats become None (JSON ``null``)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # numpy / JAX arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_text(obj: Any) -> str:
    """Indented, key-sorted, strict JSON of ``obj`` with a final newline (the file format)."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict JSON (:func:`json_text`) atomically."""
    return atomic_write_text(path, json_text(obj))


def _csv_cell(value: Any) -> Any:
    # CSV is text: an infinity keeps its sign ("inf", "-inf", "nan", as pandas reads them).
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return to_jsonable(value)


def atomic_write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write dict rows (columns = the first row's keys) as CSV atomically; non-finite numbers
    are written as ``inf``, ``-inf``, ``nan``."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    fields = list(rows[0])
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(row[k]) for k in fields})
    return Path(path)


def atomic_save_figure(fig: Any, path: str | os.PathLike, dpi: int = 90) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``path`` when the block exits without
    error (removed on error). Used for stage checkpoints and step checkpoints."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)


def make_group_readable(folder: str | os.PathLike) -> None:
    """Give every file and folder under ``folder`` the umask's usual permissions (some writers,
    e.g. ``tempfile.mkdtemp`` and safetensors, create them private)."""
    folder = Path(folder)
    os.chmod(folder, dir_mode())
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(Path(root) / d, dir_mode())
        for f in files:
            os.chmod(Path(root) / f, file_mode())


def canonical_json(obj: Any) -> str:
    """The one canonical JSON text of ``obj``: sorted keys, no spaces, strict."""
    return json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def content_hash(obj: Any, digits: int = 16) -> str:
    """sha256 of :func:`canonical_json` of ``obj``, its first ``digits`` hex digits."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:digits]


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
