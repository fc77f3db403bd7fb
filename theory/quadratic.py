"""Beyond the paper (5a): staged training and GA unlearning of general quadratic losses.

Stage i minimises

    f_i(theta) = 1/2 (theta - c_i)^T H_i (theta - c_i) + (mu_i / 2) ||theta - theta_prev||^2

with H_i symmetric PSD. Setting the gradient H_i (theta - c_i) + mu_i (theta - theta_prev) to zero,

    theta_i = (H_i + mu_i I)^-1 (H_i c_i + mu_i theta_prev).

Unlearning ascends the forget loss f_U(theta) = 1/2 (theta - c_U)^T H_U (theta - c_U) with step eta:

    theta_t = theta_{t-1} + eta H_U (theta_{t-1} - c_U),
    theta_t - c_U = (I + eta H_U)^t (theta_0 - c_U),

since c_U is a fixed point. Two models differ by Delta_t = (I + eta H_U)^t Delta_0, the y-free
recursion of Lemma 3.2 with M_U replaced by eta H_U. Theorem 3.1 carries over verbatim with the
forget span replaced by range(H_U) (rank r): with V (d, r) the eigenvectors of H_U for its nonzero
eigenvalues h and lam = eta h > 0, Delta_t = V diag((1 + lam)^t) V^T Delta_0 + (I - P) Delta_0,
Jensen gives ||(I + eta H_U)^t P Delta_0|| >= (1 + rho*)^t ||P Delta_0||, and the test-set and
t0 steps are unchanged; predictions are still x^T theta. See :func:`quadratic_theorem`.

The linear model is the special case (``linear_stage_as_quadratic``): ||X theta - y||^2 + mu
||theta - theta_prev||^2 = 2 f with H = 2 X^T X, c = X^+ y (any least-squares solution; then
X^T y = X^T X c), proximal weight 2 mu; the GA forget loss (1/k)||X_U theta - y_U||^2 equals
f_U + const with H_U = (2/k) X_U^T X_U, c_U = X_U^+ y_U, so eta H_U = M_U.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from theory.bound import BoundQuantities, bound_from_eigensystem
from theory.unlearning import log_sq_norm_of_powers

_LN10 = math.log(10.0)


@jax.jit
def quadratic_stage_loss(
    theta: ArrayLike, H: ArrayLike, c: ArrayLike, theta_prev: ArrayLike, mu: ArrayLike
) -> Array:
    """1/2 (theta - c)^T H (theta - c) + (mu/2) ||theta - theta_prev||^2 (scalar)."""
    diff = jnp.asarray(theta) - jnp.asarray(c)
    prox = jnp.asarray(theta) - jnp.asarray(theta_prev)
    return 0.5 * diff @ jnp.asarray(H) @ diff + 0.5 * mu * prox @ prox


@jax.jit
def quadratic_stage(H: ArrayLike, c: ArrayLike, theta_prev: ArrayLike, mu: ArrayLike) -> Array:
    """Exact stage minimiser (H + mu I)^-1 (H c + mu theta_prev). H (d, d), c, theta_prev (d,)."""
    H = jnp.asarray(H)
    d = H.shape[0]
    return jnp.linalg.solve(
        H + mu * jnp.eye(d, dtype=H.dtype), H @ jnp.asarray(c) + mu * jnp.asarray(theta_prev)
    )


@jax.jit
def quadratic_history_difference(
    HA: ArrayLike,
    cA: ArrayLike,
    muA: ArrayLike,
    HB: ArrayLike,
    cB: ArrayLike,
    muB: ArrayLike,
    theta0: ArrayLike | None = None,
) -> Array:
    """theta_AB - theta_BA for two quadratic stages (theta0 defaults to 0). Returns (d,)."""
    HA = jnp.asarray(HA)
    theta0 = jnp.zeros(HA.shape[0], dtype=HA.dtype) if theta0 is None else jnp.asarray(theta0)
    theta_ab = quadratic_stage(HB, cB, quadratic_stage(HA, cA, theta0, muA), muB)
    theta_ba = quadratic_stage(HA, cA, quadratic_stage(HB, cB, theta0, muB), muA)
    return theta_ab - theta_ba


@jax.jit
def quadratic_forget_loss(theta: ArrayLike, HU: ArrayLike, cU: ArrayLike) -> Array:
    """f_U(theta) = 1/2 (theta - c_U)^T H_U (theta - c_U) (scalar)."""
    diff = jnp.asarray(theta) - jnp.asarray(cU)
    return 0.5 * diff @ jnp.asarray(HU) @ diff


@jax.jit
def quadratic_ga_step(theta: ArrayLike, HU: ArrayLike, cU: ArrayLike, eta: ArrayLike) -> Array:
    """One ascent step theta + eta H_U (theta - c_U). (d,) -> (d,)."""
    theta = jnp.asarray(theta)
    return theta + eta * jnp.asarray(HU) @ (theta - jnp.asarray(cU))


@jax.jit
def quadratic_ga_trajectory(
    theta0: ArrayLike, HU: ArrayLike, cU: ArrayLike, eta: ArrayLike, ts: ArrayLike
) -> Array:
    """theta_t = c_U + (I + eta H_U)^t (theta_0 - c_U) for t in ``ts``. Returns (len(ts), d)."""
    theta0 = jnp.asarray(theta0)
    cU = jnp.asarray(cU)
    h, Q = jnp.linalg.eigh(jnp.asarray(HU))
    ts = jnp.atleast_1d(jnp.asarray(ts, dtype=theta0.dtype))
    growth = jnp.exp(ts[:, None] * jnp.log1p(eta * h)[None, :])  # (T, d); eta h > -1 assumed
    return cU[None, :] + (growth * (Q.T @ (theta0 - cU))[None, :]) @ Q.T


@partial(jax.jit, static_argnames="rank")
def quadratic_theorem(
    delta0: ArrayLike, HU: ArrayLike, eta: ArrayLike, Xtest: ArrayLike, rank: int
) -> BoundQuantities:
    """Theorem 3.1 quantities for quadratic GA; ``rank`` must equal rank(H_U) (static int).

    Uses the ``rank`` largest eigenpairs of H_U as the forget span V and lam = eta h. If ``rank``
    exceeded rank(H_U) the zero-eigenvalue directions would join the "span" (the bound stays valid
    but is weaker, and m >= rank is needed); if it fell short the off-span part would move and the
    bound would be wrong, hence the explicit argument. Returns :class:`BoundQuantities`.
    """
    h, Q = jnp.linalg.eigh(jnp.asarray(HU))  # ascending
    V = Q[:, -rank:]  # (d, rank)
    return bound_from_eigensystem(delta0, V, eta * h[-rank:], Xtest)


@jax.jit
def quadratic_log10_re_distance(
    delta0: ArrayLike, HU: ArrayLike, eta: ArrayLike, Xtest: ArrayLike, ts: ArrayLike
) -> Array:
    """Exact log10 (1/m)||X_test (I + eta H_U)^t Delta_0||^2 for t in ``ts`` (stable). (T,)."""
    Xtest = jnp.asarray(Xtest)
    h, Q = jnp.linalg.eigh(jnp.asarray(HU))
    log_sq = log_sq_norm_of_powers(Xtest @ Q, 1.0 + eta * h, Q.T @ jnp.asarray(delta0), ts)
    return (log_sq - jnp.log(Xtest.shape[0])) / _LN10


@jax.jit
def linear_stage_as_quadratic(
    X: ArrayLike, y: ArrayLike, mu: ArrayLike
) -> tuple[Array, Array, Array]:
    """(H, c, mu_q) = (2 X^T X, X^+ y, 2 mu): the proximal-ridge stage as a quadratic stage."""
    X = jnp.asarray(X)
    return 2.0 * X.T @ X, jnp.linalg.pinv(X) @ jnp.asarray(y), 2.0 * mu


@jax.jit
def linear_forget_as_quadratic(XU: ArrayLike, yU: ArrayLike) -> tuple[Array, Array]:
    """(H_U, c_U) = ((2/k) X_U^T X_U, X_U^+ y_U): the GA forget loss as a quadratic."""
    XU = jnp.asarray(XU)
    return (2.0 / XU.shape[0]) * XU.T @ XU, jnp.linalg.pinv(XU) @ jnp.asarray(yU)


__all__ = [
    "BoundQuantities",
    "linear_forget_as_quadratic",
    "linear_stage_as_quadratic",
    "quadratic_forget_loss",
    "quadratic_ga_step",
    "quadratic_ga_trajectory",
    "quadratic_history_difference",
    "quadratic_log10_re_distance",
    "quadratic_stage",
    "quadratic_stage_loss",
    "quadratic_theorem",
]
