"""Theorem 3.1 and Corollary 1 for a concrete instance.

Quantities (paper Sec. 3.1), with V (d, k) an orthonormal basis of the forget span and
M_U = V diag(lam) V^T:

    proj_norm = ||P_U Delta theta_0||,  off_norm = ||(I - P_U) Delta theta_0||,
    rho*      = <P_U Delta theta_0, M_U P_U Delta theta_0> / ||P_U Delta theta_0||^2,
    sigma_U   = k-th singular value of X_test P_U (= sigma_min(X_test V), needs m >= k),
    C0        = ||X_test||_op ||(I - P_U) Delta theta_0||,
    t0        = ceil(log(2 C0 / (sigma_U proj_norm)) / log(1 + rho*)),

and for every integer t >= max(t0, 0):  d(t) >= sigma_U^2 proj_norm^2 (1 + rho*)^(2t) / (4m).
The formula is evaluated for every t (finite for t < t0 too) but it is only *guaranteed* for
t >= max(t0, 0). t0 may be -inf (C0 = 0) and is returned as a float.

Corollary 1, re-derived. For each test point ||a - b||^2 <= 2||a - r||^2 + 2||b - r||^2, so
d(a, b) <= 2 d(a, r) + 2 d(b, r). If both unlearned models were within epsilon of the retrained
target r, then d(theta_AB, theta_BA) <= 4 epsilon. The bound exceeds 4 epsilon iff
sigma_U^2 p^2 (1 + rho*)^(2t) / (4m) > 4 epsilon, i.e.

    t > x(epsilon) := (log(16 m epsilon) - log(sigma_U^2 p^2)) / (2 log(1 + rho*)),

so the paper's constant 16 is right; the only correction is that the inequality must be strict
(at t = x the two models could both sit at distance exactly epsilon). :func:`corollary_t_star`
returns the smallest integer t with t > x and t >= max(t0, 0); :func:`corollary_threshold`
returns the paper's real-valued max(x, t0).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from theory.unlearning import forget_eigensystem

_LN10 = math.log(10.0)


class BoundQuantities(NamedTuple):
    """Everything Theorem 3.1 and Corollary 1 need (a pytree: works under jit and vmap).

    All fields are float scalars (batched under vmap).
    """

    delta0_norm: Array  # ||Delta theta_0||
    proj_norm: Array  # ||P_U Delta theta_0||
    off_norm: Array  # ||(I - P_U) Delta theta_0||
    rho_star: Array  # Rayleigh quotient of M_U at P_U Delta theta_0
    sigma_U: Array  # k-th singular value of X_test P_U
    test_op_norm: Array  # ||X_test||_op
    C0: Array  # ||X_test||_op * off_norm
    t0: Array  # ceil(log(2 C0 / (sigma_U proj_norm)) / log(1 + rho*)), may be +-inf
    m: Array  # number of test points (float)


@jax.jit
def bound_from_eigensystem(
    delta0: ArrayLike, V: ArrayLike, lam: ArrayLike, Xtest: ArrayLike
) -> BoundQuantities:
    """Theorem 3.1 quantities for any update Delta_t = (I + V diag(lam) V^T)^t Delta_0, lam > 0.

    Shared by the linear model (V, lam from X_U) and the quadratic model (from eta H_U).

    Args:
        delta0: (d,). V: (d, r) orthonormal columns. lam: (r,) eigenvalues. Xtest: (m, d), m >= r.
    """
    delta0 = jnp.asarray(delta0)
    V = jnp.asarray(V)
    lam = jnp.asarray(lam)
    Xtest = jnp.asarray(Xtest)
    m, r = Xtest.shape[0], V.shape[1]
    if m < r:
        raise ValueError(f"Theorem 3.1 needs m >= k test points; got m = {m} < k = {r}")
    alpha = V.T @ delta0  # (r,) coordinates of P_U delta0
    proj_sq = alpha @ alpha
    proj_norm = jnp.sqrt(proj_sq)
    off_norm = jnp.linalg.norm(delta0 - V @ alpha)
    has_proj = proj_sq > 0
    rho_star = jnp.where(has_proj, (alpha**2) @ lam / jnp.where(has_proj, proj_sq, 1.0), 0.0)
    sigma_U = jnp.min(jnp.linalg.svd(Xtest @ V, compute_uv=False))
    test_op_norm = jnp.linalg.norm(Xtest, ord=2)
    C0 = test_op_norm * off_norm
    # log(2 C0 / (sigma_U p)); -inf when C0 = 0, +inf when sigma_U p = 0.
    log_ratio = jnp.log(2.0 * C0) - jnp.log(sigma_U * proj_norm)
    t0 = jnp.ceil(log_ratio / jnp.log1p(rho_star))
    t0 = jnp.where(has_proj & (sigma_U > 0), t0, jnp.inf)
    return BoundQuantities(
        delta0_norm=jnp.linalg.norm(delta0),
        proj_norm=proj_norm,
        off_norm=off_norm,
        rho_star=rho_star,
        sigma_U=sigma_U,
        test_op_norm=test_op_norm,
        C0=C0,
        t0=t0,
        m=jnp.asarray(m, dtype=delta0.dtype),
    )


@jax.jit
def theorem_3_1(
    delta0: ArrayLike, XU: ArrayLike, eta: ArrayLike, Xtest: ArrayLike
) -> BoundQuantities:
    """Theorem 3.1 quantities for GA with step ``eta`` on X_U (k, d), test set Xtest (m, d)."""
    _, _, V, lam = forget_eigensystem(XU, eta)
    return bound_from_eigensystem(delta0, V, lam, Xtest)


@jax.jit
def log10_bound(q: BoundQuantities, ts: ArrayLike) -> Array:
    """log10 of sigma_U^2 p^2 (1 + rho*)^(2t) / (4m) for every t in ``ts``. Returns (T,).

    Guaranteed to lower-bound log10 d(t) only for t >= max(t0, 0).
    """
    ts = jnp.atleast_1d(jnp.asarray(ts, dtype=q.proj_norm.dtype))
    log_const = 2.0 * jnp.log(q.sigma_U) + 2.0 * jnp.log(q.proj_norm) - jnp.log(4.0 * q.m)
    return (log_const + 2.0 * ts * jnp.log1p(q.rho_star)) / _LN10


@jax.jit
def bound_holds_from(q: BoundQuantities) -> Array:
    """The first step from which the bound is guaranteed: max(t0, 0) (float, may be inf)."""
    return jnp.maximum(q.t0, 0.0)


@jax.jit
def log10_tightness(log10_exact: ArrayLike, log10_lower: ArrayLike) -> Array:
    """log10 of the tightness ratio exact / bound (>= 0 wherever the bound holds)."""
    return jnp.asarray(log10_exact) - jnp.asarray(log10_lower)


@jax.jit
def corollary_threshold(q: BoundQuantities, epsilon: ArrayLike) -> Array:
    """The paper's real-valued threshold max(x(epsilon), t0) of Corollary 1 (see module doc)."""
    x = (jnp.log(16.0 * q.m * epsilon) - jnp.log(q.sigma_U**2 * q.proj_norm**2)) / (
        2.0 * jnp.log1p(q.rho_star)
    )
    return jnp.maximum(x, q.t0)


@jax.jit
def corollary_t_star(q: BoundQuantities, epsilon: ArrayLike) -> Array:
    """Smallest integer t >= max(t0, 0) with t > x(epsilon): from this many GA steps on, at least
    one of the two unlearned models is farther than epsilon from any common target (float)."""
    x = (jnp.log(16.0 * q.m * epsilon) - jnp.log(q.sigma_U**2 * q.proj_norm**2)) / (
        2.0 * jnp.log1p(q.rho_star)
    )
    return jnp.maximum(jnp.floor(x) + 1.0, bound_holds_from(q))
