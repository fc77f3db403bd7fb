"""K > 2 stages: permutation differences, forget-stage position and the recency prediction."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory as T
from theory import stages as S


def random_stages(seed: int, K: int, d: int, n: int, k: int, mu: float = 1.0):
    rng = np.random.default_rng(seed)
    retain = [(rng.normal(size=(n, d)) / np.sqrt(d), rng.normal(size=n), mu) for _ in range(K - 1)]
    forget = (rng.normal(size=(k, d)) / np.sqrt(d), rng.normal(size=k), mu)
    return retain, forget


def test_permutation_difference_two_stage_case_and_k_stages():
    inst = T.random_instance(0, d=7, nA=4, nB=3, k=2, m=3)
    stages = [(inst.XA, inst.yA, 1.0), (inst.XB, inst.yB, 2.0)]
    delta = S.permutation_difference(stages, [0, 1], [1, 0])
    np.testing.assert_allclose(
        delta, T.history_difference(inst.XA, inst.yA, 1.0, inst.XB, inst.yB, 2.0), atol=1e-14
    )
    retain, forget = random_stages(1, 4, 9, 5, 3)
    four = retain + [forget]
    assert float(jnp.linalg.norm(S.permutation_difference(four, [0, 1, 2, 3], [0, 2, 1, 3]))) > 1e-4
    assert float(jnp.linalg.norm(S.permutation_difference(four, [3, 1, 0, 2], [3, 1, 0, 2]))) == 0.0
    with pytest.raises(ValueError, match="not a permutation"):
        S.train_order(four, [0, 0, 1, 2])


def test_position_study_matches_iterated_ga():
    retain, forget = random_stages(2, 4, 12, 6, 4)
    eta, steps = 0.05, 60
    study = S.forget_position_study(retain, forget, eta, jnp.arange(steps + 1))
    XU, yU, _ = forget
    for p in range(4):
        order = retain[:p] + [forget] + retain[p:]
        theta = T.train_stages(order, jnp.zeros(12))
        np.testing.assert_allclose(study.thetas[p], theta, atol=1e-13)
        iterated = T.iterate_ga(theta, XU, yU, eta, steps)
        losses = jax.vmap(T.forget_loss, in_axes=(0, None, None))(iterated, XU, yU)
        np.testing.assert_allclose(study.log10_forget_loss[p], np.log10(losses), atol=1e-10)
        np.testing.assert_allclose(
            study.log10_increase[p, 1:], np.log10(losses[1:] - losses[0]), atol=1e-7
        )
        assert study.log10_increase[p, 0] == -np.inf
        # Initial rate = derivative of log L_t at 0 (finite difference of the continuous formula).
        h = 1e-6
        log_l = T.log10_forget_loss(theta, XU, yU, eta, jnp.array([0.0, h])) * np.log(10)
        assert np.isclose(float(study.initial_rate[p]), float((log_l[1] - log_l[0]) / h), rtol=1e-4)
    # Huge t stays finite.
    big = S.log10_forget_loss_increase(study.thetas[0], XU, yU, eta, jnp.array([1e6]))
    assert bool(jnp.isfinite(big[0]))


def test_most_recent_fit_shrinks_the_forget_residual():
    """Training S_U last multiplies the residual's U-components by mu/(s_j^2 + mu)."""
    retain, forget = random_stages(3, 3, 10, 5, 3, mu=0.7)
    XU, yU, mu = forget
    before = T.train_stages(retain, jnp.zeros(10))
    after = T.ridge_stage(XU, yU, before, mu)
    U, s, _ = np.linalg.svd(XU, full_matrices=False)
    c_before = U.T @ (XU @ np.asarray(before) - yU)
    c_after = U.T @ (XU @ np.asarray(after) - yU)
    np.testing.assert_allclose(c_after, mu / (s**2 + mu) * c_before, rtol=1e-9)


def test_recency_prediction_on_random_instances():
    """The linear theory's recency effect: slowest forgetting when the forget stage is last."""
    ts = jnp.array([0.0, 50.0])
    last_slowest, last_lowest_rate, increases = [], [], []
    for seed in range(60):
        retain, forget = random_stages(100 + seed, 4, 30, 8, 6)
        study = S.forget_position_study(retain, forget, 0.05, ts)
        inc = np.asarray(study.log10_increase[:, 1])
        last_slowest.append(np.argmin(inc) == 3)
        last_lowest_rate.append(np.argmin(np.asarray(study.initial_rate)) == 3)
        increases.append(10**inc)
    assert np.mean(last_slowest) >= 0.8
    assert np.mean(last_lowest_rate) >= 0.6
    mean_increase = np.mean(increases, axis=0)
    assert np.all(np.diff(mean_increase) < 0)  # on average monotone in the position
