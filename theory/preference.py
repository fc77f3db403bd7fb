"""Beyond the paper (5c): GA, NPO and SimNPO in the linear-Gaussian model.

Model: pi_theta(y|x) = N(y; x^T theta, s^2), so with residual r = x^T theta - y and a = 1/(2 s^2)

    log pi_theta(y|x) = -r^2 / (2 s^2) - c0,      c0 = (1/2) log(2 pi s^2),
    grad_theta log pi = -(r / s^2) x.

With s^2 = 1/2 (the default ``noise_var``), GA on mean log pi is exactly the paper's GA on
(1/k)||X_U theta - y_U||^2.

Objectives (all minimised; per-example averages over the forget set, as in llm/objectives.py):

    GA:      E log pi_theta
    NPO:     -(2/beta) E log sigmoid(-beta (log pi_theta - log pi_ref))   (Zhang et al. 2024)
    SimNPO:  -(2/beta) E log sigmoid(-(beta/|y|) log pi_theta - margin)   (Fan et al. 2024)

The paper writes SimNPO without the length normalisation and margin (``response_length = 1``,
``margin = 0``); here a response is one scalar, so |y| = 1 and the two definitions differ only by
the margin.

Update maps. Since d/dz[-(2/beta) log sigmoid(-beta z)] = 2 sigmoid(beta z), every objective's
gradient is the GA gradient with a per-example weight w_i:

    grad L = E[w_i grad log pi_i],
    theta <- theta - eta grad L = theta + (eta / (k s^2)) sum_i w_i r_i x_i,

    GA:     w_i = 1
    NPO:    w_i = 2 sigmoid(beta (log pi_theta(y_i|x_i) - log pi_ref(y_i|x_i)))
            = 2 sigmoid(-beta a (r_i^2 - r_ref,i^2))          (= 1 at theta = theta_ref)
    SimNPO: w_i = (2/|y|) sigmoid((beta/|y|) log pi_theta(y_i|x_i) + margin)
            = (2/|y|) sigmoid(kappa - (beta a/|y|) r_i^2),    kappa = margin - beta c0/|y|.

What the weights imply. Both weights have the form w = C sigmoid(kappa' - b r^2) and therefore decay
like exp(-b r^2) as the forget loss grows. The per-example step phi(r) = w(r) r is bounded:
with r_b^2 = max(kappa'/b, 0) + 1/(2b), |phi(r)| <= C r_b (for r^2 <= r_b^2 use w <= C; beyond,
w <= C exp(kappa' - b r^2) and |r| exp(-b r^2) decreases for r^2 >= 1/(2b)). Hence

    ||theta_t - theta_{t-1}|| <= D := (eta / (k s^2)) sum_i ||x_i|| C r_b,i,

every model drifts at most linearly in t, and two models satisfy
sqrt(m d(t)) <= sqrt(m d(0)) + ||X_test||_op t (D_AB + D_BA): NPO/SimNPO divergence is at most
QUADRATIC in t (:func:`drift_bound`), against GA's exponential lower bound (Theorem 3.1).

Linearised at the start. NPO's weights are all 1 at theta = theta_ref, so its first step equals
GA's exactly and the first-step difference is (I + M_U) Delta_0, as for GA. For the local
behaviour of the difference map, phi'(r) = w (1 - 2 b r^2 (1 - sigmoid(kappa' - b r^2))): the
difference between two nearby models grows along example i only while 2 b r^2 (1 - sigmoid) < 1
(small residuals), and contracts once the residual is large; :func:`update_jacobian` gives the
Jacobian I + (eta / (k s^2)) X^T diag(phi'(r)) X of the update map.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

DEFAULT_NOISE_VAR = 0.5  # s^2 = 1/2 makes GA here identical to the paper's squared-loss GA


class PreferenceConfig(NamedTuple):
    """Hyper-parameters of the per-example weights (see module docstring)."""

    method: str = "npo"  # "ga", "npo" or "simnpo"
    beta: float = 0.5  # inverse temperature (NPO: the paper's 0.5)
    margin: float = 0.0  # SimNPO's gamma (0 in the paper's formula)
    response_length: float = 1.0  # SimNPO's |y| (1 here: one scalar response)
    noise_var: float = DEFAULT_NOISE_VAR  # s^2 of the Gaussian policy


@jax.jit
def gaussian_logprob(
    theta: ArrayLike, X: ArrayLike, y: ArrayLike, noise_var: ArrayLike = DEFAULT_NOISE_VAR
) -> Array:
    """log N(y_i; x_i^T theta, s^2) per example. X (k, d), y (k,) -> (k,)."""
    residual = jnp.asarray(X) @ jnp.asarray(theta) - jnp.asarray(y)
    return -(residual**2) / (2.0 * noise_var) - 0.5 * jnp.log(2.0 * jnp.pi * noise_var)


def objective(
    theta: ArrayLike, X: ArrayLike, y: ArrayLike, ref_logp: ArrayLike, config: PreferenceConfig
) -> Array:
    """The forget objective (minimised) of ``config.method``; ``ref_logp`` (k,) used by NPO."""
    logp = gaussian_logprob(theta, X, y, config.noise_var)
    if config.method == "ga":
        return jnp.mean(logp)
    if config.method == "npo":
        return -(2.0 / config.beta) * jnp.mean(
            jax.nn.log_sigmoid(-config.beta * (logp - jnp.asarray(ref_logp)))
        )
    if config.method == "simnpo":
        scaled = config.beta / config.response_length
        return -(2.0 / config.beta) * jnp.mean(jax.nn.log_sigmoid(-scaled * logp - config.margin))
    raise ValueError(f"unknown method {config.method!r}; expected 'ga', 'npo' or 'simnpo'")


def example_weights(
    theta: ArrayLike, X: ArrayLike, y: ArrayLike, ref_logp: ArrayLike, config: PreferenceConfig
) -> Array:
    """Per-example weights w_i (k,) multiplying the GA gradient (module docstring)."""
    logp = gaussian_logprob(theta, X, y, config.noise_var)
    if config.method == "ga":
        return jnp.ones_like(logp)
    if config.method == "npo":
        return 2.0 * jax.nn.sigmoid(config.beta * (logp - jnp.asarray(ref_logp)))
    if config.method == "simnpo":
        L = config.response_length
        return (2.0 / L) * jax.nn.sigmoid((config.beta / L) * logp + config.margin)
    raise ValueError(f"unknown method {config.method!r}; expected 'ga', 'npo' or 'simnpo'")


@partial(jax.jit, static_argnames="config")
def update(
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    ref_logp: ArrayLike,
    eta: ArrayLike,
    config: PreferenceConfig,
) -> Array:
    """theta - eta grad L = theta + (eta / (k s^2)) X^T (w * r), in closed form. (d,) -> (d,)."""
    X = jnp.asarray(X)
    theta = jnp.asarray(theta)
    residual = X @ theta - jnp.asarray(y)
    w = example_weights(theta, X, y, ref_logp, config)
    return theta + (eta / (X.shape[0] * config.noise_var)) * X.T @ (w * residual)


def _weight_shape(ref_logp, config: PreferenceConfig):
    """(C, kappa', b) with w(r) = C sigmoid(kappa' - b r^2); per example (k,) where needed."""
    a = 1.0 / (2.0 * config.noise_var)
    c0 = 0.5 * math.log(2.0 * math.pi * config.noise_var)
    if config.method == "npo":
        r_ref_sq = (-jnp.asarray(ref_logp) - c0) / a  # from log pi_ref = -a r_ref^2 - c0
        return 2.0, config.beta * a * r_ref_sq, config.beta * a
    if config.method == "simnpo":
        L = config.response_length
        return 2.0 / L, config.margin - config.beta * c0 / L, config.beta * a / L
    raise ValueError("drift bounds exist for 'npo' and 'simnpo' only (GA is unbounded)")


@partial(jax.jit, static_argnames="config")
def step_bound(
    X: ArrayLike, ref_logp: ArrayLike, eta: ArrayLike, config: PreferenceConfig
) -> Array:
    """D: a bound on ||theta_t - theta_{t-1}|| valid at every step (NPO/SimNPO). Scalar."""
    X = jnp.asarray(X)
    C, kappa, b = _weight_shape(ref_logp, config)
    r_b = jnp.sqrt(jnp.maximum(kappa / b, 0.0) + 1.0 / (2.0 * b))  # () or (k,)
    per_example = jnp.linalg.norm(X, axis=1) * C * r_b  # (k,)
    return eta / (X.shape[0] * config.noise_var) * jnp.sum(per_example)


@jax.jit
def drift_bound(
    delta0: ArrayLike,
    Xtest: ArrayLike,
    step_bound_ab: ArrayLike,
    step_bound_ba: ArrayLike,
    ts: ArrayLike,
) -> Array:
    """Upper bound on d(t): (||X_test Delta_0|| + ||X_test||_op t (D_AB + D_BA))^2 / m. (T,)."""
    Xtest = jnp.asarray(Xtest)
    ts = jnp.atleast_1d(jnp.asarray(ts, dtype=Xtest.dtype))
    start = jnp.linalg.norm(Xtest @ jnp.asarray(delta0))
    growth = jnp.linalg.norm(Xtest, ord=2) * (step_bound_ab + step_bound_ba)
    return (start + ts * growth) ** 2 / Xtest.shape[0]


@partial(jax.jit, static_argnames="config")
def update_jacobian(
    theta: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    ref_logp: ArrayLike,
    eta: ArrayLike,
    config: PreferenceConfig,
) -> Array:
    """d update / d theta = I + (eta / (k s^2)) X^T diag(phi'(r)) X (d, d), phi(r) = w(r) r.

    phi'(r) = w (1 - 2 b r^2 (1 - sigmoid(kappa' - b r^2))) for NPO/SimNPO, 1 for GA.
    """
    X = jnp.asarray(X)
    theta = jnp.asarray(theta)
    residual = X @ theta - jnp.asarray(y)
    if config.method == "ga":
        slope = jnp.ones_like(residual)
    else:
        C, kappa, b = _weight_shape(ref_logp, config)
        sig = jax.nn.sigmoid(kappa - b * residual**2)
        slope = C * sig * (1.0 - 2.0 * b * residual**2 * (1.0 - sig))
    d = X.shape[1]
    return (
        jnp.eye(d, dtype=X.dtype)
        + (eta / (X.shape[0] * config.noise_var)) * (X.T * slope[None, :]) @ X
    )


@partial(jax.jit, static_argnames=("config", "steps"))
def iterate(
    theta0: ArrayLike,
    X: ArrayLike,
    y: ArrayLike,
    eta: ArrayLike,
    config: PreferenceConfig,
    steps: int,
) -> Array:
    """``steps`` updates from theta0 with pi_ref = pi_theta0 (NPO's model before unlearning).

    Returns (steps + 1, d).
    """
    theta0 = jnp.asarray(theta0)
    ref_logp = gaussian_logprob(theta0, X, y, config.noise_var)

    def body(theta, _):
        new = update(theta, X, y, ref_logp, eta, config)
        return new, new

    _, thetas = jax.lax.scan(body, theta0, None, length=steps)
    return jnp.concatenate([theta0[None, :], thetas], axis=0)
