"""Symbolic layer (sympy): Eq. 1, Eq. 3 and Lemma 3.2 derived on small symbolic matrices, LaTeX for
notebooks, and lambdified functions that the tests hold against the numeric layer.

Vocabulary is shared with the numeric layer: X_A, y_A, mu_A, X_B, y_B, mu_B (stages), X_U, y_U,
eta (forget set, GA step), M_U = (2 eta/k) X_U^T X_U, Delta theta_0 = theta_AB - theta_BA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp


@dataclass(frozen=True)
class SymbolicStages:
    """Entry-wise symbolic two-stage problem: XA (nA, d), XB (nB, d), yA, yB column vectors."""

    XA: sp.Matrix
    yA: sp.Matrix
    muA: sp.Symbol
    XB: sp.Matrix
    yB: sp.Matrix
    muB: sp.Symbol

    @property
    def symbols(self) -> list[sp.Symbol]:
        """All free symbols in a fixed order: XA row-major, yA, muA, XB, yB, muB."""
        return [*self.XA, *self.yA, self.muA, *self.XB, *self.yB, self.muB]


def symbolic_stages(nA: int = 1, nB: int = 1, d: int = 2) -> SymbolicStages:
    """Symbolic stages with real entries a_ij, b_ij, targets yA_i, yB_i and positive mu's."""
    XA = sp.Matrix(nA, d, lambda i, j: sp.Symbol(f"a_{i}{j}", real=True))
    XB = sp.Matrix(nB, d, lambda i, j: sp.Symbol(f"b_{i}{j}", real=True))
    yA = sp.Matrix(nA, 1, lambda i, _: sp.Symbol(f"yA_{i}", real=True))
    yB = sp.Matrix(nB, 1, lambda i, _: sp.Symbol(f"yB_{i}", real=True))
    muA, muB = sp.symbols("mu_A mu_B", positive=True)
    return SymbolicStages(XA, yA, muA, XB, yB, muB)


def ridge_stage_symbolic(X: sp.Matrix, y: sp.Matrix, theta_prev: sp.Matrix, mu) -> sp.Matrix:
    """Eq. 1: (X^T X + mu I)^-1 (X^T y + mu theta_prev), solved symbolically (LU)."""
    d = X.shape[1]
    return (X.T * X + mu * sp.eye(d)).LUsolve(X.T * y + mu * theta_prev)


def eq1_models(s: SymbolicStages) -> tuple[sp.Matrix, sp.Matrix]:
    """(theta_AB, theta_BA) from theta_0 = 0 by Eq. 1."""
    zero = sp.zeros(s.XA.shape[1], 1)
    theta_ab = ridge_stage_symbolic(
        s.XB, s.yB, ridge_stage_symbolic(s.XA, s.yA, zero, s.muA), s.muB
    )
    theta_ba = ridge_stage_symbolic(
        s.XA, s.yA, ridge_stage_symbolic(s.XB, s.yB, zero, s.muB), s.muA
    )
    return theta_ab, theta_ba


def eq3_difference(s: SymbolicStages) -> sp.Matrix:
    """Eq. 3: (I - mu_A A) B X_B^T y_B + (mu_B B - I) A X_A^T y_A, A, B the stage inverses."""
    d = s.XA.shape[1]
    eye = sp.eye(d)
    A = (s.XA.T * s.XA + s.muA * eye).inv()
    B = (s.XB.T * s.XB + s.muB * eye).inv()
    return (eye - s.muA * A) * B * s.XB.T * s.yB + (s.muB * B - eye) * A * s.XA.T * s.yA


def verify_eq3(nA: int = 1, nB: int = 1, d: int = 2) -> sp.Matrix:
    """theta_AB - theta_BA - Eq. 3, simplified entry-wise; the zero vector if Eq. 3 is right."""
    s = symbolic_stages(nA, nB, d)
    theta_ab, theta_ba = eq1_models(s)
    residual = theta_ab - theta_ba - eq3_difference(s)
    return residual.applyfunc(lambda e: sp.cancel(sp.together(e)))


