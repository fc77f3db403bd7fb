"""pathdep.sim: JAX/optax/flax simulations of staged training and local unlearning."""

import theory._jax  # noqa: F401  (float64 and XLA flags, before any JAX work)
