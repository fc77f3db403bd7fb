"""Worker processes that do not outlive the process that started them.

A pool's workers are separate processes: when the parent is killed (Ctrl-C in a terminal that
only reaches the parent, ``kill``, a cluster's time limit), they keep running their task to its
end, burning the cores and writing into an output folder that a resumed run is about to use.
:func:`spawn_pool` gives a spawned :class:`~concurrent.futures.ProcessPoolExecutor` whose workers
ask the kernel to send them SIGTERM when their parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``;
elsewhere they behave as plain workers).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

__all__ = ["die_with_parent", "spawn_pool"]

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel send this process SIGTERM when ``parent_pid`` (its parent) exits; if the
    parent is already gone, terminate now. A no-op where ``prctl`` does not exist."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not fatal: the worker just runs as before
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (no inherited torch or JAX thread pools) that
    die with this process. Create it from the main thread: the kernel watches the thread that
    started a worker, not the whole process."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )
