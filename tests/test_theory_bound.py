"""Theorem 3.1 on >= 1000 random instances (vmapped), Corollary 1, definitions of its quantities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory as T

# (d, nA, nB, k, m, eta): over- and under-parametrised, k = m, k = d.
GROUPS = [
    (12, 4, 5, 3, 6, 0.05),
    (6, 10, 8, 2, 2, 0.2),
    (20, 8, 8, 6, 30, 0.1),
    (5, 3, 3, 5, 7, 0.02),
]
N_PER_GROUP = 300  # 1200 instances in all
GRID = jnp.arange(400, dtype=jnp.float64)


def random_batch(seed: int, n: int, d: int, nA: int, nB: int, k: int, m: int):
    """n instances as stacked numpy arrays (features N(0, 1/d), targets N(0, 1), mu ~ U(0.1, 5)).

    Drawn with numpy so that the vmapped check compiles without a random-number kernel.
    """
    rng = np.random.default_rng(seed)
    feats = lambda rows: rng.normal(size=(n, rows, d)) / np.sqrt(d)
    return (
        feats(nA),
        rng.normal(size=(n, nA)),
        feats(nB),
        rng.normal(size=(n, nB)),
        feats(k),
        rng.normal(size=(n, k)),
        feats(m),
        rng.uniform(0.1, 5.0, size=(n, 2)),
    )


@jax.jit
def one_instance(XA, yA, XB, yB, XU, yU, Xtest, mus, eta):
    delta0 = T.history_difference(XA, yA, mus[0], XB, yB, mus[1])
    q = T.theorem_3_1(delta0, XU, eta, Xtest)
    start = T.bound_holds_from(q)
    extra = start + jnp.array([0.0, 1.0, 7.0, 1e3, 1e4, 1e6])
    ts = jnp.concatenate([GRID, jnp.where(jnp.isfinite(extra), extra, 0.0)])
    exact = T.log10_re_distance(delta0, XU, eta, Xtest, ts)
    lower = T.log10_bound(q, ts)
    guaranteed = ts >= start
    slack = jnp.min(jnp.where(guaranteed, exact - lower, jnp.inf))
    return q, slack, exact, lower


@pytest.mark.parametrize("group", GROUPS, ids=[f"d{g[0]}k{g[3]}m{g[4]}" for g in GROUPS])
def test_bound_holds_on_random_instances(group):
    d, nA, nB, k, m, eta = group
    batch = random_batch(d * 1000 + k, N_PER_GROUP, d, nA, nB, k, m)
    batched = jax.vmap(one_instance, in_axes=(0, 0, 0, 0, 0, 0, 0, 0, None))
    q, slack, exact, lower = batched(*batch, eta)
    assert bool(jnp.all(jnp.isfinite(q.t0) | (q.t0 == -jnp.inf)))
    assert bool(jnp.all(q.sigma_U > 0)) and bool(jnp.all(q.proj_norm > 0))
    assert bool(jnp.all(jnp.isfinite(exact))) and bool(jnp.all(jnp.isfinite(lower)))
    # The theorem: exact >= bound wherever t >= max(t0, 0), up to float64 rounding in log10.
    assert float(jnp.min(slack)) >= -1e-9, float(jnp.min(slack))
    # The bound is not vacuous: at t = max(t0, 0) it is within a modest factor on most instances.
    at_start = exact[:, GRID.size] - lower[:, GRID.size]
    assert float(jnp.median(at_start)) < 3.0


def test_quantities_match_their_definitions():
    inst = T.random_instance(3, d=9, nA=4, nB=6, k=3, m=5, eta=0.07)
    delta0 = np.asarray(T.history_difference(inst.XA, inst.yA, 1.0, inst.XB, inst.yB, 1.0))
    q = T.theorem_3_1(delta0, inst.XU, inst.eta, inst.Xtest)
    XU = inst.XU
    P = XU.T @ np.linalg.solve(XU @ XU.T, XU)
    M = (2 * inst.eta / 3) * XU.T @ XU
    p = P @ delta0
    assert np.isclose(q.proj_norm, np.linalg.norm(p), rtol=1e-12)
    assert np.isclose(q.rho_star, p @ M @ p / (p @ p), rtol=1e-10)
    sv = np.linalg.svd(inst.Xtest @ P, compute_uv=False)
    assert np.isclose(q.sigma_U, sv[2], rtol=1e-10)  # the k-th singular value
    c0 = np.linalg.norm(inst.Xtest, 2) * np.linalg.norm(delta0 - p)
    assert np.isclose(q.C0, c0, rtol=1e-10)
    t0 = np.ceil(np.log(2 * c0 / (sv[2] * np.linalg.norm(p))) / np.log1p(q.rho_star))
    assert float(q.t0) == t0
    ts = np.arange(5.0)
    expected = np.log10(sv[2] ** 2 * (p @ p) * (1 + float(q.rho_star)) ** (2 * ts) / (4 * 5))
    np.testing.assert_allclose(T.log10_bound(q, ts), expected, atol=1e-12)


@pytest.mark.parametrize("epsilon", [1e-6, 1e-3, 10.0])
def test_corollary_t_star_is_the_first_guaranteed_violation(epsilon):
    inst = T.random_instance(8, d=15, nA=6, nB=6, k=4, m=8, eta=0.05)
    delta0 = T.history_difference(inst.XA, inst.yA, 1.0, inst.XB, inst.yB, 1.0)
    q = T.theorem_3_1(delta0, inst.XU, inst.eta, inst.Xtest)
    t_star = float(T.corollary_t_star(q, epsilon))
    assert t_star == int(t_star) and t_star >= max(float(q.t0), 0.0)
    log_4eps = np.log10(4 * epsilon)
    assert float(T.log10_bound(q, t_star)[0]) > log_4eps  # bound > 4 eps: RE violated
    exact = T.log10_re_distance(delta0, inst.XU, inst.eta, inst.Xtest, t_star)
    assert float(exact[0]) > log_4eps
    before = t_star - 1
    assert before < max(float(q.t0), 0.0) or float(T.log10_bound(q, before)[0]) <= log_4eps
    # The paper's real-valued threshold differs from ours only by rounding up strictly.
    paper = float(T.corollary_threshold(q, epsilon))
    assert paper <= t_star <= max(np.floor(paper) + 1, 0.0)


def test_corollary_triangle_inequality_constant():
    """d(a, b) <= 2 d(a, r) + 2 d(b, r): two models within eps of r are within 4 eps of each
    other, which is where Corollary 1's 16 = 4 (bound) * 4 (triangle) comes from."""
    rng = np.random.default_rng(0)
    Xtest = rng.normal(size=(10, 6))
    for _ in range(200):
        a, b, r = rng.normal(size=(3, 6))
        dab = float(T.re_distance(a, b, Xtest))
        assert dab <= 2 * float(T.re_distance(a, r, Xtest)) + 2 * float(T.re_distance(b, r, Xtest))
    # Tight: r at the midpoint gives equality.
    a, b = rng.normal(size=(2, 6))
    r = (a + b) / 2
    lhs = float(T.re_distance(a, b, Xtest))
    rhs = 2 * float(T.re_distance(a, r, Xtest)) + 2 * float(T.re_distance(b, r, Xtest))
    assert np.isclose(lhs, rhs, rtol=1e-12)


