"""Staged proximal-ridge training of a linear model (paper Eq. 1 and Eq. 3, generalised).

A *stage* is a triple ``(X, y, mu)``: data ``X`` (n, d), targets ``y`` (n,) and a proximal weight
``mu > 0``. Training on a stage from ``theta_prev`` minimises the stage loss

    L(theta; X, y, theta_prev, mu) = ||X theta - y||^2 + mu ||theta - theta_prev||^2,

either exactly (:func:`ridge_stage`, the paper's proximal update) or with a finite number of
gradient-descent steps (:func:`gd_stage`). Everything here is a pure ``jnp`` function: it can be
``jit``-ed and ``vmap``-ed, and it branches only on static shapes.

Lemma C.1, corrected. The paper writes the degenerate case as "X_A^T X_B = 0 and X_B^T X_A = 0",
which does not type-check when n_A != n_B. Writing A = (X_A^T X_A + mu_A I)^-1 and the push-through
identity B X_B^T = X_B^T (X_B X_B^T + mu_B I)^-1, the coefficient of y_B in Eq. 3 is

    (I - mu_A A) B X_B^T = A X_A^T X_A X_B^T (X_B X_B^T + mu_B I)^-1,

which is zero iff X_A X_B^T = 0 (n_A, n_B); the coefficient of y_A is zero iff X_B X_A^T = 0, the
transpose of the same condition. So the orders coincide for every (y_A, y_B) iff every row of X_A is
orthogonal to every row of X_B (X_A X_B^T = 0). Then X_A^T X_A and X_B^T X_B annihilate each other,
A and B commute, and the orders coincide from every theta0, not only theta0 = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

Stage = tuple[ArrayLike, ArrayLike, ArrayLike]  # (X (n, d), y (n,), mu scalar)


@jax.jit
def stage_loss(
    theta: ArrayLike, X: ArrayLike, y: ArrayLike, theta_prev: ArrayLike, mu: ArrayLike
) -> Array:
    """Proximal ridge stage loss ||X theta - y||^2 + mu ||theta - theta_prev||^2 (scalar)."""
    theta = jnp.asarray(theta)
    residual = jnp.asarray(X) @ theta - jnp.asarray(y)  # (n,)
    return residual @ residual + mu * jnp.sum((theta - jnp.asarray(theta_prev)) ** 2)


@jax.jit
def ridge_stage(X: ArrayLike, y: ArrayLike, theta_prev: ArrayLike, mu: ArrayLike) -> Array:
    """Exact minimiser of one stage (Eq. 1): theta = (X^T X + mu I)^-1 (X^T y + mu theta_prev).

    Args:
        X: (n, d) stage features. y: (n,) stage targets. theta_prev: (d,) previous iterate.
        mu: proximal weight, > 0.

    Returns:
        (d,) the stage solution.
    """
    X = jnp.asarray(X)
    d = X.shape[1]
    lhs = X.T @ X + mu * jnp.eye(d, dtype=X.dtype)  # (d, d), positive definite for mu > 0
    rhs = X.T @ jnp.asarray(y) + mu * jnp.asarray(theta_prev)  # (d,)
    return jnp.linalg.solve(lhs, rhs)


@jax.jit
def signed_power(base: ArrayLike, exponent: ArrayLike) -> Array:
    """base ** exponent elementwise for a real base and a non-negative integer-valued exponent.

    Written through log|base| so that a negative base works with a traced exponent (XLA's pow
    returns NaN for negative bases); base 0 with exponent 0 gives 1.
    """
    base = jnp.asarray(base)
    exponent = jnp.asarray(exponent, dtype=base.dtype)
    log_abs = jnp.where(exponent == 0, 0.0, exponent * jnp.log(jnp.abs(base)))
    odd = jnp.mod(exponent, 2.0) == 1.0
    sign = jnp.where((base < 0) & odd, -1.0, 1.0)
    return sign * jnp.exp(log_abs)


@jax.jit
def gd_stage(
    X: ArrayLike,
    y: ArrayLike,
    theta_prev: ArrayLike,
    mu: ArrayLike,
    lr: ArrayLike,
    steps: ArrayLike,
) -> Array:
    """``steps`` gradient-descent steps on the stage loss, started at theta_prev, in closed form.

    One step is theta <- theta - lr * grad L = (I - 2 lr H) theta + 2 lr (X^T y + mu theta_prev),
    H = X^T X + mu I. Its fixed point is the ridge solution theta_r, so after s steps

        theta_s = theta_r + (I - 2 lr H)^s (theta_prev - theta_r),

    and the matrix power is taken in the eigenbasis of H (works for a traced ``steps``).

    Args:
        X: (n, d). y: (n,). theta_prev: (d,). mu: > 0. lr: step size. steps: integer >= 0.

    Returns:
        (d,) the iterate after ``steps`` steps (converges to :func:`ridge_stage` iff lr < 1/h_max).
    """
    X = jnp.asarray(X)
    theta_prev = jnp.asarray(theta_prev)
    d = X.shape[1]
    hessian_half = X.T @ X + mu * jnp.eye(d, dtype=X.dtype)  # (d, d), the loss Hessian / 2
    eigvals, eigvecs = jnp.linalg.eigh(hessian_half)
    theta_r = ridge_stage(X, y, theta_prev, mu)
    contraction = signed_power(1.0 - 2.0 * lr * eigvals, steps)  # (d,)
    return theta_r + eigvecs @ (contraction * (eigvecs.T @ (theta_prev - theta_r)))


def train_stages(stages: Sequence[Stage], theta0: ArrayLike) -> Array:
    """Exact proximal training through ``stages`` in the given order; returns theta (d,)."""
    theta = jnp.asarray(theta0)
    for X, y, mu in stages:
        theta = ridge_stage(X, y, theta, mu)
    return theta


def train_stages_gd(
    stages: Sequence[Stage], theta0: ArrayLike, lr: ArrayLike, steps: ArrayLike
) -> Array:
    """Like :func:`train_stages` but each stage is ``steps`` GD steps with step size ``lr``."""
    theta = jnp.asarray(theta0)
    for X, y, mu in stages:
        theta = gd_stage(X, y, theta, mu, lr, steps)
    return theta


@jax.jit
def history_difference(
    XA: ArrayLike,
    yA: ArrayLike,
    muA: ArrayLike,
    XB: ArrayLike,
    yB: ArrayLike,
    muB: ArrayLike,
    theta0: ArrayLike | None = None,
) -> Array:
    """Delta theta_0 = theta_AB - theta_BA (paper Eq. 3), by training both orders from theta0.

    ``theta0`` defaults to zeros (the paper's setting). Returns (d,).
    """
    XA = jnp.asarray(XA)
    theta0 = jnp.zeros(XA.shape[1], dtype=XA.dtype) if theta0 is None else jnp.asarray(theta0)
    theta_ab = train_stages([(XA, yA, muA), (XB, yB, muB)], theta0)
    theta_ba = train_stages([(XB, yB, muB), (XA, yA, muA)], theta0)
    return theta_ab - theta_ba


@jax.jit
def history_difference_eq3(
    XA: ArrayLike, yA: ArrayLike, muA: ArrayLike, XB: ArrayLike, yB: ArrayLike, muB: ArrayLike
) -> Array:
    """Eq. 3 as printed: (I - mu_A A) B X_B^T y_B + (mu_B B - I) A X_A^T y_A, theta0 = 0. (d,)"""
    XA, XB = jnp.asarray(XA), jnp.asarray(XB)
    d = XA.shape[1]
    eye = jnp.eye(d, dtype=XA.dtype)
    A = jnp.linalg.inv(XA.T @ XA + muA * eye)
    B = jnp.linalg.inv(XB.T @ XB + muB * eye)
    return (eye - muA * A) @ B @ XB.T @ jnp.asarray(yB) + (muB * B - eye) @ A @ XA.T @ jnp.asarray(
        yA
    )


@jax.jit
def commutation_residual(XA: ArrayLike, XB: ArrayLike) -> Array:
    """Scale-free size of X_A X_B^T: ||X_A X_B^T||_F / (||X_A||_F ||X_B||_F), in [0, 1].

    Zero exactly in the degenerate case of Lemma C.1 (row spaces orthogonal), where the two
    training orders give the same model for every target vector and every theta0.
    """
    XA, XB = jnp.asarray(XA), jnp.asarray(XB)
    scale = jnp.linalg.norm(XA) * jnp.linalg.norm(XB)
    cross = jnp.linalg.norm(XA @ XB.T)
    return jnp.where(scale > 0, cross / jnp.where(scale > 0, scale, 1.0), 0.0)


@jax.jit
def orders_commute(XA: ArrayLike, XB: ArrayLike, atol: float = 1e-10) -> Array:
    """True (a jnp bool) when the Lemma C.1 condition X_A X_B^T = 0 holds up to ``atol``.

    ``atol`` bounds :func:`commutation_residual`, which is relative, so it is scale-free.
    """
    return commutation_residual(XA, XB) <= atol
