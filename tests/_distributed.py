"""Helpers shared by the multi-process (gloo, CPU) tests."""

from __future__ import annotations

import os
import socket

import torch

from llm import distributed as D


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_gloo_worker(rank: int, world: int, port: int, timeout_s: float | None = None) -> None:
    """Inside a spawned worker: the env vars torchrun would set, gloo init, one torch thread.

    ``timeout_s``: how long a collective may wait for the other ranks before it raises (gloo's
    default is 30 minutes), so that a rank left waiting fails the test instead of hanging it.
    """
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    if timeout_s is not None:
        from datetime import timedelta

        torch.distributed.init_process_group(
            "gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s)
        )
    D.init_from_env("cpu")
    torch.set_num_threads(1)
