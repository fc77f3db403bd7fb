"""Process pools whose workers each own one core, for JAX work that one process cannot spread.

Why processes and not threads or host devices: under ``vmap`` XLA:CPU runs batched dots on one
thread, so one process leaves the other cores idle; and two executions in one process (threads,
``pmap`` over forced host devices) deadlock in jaxlib 0.10.2, where each batched LAPACK kernel
blocks an intra-op pool thread while it waits for work queued on the same pool. A worker pinned to
one core has a one-thread pool (XLA sizes it from the affinity mask), so its kernels run inline
and workers never share a pool.

Workers are spawned (a forked JAX runtime is unsafe), pinned, warmed up (e.g. compiled) and only
then handed to the caller, so compile time stays out of anything the caller times.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool
from typing import Any

from pathdep.workers import die_with_parent

STARTUP_TIMEOUT_S = 600.0


def _init_worker(
    parent: int, slots, ready, warmup: Callable[..., Any] | None, warmup_args: tuple
) -> None:
    die_with_parent(parent)
    with slots.get_lock():
        slot = slots.value
        slots.value += 1
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere workers share the cores unpinned
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[slot % len(cores)]})
    try:
        if warmup is not None:
            warmup(*warmup_args)
    except BaseException:
        ready.abort()  # the parent fails now instead of waiting out the timeout
        raise
    ready.wait(STARTUP_TIMEOUT_S)


@contextmanager
def pinned_pool(
    workers: int,
    warmup: Callable[..., Any] | None = None,
    warmup_args: tuple = (),
) -> Iterator[Pool]:
    """A spawned ``multiprocessing`` pool of ``workers`` processes, each pinned to one core.

    ``warmup(*warmup_args)`` runs once in every worker before this returns (it must be a
    module-level function). The pool is terminated on exit.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ctx = mp.get_context("spawn")
    slots = ctx.Value("i", 0)
    ready = ctx.Barrier(workers + 1)
    pool = ctx.Pool(workers, _init_worker, (os.getpid(), slots, ready, warmup, warmup_args))
    try:
        try:
            ready.wait(STARTUP_TIMEOUT_S)  # every worker is pinned and warm
        except Exception as exc:  # BrokenBarrierError: a worker failed or timed out
            raise RuntimeError(
                f"{workers} worker processes did not start within {STARTUP_TIMEOUT_S:.0f} s"
            ) from exc
        yield pool
    finally:
        pool.terminate()
        pool.join()
