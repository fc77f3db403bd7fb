"""pathdep.sim: JAX/optax/flax simulations of staged training and local unlearning."""

import os

# XLA:CPU can deadlock when it runs two batched LAPACK custom calls (Cholesky, eigh of a vmapped
# batch of ~1000 matrices) concurrently on a small thread pool: the second execution of a jitted
# vmap of two Cholesky factorisations hung reproducibly on 2 cores (jax 0.10.2). Turning off the
# concurrency-optimised scheduler removes it. This only takes effect if no JAX backend has been
# initialised yet in this process, which is why it sits at the top of the package.
_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import jax  # noqa: E402

# The theory checks compare against closed forms to ~1e-9: float64 throughout.
jax.config.update("jax_enable_x64", True)