@dataclass(frozen=True)
class SymbolicForget:
    """Symbolic forget set X_U (k, d), y_U (k, 1), step eta > 0."""

    XU: sp.Matrix
    yU: sp.Matrix
    eta: sp.Symbol

    @property
    def update_matrix(self) -> sp.Matrix:
        """M_U = (2 eta/k) X_U^T X_U."""
        k = self.XU.shape[0]
        return 2 * self.eta / k * self.XU.T * self.XU


def symbolic_forget(k: int = 1, d: int = 2) -> SymbolicForget:
    XU = sp.Matrix(k, d, lambda i, j: sp.Symbol(f"u_{i}{j}", real=True))
    yU = sp.Matrix(k, 1, lambda i, _: sp.Symbol(f"yU_{i}", real=True))
    return SymbolicForget(XU, yU, sp.Symbol("eta", positive=True))


def ga_step_symbolic(theta: sp.Matrix, f: SymbolicForget) -> sp.Matrix:
    """theta + eta grad (1/k)||X_U theta - y_U||^2, the gradient taken by sympy itself."""
    k, d = f.XU.shape
    point = sp.Matrix(d, 1, lambda i, _: sp.Dummy(f"z_{i}", real=True))  # differentiate here
    residual = f.XU * point - f.yU
    loss = (residual.T * residual)[0, 0] / k
    grad = sp.Matrix([sp.diff(loss, v) for v in point])
    return theta + f.eta * grad.subs(dict(zip(point, theta, strict=True)), simultaneous=True)


def verify_lemma_3_2_step(k: int = 2, d: int = 3) -> sp.Matrix:
    """One GA step on two arbitrary symbolic models: Delta_1 - (I + M_U) Delta_0, expanded (= 0)."""
    f = symbolic_forget(k, d)
    theta_a = sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"p_{i}", real=True))
    theta_b = sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"q_{i}", real=True))
    delta1 = ga_step_symbolic(theta_a, f) - ga_step_symbolic(theta_b, f)
    lemma = (sp.eye(d) + f.update_matrix) * (theta_a - theta_b)
    return (delta1 - lemma).applyfunc(sp.expand)


def rank_one_power(d: int = 2) -> tuple[sp.Matrix, sp.Symbol, SymbolicForget]:
    """(I + M_U)^t for a single forget point (k = 1) with a symbolic integer t.

    M_U = 2 eta u u^T has the eigenvalue lam = 2 eta ||u||^2 on u and 0 on u^perp, so
    (I + M_U)^t = I + ((1 + lam)^t - 1) u u^T / ||u||^2.
    """
    f = symbolic_forget(1, d)
    u = f.XU.T  # (d, 1)
    t = sp.Symbol("t", integer=True, nonnegative=True)
    norm_sq = (u.T * u)[0, 0]
    lam = 2 * f.eta * norm_sq
    return sp.eye(d) + ((1 + lam) ** t - 1) * (u * u.T) / norm_sq, t, f


def verify_rank_one_power(d: int = 2) -> tuple[sp.Matrix, sp.Matrix]:
    """Induction for :func:`rank_one_power`: (value at t = 0) - I and (I + M_U) F(t) - F(t + 1)."""
    F, t, f = rank_one_power(d)
    base = (F.subs(t, 0) - sp.eye(d)).applyfunc(sp.simplify)
    step = ((sp.eye(d) + f.update_matrix) * F - F.subs(t, t + 1)).applyfunc(
        lambda e: sp.simplify(sp.powsimp(sp.expand(e), force=True))
    )
    return base, step


def rank_one_trajectory(d: int = 2) -> tuple[sp.Matrix, sp.Symbol, sp.Matrix, SymbolicForget]:
    """theta_t = theta* + (I + M_U)^t (theta_0 - theta*) for k = 1, theta* = u y_U / ||u||^2.

    Returns (theta_t, t, theta_0 symbols, forget set).
    """
    F, t, f = rank_one_power(d)
    u = f.XU.T
    theta_star = u * f.yU[0, 0] / (u.T * u)[0, 0]
    theta0 = sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"w_{i}", real=True))
    return theta_star + F * (theta0 - theta_star), t, theta0, f


def verify_rank_one_trajectory(d: int = 2) -> tuple[sp.Matrix, sp.Matrix]:
    """(theta_t at t = 0) - theta_0 and GA_step(theta_t) - theta_(t+1), simplified (both 0)."""
    traj, t, theta0, f = rank_one_trajectory(d)
    base = (traj.subs(t, 0) - theta0).applyfunc(sp.simplify)
    step = (ga_step_symbolic(traj, f) - traj.subs(t, t + 1)).applyfunc(
        lambda e: sp.simplify(sp.powsimp(sp.expand(e), force=True))
    )
    return base, step


