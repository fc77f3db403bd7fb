"""Monte Carlo check of Theorem 3.1 over random instances (jit + vmap, float64, chunked).

Instances are split evenly over ``shapes``; within a shape every chunk of ``chunk_size`` instances
is one jitted ``vmap`` of :func:`sim.spectral.check_instance` over keys, so memory stays bounded
and a shape compiles once. Instance i of shape s uses key fold_in(fold_in(seed, s), i): the same
seed gives identical results whatever the chunk size or the number of worker processes
(``workers`` > 1 spreads chunks over core-pinned processes, :mod:`sim.parallel`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from pathdep.configs import check_finite
from pathdep.resources import check_fits
from sim.instances import InstanceDistribution, InstanceShape, LinearInstance, sample_instance
from sim.parallel import pinned_pool
from sim.spectral import SpectralCheck, check_instance

DEFAULT_SHAPES = (
    InstanceShape(d=20, n_a=10, n_b=15, k=4, m=10),
    InstanceShape(d=50, n_a=30, n_b=40, k=8, m=25),
    InstanceShape(d=100, n_a=50, n_b=50, k=10, m=50),
    InstanceShape(d=30, n_a=60, n_b=45, k=5, m=30),
)


# Per-instance outputs of the check, and every per-instance column of ``instances.csv``.
CHECK_FIELDS = (
    "t0",
    "checked",
    "holds",
    "min_log10_margin",
    "log10_tightness_final",
    "log10_tightness_at_start",
    "rho_star",
    "sigma_u",
    "proj_norm",
    "off_norm",
)
INSTANCE_FIELDS = ("shape_index", *CHECK_FIELDS, "eta", "corr", "shift")


@dataclass(frozen=True)
class TheoremConfig:
    """Monte Carlo check of Theorem 3.1.

    Attributes:
        n_instances: total number of random instances (split evenly over shapes).
        shapes: instance shapes to draw from.
        distribution: ranges of mu, eta, feature correlation and shift.
        n_steps: GA steps T; the bound is checked for max(t0, 0) <= t <= T.
        chunk_size: instances per vmapped chunk (bounds memory).
        seed: root of every random key.
    """

    n_instances: int = 2000
    shapes: tuple[InstanceShape, ...] = DEFAULT_SHAPES
    distribution: InstanceDistribution = field(default_factory=InstanceDistribution)
    n_steps: int = 200
    chunk_size: int = 500
    seed: int = 0

    def memory_bytes(self) -> float:
        """A generous estimate of one chunk's arrays (bytes): the instances' matrices and the
        per-step curves of every instance."""
        chunk = min(self.chunk_size, self.n_instances)
        per_instance = max(
            s.d * (s.n_a + s.n_b + s.k + s.m + s.d) + (self.n_steps + 1) * (s.m * (s.k + 2) + 8)
            for s in self.shapes
        )
        return 8.0 * 2 * chunk * per_instance

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple(self.shapes))  # hashable, whatever was passed
        if self.n_instances < len(self.shapes) or not self.shapes:
            raise ValueError(
                f"TheoremConfig.n_instances ({self.n_instances}) must be >= number of shapes "
                f"({len(self.shapes)}) >= 1"
            )
        if self.n_steps < 1:
            raise ValueError(f"TheoremConfig.n_steps must be >= 1, got {self.n_steps}")
        if self.chunk_size < 1:
            raise ValueError(f"TheoremConfig.chunk_size must be >= 1, got {self.chunk_size}")


@partial(jax.jit, static_argnums=(2, 3))
def _sample_chunk(
    shape_key: jax.Array,
    indices: jax.Array,
    shape: InstanceShape,
    dist: InstanceDistribution,
) -> LinearInstance:
    """Instances fold_in(shape_key, i) for i in ``indices`` (one compilation per chunk size)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(shape_key, i))(indices)
    return jax.vmap(lambda k: sample_instance(k, shape, dist))(keys)


@partial(jax.jit, static_argnums=(1,))
def check_batch(batch: LinearInstance, n_steps: int) -> SpectralCheck:
    """vmap of :func:`sim.spectral.check_instance` over a batch of instances."""
    return jax.vmap(lambda inst: check_instance(inst, n_steps))(batch)


def instance_counts(config: TheoremConfig) -> list[int]:
    base, extra = divmod(config.n_instances, len(config.shapes))
    return [base + (i < extra) for i in range(len(config.shapes))]


class ChunkTask(NamedTuple):
    """Instances start..start+count-1 of shape ``shape_index``."""

    shape_index: int
    start: int
    count: int


def chunk_tasks(config: TheoremConfig) -> list[ChunkTask]:
    """Every chunk of the check, in output order."""
    return [
        ChunkTask(s, start, min(config.chunk_size, count - start))
        for s, count in enumerate(instance_counts(config))
        for start in range(0, count, config.chunk_size)
    ]


def sample_task(config: TheoremConfig, task: ChunkTask) -> LinearInstance:
    """The instances of one chunk, padded to ``chunk_size`` (one compilation per shape)."""
    shape_key = jax.random.fold_in(jax.random.key(config.seed), task.shape_index)
    idx = np.arange(task.start, task.start + task.count)
    padded = np.pad(idx, (0, config.chunk_size - idx.size), mode="edge")
    return _sample_chunk(shape_key, padded, config.shapes[task.shape_index], config.distribution)


class ChunkResult(NamedTuple):
    """Per-instance fields of one chunk (CHECK_FIELDS and eta/corr/shift), trimmed to its count,
    the first ``n_curves`` curves, and where the time went."""

    task: ChunkTask
    fields: dict[str, np.ndarray]
    log10_distance: np.ndarray  # (n_curves, T+1)
    log10_bound: np.ndarray  # (n_curves, T+1)
    sample_seconds: float
    check_seconds: float
    worker: int  # process id


