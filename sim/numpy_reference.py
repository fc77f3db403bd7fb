"""Plain numpy loops over instances: the benchmark's baselines and an independent test reference.

``direct_check`` follows the definitions literally (d x d solves for both training orders, the
projector P_U, the SVD of X_test P_U, and n_steps explicit GA updates of both models with the RE
distance evaluated after each); ``spectral_check_numpy`` is the same k-dimensional algorithm as
:func:`sim.spectral.spectral_check`, one instance at a time. Both return, per instance,
(log10 d(t) for t = 0..T, t0, log10 bound(t)).
"""

from __future__ import annotations

import math

import numpy as np


def _log10_mean_sq(v: np.ndarray) -> float:
    """log10(mean(v^2)) without overflow: scale by max |v| first."""
    scale = np.max(np.abs(v))
    if scale == 0:
        return -math.inf
    return 2.0 * math.log10(scale) + math.log10(np.mean((v / scale) ** 2))


def _bound(proj_sq, rho, sigma, c0, m, ts):
    t0 = math.ceil(math.log(2 * c0 / (sigma * math.sqrt(proj_sq))) / math.log1p(rho))
    log10_bound = math.log10(sigma**2 * proj_sq / (4 * m)) + 2 * ts * math.log10(1 + rho)
    return t0, log10_bound


def direct_check(inst: dict[str, np.ndarray], n_steps: int):
    """Theorem 3.1 on one instance by explicit iteration. ``inst`` holds LinearInstance fields."""
    XA, yA, XB, yB = inst["XA"], inst["yA"], inst["XB"], inst["yB"]
    XU, yU, Xt = inst["XU"], inst["yU"], inst["Xtest"]
    muA, muB, eta = float(inst["muA"]), float(inst["muB"]), float(inst["eta"])
    k, d = XU.shape
    m = Xt.shape[0]
    eye = np.eye(d)

    def stage(X, y, prev, mu):
        return np.linalg.solve(X.T @ X + mu * eye, X.T @ y + mu * prev)

    zero = np.zeros(d)
    th_ab = stage(XB, yB, stage(XA, yA, zero, muA), muB)
    th_ba = stage(XA, yA, stage(XB, yB, zero, muB), muA)
    delta0 = th_ab - th_ba
    P = XU.T @ np.linalg.solve(XU @ XU.T, XU)  # (d, d) projector onto the forget span
    M = (2 * eta / k) * XU.T @ XU
    p = P @ delta0
    proj_sq = float(p @ p)
    rho = float(p @ M @ p) / proj_sq
    sigma = np.linalg.svd(Xt @ P, compute_uv=False)[k - 1]
    c0 = np.linalg.norm(Xt, 2) * np.linalg.norm(delta0 - p)
    log10_d = np.empty(n_steps + 1)
    log10_d[0] = _log10_mean_sq(Xt @ delta0)
    for t in range(1, n_steps + 1):
        th_ab = th_ab + (2 * eta / k) * XU.T @ (XU @ th_ab - yU)
        th_ba = th_ba + (2 * eta / k) * XU.T @ (XU @ th_ba - yU)
        log10_d[t] = _log10_mean_sq(Xt @ th_ab - Xt @ th_ba)
    t0, log10_bound = _bound(proj_sq, rho, sigma, c0, m, np.arange(n_steps + 1))
    return log10_d, t0, log10_bound


def spectral_check_numpy(inst: dict[str, np.ndarray], n_steps: int):
    """The k-dimensional algorithm of sim.spectral, per instance (Woodbury stages when n < d)."""
    XA, yA, XB, yB = inst["XA"], inst["yA"], inst["XB"], inst["yB"]
    XU, Xt = inst["XU"], inst["Xtest"]
    muA, muB, eta = float(inst["muA"]), float(inst["muB"]), float(inst["eta"])
    k, d = XU.shape
    m = Xt.shape[0]

    def factor(X, mu):
        n = X.shape[0]
        gram = X @ X.T if n < d else X.T @ X
        return np.linalg.cholesky(gram + mu * np.eye(gram.shape[0]))

    def apply(X, L, mu, y, prev):
        r = X.T @ y + mu * prev
        solve = lambda b: np.linalg.solve(L.T, np.linalg.solve(L, b))  # noqa: E731
        return (r - X.T @ solve(X @ r)) / mu if X.shape[0] < d else solve(r)

    La, Lb = factor(XA, muA), factor(XB, muB)
    zero = np.zeros(d)
    th_ab = apply(XB, Lb, muB, yB, apply(XA, La, muA, yA, zero))
    th_ba = apply(XA, La, muA, yA, apply(XB, Lb, muB, yB, zero))
    delta0 = th_ab - th_ba
    c = 2 * eta / k
    lam, V = np.linalg.eigh(XU @ XU.T)
    U = (XU.T @ V) / np.sqrt(lam)
    a = U.T @ delta0
    off = delta0 - U @ a
    W, w = Xt @ U, Xt @ off
    lg = np.log1p(c * lam)
    ts = np.arange(n_steps + 1.0)
    log_scale = ts * lg[-1]
    g = np.exp(ts[:, None] * (lg - lg[-1])[None, :]) * a
    v = w[None, :] * np.exp(-log_scale)[:, None] + g @ W.T
    log10_d = (2 * log_scale + np.log(np.sum(v * v, axis=1) / m)) / math.log(10)
    proj_sq = float(a @ a)
    rho = c * float(lam @ (a * a)) / proj_sq
    sigma = math.sqrt(max(np.linalg.eigvalsh(W.T @ W)[0], 0.0))
    gram_t = Xt @ Xt.T if m <= d else Xt.T @ Xt
    c0 = math.sqrt(max(np.linalg.eigvalsh(gram_t)[-1], 0.0)) * np.linalg.norm(off)
    t0, log10_bound = _bound(proj_sq, rho, sigma, c0, m, ts)
    return log10_d, t0, log10_bound
