"""Gradient-ascent (GA) unlearning of a linear model in closed form (paper Lemma 3.2).

GA on the forget loss (1/k)||X_U theta - y_U||^2 with step eta is

    theta_t = theta_{t-1} + (2 eta / k) X_U^T (X_U theta_{t-1} - y_U)
            = (I + M_U) theta_{t-1} - (2 eta / k) X_U^T y_U,      M_U = (2 eta / k) X_U^T X_U.

Derivation of the trajectory. Let X_U = U diag(s) V^T be the thin SVD (V (d, k) is an orthonormal
basis of the forget span, P_U = V V^T), so M_U = V diag(lam) V^T with lam = (2 eta / k) s^2.
Any theta* with X_U theta* = y_U is a fixed point; take the minimum-norm one, theta* = X_U^+ y_U =
V diag(1/s) U^T y_U, which lies in the span. Then theta_t - theta* = (I + M_U)^t (theta_0 - theta*):
the off-span part (I - P_U) theta_0 never moves and, in the span,

    V^T theta_t = V^T theta* + (1 + lam)^t * beta,   beta = V^T (theta_0 - theta*)
                                                         = diag(1/s) U^T r_0,

with r_0 = X_U theta_0 - y_U the initial forget residual. The residual itself evolves as
U^T r_t = (1 + lam)^t * U^T r_0, i.e. r_t = (I + (2 eta / k) X_U X_U^T)^t r_0.

For two models the y_U term cancels and Delta theta_t = (I + M_U)^t Delta theta_0 (Lemma 3.2).

Large t. (1 + lam)^t overflows float64 for t ~ 10^5; every "log" function below works with the
log-magnitude of each eigen-component, factors out the largest one (log-sum-exp style) and only
then forms a norm, so t = 10^6 and beyond give finite logarithms.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

_LN10 = math.log(10.0)


@jax.jit
def forget_loss(theta: ArrayLike, XU: ArrayLike, yU: ArrayLike) -> Array:
    """Forget loss (1/k)||X_U theta - y_U||^2 (scalar); GA ascends it."""
    residual = jnp.asarray(XU) @ jnp.asarray(theta) - jnp.asarray(yU)  # (k,)
    return residual @ residual / residual.shape[0]


@jax.jit
def ga_step(theta: ArrayLike, XU: ArrayLike, yU: ArrayLike, eta: ArrayLike) -> Array:
    """One GA step theta + (2 eta / k) X_U^T (X_U theta - y_U). theta (d,) -> (d,)."""
    XU = jnp.asarray(XU)
    theta = jnp.asarray(theta)
    k = XU.shape[0]
    return theta + (2.0 * eta / k) * XU.T @ (XU @ theta - jnp.asarray(yU))


@jax.jit
def forget_eigensystem(XU: ArrayLike, eta: ArrayLike) -> tuple[Array, Array, Array, Array]:
    """Thin SVD of X_U and the eigenvalues of M_U on the forget span.

    Returns:
        ``(U, s, V, lam)``: U (k, k), s (k,), V (d, k) orthonormal basis of span(X_U^T),
        lam (k,) = (2 eta / k) s^2, the positive eigenvalues of M_U (eigenvectors = columns of V).
    """
    XU = jnp.asarray(XU)
    k = XU.shape[0]
    U, s, Vt = jnp.linalg.svd(XU, full_matrices=False)
    return U, s, Vt.T, (2.0 * eta / k) * s**2


@jax.jit
def forget_projector(XU: ArrayLike) -> Array:
    """P_U = X_U^T (X_U X_U^T)^-1 X_U (d, d), computed as V V^T from the SVD (X_U full row rank)."""
    _, _, Vt = jnp.linalg.svd(jnp.asarray(XU), full_matrices=False)
    return Vt.T @ Vt


@jax.jit
def ga_update_matrix(XU: ArrayLike, eta: ArrayLike) -> Array:
    """M_U = (2 eta / k) X_U^T X_U (d, d)."""
    XU = jnp.asarray(XU)
    return (2.0 * eta / XU.shape[0]) * XU.T @ XU


@jax.jit
def ga_fixed_point(XU: ArrayLike, yU: ArrayLike) -> Array:
    """theta* = X_U^+ y_U (d,): the minimum-norm interpolant, the fixed point GA moves away from."""
    U, s, Vt = jnp.linalg.svd(jnp.asarray(XU), full_matrices=False)
    return Vt.T @ ((U.T @ jnp.asarray(yU)) / s)


@jax.jit
def ga_trajectory(
    theta0: ArrayLike, XU: ArrayLike, yU: ArrayLike, eta: ArrayLike, ts: ArrayLike
) -> Array:
    """theta_t for every t in ``ts`` in closed form (no iteration). Returns (len(ts), d).

    theta_t = theta_0 + V [((1 + lam)^t - 1) * beta], beta = diag(1/s) U^T (X_U theta_0 - y_U),
    using expm1(t log1p(lam)) for accuracy at small t. Finite while (1 + lam_max)^t fits in
    float64; use :func:`log10_trajectory_norm` beyond that.
    """
    theta0 = jnp.asarray(theta0)
    U, s, V, lam = forget_eigensystem(XU, eta)
    beta = (U.T @ (jnp.asarray(XU) @ theta0 - jnp.asarray(yU))) / s  # (k,)
    ts = jnp.atleast_1d(jnp.asarray(ts, dtype=theta0.dtype))
    growth_minus_one = jnp.expm1(ts[:, None] * jnp.log1p(lam)[None, :])  # (T, k)
    return theta0[None, :] + (growth_minus_one * beta[None, :]) @ V.T  # (T, d)


@jax.jit
def re_distance(theta_a: ArrayLike, theta_b: ArrayLike, Xtest: ArrayLike) -> Array:
    """RE distance of Def. 2.1 for linear predictions: (1/m) ||X_test (theta_a - theta_b)||^2.

    Broadcasts over leading axes of the thetas: (..., d) -> (...).
    """
    Xtest = jnp.asarray(Xtest)
    diff = jnp.asarray(theta_a) - jnp.asarray(theta_b)  # (..., d)
    pred_diff = diff @ Xtest.T  # (..., m)
    return jnp.mean(pred_diff**2, axis=-1)


@jax.jit
def log_sq_norm_of_powers(
    images: ArrayLike, factors: ArrayLike, coeffs: ArrayLike, ts: ArrayLike
) -> Array:
    """log ||sum_j factors_j^t coeffs_j images[:, j]||^2 for every t, without overflow.

    The workhorse of every large-t computation: a linear recursion x_t = G x_{t-1} with symmetric
    G = Q diag(g) Q^T gives x_t = sum_j g_j^t (q_j . x_0) q_j, and a linear readout A x_t is the
    above with images = A Q, factors = g, coeffs = Q^T x_0.

    Each term has log-magnitude l_j(t) = t log|g_j| + log|c_j| and a sign; the largest one,
    L(t) = max_j l_j(t), is factored out, so the remaining weights lie in [-1, 1], and the norm is
    taken after an R factor of ``images`` (||A w|| = ||R w||), which keeps it cheap for long ``ts``.

    Args:
        images: (m, r) readout of each component's unit vector.
        factors: (r,) per-step multipliers g_j (any sign; negative ones alternate).
        coeffs: (r,) initial coefficients c_j.
        ts: (T,) non-negative integer-valued step counts (float or int).

    Returns:
        (T,) natural log of the squared norm; -inf where the vector is exactly zero.
    """
    images = jnp.asarray(images)
    factors = jnp.asarray(factors, dtype=images.dtype)
    coeffs = jnp.asarray(coeffs, dtype=images.dtype)
    ts = jnp.atleast_1d(jnp.asarray(ts, dtype=images.dtype))
    r_factor = jnp.linalg.qr(images, mode="r")  # (min(m, r), r)
    t_col = ts[:, None]  # (T, 1)
    log_growth = jnp.where(t_col == 0, 0.0, t_col * jnp.log(jnp.abs(factors))[None, :])  # (T, r)
    log_mag = log_growth + jnp.log(jnp.abs(coeffs))[None, :]  # (T, r), -inf for c_j = 0
    odd = jnp.mod(t_col, 2.0) == 1.0
    sign = jnp.sign(coeffs)[None, :] * jnp.where((factors[None, :] < 0) & odd, -1.0, 1.0)
    top = jnp.max(log_mag, axis=1, keepdims=True)  # (T, 1)
    finite_top = jnp.isfinite(top)
    safe_top = jnp.where(finite_top, top, 0.0)
    weights = jnp.where(jnp.isfinite(log_mag), sign * jnp.exp(log_mag - safe_top), 0.0)  # (T, r)
    reduced = weights @ r_factor.T  # (T, min(m, r))
    log_norm_sq = 2.0 * safe_top[:, 0] + jnp.log(jnp.sum(reduced**2, axis=1))
    return jnp.where(finite_top[:, 0], log_norm_sq, -jnp.inf)


def _difference_components(delta0: Array, V: Array) -> tuple[Array, Array, Array]:
    """Split delta0 into span coefficients V^T delta0 (k,), unit off-span direction, its norm."""
    span_coeffs = V.T @ delta0  # (k,)
    off = delta0 - V @ span_coeffs  # (d,)
    off_norm = jnp.linalg.norm(off)
    off_unit = off / jnp.where(off_norm > 0, off_norm, 1.0)
    return span_coeffs, off_unit, off_norm


@jax.jit
def log10_re_distance(
    delta0: ArrayLike, XU: ArrayLike, eta: ArrayLike, Xtest: ArrayLike, ts: ArrayLike
) -> Array:
    """Exact log10 d(t) = log10((1/m)||X_test (I + M_U)^t Delta theta_0||^2) for all t in ``ts``.

    Delta theta_t = V diag((1 + lam)^t) V^T Delta theta_0 + (I - P_U) Delta theta_0 (Lemma 3.2;
    the off-span part is a component with factor 1). Stable for t = 10^6 and beyond.

    Args:
        delta0: (d,). XU: (k, d) full row rank. eta: step. Xtest: (m, d). ts: (T,).

    Returns:
        (T,) log10 of the RE distance between the two unlearned models; -inf if Delta theta_0 = 0.
    """
    delta0 = jnp.asarray(delta0)
    Xtest = jnp.asarray(Xtest)
    _, _, V, lam = forget_eigensystem(XU, eta)
    span_coeffs, off_unit, off_norm = _difference_components(delta0, V)
    images = Xtest @ jnp.concatenate([V, off_unit[:, None]], axis=1)  # (m, k + 1)
    factors = jnp.concatenate([1.0 + lam, jnp.ones(1, dtype=lam.dtype)])
    coeffs = jnp.concatenate([span_coeffs, off_norm[None]])
    log_sq = log_sq_norm_of_powers(images, factors, coeffs, ts)
    return (log_sq - jnp.log(Xtest.shape[0])) / _LN10


@jax.jit
def log10_trajectory_norm(
    theta0: ArrayLike, XU: ArrayLike, yU: ArrayLike, eta: ArrayLike, ts: ArrayLike
) -> Array:
    """log10 ||theta_t|| of one GA trajectory, stable for huge t. Returns (T,).

    theta_t = (I - P_U) theta_0 + V [gamma + (1 + lam)^t beta], gamma = V^T theta*, the three
    pieces being orthogonal, so ||theta_t||^2 = ||(I - P_U) theta_0||^2 + sum_j (gamma_j +
    (1 + lam_j)^t beta_j)^2. Each span coordinate is a two-term sum handled in log space.
    """
    theta0 = jnp.asarray(theta0)
    U, s, V, lam = forget_eigensystem(XU, eta)
    gamma = (U.T @ jnp.asarray(yU)) / s  # (k,) = V^T theta*
    beta = (U.T @ (jnp.asarray(XU) @ theta0 - jnp.asarray(yU))) / s  # (k,)
    off_norm = jnp.linalg.norm(theta0 - V @ (V.T @ theta0))
    k = lam.shape[0]
    # Components: k fixed parts gamma_j (factor 1), k growing parts beta_j (factor 1 + lam_j) that
    # add onto the same coordinates, and the off-span norm (factor 1, its own coordinate).
    images = jnp.concatenate(
        [jnp.eye(k + 1, k), jnp.eye(k + 1, k), jnp.eye(k + 1, 1, -k)], axis=1
    )  # (k + 1, 2k + 1)
    factors = jnp.concatenate([jnp.ones(k), 1.0 + lam, jnp.ones(1)])
    coeffs = jnp.concatenate([gamma, beta, off_norm[None]])
    return 0.5 * log_sq_norm_of_powers(images, factors, coeffs, ts) / _LN10


@jax.jit
def log10_forget_loss(
    theta0: ArrayLike, XU: ArrayLike, yU: ArrayLike, eta: ArrayLike, ts: ArrayLike
) -> Array:
    """log10 of the forget loss (1/k)||r_t||^2 along GA, r_t = (I + (2 eta/k) X_U X_U^T)^t r_0.

    In the left singular basis U^T r_t = (1 + lam)^t U^T r_0, so the loss after t steps is
    (1/k) sum_j (1 + lam_j)^{2t} (u_j . r_0)^2: its growth scales with the initial residual.
    Returns (T,).
    """
    XU = jnp.asarray(XU)
    U, _, _, lam = forget_eigensystem(XU, eta)
    r0 = XU @ jnp.asarray(theta0) - jnp.asarray(yU)  # (k,)
    log_sq = log_sq_norm_of_powers(jnp.eye(lam.shape[0]), 1.0 + lam, U.T @ r0, ts)
    return (log_sq - jnp.log(XU.shape[0])) / _LN10


@partial(jax.jit, static_argnames="steps")
def iterate_ga(
    theta0: ArrayLike, XU: ArrayLike, yU: ArrayLike, eta: ArrayLike, steps: int
) -> Array:
    """Reference implementation: ``steps`` GA steps taken one by one with ``jax.grad``.

    Returns (steps + 1, d), the iterates theta_0..theta_steps. For tests and small demos only.
    """
    grad = jax.grad(forget_loss)

    def body(theta, _):
        new = theta + eta * grad(theta, XU, yU)
        return new, new

    theta0 = jnp.asarray(theta0)
    _, thetas = jax.lax.scan(body, theta0, None, length=steps)
    return jnp.concatenate([theta0[None, :], thetas], axis=0)