def check_task(config: TheoremConfig, task: ChunkTask, n_curves: int = 0) -> ChunkResult:
    """Sample and check one chunk (in this process or in a worker of :func:`task_runner`)."""
    t = time.perf_counter()
    batch = jax.block_until_ready(sample_task(config, task))
    sampled = time.perf_counter()
    res = jax.device_get(check_batch(batch, config.n_steps))
    checked = time.perf_counter()
    n = task.count
    fields = {name: np.asarray(getattr(res, name))[:n] for name in CHECK_FIELDS}
    fields.update({name: np.asarray(getattr(batch, name))[:n] for name in ("eta", "corr", "shift")})
    curves = min(n_curves, n)
    return ChunkResult(
        task,
        fields,
        np.asarray(res.log10_distance[:curves]),
        np.asarray(res.log10_bound[:curves]),
        sampled - t,
        checked - sampled,
        os.getpid(),
    )


def _compile_in_worker(config: TheoremConfig) -> None:
    """Worker warm-up: compile sampling and the check for every shape."""
    for s in range(len(config.shapes)):
        check_task(config, ChunkTask(s, 0, 1))


@contextmanager
def task_runner(
    config: TheoremConfig, workers: int = 1, n_curves: int = 0
) -> Iterator[Callable[[list[ChunkTask]], Iterator[ChunkResult]]]:
    """A function mapping tasks to results in order: in this process (workers=1) or in a pool
    of core-pinned, already compiled worker processes (:func:`sim.parallel.pinned_pool`).

    Results do not depend on ``workers``: every instance has its own key.
    """
    if workers == 1:
        yield lambda tasks: (check_task(config, t, n_curves) for t in tasks)
        return
    with pinned_pool(workers, _compile_in_worker, (config,)) as pool:
        yield lambda tasks: pool.imap(partial(check_task, config, n_curves=n_curves), tasks)


@dataclass(frozen=True)
class TheoremResult:
    """Per-instance arrays (length n_instances) and the curves of a few instances."""

    config: TheoremConfig
    shape_index: np.ndarray
    t0: np.ndarray
    checked: np.ndarray
    holds: np.ndarray
    min_log10_margin: np.ndarray
    log10_tightness_final: np.ndarray
    log10_tightness_at_start: np.ndarray
    rho_star: np.ndarray
    sigma_u: np.ndarray
    proj_norm: np.ndarray
    off_norm: np.ndarray
    eta: np.ndarray
    corr: np.ndarray
    shift: np.ndarray
    example_log10_distance: np.ndarray  # (n_examples, T+1)
    example_log10_bound: np.ndarray  # (n_examples, T+1)
    example_t0: np.ndarray

    def summary(self) -> dict[str, Any]:
        """Fraction of checked instances where the bound holds, tightness and t0 quantiles."""
        checked = self.checked
        q = [0.0, 0.1, 0.5, 0.9, 1.0]

        def quantiles(x):
            x = x[np.isfinite(x)]
            return (
                dict(
                    zip(
                        ["min", "p10", "median", "p90", "max"],
                        np.quantile(x, q).tolist(),
                        strict=True,
                    )
                )
                if x.size
                else {}
            )

        return {
            "n_instances": int(self.t0.size),
            "n_checked": int(checked.sum()),
            "fraction_checked": float(checked.mean()),
            "fraction_bound_holds": float(self.holds[checked].mean())
            if checked.any()
            else float("nan"),
            "n_violations": int((~self.holds & checked).sum()),
            "min_log10_margin": float(np.min(self.min_log10_margin[checked]))
            if checked.any()
            else float("nan"),
            "log10_tightness_final": quantiles(self.log10_tightness_final[checked]),
            "log10_tightness_at_start": quantiles(self.log10_tightness_at_start[checked]),
            "t0": quantiles(self.t0),
            "fraction_t0_nonpositive": float(np.mean(self.t0 <= 0)),
            "rho_star": quantiles(self.rho_star),
        }


def run_theorem_check(
    config: TheoremConfig, n_examples: int = 6, progress: bool = True, workers: int = 1
) -> TheoremResult:
    """Run the Monte Carlo check; per-instance results (see :meth:`TheoremResult.summary`).

    ``workers > 1`` spreads the chunks over that many core-pinned processes (same results).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    check_finite(config)
    check_fits(workers * config.memory_bytes(), f"the check with {config.n_steps} steps")
    per_shape = -(-n_examples // len(config.shapes))  # curves of the first instances per shape
    parts: dict[str, list[np.ndarray]] = {}
    examples: list[tuple[np.ndarray, np.ndarray, float, int]] = []  # curve, bound, t0, shape
    bar = tqdm(total=config.n_instances, desc="theorem 3.1", disable=not progress, unit="inst")
    with task_runner(config, workers, n_curves=per_shape) as run:
        for r in run(chunk_tasks(config)):
            s = r.task.shape_index
            fields = {"shape_index": np.full(r.task.count, s), **r.fields}
            for name, value in fields.items():
                parts.setdefault(name, []).append(value)
            if r.task.start == 0:  # the figure shows the first instances of each shape
                for i in range(min(len(r.log10_distance), n_examples - len(examples))):
                    t0 = float(r.fields["t0"][i])
                    examples.append((r.log10_distance[i], r.log10_bound[i], t0, s))
            bar.update(r.task.count)
    bar.close()
    arrays = {name: np.concatenate(v) for name, v in parts.items()}
    return TheoremResult(
        config=config,
        example_log10_distance=np.stack([e[0] for e in examples]),
        example_log10_bound=np.stack([e[1] for e in examples]),
        example_t0=np.array([e[2] for e in examples]),
        **arrays,
    )