def test_degenerate_difference_gives_no_bound():
    """Lemma C.1 case: Delta theta_0 = 0, the theorem's almost-sure hypothesis fails."""
    inst = T.random_instance(1, d=6, nA=3, nB=3, k=2, m=3)
    q = T.theorem_3_1(jnp.zeros(6), inst.XU, inst.eta, inst.Xtest)
    assert float(q.proj_norm) == 0.0 and float(q.t0) == np.inf
    assert float(T.log10_re_distance(jnp.zeros(6), inst.XU, inst.eta, inst.Xtest, 3)[0]) == -np.inf


def test_m_smaller_than_k_is_rejected():
    with pytest.raises(ValueError, match="m >= k"):
        T.theorem_3_1(jnp.ones(5), jnp.eye(3, 5), 0.1, jnp.ones((2, 5)))


def test_random_instance_arrays_is_vmappable_and_deterministic():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    batch = jax.vmap(lambda key: T.random_instance_arrays(key, 6, 2, 3, 2, 4))(keys)
    assert [a.shape for a in batch] == [
        (3, 2, 6),
        (3, 2),
        (3, 3, 6),
        (3, 3),
        (3, 2, 6),
        (3, 2),
        (3, 4, 6),
    ]
    single = T.random_instance_arrays(keys[1], 6, 2, 3, 2, 4)
    for a, b in zip(batch, single, strict=True):
        np.testing.assert_array_equal(a[1], b)
    again = T.random_instance(7, d=6, nA=2, nB=3, k=2, m=4)
    np.testing.assert_array_equal(again.XU, T.random_instance(7, d=6, nA=2, nB=3, k=2, m=4).XU)
