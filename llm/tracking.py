"""Optional TensorBoard event files: every number of a stage's or an unlearning run's per-step
records as a scalar at its step (loss, lr, gradient norm, and for unlearning the label log-prob
and utilities of the evaluated steps), beside the run's metrics files.

Off by default (``--tensorboard`` on ``python -m llm protocol|finetune|unlearn``,
``run_protocol(..., tensorboard=True)``). Resuming a run rewrites its events from the resumed
step (``purge_step``), so a killed and resumed run shows one curve. The metrics files stay the
record; the events are a view for ``tensorboard --logdir OUT``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pathdep.errors import BadInput

INSTALL_HINT = "pip install 'pathdep[tracking]' (or tensorboard)"


def check_available() -> None:
    """Refuse ``--tensorboard`` before anything runs when the package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise BadInput(f"--tensorboard needs the tensorboard package: {INSTALL_HINT}") from None


class ScalarLog:
    """A folder of TensorBoard events; ``write(record)`` logs its numbers at its ``"step"``."""

    def __init__(self, folder: str | Path, resume_from: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops the events a killed run wrote after its last checkpoint.
        self.folder = Path(folder)
        self.writer = SummaryWriter(
            str(self.folder), purge_step=None if resume_from is None else resume_from + 1
        )

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def read_scalars(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of a folder's events (what TensorBoard would show)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
