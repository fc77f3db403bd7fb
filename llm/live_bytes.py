"""Live tensor bytes on the CPU, where torch keeps no allocator statistics: the measurement the
memory planner (:mod:`llm.plan`) is checked against (tests/test_llm_plan.py) and the CPU peak
that ``benchmarks/gpu.py`` reports (on a GPU it reads ``torch.cuda.max_memory_allocated``)."""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["LiveBytes"]


class LiveBytes(TorchDispatchMode):
    """Bytes of every tensor storage created inside the block that is still alive, and the
    peak. Every op's new output storage is counted (views and in-place results share an
    input's storage and are not) and uncounted when its storage is freed (weakref
    finalizer). This is exact for tensors on the CPU, where torch has no allocator statistics;
    it leaves out allocator overhead and kernels' internal scratch space."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.sizes: dict[int, int] = {}

    def _free(self, key: int, size: int) -> None:
        if self.sizes.pop(key, None) is not None:
            self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = tree_flatten((args, kwargs))[0]
        seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if key in seen or key in self.sizes or size == 0:
                continue
            self.sizes[key] = size
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, size)
        return out
