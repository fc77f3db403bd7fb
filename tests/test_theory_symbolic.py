"""Symbolic layer: Eq. 3 and Lemma 3.2 derived by sympy; lambdified functions vs the numerics."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import sympy as sp

import theory as T
from theory import symbolic as S


def is_zero(matrix: sp.Matrix) -> bool:
    return all(entry == 0 for entry in matrix)


def test_eq3_is_exact_for_symbolic_matrices():
    assert is_zero(S.verify_eq3(nA=2, nB=1, d=2))
    # The check can fail: swapping the mu's in Eq. 3 leaves a nonzero residual.
    s = S.symbolic_stages(1, 1, 2)
    ab, ba = S.eq1_models(s)
    wrong = S.eq3_difference(s).subs({s.muA: s.muB, s.muB: s.muA}, simultaneous=True)
    values = {sym: sp.Rational(i + 2, 3) for i, sym in enumerate(s.symbols)}
    assert any(sp.nsimplify(e.subs(values)) != 0 for e in (ab - ba - wrong))


def test_lemma_3_2_and_rank_one_closed_forms():
    assert is_zero(S.verify_lemma_3_2_step(k=2, d=3))
    base, step = S.verify_rank_one_power(d=2)
    assert is_zero(base) and is_zero(step)
    base, step = S.verify_rank_one_trajectory(d=2)
    assert is_zero(base) and is_zero(step)


def test_lambdified_functions_agree_with_numeric_layer():
    rng = np.random.default_rng(0)
    f = S.lambdified_history_difference(2, 1, 2)
    for _ in range(5):
        XA, yA, XB, yB = (
            rng.normal(size=(2, 2)),
            rng.normal(size=2),
            rng.normal(size=(1, 2)),
            rng.normal(size=1),
        )
        muA, muB = rng.uniform(0.1, 3, size=2)
        np.testing.assert_allclose(
            f(XA, yA, muA, XB, yB, muB),
            T.history_difference(XA, yA, muA, XB, yB, muB),
            rtol=1e-10,
            atol=1e-14,
        )
    g = S.lambdified_rank_one_difference(2)
    u, yU = rng.normal(size=(1, 2)), rng.normal(size=1)
    delta0, theta = rng.normal(size=2), rng.normal(size=2)
    ts = jnp.array([0, 1, 7, 25])
    traj = T.ga_trajectory(theta + delta0, u, yU, 0.1, ts) - T.ga_trajectory(theta, u, yU, 0.1, ts)
    for i, t in enumerate([0, 1, 7, 25]):
        np.testing.assert_allclose(g(u, 0.1, delta0, t), traj[i], rtol=1e-10)
    inst = T.random_instance(0, d=6, nA=3, nB=3, k=2, m=4)
    delta = T.history_difference(inst.XA, inst.yA, 1.0, inst.XB, inst.yB, 1.0)
    q = T.theorem_3_1(delta, inst.XU, inst.eta, inst.Xtest)
    h = S.lambdified_log10_bound()
    for t in (0.0, 3.0, 1e6):
        expected = float(T.log10_bound(q, t)[0])
        got = h(float(q.sigma_U), float(q.proj_norm), float(q.rho_star), 4.0, t)
        assert np.isclose(got, expected, rtol=1e-12, atol=1e-12)


def test_latex_helpers_render():
    eq3 = S.latex_eq3()
    assert eq3.startswith(r"\Delta\theta_0 =") and "X_{B}^{T}" in eq3 and r"\mu_{A}" in eq3
    assert "M_U" in S.latex_lemma_3_2()
    assert r"\eta" in S.latex_rank_one_power(2)
    assert "matrix" in S.latex_matrix(sp.eye(2))
