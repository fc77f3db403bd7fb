"""GA unlearning: closed-form trajectories vs iterated jax.grad ascent, Lemma 3.2, large-t logs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

import theory as T

SHAPES = [(3, 10, 6, 4), (1, 7, 2, 3)]  # (k, d, nA, m)


def rel_err(a, b) -> float:
    return float(jnp.linalg.norm(jnp.asarray(a) - jnp.asarray(b)) / jnp.linalg.norm(b))


def instance(seed: int, k: int, d: int, n: int, m: int, eta: float = 0.1):
    return T.random_instance(seed, d=d, nA=n, nB=n + 1, k=k, m=m, eta=eta)


def delta0_of(inst):
    return T.history_difference(inst.XA, inst.yA, inst.muA, inst.XB, inst.yB, inst.muB)


@pytest.mark.parametrize("k,d,n,m", SHAPES)
def test_ga_step_and_trajectory_match_iterated_grad(k, d, n, m):
    inst = instance(k + d, k, d, n, m)
    theta0 = jax.random.normal(jax.random.PRNGKey(d), (d,))
    stepped = T.ga_step(theta0, inst.XU, inst.yU, inst.eta)
    by_grad = theta0 + inst.eta * jax.grad(T.forget_loss)(theta0, inst.XU, inst.yU)
    assert rel_err(stepped, by_grad) <= 1e-12
    steps = 120
    iterated = T.iterate_ga(theta0, inst.XU, inst.yU, inst.eta, steps)  # (steps + 1, d)
    closed = jax.jit(T.ga_trajectory)(theta0, inst.XU, inst.yU, inst.eta, jnp.arange(steps + 1))
    for t in (0, 1, 5, 60, steps):
        assert rel_err(closed[t], iterated[t]) <= 1e-9
    # The fixed point does not move, and the off-span part of theta0 never moves.
    star = T.ga_fixed_point(inst.XU, inst.yU)
    assert rel_err(T.ga_step(star, inst.XU, inst.yU, inst.eta), star) <= 1e-12
    P = T.forget_projector(inst.XU)
    off = np.asarray((jnp.eye(d) - P) @ theta0)
    off_last = np.asarray((jnp.eye(d) - P) @ closed[-1])
    assert np.linalg.norm(off_last - off) <= 1e-12 * np.linalg.norm(closed[-1]) + 1e-12
    # log10 ||theta_t|| from the log-space formula.
    log_norm = T.log10_trajectory_norm(theta0, inst.XU, inst.yU, inst.eta, jnp.arange(steps + 1))
    np.testing.assert_allclose(log_norm, jnp.log10(jnp.linalg.norm(iterated, axis=1)), atol=1e-10)
    # The forget loss along GA.
    log_loss = T.log10_forget_loss(theta0, inst.XU, inst.yU, inst.eta, jnp.arange(steps + 1))
    direct = jax.vmap(T.forget_loss, in_axes=(0, None, None))(iterated, inst.XU, inst.yU)
    np.testing.assert_allclose(log_loss, jnp.log10(direct), atol=1e-10)


@pytest.mark.parametrize("k,d,n,m", SHAPES)
def test_projector_update_matrix_and_lemma_3_2(k, d, n, m):
    inst = instance(3 * k + d, k, d, n, m)
    XU = jnp.asarray(inst.XU)
    P = T.forget_projector(XU)
    np.testing.assert_allclose(P, XU.T @ jnp.linalg.solve(XU @ XU.T, XU), atol=1e-12)
    M = T.ga_update_matrix(XU, inst.eta)
    np.testing.assert_allclose(M, (2 * inst.eta / k) * XU.T @ XU, atol=1e-14)
    delta0 = delta0_of(inst)
    theta_ba = jax.random.normal(jax.random.PRNGKey(0), (d,))
    theta_ab = theta_ba + delta0
    ts = jnp.arange(41)
    traj_ab = T.ga_trajectory(theta_ab, XU, inst.yU, inst.eta, ts)
    traj_ba = T.ga_trajectory(theta_ba, XU, inst.yU, inst.eta, ts)
    for t in (0, 1, 13, 40):
        lemma = jnp.linalg.matrix_power(jnp.eye(d) + M, t) @ delta0
        assert rel_err(traj_ab[t] - traj_ba[t], lemma) <= 1e-9
    # Exact RE distance in log space vs the direct distance of the two trajectories.
    direct = T.re_distance(traj_ab, traj_ba, inst.Xtest)
    logd = T.log10_re_distance(delta0, XU, inst.eta, inst.Xtest, ts)
    np.testing.assert_allclose(logd, jnp.log10(direct), atol=2e-10)


def mp_log10_distance(delta0, XU, eta, Xtest, t: int) -> float:
    """Independent high-precision evaluation of log10 d(t) with mpmath (50 digits)."""
    mpmath.mp.dps = 50
    M = (2 * eta / XU.shape[0]) * XU.T @ XU
    evals, evecs = np.linalg.eigh(M)  # float64 eigensystem, then exact-ish powers
    coeffs = evecs.T @ delta0
    pred = [mpmath.mpf(0)] * Xtest.shape[0]
    images = Xtest @ evecs
    for j in range(len(evals)):
        factor = mpmath.power(1 + mpmath.mpf(float(evals[j])), t) * mpmath.mpf(float(coeffs[j]))
        for i in range(Xtest.shape[0]):
            pred[i] += factor * mpmath.mpf(float(images[i, j]))
    total = mpmath.fsum(p**2 for p in pred) / Xtest.shape[0]
    return float(mpmath.log10(total))


def test_million_steps_finite_and_continuous():
    inst = instance(11, 4, 12, 6, 6, eta=0.05)
    delta0 = np.asarray(delta0_of(inst))
    ts = jnp.arange(1_000_001, dtype=jnp.float64)
    logd = jax.jit(T.log10_re_distance)(delta0, inst.XU, inst.eta, inst.Xtest, ts)
    assert logd.shape == (1_000_001,)
    assert bool(jnp.all(jnp.isfinite(logd)))
    # Continues the exact small-t values (direct computation with matrix powers).
    M = np.asarray(T.ga_update_matrix(inst.XU, inst.eta))
    for t in (0, 1, 2, 50, 300):
        dt = np.linalg.matrix_power(np.eye(12) + M, t) @ delta0
        direct = np.mean((inst.Xtest @ dt) ** 2)
        assert abs(float(logd[t]) - np.log10(direct)) <= 1e-9
    # Agrees with a 50-digit evaluation far beyond float64 overflow.
    for t in (10_000, 1_000_000):
        expected = mp_log10_distance(delta0, inst.XU, inst.eta, inst.Xtest, t)
        assert abs(float(logd[t]) - expected) <= 1e-6 * max(1.0, abs(expected))
    # Asymptotic slope: 2 log10(1 + lambda_max).
    lam_max = float(jnp.max(T.forget_eigensystem(inst.XU, inst.eta)[3]))
    slope = float(logd[-1] - logd[-2])
    assert abs(slope - 2 * np.log10(1 + lam_max)) <= 1e-6
    # Trajectory norms at huge t stay finite too and grow like (1 + lambda_max)^t.
    big = jnp.array([1e5, 1e6])
    log_norm = T.log10_trajectory_norm(delta0, inst.XU, inst.yU, inst.eta, big)
    assert bool(jnp.all(jnp.isfinite(log_norm)))
    assert abs(float(log_norm[1] - log_norm[0]) - 9e5 * np.log10(1 + lam_max)) <= 1e-6 * 9e5


def test_log_space_handles_signs_zeros_and_vmap():
    images = jnp.array([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])
    factors = jnp.array([-1.5, 0.0, 1.0])
    coeffs = jnp.array([0.5, 3.0, 0.0])
    ts = jnp.arange(6)
    got = T.log_sq_norm_of_powers(images, factors, coeffs, ts)
    im, fa, co = np.asarray(images), np.asarray(factors), np.asarray(coeffs)
    direct = np.array([np.log(np.sum((im @ (fa**t * co)) ** 2)) for t in range(6)])
    np.testing.assert_allclose(got, direct, atol=1e-12)
    assert float(T.log_sq_norm_of_powers(images, factors, jnp.zeros(3), ts)[0]) == -np.inf
    # vmap over a batch of differences (the shape the sim package batches over).
    inst = instance(5, 3, 9, 5, 4)
    deltas = jax.random.normal(jax.random.PRNGKey(1), (7, 9))
    batched = jax.vmap(T.log10_re_distance, in_axes=(0, None, None, None, None))(
        deltas, inst.XU, inst.eta, inst.Xtest, ts
    )
    single = T.log10_re_distance(deltas[3], inst.XU, inst.eta, inst.Xtest, ts)
    np.testing.assert_allclose(batched[3], single, atol=1e-12)
