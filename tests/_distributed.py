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


def init_gloo_worker(rank: int, world: int, port: int) -> None:
    """Inside a spawned worker: the env vars torchrun would set, gloo init, one torch thread."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    D.init_from_env("cpu")
    torch.set_num_threads(1)
