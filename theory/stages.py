"""Beyond the paper (5d): K > 2 stages, history differences between permutations, and what the
linear theory predicts about the position of the forget stage (the paper's "recency effect").

Forgetting speed in the linear model. Under GA on S_U = (X_U, y_U) the forget residual
r_t = X_U theta_t - y_U evolves as r_t = (I + (2 eta/k) X_U X_U^T)^t r_0 (multiply the GA update by
X_U and subtract y_U). With X_U = U diag(s) V^T, lam_j = (2 eta/k) s_j^2 and c = U^T r_0,

    L_t - L_0 = (1/k) sum_j ((1 + lam_j)^(2t) - 1) c_j^2,
    d/dt log L_t |_(t=0) = sum_j c_j^2 2 log(1 + lam_j) / sum_j c_j^2.

The increase is linear in the squared initial residual components: a model that fits the forget
set better forgets more slowly, in absolute terms. Which position fits best? Training S_U last
maps the previous residual r_prev to (push-through identity on the stage's closed form)

    r_0 = mu_U (X_U X_U^T + mu_U I)^-1 r_prev,   i.e.  c_j = mu_U / (s_j^2 + mu_U) c_prev,j,

shrinking every component and most strongly the large-s_j ones, which are exactly the components
GA amplifies fastest (lam_j grows with s_j^2). Every later stage re-injects residual in all
directions. Prediction: forgetting is slowest, both in absolute increase and in initial rate,
when the forget stage is the most recent one, i.e. a recency effect; it fades as later stages
move theta less (large mu). The theory does not make this hold for every instance;
:func:`forget_position_study` computes the exact answer for a given instance, and the tests measure
how often the prediction holds on random instances.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from theory.linear import Stage, train_stages
from theory.unlearning import forget_eigensystem, log10_forget_loss

_LN10 = math.log(10.0)


def train_order(
    stages: Sequence[Stage], order: Sequence[int], theta0: ArrayLike | None = None
) -> Array:
    """theta after training on ``stages`` in the given ``order`` (indices), from theta0 (or 0)."""
    d = jnp.asarray(stages[0][0]).shape[1]
    theta0 = jnp.zeros(d) if theta0 is None else jnp.asarray(theta0)
    if sorted(order) != list(range(len(stages))):
        raise ValueError(f"order {list(order)} is not a permutation of 0..{len(stages) - 1}")
    return train_stages([stages[i] for i in order], theta0)


def permutation_difference(
    stages: Sequence[Stage],
    order_a: Sequence[int],
    order_b: Sequence[int],
    theta0: ArrayLike | None = None,
) -> Array:
    """Delta theta_0 = theta(order_a) - theta(order_b) for any two permutations. Returns (d,)."""
    return train_order(stages, order_a, theta0) - train_order(stages, order_b, theta0)


@jax.jit
def log10_forget_loss_increase(
    theta0: ArrayLike, XU: ArrayLike, yU: ArrayLike, eta: ArrayLike, ts: ArrayLike
) -> Array:
    """log10(L_t - L_0) of the forget loss under GA, stable for huge t; -inf at t = 0. (T,).

    L_t - L_0 = (1/k) sum_j expm1(2 t log1p(lam_j)) c_j^2 with every term >= 0, summed in log
    space: log expm1(x) = x + log(-expm1(-x)) for x > 0.
    """
    XU = jnp.asarray(XU)
    U, _, _, lam = forget_eigensystem(XU, eta)
    c_sq = (U.T @ (XU @ jnp.asarray(theta0) - jnp.asarray(yU))) ** 2  # (k,)
    ts = jnp.atleast_1d(jnp.asarray(ts, dtype=XU.dtype))
    x = 2.0 * ts[:, None] * jnp.log1p(lam)[None, :]  # (T, k)
    safe_x = jnp.where(x > 0, x, 1.0)
    log_expm1 = jnp.where(x > 0, safe_x + jnp.log(-jnp.expm1(-safe_x)), -jnp.inf)
    terms = log_expm1 + jnp.log(c_sq)[None, :]
    log_sum = jax.scipy.special.logsumexp(terms, axis=1)
    return (log_sum - jnp.log(XU.shape[0])) / _LN10


@jax.jit
def initial_forget_rate(theta0: ArrayLike, XU: ArrayLike, yU: ArrayLike, eta: ArrayLike) -> Array:
    """d/dt log L_t at t = 0 (natural log, per step): residual-weighted mean of 2 log(1 + lam)."""
    XU = jnp.asarray(XU)
    U, _, _, lam = forget_eigensystem(XU, eta)
    c_sq = (U.T @ (XU @ jnp.asarray(theta0) - jnp.asarray(yU))) ** 2
    return jnp.sum(c_sq * 2.0 * jnp.log1p(lam)) / jnp.sum(c_sq)


class ForgetPositionStudy(NamedTuple):
    """Per position p = 1..K of the forget stage (rows), exact GA forgetting quantities."""

    positions: Array  # (K,) 1-based position of the forget stage
    initial_forget_loss: Array  # (K,) L_0 = (1/k)||X_U theta - y_U||^2 right after training
    initial_rate: Array  # (K,) d/dt log L_t at t = 0
    log10_forget_loss: Array  # (K, T) log10 L_t
    log10_increase: Array  # (K, T) log10 (L_t - L_0)
    thetas: Array  # (K, d) trained models


def forget_position_study(
    retain_stages: Sequence[Stage],
    forget_stage: Stage,
    eta: ArrayLike,
    ts: ArrayLike,
    theta0: ArrayLike | None = None,
) -> ForgetPositionStudy:
    """Insert ``forget_stage`` at each position among ``retain_stages`` (their order kept), train,
    then unlearn it by GA with step ``eta``; exact forgetting curves for t in ``ts``."""
    XU, yU, _ = forget_stage
    d = jnp.asarray(XU).shape[1]
    theta0 = jnp.zeros(d) if theta0 is None else jnp.asarray(theta0)
    K = len(retain_stages) + 1
    thetas = []
    for p in range(K):
        order = list(retain_stages[:p]) + [forget_stage] + list(retain_stages[p:])
        thetas.append(train_stages(order, theta0))
    thetas = jnp.stack(thetas)  # (K, d)
    per_model = jax.vmap(lambda th: log10_forget_loss(th, XU, yU, eta, ts))(thetas)
    increase = jax.vmap(lambda th: log10_forget_loss_increase(th, XU, yU, eta, ts))(thetas)
    rate = jax.vmap(lambda th: initial_forget_rate(th, XU, yU, eta))(thetas)
    residuals = thetas @ jnp.asarray(XU).T - jnp.asarray(yU)[None, :]  # (K, k)
    return ForgetPositionStudy(
        positions=jnp.arange(1, K + 1),
        initial_forget_loss=jnp.mean(residuals**2, axis=1),
        initial_rate=rate,
        log10_forget_loss=per_model,
        log10_increase=increase,
        thetas=thetas,
    )
