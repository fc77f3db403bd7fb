"""Weakly local unlearning (GA + retain descent): closed form, growth bound, critical weight."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory as T
from theory import weakly_local as W


def rel_err(a, b) -> float:
    return float(jnp.linalg.norm(jnp.asarray(a) - jnp.asarray(b)) / jnp.linalg.norm(b))


def setup(seed: int, d: int, k: int, n_R: int, m: int, contained: bool = False):
    inst = T.random_instance(seed, d=d, nA=5, nB=6, k=k, m=m, eta=0.05)
    rng = np.random.default_rng(seed)
    XR = rng.normal(size=(n_R, d)) / np.sqrt(d)
    if contained:  # forget rows inside the retain row space
        XU = rng.normal(size=(k, n_R)) @ XR / np.sqrt(n_R)
    else:
        XU = inst.XU
    yR = rng.normal(size=n_R)
    delta0 = T.history_difference(inst.XA, inst.yA, 1.0, inst.XB, inst.yB, 1.0)
    return inst, XU, XR, yR, delta0


@pytest.mark.parametrize("d,k,n_R,lam", [(10, 3, 4, 0.5), (6, 2, 12, 3.0)])
def test_trajectory_and_difference_match_iterated_grad(d, k, n_R, lam):
    inst, XU, XR, yR, delta0 = setup(d + k, d, k, n_R, m=max(k, 5))
    theta0 = jnp.linspace(-1.0, 1.0, d)
    steps = 100
    iterated = W.iterate_weakly_local(theta0, XU, inst.yU, XR, yR, 0.05, lam, steps)
    closed = W.weakly_local_trajectory(
        theta0, XU, inst.yU, XR, yR, 0.05, lam, jnp.arange(steps + 1)
    )
    for t in (0, 1, 9, 50, steps):
        assert rel_err(closed[t], iterated[t]) <= 1e-9
    one = W.weakly_local_step(theta0, XU, inst.yU, XR, yR, 0.05, lam)
    assert rel_err(one, iterated[1]) <= 1e-12
    G = W.weakly_local_update_matrix(XU, XR, 0.05, lam)
    other = W.iterate_weakly_local(theta0 + delta0, XU, inst.yU, XR, yR, 0.05, lam, steps)
    for t in (0, 30, steps):
        lemma = np.linalg.matrix_power(np.asarray(G), t) @ np.asarray(delta0)
        assert rel_err(other[t] - iterated[t], lemma) <= 1e-9
    logd = W.weakly_local_log10_re_distance(
        delta0, XU, XR, 0.05, lam, inst.Xtest, jnp.arange(steps + 1)
    )
    direct = T.re_distance(other, iterated, inst.Xtest)
    np.testing.assert_allclose(logd, np.log10(direct), atol=1e-9)


def test_no_retain_weight_stops_divergence_when_forget_span_escapes_retain_span():
    inst, XU, XR, yR, delta0 = setup(1, d=12, k=3, n_R=5, m=8)
    assert float(W.critical_retain_weight(XU, XR)) == np.inf
    for lam in (1.0, 100.0, 1e4):
        eta = 0.05 / lam  # small enough that no eigenvalue of G drops below -1
        G = W.weakly_local_update_matrix(XU, XR, eta, lam)
        assert float(W.spectral_radius_along(delta0, G)) > 1.0
        assert float(jnp.min(jnp.linalg.eigvalsh(G))) > -1.0
        logd = W.weakly_local_log10_re_distance(
            delta0, XU, XR, eta, lam, inst.Xtest, jnp.array([0.0, 1e7])
        )
        assert float(logd[1]) > float(logd[0]) + 1.0  # still grows without bound


def test_critical_retain_weight_separates_growth_from_decay():
    inst, XU, XR, yR, delta0 = setup(2, d=8, k=2, n_R=5, m=8, contained=True)
    lam_c = float(W.critical_retain_weight(XU, XR))
    assert np.isfinite(lam_c) and lam_c > 0
    # Independent check: generalised eigenproblem with scipy.
    from scipy.linalg import eigh as sp_eigh

    _, _, vt = np.linalg.svd(XR, full_matrices=False)
    A = vt @ (XU.T @ XU / 2) @ vt.T
    B = vt @ (XR.T @ XR / 5) @ vt.T
    assert np.isclose(sp_eigh(A, B, eigvals_only=True)[-1], lam_c, rtol=1e-9)
    eta = 0.02
    below = W.weakly_local_update_matrix(XU, XR, eta, 0.98 * lam_c)
    above = W.weakly_local_update_matrix(XU, XR, eta, 1.02 * lam_c)
    assert float(jnp.linalg.eigvalsh(below)[-1]) > 1.0
    assert float(jnp.linalg.eigvalsh(above)[-1]) <= 1.0 + 1e-12
    assert float(jnp.linalg.eigvalsh(above)[0]) >= -1.0
    ts = jnp.array([0.0, 1e5])
    grow = W.weakly_local_log10_re_distance(delta0, XU, XR, eta, 0.98 * lam_c, inst.Xtest, ts)
    stay = W.weakly_local_log10_re_distance(delta0, XU, XR, eta, 1.02 * lam_c, inst.Xtest, ts)
    assert float(grow[1]) > float(grow[0]) + 5.0
    bound_stay = np.log10(np.linalg.norm(inst.Xtest, 2) ** 2 * float(jnp.sum(delta0**2)) / 8)
    assert float(stay[1]) <= bound_stay + 1e-9  # |g| <= 1: d(t) <= ||Xtest||^2 ||D0||^2 / m


def test_growth_bound_holds_and_sharpens_theorem_3_1():
    d, k, n_R, m = 9, 2, 3, 7

    n = 200
    rng = np.random.default_rng(9)
    feats = lambda rows: rng.normal(size=(n, rows, d)) / np.sqrt(d)
    XA, XB, XU, XR, Xtest = feats(4), feats(4), feats(k), feats(n_R), feats(m)
    yA, yB = rng.normal(size=(n, 4)), rng.normal(size=(n, 4))

    @jax.jit
    def one(XA, yA, XB, yB, XU, XR, Xtest, lam):
        delta0 = T.history_difference(XA, yA, 1.0, XB, yB, 1.0)
        q = W.weakly_local_growth_bound(delta0, XU, XR, 0.05, lam, Xtest)
        ts = jnp.maximum(q.t0, 0.0) + jnp.array([0.0, 1.0, 10.0, 1e4])
        ts = jnp.where(jnp.isfinite(ts), ts, 0.0)
        exact = W.weakly_local_log10_re_distance(delta0, XU, XR, 0.05, lam, Xtest, ts)
        slack = jnp.where(jnp.isfinite(q.t0), jnp.min(exact - W.log10_growth_bound(q, ts)), jnp.inf)
        # lambda = 0: the sharpened bound vs the paper's.
        paper = T.theorem_3_1(delta0, XU, 0.05, Xtest)
        sharp = W.sharpened_theorem_3_1(delta0, XU, 0.05, Xtest)
        return (
            slack,
            q.gamma,
            sharp.gamma - (1 + paper.rho_star) ** 2,
            sharp.sigma_E - paper.sigma_U,
        )

    lams = jnp.linspace(0.0, 5.0, n)
    slack, gamma, gap, sigma_gap = jax.vmap(one)(XA, yA, XB, yB, XU, XR, Xtest, lams)
    assert float(jnp.min(slack)) >= -1e-9
    assert bool(jnp.all(gamma > 1))  # k + n_R < d: an expanding direction for every lambda
    assert float(jnp.min(gap)) >= -1e-12  # gamma >= (1 + rho*)^2
    assert float(jnp.max(jnp.abs(sigma_gap))) <= 1e-10
