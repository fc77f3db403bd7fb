"""Result files: atomic writes (temp file + rename) and configs saved with a hash."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from theory._io import atomic_path


def _atomic_write(path: Path, write) -> Path:
    """Open a temporary text file beside ``path``, let ``write(f)`` fill it, rename it over."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        write(f)
    return Path(path)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples, numpy scalars/arrays to plain JSON types (non-finite floats -> str)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not (obj == obj and abs(obj) != float("inf")):
        return str(obj)
    return obj


def write_json(path: Path, data: Any) -> Path:
    text = json.dumps(to_jsonable(data), indent=2, sort_keys=True)
    return _atomic_write(path, lambda f: f.write(text + "\n"))


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    fields = list(rows[0])

    def write(f):
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: to_jsonable(row[k]) for k in fields})

    return _atomic_write(path, write)


def config_record(config: Any) -> dict[str, Any]:
    """The resolved config and a short hash of it, saved beside every run's outputs."""
    resolved = to_jsonable(config)
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:16]
    return {"config": resolved, "config_hash": digest, "config_type": type(config).__name__}


def save_figure(fig, path: Path, dpi: int = 90) -> Path:
    """Save a matplotlib figure atomically as PNG."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return Path(path)
