"""The ground floor: atomic writers, strict JSON, the canonical hash, typed configs to and from
TOML, read-only mappings, pool workers that die with a killed parent."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from pathdep import configs as C
from pathdep import io


def test_atomic_write_leaves_old_file_on_error_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    io.atomic_write_json(target, {"x": 1})
    with pytest.raises(ValueError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise ValueError("killed mid-write")
    assert json.loads(target.read_text()) == {"x": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_written_files_get_the_umask_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = io.atomic_write_text(tmp_path / "x.txt", "hi")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_json_is_strict_and_converts_values(tmp_path: Path) -> None:
    import numpy as np

    @dataclasses.dataclass(frozen=True)
    class D:
        a: tuple[int, ...] = (1, 2)
        b: float = math.inf

    obj = {"d": D(), "n": np.float64(math.nan), "arr": np.arange(3), "p": Path("/x")}
    path = io.atomic_write_json(tmp_path / "m.json", obj)
    assert json.loads(path.read_text()) == {
        "arr": [0, 1, 2],
        "d": {"a": [1, 2], "b": None},
        "n": None,
        "p": "/x",
    }


def test_csv_keeps_the_sign_of_infinities(tmp_path: Path) -> None:
    path = io.atomic_write_csv(tmp_path / "t.csv", [{"a": -math.inf, "b": 1.5}, {"a": 2, "b": 0}])
    assert path.read_text().splitlines() == ["a,b", "-inf,1.5", "2,0"]
    with pytest.raises(ValueError, match="no rows"):
        io.atomic_write_csv(tmp_path / "e.csv", [])


def test_content_hash_is_canonical() -> None:
    assert io.content_hash({"a": 1, "b": [1, 2]}) == io.content_hash({"b": (1, 2), "a": 1})
    assert io.content_hash({"a": 1}) != io.content_hash({"a": 2})
    assert len(io.content_hash({}, digits=12)) == 12
    assert io.canonical_json({"b": 1, "a": 0.5}) == '{"a":0.5,"b":1}'


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with io.atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), io.atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
        raise RuntimeError
    assert [p.name for p in target.iterdir()] == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_frozen_map_is_read_only_hashable_and_plain_json() -> None:
    m = C.FrozenMap({"a": 1})
    for mutate in (
        lambda: m.__setitem__("a", 2),
        lambda: m.update(b=1),
        lambda: m.pop("a"),
        lambda: m.clear(),
        lambda: m.setdefault("c", 3),
    ):
        with pytest.raises(TypeError, match="read-only"):
            mutate()
    assert m == {"a": 1} and hash(m) == hash(C.FrozenMap({"a": 1}))
    assert json.dumps(m) == '{"a": 1}'
    import copy

    assert copy.deepcopy(m) == m and isinstance(copy.deepcopy(m), C.FrozenMap)


@dataclasses.dataclass(frozen=True)
class Inner:
    k: int = C.option(1, "an int")
    xs: tuple[float, ...] = C.option((0.5,), "floats")


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str = C.option("a", "a name")
    inner: Inner = C.option(Inner(), "nested")
    items: tuple[Inner, ...] = C.option((), "array of tables")
    table: Mapping[str, int] = C.option({}, "a mapping")
    maybe: int | None = C.option(None, "optional")
    pairs: tuple[tuple[int, ...], ...] | None = C.option(None, "optional nested tuples")
    where: Path = C.option(Path("x"), "a path")

    def __post_init__(self) -> None:
        if self.inner.k < 0:
            raise ValueError("inner.k must be >= 0")


def test_from_dict_builds_typed_values_and_names_bad_keys() -> None:
    cfg = C.from_dict(
        Outer,
        {"inner": {"k": 3, "xs": [1, 2]}, "items": [{"k": 2}], "table": {"a": 1}, "maybe": 4},
    )
    assert cfg.inner == Inner(3, (1.0, 2.0)) and cfg.items == (Inner(2),)
    assert isinstance(cfg.table, C.FrozenMap) and cfg.maybe == 4 and hash(cfg)
    for raw, needle in [
        ({"inner": {"nope": 1}}, "unknown key 'inner.nope'"),
        ({"inner": {"k": "3"}}, "inner.k: expected an integer"),
        ({"inner": {"xs": [math.inf]}}, "finite"),
        ({"inner": {"k": True}}, "expected an integer"),
        ({"items": {"k": 1}}, "items: expected an array"),
        ({"inner": {"k": -1}}, "inner.k must be >= 0"),
    ]:
        with pytest.raises(C.ConfigError, match=needle):
            C.from_dict(Outer, raw)


def test_toml_round_trip_and_saved_config(tmp_path: Path) -> None:
    cfg = Outer(
        inner=Inner(2, (0.25,)),
        items=(Inner(), Inner(5)),
        table=C.FrozenMap({"z": 1}),
        pairs=((1, 2), (3,)),
        where=Path("/data/x"),
    )
    digest = C.save_config(cfg, tmp_path)
    back = C.load_toml(Outer, tmp_path / "config.toml")
    assert back == cfg and C.config_hash(back) == digest == C.saved_hash(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["type"] == "Outer" and saved["config"]["pairs"] == [[1, 2], [3]]
    assert C.load_toml(Outer, tmp_path / "config.toml", ["inner.k=9"]).inner.k == 9


def test_read_toml_errors_are_one_config_error(tmp_path: Path) -> None:
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(C.ConfigError, match="not a UTF-8 text file"):
        C.read_toml(binary)
    with pytest.raises(C.ConfigError, match="not found"):
        C.read_toml(tmp_path / "missing.toml")
    with pytest.raises(C.ConfigError, match="is a folder"):
        C.read_toml(tmp_path)
    (tmp_path / "bad.toml").write_text("a = 1\na = 2\n")
    with pytest.raises(C.ConfigError, match="bad.toml"):
        C.read_toml(tmp_path / "bad.toml")
    with pytest.raises(C.ConfigError, match="KEY=VALUE"):
        C.apply_overrides({}, ["novalue"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_pool_workers_die_with_a_killed_parent(tmp_path):
    # The parent starts a worker on a long task, then is killed without any clean-up (as by a
    # time limit); the worker must not keep running.
    script = (
        "import os, signal, time\n"
        "from pathdep.workers import spawn_pool\n"
        "if __name__ == '__main__':\n"
        "    pool = spawn_pool(1)\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 120)\n"
        "    time.sleep(0.5)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    (tmp_path / "parent.py").write_text(script)
    # Output to a file, not a pipe: an orphaned worker would hold a pipe open.
    with open(tmp_path / "out.txt", "w") as out:
        done = subprocess.run(
            [sys.executable, str(tmp_path / "parent.py")], stdout=out, timeout=120
        )
    assert done.returncode == -signal.SIGKILL
    worker = int((tmp_path / "out.txt").read_text().split()[0])
    deadline = time.monotonic() + 20
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    outlived = _running(worker)
    if outlived:
        os.kill(worker, signal.SIGKILL)
    assert not outlived, "the pool's worker outlived its killed parent"


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (exited, waiting for init to reap it)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] != "Z"
