"""Theorem 3.1 on one instance, computed in the k-dimensional row space of X_U.

Everything gradient ascent (GA) does lives in the row space of the forget set (Lemma 3.2): with
G_U = X_U X_U^T = V diag(lam) V^T (k x k) the unit vectors u_i = X_U^T v_i / sqrt(lam_i) are the
eigenvectors of X_U^T X_U, M_U = (2 eta / k) X_U^T X_U has eigenvalues c lam_i (c = 2 eta / k), and

    Delta_t = (I - P_U) Delta_0 + sum_i (1 + c lam_i)^t a_i u_i,     a_i = u_i^T Delta_0.

So X_test Delta_t = w + W g(t) with w = X_test (I - P_U) Delta_0 (m,), W = X_test U (m, k),
g_i(t) = (1 + c lam_i)^t a_i, and d(t) = ||X_test Delta_t||^2 / m for t = 0..T costs O(T m k) after
one k x k eigendecomposition; no d x d matrix is ever formed. Growth factors overflow float64 for
large eta t, so d(t) is computed in log space: the largest growth (1 + c lam_max)^t is factored out.

The theorem's quantities (paper Thm. 3.1, NOTES.md):
    rho* = <P Delta_0, M_U P Delta_0> / ||P Delta_0||^2 = c sum lam_i a_i^2 / sum a_i^2
    sigma_U = sigma_k(X_test P_U) = sigma_min(W)           (W has orthonormal-basis columns)
    C0 = ||X_test||_op ||(I - P_U) Delta_0||
    t0 = ceil(log(2 C0 / (sigma_U ||P Delta_0||)) / log(1 + rho*))
    bound(t) = sigma_U^2 ||P Delta_0||^2 (1 + rho*)^(2t) / (4m),  claimed d(t) >= bound(t), t >= t0.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sim.instances import LinearInstance

LN10 = jnp.log(10.0)


class RidgeFactor(NamedTuple):
    """Cholesky factor of the smaller of X^T X + mu I (d x d) and X X^T + mu I (n x n)."""

    X: jax.Array  # (n, d)
    chol: jax.Array  # (min(n, d), min(n, d)) lower triangular
    mu: jax.Array  # ()


def ridge_factor(X: jax.Array, mu: jax.Array) -> RidgeFactor:
    """Factor a stage once; both orders reuse it (the shapes pick the form at trace time)."""
    n, d = X.shape
    gram = X @ X.T if n < d else X.T @ X  # (n, n) or (d, d)
    eye = jnp.eye(gram.shape[0], dtype=X.dtype)
    return RidgeFactor(X, jnp.linalg.cholesky(gram + mu * eye), mu)


def _chol_solve(chol: jax.Array, b: jax.Array) -> jax.Array:
    z = jax.scipy.linalg.solve_triangular(chol, b, lower=True)
    return jax.scipy.linalg.solve_triangular(chol.T, z, lower=False)


def ridge_apply(f: RidgeFactor, y: jax.Array, theta_prev: jax.Array) -> jax.Array:
    """One proximal stage: argmin ||X theta - y||^2 + mu ||theta - theta_prev||^2.

    theta = (X^T X + mu I)^{-1} r with r = X^T y + mu theta_prev; for n < d through Woodbury,
    (X^T X + mu I)^{-1} r = (r - X^T (X X^T + mu I)^{-1} X r) / mu, an n x n solve.
    """
    n, d = f.X.shape
    r = f.X.T @ y + f.mu * theta_prev  # (d,)
    if n < d:
        return (r - f.X.T @ _chol_solve(f.chol, f.X @ r)) / f.mu
    return _chol_solve(f.chol, r)


def order_difference(inst: LinearInstance, theta0: jax.Array | None = None) -> jax.Array:
    """Delta_0 = theta_AB - theta_BA (Eq. 1), both orders from theta0 (default 0). (d,)"""
    d = inst.XA.shape[1]
    theta0 = jnp.zeros(d, inst.XA.dtype) if theta0 is None else theta0
    fa, fb = ridge_factor(inst.XA, inst.muA), ridge_factor(inst.XB, inst.muB)
    theta_ab = ridge_apply(fb, inst.yB, ridge_apply(fa, inst.yA, theta0))
    theta_ba = ridge_apply(fa, inst.yA, ridge_apply(fb, inst.yB, theta0))
    return theta_ab - theta_ba


def op_norm(X: jax.Array) -> jax.Array:
    """Largest singular value of X (m, d), from the eigenvalues of the smaller Gram matrix."""
    m, d = X.shape
    gram = X @ X.T if m <= d else X.T @ X
    return jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(gram)[-1], 0.0))


class SpectralCheck(NamedTuple):
    """Theorem 3.1 evaluated on one instance (a batch adds a leading axis to every field).

    log10_distance and log10_bound are (T+1,) over t = 0..T; the rest are scalars.
    """

    log10_distance: jax.Array  # log10 d(theta_AB^(t), theta_BA^(t))
    log10_bound: jax.Array  # log10 of the Theorem 3.1 lower bound
    t0: jax.Array  # the theorem's t0 (may be negative; the claim starts at max(t0, 0))
    rho_star: jax.Array
    sigma_u: jax.Array
    proj_norm: jax.Array  # ||P_U Delta_0||
    off_norm: jax.Array  # ||(I - P_U) Delta_0||
    c0: jax.Array
    checked: jax.Array  # bool: max(t0, 0) <= T, so at least one t was checked
    holds: jax.Array  # bool: d(t) >= bound(t) (up to rtol) for every checked t
    min_log10_margin: jax.Array  # min over checked t of log10 d - log10 bound (inf if none)
    log10_tightness_final: jax.Array  # log10(d(T) / bound(T))
    log10_tightness_at_start: jax.Array  # log10(d / bound) at t = min(max(t0, 0), T)


def spectral_check(
    delta0: jax.Array,
    XU: jax.Array,
    eta: jax.Array,
    Xtest: jax.Array,
    n_steps: int,
    rtol: float = 1e-9,
) -> SpectralCheck:
    """Exact log10 d(t) for t = 0..n_steps and the Theorem 3.1 bound, for one instance.

    Args:
        delta0: (d,) theta_AB - theta_BA before unlearning.
        XU: (k, d) forget features, full row rank.
        eta: GA step (the update is theta + (2 eta / k) X_U^T (X_U theta - y_U)).
        Xtest: (m, d) test features, m >= k.
        n_steps: T, the number of GA steps (static).
        rtol: relative tolerance for ``holds`` (floating point slack, log-space).
    """
    k = XU.shape[0]
    m = Xtest.shape[0]
    c = 2.0 * eta / k
    lam, V = jnp.linalg.eigh(XU @ XU.T)  # (k,), (k, k), ascending
    U = (XU.T @ V) / jnp.sqrt(lam)  # (d, k) orthonormal basis of the row space of X_U
    a = U.T @ delta0  # (k,) eigen-coefficients of P_U Delta_0
    off = delta0 - U @ a  # (d,) the part GA never moves
    W = Xtest @ U  # (m, k)
    w = Xtest @ off  # (m,)

    log_growth = jnp.log1p(c * lam)  # (k,) ascending, last is the largest
    ts = jnp.arange(n_steps + 1, dtype=delta0.dtype)  # (T+1,)
    log_scale = ts * log_growth[-1]  # (T+1,) log of the largest growth, factored out
    g = jnp.exp(ts[:, None] * (log_growth - log_growth[-1])[None, :]) * a  # (T+1, k)
    v = w[None, :] * jnp.exp(-log_scale)[:, None] + g @ W.T  # (T+1, m) = X_test Delta_t / scale
    log_d = 2.0 * log_scale + jnp.log(jnp.sum(v * v, axis=1) / m)
    log10_distance = log_d / LN10

    proj_sq = jnp.sum(a * a)
    rho_star = c * jnp.sum(lam * a * a) / proj_sq
    sigma_u = jnp.sqrt(jnp.maximum(jnp.linalg.eigvalsh(W.T @ W)[0], 0.0))
    off_norm = jnp.linalg.norm(off)
    c0 = op_norm(Xtest) * off_norm
    proj_norm = jnp.sqrt(proj_sq)
    t0 = jnp.ceil(jnp.log(2.0 * c0 / (sigma_u * proj_norm)) / jnp.log1p(rho_star))
    log10_bound = (
        jnp.log10(sigma_u**2 * proj_sq / (4.0 * m)) + 2.0 * ts * jnp.log1p(rho_star) / LN10
    )

    start = jnp.maximum(t0, 0.0)
    in_claim = ts >= start
    margin = log10_distance - log10_bound
    min_margin = jnp.min(jnp.where(in_claim, margin, jnp.inf))
    return SpectralCheck(
        log10_distance=log10_distance,
        log10_bound=log10_bound,
        t0=t0,
        rho_star=rho_star,
        sigma_u=sigma_u,
        proj_norm=proj_norm,
        off_norm=off_norm,
        c0=c0,
        checked=start <= n_steps,
        holds=min_margin >= jnp.log10(1.0 - rtol),
        min_log10_margin=min_margin,
        log10_tightness_final=margin[-1],
        log10_tightness_at_start=margin[jnp.clip(start, 0, n_steps).astype(jnp.int32)],
    )


@partial(jax.jit, static_argnums=(1,))
def check_instance(inst: LinearInstance, n_steps: int) -> SpectralCheck:
    """Delta_0 from the two training orders, then :func:`spectral_check`."""
    return spectral_check(order_difference(inst), inst.XU, inst.eta, inst.Xtest, n_steps)
