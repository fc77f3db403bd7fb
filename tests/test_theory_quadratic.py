"""Quadratic stages and quadratic GA (beyond the paper), and the linear model as a special case."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import theory as T
from theory import quadratic as Q


def rel_err(a, b) -> float:
    return float(jnp.linalg.norm(jnp.asarray(a) - jnp.asarray(b)) / jnp.linalg.norm(b))


def random_psd(key, d: int, rank: int):
    A = jax.random.normal(key, (rank, d)) / jnp.sqrt(d)
    return A.T @ A


def test_quadratic_stage_and_ascent_match_jax_grad():
    d = 7
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    H, c, prev = random_psd(keys[0], d, 4), jax.random.normal(keys[1], (d,)), jnp.ones(d)
    theta = Q.quadratic_stage(H, c, prev, 0.8)
    grad = jax.grad(Q.quadratic_stage_loss)(theta, H, c, prev, 0.8)
    assert float(jnp.linalg.norm(grad)) <= 1e-13
    # GD to convergence reaches the closed form.
    step = jax.jit(lambda th: th - 0.5 * jax.grad(Q.quadratic_stage_loss)(th, H, c, prev, 0.8))
    th = prev
    for _ in range(400):
        th = step(th)
    assert rel_err(th, theta) <= 1e-9
    # Ascent on the forget quadratic vs iterated jax.grad.
    HU, cU = random_psd(keys[2], d, 3), jax.random.normal(keys[3], (d,))
    theta0 = jax.random.normal(keys[4], (d,))
    ascent = jax.jit(lambda th: th + 0.3 * jax.grad(Q.quadratic_forget_loss)(th, HU, cU))
    closed = Q.quadratic_ga_trajectory(theta0, HU, cU, 0.3, jnp.arange(81))
    th = theta0
    for t in range(81):
        assert rel_err(closed[t], th) <= 1e-9
        assert t == 80 or rel_err(Q.quadratic_ga_step(th, HU, cU, 0.3), ascent(th)) <= 1e-12
        th = ascent(th)


def test_linear_model_is_the_special_case():
    inst = T.random_instance(2, d=9, nA=4, nB=6, k=3, m=5, eta=0.08)
    HA, cA, mA = Q.linear_stage_as_quadratic(inst.XA, inst.yA, inst.muA)
    HB, cB, mB = Q.linear_stage_as_quadratic(inst.XB, inst.yB, inst.muB)
    prev = jnp.linspace(-1, 1, 9)
    assert (
        rel_err(
            Q.quadratic_stage(HA, cA, prev, mA), T.ridge_stage(inst.XA, inst.yA, prev, inst.muA)
        )
        <= 1e-10
    )
    delta_q = Q.quadratic_history_difference(HA, cA, mA, HB, cB, mB)
    delta = T.history_difference(inst.XA, inst.yA, inst.muA, inst.XB, inst.yB, inst.muB)
    assert rel_err(delta_q, delta) <= 1e-10
    HU, cU = Q.linear_forget_as_quadratic(inst.XU, inst.yU)
    np.testing.assert_allclose(inst.eta * HU, T.ga_update_matrix(inst.XU, inst.eta), atol=1e-14)
    ts = jnp.arange(60)
    assert (
        rel_err(
            Q.quadratic_ga_trajectory(prev, HU, cU, inst.eta, ts),
            T.ga_trajectory(prev, inst.XU, inst.yU, inst.eta, ts),
        )
        <= 1e-10
    )
    # Theorem quantities and exact distances coincide.
    qq = Q.quadratic_theorem(delta, HU, inst.eta, inst.Xtest, rank=3)
    ql = T.theorem_3_1(delta, inst.XU, inst.eta, inst.Xtest)
    for name in ("proj_norm", "off_norm", "rho_star", "sigma_U", "C0", "t0"):
        assert np.isclose(float(getattr(qq, name)), float(getattr(ql, name)), rtol=1e-9), name
    big = jnp.array([0.0, 10.0, 1e5])
    np.testing.assert_allclose(
        Q.quadratic_log10_re_distance(delta, HU, inst.eta, inst.Xtest, big),
        T.log10_re_distance(delta, inst.XU, inst.eta, inst.Xtest, big),
        rtol=1e-9,
    )


def test_quadratic_bound_holds_on_random_instances():
    d, r, m, n = 10, 4, 6, 200
    rng = np.random.default_rng(5)
    psd = lambda rank: (lambda A: np.swapaxes(A, 1, 2) @ A)(
        rng.normal(size=(n, rank, d)) / np.sqrt(d)
    )
    HA, HB, HU = psd(5), psd(6), psd(r)
    cA, cB = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    Xtest = rng.normal(size=(n, m, d)) / np.sqrt(d)

    @jax.jit
    def one(HA, cA, HB, cB, HU, Xtest):
        delta0 = Q.quadratic_history_difference(HA, cA, 0.7, HB, cB, 1.3)
        q = Q.quadratic_theorem(delta0, HU, 0.1, Xtest, rank=r)
        ts = jnp.maximum(q.t0, 0.0) + jnp.array([0.0, 1.0, 5.0, 50.0, 1e4])
        exact = Q.quadratic_log10_re_distance(delta0, HU, 0.1, Xtest, ts)
        return jnp.min(exact - T.log10_bound(q, ts)), q.t0

    slack, t0 = jax.vmap(one)(HA, cA, HB, cB, HU, Xtest)
    assert bool(jnp.all(jnp.isfinite(t0)))
    assert float(jnp.min(slack)) >= -1e-9
