"""pathdep.sim: JAX/optax/flax simulations of staged training and local unlearning."""

import jax

# The theory checks compare against closed forms to ~1e-9: float64 throughout.
jax.config.update("jax_enable_x64", True)
