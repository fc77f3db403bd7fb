"""Beyond the paper (5b): weakly local unlearning, GA on the forget set plus retain descent.

Objective (minimised by GD with step eta), retain weight lambda >= 0:

    L(theta) = -(1/k)||X_U theta - y_U||^2 + lambda (1/n_R)||X_R theta - y_R||^2,
    theta_t = theta_{t-1} + (2 eta/k) X_U^T r_U - lambda (2 eta/n_R) X_R^T r_R
            = G theta_{t-1} + b,      G = I + M_U - lambda M_R,   M_R = (2 eta/n_R) X_R^T X_R,
                                      b = -(2 eta/k) X_U^T y_U + lambda (2 eta/n_R) X_R^T y_R.

Closed form. G is symmetric: G = Q diag(g) Q^T. In that basis each coordinate follows
z_t = g^t z_0 + b~ (g^t - 1)/(g - 1) (= z_0 + t b~ when g = 1), see :func:`weakly_local_trajectory`.
Two models differ by Delta_t = G^t Delta_0 (b cancels).

Growth bound (generalises Theorem 3.1). Let E be spanned by the eigenvectors of G with |g_j| > 1
(the expanding directions), P_E its projector, p = ||P_E Delta_0||, sigma_E = the smallest singular
value of X_test on E (m >= dim E), C0 = ||X_test||_op ||(I - P_E) Delta_0|| and

    gamma = ||G P_E Delta_0||^2 / p^2   (> 1 whenever p > 0).

Both E and its complement are G-invariant and |g_j| <= 1 on the complement, so
||X_test Delta_t|| >= sigma_E ||G^t P_E Delta_0|| - C0. Writing P_E Delta_0 = sum_j a_j q_j,
||G^t P_E Delta_0||^2 = sum_j a_j^2 (g_j^2)^t >= p^2 gamma^t by Jensen (x -> x^t is convex on
x >= 0 for integer t >= 1, equality at t = 0). Hence, exactly as in the paper, for
t >= max(t0, 0) with t0 = ceil(log(2 C0 / (sigma_E p)) / (log(gamma) / 2)):

    d(t) >= sigma_E^2 p^2 gamma^t / (4m).

So d(t) grows exponentially iff Delta_0 has a component along an expanding eigenvector that the
test set sees. For lambda = 0, E = span(X_U) and gamma = sum_j w_j (1 + lam_j)^2 >= (1 + rho*)^2
(Jensen again): a sharper form of Theorem 3.1 itself (:func:`sharpened_theorem_3_1`).

When does retain regularisation stop the divergence? Let lambda_max(G) > 1 iff there is v with
v^T M_U v > lambda v^T M_R v. (i) If row(X_U) is not inside row(X_R) (always the case when
k + n_R <= d, the overparametrised regime of the paper), take v in row(X_R)^perp with X_U v != 0:
v^T M_R v = 0, so G has an eigenvalue > 1 for EVERY lambda, and a generic Delta_0 diverges
exponentially no matter how much retain weight is used. (ii) If row(X_U) is inside row(X_R), the
largest eigenvalue exceeds 1 iff lambda < lambda_crit, the largest generalised eigenvalue of
((1/k) X_U^T X_U, (1/n_R) X_R^T X_R) on row(X_R) (eta cancels); :func:`critical_retain_weight`.
Growth happens iff the spectral radius of G *along Delta_0*, max{|g_j| : q_j^T Delta_0 != 0},
exceeds 1 (eigenvalues below -1, from too large a step, diverge with alternating sign);
:func:`spectral_radius_along`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from theory.linear import signed_power
from theory.unlearning import forget_eigensystem, log_sq_norm_of_powers

_LN10 = math.log(10.0)


def _mean_sq(X, y, theta):
    residual = jnp.asarray(X) @ theta - jnp.asarray(y)
    return residual @ residual / residual.shape[0]


@jax.jit
def weakly_local_loss(
    theta: ArrayLike,
    XU: ArrayLike,
    yU: ArrayLike,
    XR: ArrayLike,
    yR: ArrayLike,
    retain_weight: ArrayLike,
) -> Array:
    """-(1/k)||X_U theta - y_U||^2 + retain_weight (1/n_R)||X_R theta - y_R||^2 (minimised)."""
    theta = jnp.asarray(theta)
    return -_mean_sq(XU, yU, theta) + retain_weight * _mean_sq(XR, yR, theta)


@jax.jit
def weakly_local_step(
    theta: ArrayLike,
    XU: ArrayLike,
    yU: ArrayLike,
    XR: ArrayLike,
    yR: ArrayLike,
    eta: ArrayLike,
    retain_weight: ArrayLike,
) -> Array:
    """theta + (2 eta/k) X_U^T r_U - retain_weight (2 eta/n_R) X_R^T r_R. (d,) -> (d,)."""
    theta = jnp.asarray(theta)
    XU, XR = jnp.asarray(XU), jnp.asarray(XR)
    ascent = (2.0 * eta / XU.shape[0]) * XU.T @ (XU @ theta - jnp.asarray(yU))
    descent = (2.0 * eta / XR.shape[0]) * XR.T @ (XR @ theta - jnp.asarray(yR))
    return theta + ascent - retain_weight * descent


@jax.jit
def weakly_local_update_matrix(
    XU: ArrayLike, XR: ArrayLike, eta: ArrayLike, retain_weight: ArrayLike
) -> Array:
    """G = I + M_U - retain_weight M_R (d, d)."""
    XU, XR = jnp.asarray(XU), jnp.asarray(XR)
    d = XU.shape[1]
    M_U = (2.0 * eta / XU.shape[0]) * XU.T @ XU
    M_R = (2.0 * eta / XR.shape[0]) * XR.T @ XR
    return jnp.eye(d, dtype=XU.dtype) + M_U - retain_weight * M_R


def _geometric_sum(g: Array, t: Array) -> Array:
    """sum_{s<t} g^s = (g^t - 1)/(g - 1), accurate near g = 1 (expm1/log1p), = t at g = 1."""
    gm1 = g - 1.0
    near_one = jnp.abs(gm1) < 0.5
    safe_gm1 = jnp.where(gm1 == 0, 1.0, gm1)
    smooth = jnp.expm1(t * jnp.log1p(jnp.where(near_one, gm1, 0.0))) / safe_gm1
    general = (signed_power(g, t) - 1.0) / safe_gm1
    return jnp.where(gm1 == 0, t, jnp.where(near_one, smooth, general))


@jax.jit
def weakly_local_trajectory(
    theta0: ArrayLike,
    XU: ArrayLike,
    yU: ArrayLike,
    XR: ArrayLike,
    yR: ArrayLike,
    eta: ArrayLike,
    retain_weight: ArrayLike,
    ts: ArrayLike,
) -> Array:
    """Closed-form iterates theta_t for t in ``ts`` (no iteration). Returns (len(ts), d)."""
    theta0 = jnp.asarray(theta0)
    XU, XR = jnp.asarray(XU), jnp.asarray(XR)
    G = weakly_local_update_matrix(XU, XR, eta, retain_weight)
    g, Q = jnp.linalg.eigh(G)
    b = -(2.0 * eta / XU.shape[0]) * XU.T @ jnp.asarray(yU) + retain_weight * (
        2.0 * eta / XR.shape[0]
    ) * XR.T @ jnp.asarray(yR)
    ts = jnp.atleast_1d(jnp.asarray(ts, dtype=theta0.dtype))[:, None]  # (T, 1)
    z0, b_tilde = Q.T @ theta0, Q.T @ b
    z_t = signed_power(g[None, :], ts) * z0[None, :] + _geometric_sum(g[None, :], ts) * b_tilde
    return z_t @ Q.T


@jax.jit
def weakly_local_log10_re_distance(
    delta0: ArrayLike,
    XU: ArrayLike,
    XR: ArrayLike,
    eta: ArrayLike,
    retain_weight: ArrayLike,
    Xtest: ArrayLike,
    ts: ArrayLike,
) -> Array:
    """Exact log10 (1/m)||X_test G^t Delta_0||^2 for t in ``ts``, stable for huge t. (T,)."""
    Xtest = jnp.asarray(Xtest)
    g, Q = jnp.linalg.eigh(weakly_local_update_matrix(XU, XR, eta, retain_weight))
    log_sq = log_sq_norm_of_powers(Xtest @ Q, g, Q.T @ jnp.asarray(delta0), ts)
    return (log_sq - jnp.log(Xtest.shape[0])) / _LN10


class GrowthBound(NamedTuple):
    """The weakly local growth bound d(t) >= sigma_E^2 p^2 gamma^t / (4m) for t >= max(t0, 0)."""

    proj_norm: Array  # p = ||P_E Delta_0||, E = expanding eigen-directions of G (|g| > 1)
    off_norm: Array  # ||(I - P_E) Delta_0||
    gamma: Array  # ||G P_E Delta_0||^2 / p^2 (> 1 when p > 0)
    sigma_E: Array  # smallest singular value of X_test restricted to E
    C0: Array
    t0: Array  # +inf if no expanding direction carries Delta_0 (p = 0) or sigma_E = 0
    m: Array
    expanding_dim: Array  # dim E (float)


@jax.jit
def growth_bound_from_update(
    delta0: ArrayLike, G: ArrayLike, Xtest: ArrayLike, rel_tol: ArrayLike = 1e-10
) -> GrowthBound:
    """:class:`GrowthBound` for Delta_t = G^t Delta_0, G symmetric (d, d), test set (m, d).

    E is spanned by the eigenvectors with |g| - 1 > rel_tol * max(|g| - 1) (a traced mask, so the
    function stays jit/vmap-friendly; sigma_E is the square root of the smallest eigenvalue of
    the test Gram matrix restricted to E, the other directions being pushed out of the minimum).
    """
    delta0 = jnp.asarray(delta0)
    Xtest = jnp.asarray(Xtest)
    m = Xtest.shape[0]
    g, Q = jnp.linalg.eigh(jnp.asarray(G))
    coeffs = Q.T @ delta0  # (d,)
    dev = jnp.abs(g) - 1.0
    moving = (dev > 0) & (dev > rel_tol * jnp.max(dev))
    proj_sq = jnp.sum(jnp.where(moving, coeffs**2, 0.0))
    off_norm = jnp.sqrt(jnp.sum(jnp.where(moving, 0.0, coeffs**2)))
    has_proj = proj_sq > 0
    gamma = jnp.where(
        has_proj,
        jnp.sum(jnp.where(moving, coeffs**2 * g**2, 0.0)) / jnp.where(has_proj, proj_sq, 1.0),
        0.0,
    )
    images = Xtest @ Q  # (m, d)
    gram = images.T @ images
    mask2 = moving[:, None] & moving[None, :]
    big = jnp.trace(gram) + 1.0
    restricted = jnp.where(mask2, gram, 0.0) + jnp.diag(jnp.where(moving, 0.0, big))
    sigma_E = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(restricted)[0], 0.0))
    sigma_E = jnp.where(jnp.sum(moving) <= m, sigma_E, 0.0)
    proj_norm = jnp.sqrt(proj_sq)
    C0 = jnp.linalg.norm(Xtest, ord=2) * off_norm
    log_ratio = jnp.log(2.0 * C0) - jnp.log(sigma_E * proj_norm)
    t0 = jnp.ceil(log_ratio / (0.5 * jnp.log(gamma)))
    t0 = jnp.where(has_proj & (sigma_E > 0) & (gamma > 1.0), t0, jnp.inf)
    return GrowthBound(
        proj_norm=proj_norm,
        off_norm=off_norm,
        gamma=gamma,
        sigma_E=sigma_E,
        C0=C0,
        t0=t0,
        m=jnp.asarray(m, dtype=delta0.dtype),
        expanding_dim=jnp.sum(moving).astype(delta0.dtype),
    )


@jax.jit
def weakly_local_growth_bound(
    delta0: ArrayLike,
    XU: ArrayLike,
    XR: ArrayLike,
    eta: ArrayLike,
    retain_weight: ArrayLike,
    Xtest: ArrayLike,
) -> GrowthBound:
    """:func:`growth_bound_from_update` for G = I + M_U - retain_weight M_R."""
    G = weakly_local_update_matrix(XU, XR, eta, retain_weight)
    return growth_bound_from_update(delta0, G, Xtest)


@jax.jit
def log10_growth_bound(q: GrowthBound, ts: ArrayLike) -> Array:
    """log10 of sigma_E^2 p^2 gamma^t / (4m) for t in ``ts`` (guaranteed for t >= max(t0, 0))."""
    ts = jnp.atleast_1d(jnp.asarray(ts, dtype=q.gamma.dtype))
    log_const = 2.0 * jnp.log(q.sigma_E) + 2.0 * jnp.log(q.proj_norm) - jnp.log(4.0 * q.m)
    return (log_const + ts * jnp.log(q.gamma)) / _LN10


@jax.jit
def sharpened_theorem_3_1(
    delta0: ArrayLike, XU: ArrayLike, eta: ArrayLike, Xtest: ArrayLike
) -> GrowthBound:
    """Theorem 3.1 with (1 + rho*)^2 replaced by gamma = ||(I + M_U) P_U D||^2/||P_U D||^2 >= it.

    Same p, sigma and C0 as the paper (E = span(X_U)), a larger growth rate; t0 may differ.
    """
    _, _, V, lam = forget_eigensystem(XU, eta)
    G = jnp.eye(V.shape[0], dtype=V.dtype) + (V * lam[None, :]) @ V.T
    return growth_bound_from_update(delta0, G, Xtest)


@jax.jit
def spectral_radius_along(delta0: ArrayLike, G: ArrayLike, rel_tol: ArrayLike = 1e-12) -> Array:
    """max{|g_j| : |q_j^T Delta_0| > rel_tol ||Delta_0||}: d(t) is unbounded iff this is > 1
    (for a test set that sees the corresponding eigenvector)."""
    g, Q = jnp.linalg.eigh(jnp.asarray(G))
    delta0 = jnp.asarray(delta0)
    present = jnp.abs(Q.T @ delta0) > rel_tol * jnp.linalg.norm(delta0)
    return jnp.max(jnp.where(present, jnp.abs(g), 0.0))


@jax.jit
def critical_retain_weight(XU: ArrayLike, XR: ArrayLike, contain_tol: ArrayLike = 1e-9) -> Array:
    """lambda_crit: lambda_max(I + M_U - lambda M_R) > 1 iff lambda < lambda_crit (any eta > 0).

    +inf when row(X_U) is not contained in row(X_R) (relative residual of projecting the rows of
    X_U on row(X_R) above ``contain_tol``): then no retain weight stops the divergence.
    Otherwise the largest generalised eigenvalue of ((1/k) X_U^T X_U, (1/n_R) X_R^T X_R) on
    row(X_R) (X_R assumed of full rank min(n_R, d)).
    """
    XU, XR = jnp.asarray(XU), jnp.asarray(XR)
    k, n_R = XU.shape[0], XR.shape[0]
    _, s_R, Vt_R = jnp.linalg.svd(XR, full_matrices=False)  # Vt_R (min(n_R, d), d)
    inside = XU @ Vt_R.T  # (k, r_R) coordinates of X_U rows in row(X_R)
    outside = jnp.linalg.norm(XU - inside @ Vt_R) / jnp.linalg.norm(XU)
    scale = 1.0 / jnp.sqrt(s_R**2 / n_R)  # D^{-1/2}
    whitened = (inside * scale[None, :]).T @ (inside * scale[None, :]) / k
    lam_crit = jnp.linalg.eigvalsh(whitened)[-1]
    return jnp.where(outside > contain_tol, jnp.inf, lam_crit)


@partial(jax.jit, static_argnames="steps")
def iterate_weakly_local(
    theta0: ArrayLike,
    XU: ArrayLike,
    yU: ArrayLike,
    XR: ArrayLike,
    yR: ArrayLike,
    eta: ArrayLike,
    retain_weight: ArrayLike,
    steps: int,
) -> Array:
    """Reference: ``steps`` steps theta <- theta - eta grad L with ``jax.grad`` (for tests).

    Returns (steps + 1, d), the iterates theta_0..theta_steps.
    """
    grad = jax.grad(weakly_local_loss)

    def body(theta, _):
        new = theta - eta * grad(theta, XU, yU, XR, yR, retain_weight)
        return new, new

    theta0 = jnp.asarray(theta0)
    _, thetas = jax.lax.scan(body, theta0, None, length=steps)
    return jnp.concatenate([theta0[None, :], thetas], axis=0)
