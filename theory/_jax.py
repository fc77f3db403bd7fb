"""One place that configures JAX for pathdep (imported first by `theory` and `sim`)."""

import os

# XLA:CPU can deadlock when it runs two batched LAPACK custom calls (Cholesky, eigh of a vmapped
# batch of ~1000 matrices) concurrently on a small thread pool: the second execution of a jitted
# vmap of two Cholesky factorisations hung reproducibly on 2 cores (jax 0.10.2). Turning off the
# concurrency-optimised scheduler removes it. The flag only takes effect if no JAX backend has
# been initialised yet in this process, so it is set before jax is imported by either package.
_XLA_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if _XLA_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _XLA_FLAG).strip()

import jax  # noqa: E402

# Closed forms are checked against iterated updates to ~1e-9 relative error: float64 throughout.
jax.config.update("jax_enable_x64", True)