# ----------------------------------------------------------------------------- LaTeX helpers


def _matrix_symbols(d: int = 2) -> tuple[sp.MatrixSymbol, ...]:
    X_A, X_B = sp.MatrixSymbol("X_A", 3, d), sp.MatrixSymbol("X_B", 3, d)
    y_A, y_B = sp.MatrixSymbol("y_A", 3, 1), sp.MatrixSymbol("y_B", 3, 1)
    A, B = sp.MatrixSymbol("A", d, d), sp.MatrixSymbol("B", d, d)
    return X_A, X_B, y_A, y_B, A, B


def latex_eq3() -> str:
    """LaTeX of Eq. 3 in matrix notation."""
    X_A, X_B, y_A, y_B, A, B = _matrix_symbols()
    muA, muB = sp.symbols("mu_A mu_B", positive=True)
    eye = sp.Identity(2)
    expr = sp.MatAdd(
        (eye - muA * A) * B * X_B.T * y_B, (muB * B - eye) * A * X_A.T * y_A, evaluate=False
    )
    return r"\Delta\theta_0 = " + sp.latex(expr)


def latex_lemma_3_2() -> str:
    """LaTeX of Lemma 3.2 and the definition of M_U."""
    return (
        r"\Delta\theta_t = (I + M_U)^t\,\Delta\theta_0, \qquad "
        r"M_U = \frac{2\eta}{k} X_U^\top X_U"
    )


def latex_matrix(expr: sp.Matrix) -> str:
    """LaTeX of an explicit (small) sympy matrix, for rendering derivation results."""
    return sp.latex(expr)


def latex_rank_one_power(d: int = 2) -> str:
    """LaTeX of the rank-one closed form (I + M_U)^t for a symbolic t (entries written out)."""
    F, _, _ = rank_one_power(d)
    return r"(I + M_U)^t = " + sp.latex(F.applyfunc(sp.factor))


# ----------------------------------------------------------------------------- lambdified


@lru_cache(maxsize=8)
def lambdified_history_difference(
    nA: int = 1, nB: int = 1, d: int = 2
) -> Callable[..., np.ndarray]:
    """numpy f(XA, yA, muA, XB, yB, muB) -> Delta theta_0 (d,) from the symbolic Eq. 3."""
    s = symbolic_stages(nA, nB, d)
    fn = sp.lambdify(s.symbols, eq3_difference(s), modules="numpy")

    def f(XA, yA, muA, XB, yB, muB) -> np.ndarray:
        args = [*np.ravel(XA), *np.ravel(yA), muA, *np.ravel(XB), *np.ravel(yB), muB]
        return np.asarray(fn(*args), dtype=np.float64).reshape(d)

    return f


@lru_cache(maxsize=8)
def lambdified_rank_one_difference(d: int = 2) -> Callable[..., np.ndarray]:
    """numpy f(u (d,), eta, delta0 (d,), t) -> (I + M_U)^t delta0 for X_U = u^T (k = 1)."""
    F, t, f = rank_one_power(d)
    delta = sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"delta_{i}", real=True))
    fn = sp.lambdify([*f.XU, f.eta, *delta, t], F * delta, modules="numpy")

    def g(u, eta, delta0, steps) -> np.ndarray:
        return np.asarray(
            fn(*np.ravel(u), eta, *np.ravel(delta0), steps), dtype=np.float64
        ).reshape(d)

    return g


@lru_cache(maxsize=1)
def lambdified_log10_bound() -> Callable[..., np.ndarray]:
    """numpy f(sigma_U, proj_norm, rho_star, m, t) -> log10 of Theorem 3.1's bound."""
    sigma, p, rho, m, t = sp.symbols("sigma_U p rho m t", positive=True)
    bound = sigma**2 * p**2 * (1 + rho) ** (2 * t) / (4 * m)
    log10 = sp.expand_log(sp.log(bound), force=True) / sp.log(10)
    return sp.lambdify([sigma, p, rho, m, t], log10, modules="numpy")
