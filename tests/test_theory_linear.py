"""Staged proximal-ridge training: closed forms against jax.grad, Eq. 3, Lemma C.1."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory as T

SHAPES = [(12, 20), (30, 8), (1, 4)]  # (n, d): under- and over-determined stages


def rel_err(a, b) -> float:
    return float(jnp.linalg.norm(jnp.asarray(a) - jnp.asarray(b)) / jnp.linalg.norm(b))


def random_stage(seed: int, n: int, d: int):
    """(X (n, d), y (n,), theta_prev (d,)) drawn with numpy."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) / np.sqrt(d), rng.normal(size=n), rng.normal(size=d)


@partial(jax.jit, static_argnames="steps")
def iterate_gd(X, y, theta_prev, mu, lr, steps):
    grad = jax.grad(T.stage_loss)

    def body(theta, _):
        return theta - lr * grad(theta, X, y, theta_prev, mu), None

    theta, _ = jax.lax.scan(body, jnp.asarray(theta_prev), None, length=steps)
    return theta


ridge_stage = jax.jit(T.ridge_stage)
gd_stage = jax.jit(T.gd_stage)
history_difference = jax.jit(T.history_difference)


@pytest.mark.parametrize("n,d,mu", [(12, 20, 2.0), (30, 8, 0.3), (1, 4, 2.0)])
def test_ridge_stage_is_stationary_and_is_gd_limit(n, d, mu):
    X, y, theta_prev = random_stage(n * 100 + d, n, d)
    theta = ridge_stage(X, y, theta_prev, mu)
    grad = jax.grad(T.stage_loss)(theta, X, y, theta_prev, mu)
    assert float(jnp.linalg.norm(grad)) <= 1e-12 * (1 + float(jnp.linalg.norm(X.T @ y)))
    # Gradient descent run to convergence reaches the same point.
    h_max = float(jnp.linalg.eigvalsh(X.T @ X + mu * jnp.eye(d))[-1])
    converged = iterate_gd(X, y, theta_prev, mu, 0.45 / h_max, 4000)
    assert rel_err(converged, theta) <= 1e-9


@pytest.mark.parametrize("n,d", SHAPES)
def test_gd_stage_matches_iterated_grad(n, d):
    X, y, theta_prev = random_stage(7 * n + d, n, d)
    mu = 0.7
    h_max = float(jnp.linalg.eigvalsh(X.T @ X + mu * jnp.eye(d))[-1])
    for lr in (0.2 / h_max, 0.9 / h_max):  # 0.9/h_max: I - 2 lr H has negative eigenvalues
        for steps in (0, 1, 7, 60):
            closed = gd_stage(X, y, theta_prev, mu, lr, steps)
            iterated = iterate_gd(X, y, theta_prev, mu, lr, steps)
            assert rel_err(closed, iterated) <= 1e-9


@pytest.mark.parametrize("nA,nB,d", [(4, 6, 10), (15, 3, 8)])
def test_history_difference_matches_eq3(nA, nB, d):
    XA, yA, _ = random_stage(nA, nA, d)
    XB, yB, _ = random_stage(100 + nB, nB, d)
    delta = history_difference(XA, yA, 0.5, XB, yB, 1.5)
    eq3 = T.history_difference_eq3(XA, yA, 0.5, XB, yB, 1.5)
    assert float(jnp.linalg.norm(delta)) > 1e-3  # generic instances have a history
    assert rel_err(delta, eq3) <= 1e-9

    # And against the two orders computed stage by stage with numpy.
    def np_stage(X, y, prev, mu):
        X, y = np.asarray(X), np.asarray(y)
        return np.linalg.solve(X.T @ X + mu * np.eye(d), X.T @ y + mu * prev)

    ab = np_stage(XB, yB, np_stage(XA, yA, np.zeros(d), 0.5), 1.5)
    ba = np_stage(XA, yA, np_stage(XB, yB, np.zeros(d), 1.5), 0.5)
    assert rel_err(delta, ab - ba) <= 1e-9
    assert not bool(T.orders_commute(XA, XB))


def orthogonal_support_instance(seed: int, d: int = 8, split: int = 3):
    """Lemma C.1 degenerate case: X_A uses coordinates [0, split), X_B the rest."""
    XA, yA, theta0 = random_stage(seed, 5, d)
    XB, yB, _ = random_stage(seed + 1, 4, d)
    XA[:, split:] = 0.0
    XB[:, :split] = 0.0
    return XA, yA, XB, yB, theta0


@pytest.mark.parametrize("seed", [0, 1])
def test_lemma_c1_degenerate_orders_commute(seed):
    XA, yA, XB, yB, theta0 = orthogonal_support_instance(seed)
    assert bool(T.orders_commute(XA, XB))
    assert float(T.commutation_residual(XA, XB)) == 0.0
    for start in (None, theta0):  # the orders coincide from any theta0, not only 0
        delta = history_difference(XA, yA, 0.4, XB, yB, 2.5, theta0=start)
        assert float(jnp.max(jnp.abs(delta))) <= 1e-14
    # A rotated basis hides the supports but not the condition X_A X_B^T = 0.
    Q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(8, 8)))
    assert bool(T.orders_commute(XA @ Q, XB @ Q))
    assert float(jnp.max(jnp.abs(history_difference(XA @ Q, yA, 0.4, XB @ Q, yB, 2.5)))) < 1e-13
    # One shared direction breaks it.
    XB2 = XB.copy()
    XB2[0, 0] = 0.5
    assert not bool(T.orders_commute(XA, XB2))
    assert float(jnp.linalg.norm(history_difference(XA, yA, 0.4, XB2, yB, 2.5))) > 1e-4


def test_train_stages_gd_converges_to_ridge_training():
    stages = [random_stage(s, 5, 6)[:2] + (0.5 + s,) for s in range(3)]
    theta0 = jnp.zeros(6)
    exact = T.train_stages(stages, theta0)
    gd = T.train_stages_gd(stages, theta0, lr=0.05, steps=3000)
    assert rel_err(gd, exact) <= 1e-9
