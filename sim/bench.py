"""Benchmark: the Theorem 3.1 Monte Carlo check with jit + vmap against numpy loops.

Both sides evaluate the same instances (the JAX sampler draws them; numpy gets the same arrays)
and compute, per instance, Delta_0 from the two training orders, the theorem's quantities, and
log10 d(t) and the bound for t = 0..n_steps. Two numpy baselines are timed:

* ``numpy_direct``: the definitions followed literally, one instance at a time (d x d solves,
  the projector P_U, an SVD of X_test P_U, n_steps explicit GA updates of both models);
* ``numpy_spectral``: the same k-dimensional algorithm as the JAX code, one instance at a time.

The numpy loops run on a subset and are extrapolated linearly to n_instances (each instance is
independent and costs the same, so the loop time is linear); the output says so. JAX compile
time and sampling time are reported separately from the check time ``jax_seconds``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from sim.instances import InstanceDistribution, InstanceShape
from sim.numpy_reference import direct_check, spectral_check_numpy
from sim.theorem import TheoremConfig, _sample_chunk, check_batch, iter_chunks


@dataclass(frozen=True)
class BenchConfig:
    """Benchmark sizes (defaults: the issue's 10,000 instances, d=100, k=10, m=50, 200 steps).

    Attributes:
        n_instances: instances checked by JAX.
        shape: instance shape (n_a = n_b = 50 rows per training stage).
        n_steps: GA steps.
        chunk_size: instances per jitted vmap call.
        numpy_direct_subset: instances timed with the literal numpy loop (then extrapolated).
        numpy_spectral_subset: instances timed with the numpy k-dim loop (then extrapolated).
        seed: root key.
    """

    n_instances: int = 10_000
    shape: InstanceShape = InstanceShape(d=100, n_a=50, n_b=50, k=10, m=50)
    distribution: InstanceDistribution = field(default_factory=InstanceDistribution)
    n_steps: int = 200
    chunk_size: int = 1000
    numpy_direct_subset: int = 200
    numpy_spectral_subset: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_instances < 1 or self.chunk_size < 1 or self.n_steps < 1:
            raise ValueError("BenchConfig n_instances, chunk_size and n_steps must be >= 1")
        for name in ("numpy_direct_subset", "numpy_spectral_subset"):
            v = getattr(self, name)
            if not 1 <= v <= min(self.n_instances, self.chunk_size):
                raise ValueError(
                    f"BenchConfig.{name} must be in [1, min(n_instances, chunk_size)], got {v}"
                )


def _instance(batch, i: int) -> dict[str, np.ndarray]:
    return {name: np.asarray(getattr(batch, name)[i]) for name in batch._fields}


def run_bench(config: BenchConfig, progress: bool = True) -> dict[str, Any]:
    """Time JAX (compile, sampling, check) and the two numpy loops; returns a dict of numbers."""
    tcfg = TheoremConfig(
        n_instances=config.n_instances,
        shapes=(config.shape,),
        distribution=config.distribution,
        n_steps=config.n_steps,
        chunk_size=min(config.chunk_size, config.n_instances),
        seed=config.seed,
    )
    # Compile both jitted functions once, timed separately.
    t = time.perf_counter()
    key = jax.random.fold_in(jax.random.key(config.seed), 0)
    idx = np.arange(tcfg.chunk_size)
    first = _sample_chunk(key, idx, config.shape, config.distribution)
    jax.block_until_ready(check_batch(first, config.n_steps))
    compile_and_first = time.perf_counter() - t

    sampling = checking = 0.0
    holds = checked = 0
    numpy_batch = None
    jax_subset = None
    chunks = iter_chunks(tcfg)
    bar = tqdm(total=config.n_instances, desc="bench jax", disable=not progress, unit="inst")
    while True:
        t = time.perf_counter()
        try:
            _, n_valid, batch = next(chunks)
        except StopIteration:
            break
        jax.block_until_ready(batch)
        sampling += time.perf_counter() - t
        t = time.perf_counter()
        res = jax.block_until_ready(check_batch(batch, config.n_steps))
        checking += time.perf_counter() - t
        res = jax.device_get(res)
        holds += int(np.sum(res.holds[:n_valid] & res.checked[:n_valid]))
        checked += int(np.sum(res.checked[:n_valid]))
        if numpy_batch is None:
            numpy_batch, jax_subset = batch, res
        bar.update(n_valid)
    bar.close()

    def time_numpy(fn, n: int) -> tuple[float, float]:
        max_diff = 0.0
        t = time.perf_counter()
        outs = [fn(_instance(numpy_batch, i), config.n_steps) for i in range(n)]
        elapsed = time.perf_counter() - t
        for i, (log10_d, t0, _) in enumerate(outs):
            ref = jax_subset.log10_distance[i]
            ok = np.isfinite(ref) & np.isfinite(log10_d)
            max_diff = max(max_diff, float(np.max(np.abs(ref[ok] - log10_d[ok]))))
            if t0 != jax_subset.t0[i]:
                max_diff = max(max_diff, math.inf)
        return elapsed, max_diff

    direct_s, direct_diff = time_numpy(direct_check, config.numpy_direct_subset)
    spectral_s, spectral_diff = time_numpy(spectral_check_numpy, config.numpy_spectral_subset)
    scale_direct = config.n_instances / config.numpy_direct_subset
    scale_spectral = config.n_instances / config.numpy_spectral_subset
    direct_total = direct_s * scale_direct
    spectral_total = spectral_s * scale_spectral
    return {
        "n_instances": config.n_instances,
        "shape": vars(config.shape),
        "n_steps": config.n_steps,
        "chunk_size": tcfg.chunk_size,
        "jax_seconds": checking,
        "jax_sampling_seconds": sampling,
        "jax_total_seconds_excluding_compile": checking + sampling,
        "jax_compile_plus_first_chunk_seconds": compile_and_first,
        "numpy_direct_seconds": direct_total,
        "numpy_direct_measured_on": config.numpy_direct_subset,
        "numpy_direct_extrapolated": config.numpy_direct_subset < config.n_instances,
        "numpy_spectral_seconds": spectral_total,
        "numpy_spectral_measured_on": config.numpy_spectral_subset,
        "numpy_spectral_extrapolated": config.numpy_spectral_subset < config.n_instances,
        "speedup_vs_numpy": direct_total / checking,
        "speedup_vs_numpy_same_algorithm": spectral_total / checking,
        "max_abs_log10_diff_vs_numpy_direct": direct_diff,
        "max_abs_log10_diff_vs_numpy_spectral": spectral_diff,
        "fraction_bound_holds": holds / max(checked, 1),
        "n_checked": checked,
        "numpy_excludes_sampling": True,
    }
