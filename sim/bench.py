"""Benchmark: the Theorem 3.1 Monte Carlo check with jit + vmap against numpy loops.

Both sides evaluate the same instances (the JAX sampler draws them; numpy gets the same arrays)
and compute, per instance, Delta_0 from the two training orders, the theorem's quantities, and
log10 d(t) and the bound for t = 0..n_steps. Two numpy baselines are timed:

* ``numpy_direct``: the definitions followed literally, one instance at a time (d x d solves,
  the projector P_U, an SVD of X_test P_U, n_steps explicit GA updates of both models);
* ``numpy_spectral``: the same k-dimensional algorithm as the JAX code, one instance at a time.

The numpy loops run on a subset and are extrapolated linearly to n_instances (each instance is
independent and costs the same, so the loop time is linear); the output says so.

JAX runs twice over all instances: in this process, then (``workers`` > 1) in that many
core-pinned worker processes (:mod:`sim.parallel`), which must give identical results. Under vmap
XLA:CPU keeps the batched dots of this check on one thread, so the workers are how JAX uses the
other cores. Sampling, compilation and worker start-up are timed apart from the check time
``jax_seconds``; with workers it is the busiest worker's check time (pinned workers do not slow
each other down), and the wall time of the whole worker run, sampling included, is reported too.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pathdep.resources import usable_cores
from sim.instances import InstanceDistribution, InstanceShape
from sim.numpy_reference import direct_check, spectral_check_numpy
from sim.theorem import (
    CHECK_FIELDS,
    ChunkResult,
    TheoremConfig,
    check_task,
    chunk_tasks,
    sample_task,
    task_runner,
)


@dataclass(frozen=True)
class BenchConfig:
    """Benchmark sizes (defaults: the issue's 10,000 instances, d=100, k=10, m=50, 200 steps).

    Attributes:
        n_instances: instances checked by JAX.
        shape: instance shape (n_a = n_b = 50 rows per training stage).
        n_steps: GA steps.
        chunk_size: instances per jitted vmap call (250 fits the caches better than 1000: ~15%
            faster per instance here).
        numpy_direct_subset: instances timed with the literal numpy loop (then extrapolated).
        numpy_spectral_subset: instances timed with the numpy k-dim loop (then extrapolated).
        workers: JAX worker processes (default: one per usable core); 1 = this process only.
        seed: root key.
    """

    n_instances: int = 10_000
    shape: InstanceShape = InstanceShape(d=100, n_a=50, n_b=50, k=10, m=50)
    distribution: InstanceDistribution = field(default_factory=InstanceDistribution)
    n_steps: int = 200
    chunk_size: int = 250
    numpy_direct_subset: int = 200
    numpy_spectral_subset: int = 250
    workers: int = field(default_factory=usable_cores)
    seed: int = 0

    def memory_bytes(self) -> float:
        """A generous estimate of the memory of the JAX check (bytes), over all workers."""
        chunk = min(self.chunk_size, self.n_instances)
        check = TheoremConfig(
            n_instances=chunk, shapes=(self.shape,), n_steps=self.n_steps, chunk_size=chunk
        )
        return self.workers * check.memory_bytes()

    def __post_init__(self) -> None:
        for name in ("n_instances", "chunk_size", "n_steps", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"BenchConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("numpy_direct_subset", "numpy_spectral_subset"):
            v = getattr(self, name)
            if not 1 <= v <= min(self.n_instances, self.chunk_size):
                raise ValueError(
                    f"BenchConfig.{name} must be in [1, min(n_instances, chunk_size)], got {v}"
                )


def _instance(batch, i: int) -> dict[str, np.ndarray]:
    return {name: np.asarray(getattr(batch, name)[i]) for name in batch._fields}


def _per_worker_max(results: list[ChunkResult], attr: str) -> float:
    """The busiest worker's total of ``attr`` (the critical path when workers run side by side)."""
    totals: dict[int, float] = defaultdict(float)
    for r in results:
        totals[r.worker] += getattr(r, attr)
    return max(totals.values())


def _same_results(a: list[ChunkResult], b: list[ChunkResult]) -> bool:
    return all(
        np.array_equal(x.fields[f], y.fields[f], equal_nan=True)
        for x, y in zip(a, b, strict=True)
        for f in CHECK_FIELDS
    )


def run_bench(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Time JAX (compile, sampling, check; one process and workers) and the two numpy loops."""
    tcfg = TheoremConfig(
        n_instances=config.n_instances,
        shapes=(config.shape,),
        distribution=config.distribution,
        n_steps=config.n_steps,
        chunk_size=min(config.chunk_size, config.n_instances),
        seed=config.seed,
    )
    tasks = chunk_tasks(tcfg)
    t = time.perf_counter()  # compile both jitted functions; keep every curve for numpy
    first = check_task(tcfg, tasks[0], n_curves=tcfg.chunk_size)
    compile_and_first = time.perf_counter() - t

    bar = tqdm(total=config.n_instances, desc="jax, 1 process", disable=not progress, unit="inst")
    one_process = []
    for task in tasks:
        one_process.append(check_task(tcfg, task))
        bar.update(task.count)
    bar.close()
    jax_one = sum(r.check_seconds for r in one_process)
    sampling_one = sum(r.sample_seconds for r in one_process)

    workers = min(config.workers, len(tasks))
    multi: list[ChunkResult] = one_process
    startup = wall = 0.0
    if workers > 1:
        t = time.perf_counter()
        with task_runner(tcfg, workers) as run:
            startup = time.perf_counter() - t
            bar = tqdm(
                total=config.n_instances,
                desc=f"jax, {workers} workers",
                disable=not progress,
                unit="inst",
            )
            t = time.perf_counter()
            multi = []
            for r in run(tasks):
                multi.append(r)
                bar.update(r.task.count)
            wall = time.perf_counter() - t
            bar.close()
    jax_seconds = _per_worker_max(multi, "check_seconds")
    sampling = _per_worker_max(multi, "sample_seconds")
    if workers == 1:
        wall = jax_seconds + sampling

    numpy_batch = sample_task(tcfg, tasks[0])

    def time_numpy(fn, n: int) -> tuple[float, float]:
        max_diff = 0.0
        t = time.perf_counter()
        outs = [fn(_instance(numpy_batch, i), config.n_steps) for i in range(n)]
        elapsed = time.perf_counter() - t
        for i, (log10_d, t0, _) in enumerate(outs):
            ref = first.log10_distance[i]
            ok = np.isfinite(ref) & np.isfinite(log10_d)
            max_diff = max(max_diff, float(np.max(np.abs(ref[ok] - log10_d[ok]))))
            if t0 != first.fields["t0"][i]:
                max_diff = max(max_diff, math.inf)
        return elapsed, max_diff

    direct_s, direct_diff = time_numpy(direct_check, config.numpy_direct_subset)
    spectral_s, spectral_diff = time_numpy(spectral_check_numpy, config.numpy_spectral_subset)
    direct_total = direct_s * config.n_instances / config.numpy_direct_subset
    spectral_total = spectral_s * config.n_instances / config.numpy_spectral_subset
    holds = np.concatenate([r.fields["holds"] for r in one_process])
    checked = np.concatenate([r.fields["checked"] for r in one_process])
    return {
        "n_instances": config.n_instances,
        "shape": vars(config.shape),
        "n_steps": config.n_steps,
        "chunk_size": tcfg.chunk_size,
        "workers": workers,
        "jax_seconds": jax_seconds,
        "jax_sampling_seconds": sampling,
        "jax_wall_seconds_including_sampling": wall,
        "jax_one_process_seconds": jax_one,
        "jax_one_process_sampling_seconds": sampling_one,
        "jax_compile_plus_first_chunk_seconds": compile_and_first,
        "jax_worker_startup_seconds": startup,
        # None when no worker run was made (workers == 1): nothing to compare.
        "workers_match_one_process": _same_results(one_process, multi) if workers > 1 else None,
        "numpy_direct_seconds": direct_total,
        "numpy_direct_measured_on": config.numpy_direct_subset,
        "numpy_direct_extrapolated": config.numpy_direct_subset < config.n_instances,
        "numpy_spectral_seconds": spectral_total,
        "numpy_spectral_measured_on": config.numpy_spectral_subset,
        "numpy_spectral_extrapolated": config.numpy_spectral_subset < config.n_instances,
        "speedup_vs_numpy": direct_total / jax_seconds,
        "speedup_vs_numpy_one_process": direct_total / jax_one,
        "speedup_vs_numpy_including_sampling": direct_total / wall,
        "speedup_vs_numpy_same_algorithm": spectral_total / jax_seconds,
        "max_abs_log10_diff_vs_numpy_direct": direct_diff,
        "max_abs_log10_diff_vs_numpy_spectral": spectral_diff,
        "fraction_bound_holds": float(np.mean(holds[checked])) if checked.any() else math.nan,
        "n_checked": int(checked.sum()),
        "numpy_excludes_sampling": True,
    }
