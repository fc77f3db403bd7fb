"""Configs are values: frozen dataclasses read from TOML, checked field by field, saved resolved.

One machinery for every package's configs:

- :func:`option` declares a field with its default and help text (``metadata["help"]``);
- :func:`from_dict` builds a config dataclass from raw tables (as ``tomllib`` returns them):
  every key is matched against the fields (an unknown key is an error naming it and its table),
  every value is converted to the field's type (tuples, nested configs, read-only mappings,
  optionals), and a float must be finite;
- :func:`apply_overrides` applies dotted ``a.b.c=value`` overrides (values parsed as TOML);
- :func:`save_config` writes ``config.toml`` (loadable again: a run can be repeated from its
  folder) and ``config.json`` (the same config plus its hash, :func:`config_hash`);
- :class:`FrozenMap` is the read-only, hashable mapping config fields use instead of ``dict``, so
  a config holds no shared mutable state and can be hashed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pathdep.errors import BadInput
from pathdep.io import atomic_write_json, atomic_write_text, content_hash, to_jsonable


class ConfigError(BadInput):
    """A config file, table or override that does not describe a valid run; the message names the
    key (and the file, when there is one)."""


class FrozenMap(dict):
    """A read-only, hashable ``dict`` (JSON and ``isinstance(x, dict)`` see a plain dict)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def _read_only(self, *args: Any, **kwargs: Any) -> typing.NoReturn:
        raise TypeError("config mappings are read-only; build a new config instead")

    __setitem__ = __delitem__ = __ior__ = _read_only  # type: ignore[assignment]
    clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]

    def __reduce__(self):  # copy/pickle through the constructor, not item assignment
        return (FrozenMap, (dict(self),))


def option(default: Any, help: str) -> Any:
    """A config field with its default and help text (``dataclasses.field`` metadata)."""
    if isinstance(default, dict) and not isinstance(default, FrozenMap):
        default = FrozenMap(default)
    if isinstance(default, list):
        default = tuple(default)
    return dataclasses.field(default=default, metadata={"help": help})


def check_finite(cfg: Any, where: str = "") -> None:
    """Every float of a config (nested configs, tuples included) is finite; raises ConfigError
    naming the field. For configs built in code, which :func:`from_dict` did not parse."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        for f in dataclasses.fields(cfg):
            check_finite(getattr(cfg, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(cfg, list | tuple):
        for i, v in enumerate(cfg):
            check_finite(v, f"{where}[{i}]")
    elif isinstance(cfg, float) and not math.isfinite(cfg):
        raise ConfigError(f"{where}: expected a finite number, got {cfg!r}")


def help_text(cls: type) -> dict[str, str]:
    """Field name -> help text of a config dataclass."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


# --------------------------------------------------------------------------------------------
# Building configs from raw tables


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        if len(args) == 1:
            return _convert(args[0], value, where)
        raise ConfigError(f"{where}: unsupported type {tp}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected an array, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _convert(a, v, f"{where}[{i}]")
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin in (dict, Mapping) or tp in (dict, FrozenMap):
        val_t = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        return FrozenMap({str(k): _convert(val_t, v, f"{where}.{k}") for k, v in value.items()})
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str | os.PathLike):
            raise ConfigError(f"{where}: expected a path string, got {value!r}")
        return Path(value)
    raise ConfigError(f"{where}: unsupported type {tp}")


def from_dict(cls: type, raw: Mapping[str, Any], where: str = "") -> Any:
    """Build the config dataclass ``cls`` from a raw table; raises :class:`ConfigError`.

    Missing keys take their defaults. The dataclass's own ``__post_init__`` checks run too; a
    ``ValueError`` they raise becomes a :class:`ConfigError`.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in names:
            full = f"{where}.{key}" if where else key
            raise ConfigError(f"unknown key '{full}' (allowed: {', '.join(sorted(names))})")
    kwargs = {
        key: _convert(hints[key], value, f"{where}.{key}" if where else key)
        for key, value in raw.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where + ': ' if where else ''}{err}") from err


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict:
    """A copy of ``raw`` with ``a.b.c=value`` overrides applied (value parsed as TOML, else taken
    as a string)."""
    raw = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a table")
        node[parts[-1]] = _parse_value(text.strip())
    return raw


def read_toml(path: str | os.PathLike) -> dict:
    """The raw tables of a TOML file; a missing, unreadable or malformed file is a ConfigError."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except IsADirectoryError as err:
        raise ConfigError(f"config path is a folder, not a file: {path}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (a TOML config is text)") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from err


def load_toml(cls: type, path: str | os.PathLike, overrides: Iterable[str] = ()) -> Any:
    """Read a TOML file into ``cls`` with dotted overrides applied; raises ConfigError."""
    raw = read_toml(path)
    try:
        return from_dict(cls, apply_overrides(raw, overrides))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


# --------------------------------------------------------------------------------------------
# Saving configs


def to_dict(cfg: Any) -> dict:
    """Plain JSON-able dict of a config dataclass (tuples become lists)."""
    return to_jsonable(cfg)


def config_hash(cfg: Any) -> str:
    """sha256 of the canonical JSON of a resolved config (first 16 hex digits)."""
    return content_hash(to_dict(cfg))


def _drop_none(obj: Any) -> Any:
    # TOML has no null: a None field is left out and takes its default (None) when read back.
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def to_toml(cfg: Any) -> str:
    """The resolved config as TOML text that :func:`load_toml` reads back to an equal config."""
    import tomli_w

    header = f"# {type(cfg).__name__}, resolved (config hash {config_hash(cfg)})\n"
    return header + tomli_w.dumps(_drop_none(to_dict(cfg)))


def save_config(cfg: Any, folder: str | os.PathLike) -> str:
    """Write ``folder/config.toml`` and ``folder/config.json`` (``{"type", "hash", "config"}``)
    atomically; returns the hash."""
    folder = Path(folder)
    digest = config_hash(cfg)
    atomic_write_text(folder / "config.toml", to_toml(cfg))
    atomic_write_json(
        folder / "config.json", {"type": type(cfg).__name__, "hash": digest, "config": cfg}
    )
    return digest


def saved_hash(folder: str | os.PathLike) -> str | None:
    """The hash in ``folder/config.json``, or None when there is none."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))["hash"]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: unreadable saved config ({err})") from err
