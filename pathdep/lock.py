"""One run per output folder: an exclusive lock held for the whole command.

:func:`hold` takes ``<folder>/.lock`` with ``fcntl.flock`` (the kernel releases it when the
holding process dies, however it dies, so a lock left by a dead process is simply taken over)
and writes the holder (pid, host, command, start time) into the file, so a second run is refused
at once with one line that names the holder. :func:`hold_waiting` is the blocking variant, used
per entry of a shared stage cache: a second job waits for the first to finish the entry, then
finds it done.

Why not the ``filelock`` package: its lock file is truncated by every contender, so the holder
cannot be recorded in it; flock on a file we manage ourselves is the same kernel mechanism.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pathdep.errors import BadInput

LOCK_NAME = ".lock"


class LockedError(BadInput):
    """The folder (or cache entry) is held by another live process; the message names it."""


def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    if not info:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (
        f"pid {info.get('pid')} on {info.get('host')} since {started} ({info.get('command', '?')})"
    )


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:300],
    }


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _flock(lock_file: Path, blocking: bool, what: str) -> Iterator[dict[str, Any]]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if not blocking:
                raise LockedError(
                    f"{what} is in use by {_holder_text(lock_file)}; wait for it or use "
                    "another folder"
                ) from None
            fcntl.flock(fd, fcntl.LOCK_EX)
        previous: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(os.pread(fd, 1 << 16, 0).decode("utf-8") or "{}")
        # The kernel freed the lock of a process that died holding it; its record is still here.
        taken_over = bool(previous) and not _pid_alive(previous.get("pid"))
        me = _me()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield {"taken_over_from": previous if taken_over else None, **me}
        os.ftruncate(fd, 0)  # released cleanly: no record of a holder is left
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def hold(folder: str | os.PathLike, what: str | None = None) -> Iterator[dict[str, Any]]:
    """Hold ``folder/.lock`` exclusively for the block, or raise :class:`LockedError` at once.

    Creates ``folder`` (the lock lives inside it). Yields the holder record, with
    ``taken_over_from`` set when the previous holder died without releasing it.
    """
    folder = Path(folder)
    with _flock(folder / LOCK_NAME, blocking=False, what=what or str(folder)) as me:
        yield me


@contextlib.contextmanager
def hold_waiting(lock_file: str | os.PathLike, what: str = "") -> Iterator[dict[str, Any]]:
    """Hold ``lock_file`` exclusively for the block, waiting while another process holds it."""
    lock_file = Path(lock_file)
    with _flock(lock_file, blocking=True, what=what or str(lock_file)) as me:
        yield me
