"""Refuse work whose arrays cannot fit in memory, before allocating them.

A step count of 10^12 would otherwise reach JAX, which aborts the process (XLA out of memory)
instead of raising. The command lines estimate the bytes their per-step arrays need and call
:func:`check_fits` first; the estimate is generous (a factor for temporaries), the limit is the
memory the kernel says is available now.
"""

from __future__ import annotations

import os

from pathdep.errors import BadInput

GIB = 1 << 30


class TooLargeError(BadInput):
    """A run whose arrays would not fit in this machine's memory."""


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable``; total RAM as fallback)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(nbytes: float, what: str, available: int | None = None) -> None:
    """Raise :class:`TooLargeError` naming ``what`` when ``nbytes`` exceed the available memory."""
    limit = available_memory() if available is None else available
    if nbytes > limit:
        raise TooLargeError(
            f"{what} needs about {nbytes / GIB:.3g} GiB of memory, more than the "
            f"{limit / GIB:.3g} GiB available; use fewer steps"
        )


def usable_cores() -> int:
    """CPU cores this process may run on (respects taskset and container CPU sets)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
