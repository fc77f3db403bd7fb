"""JAX twins of :mod:`llm.objectives`: local unlearning losses as pure functions of per-sequence
log-probabilities (same names, arguments and semantics; tests/test_sim_objectives_parity.py holds
the two implementations together to ~1e-12 in float64, values and gradients).

Each loss is a function of ``logp`` (B,), the summed log-probability log pi_theta(y|x) of each
sequence, and ``n_tokens`` (B,), its length |y|. A loss is *minimised*. In the simulations the
"sequences" come from a linear-Gaussian model (:func:`gaussian_sequence_logprobs`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def gaussian_token_logprobs(pred: jax.Array, y: jax.Array, noise_std: float) -> jax.Array:
    """log N(y; pred, s^2) = -(y - pred)^2 / (2 s^2) - log(2 pi s^2) / 2, elementwise.

    With s^2 = 1/2 gradient ascent on the token-averaged log-likelihood at step size eta is exactly
    the paper's GA on (1/k) ||X_U theta - y_U||^2 at the same eta (Sec. 3): the constant drops out
    of the gradient and 1 / (2 s^2) = 1.
    """
    var = noise_std**2
    return -((y - pred) ** 2) / (2.0 * var) - 0.5 * jnp.log(2.0 * jnp.pi * var)


def gaussian_sequence_logprobs(
    pred: jax.Array, y: jax.Array, noise_std: float, tokens_per_sequence: int = 1
) -> tuple[jax.Array, jax.Array]:
    """Per-sequence (logp, n_tokens) of a scalar-output model read as a token model.

    Consecutive groups of ``tokens_per_sequence`` examples form one sequence (its tokens are
    conditionally independent given x, so log pi(y|x) is the sum over the group). With the default
    1 every example is a one-token sequence and SimNPO's length normalisation is the identity.

    Args:
        pred, y: (n,) model outputs and targets; n must be a multiple of tokens_per_sequence.
    Returns:
        logp (n / L,), n_tokens (n / L,) with L = tokens_per_sequence.
    """
    n = pred.shape[0]
    if tokens_per_sequence < 1 or n % tokens_per_sequence:
        raise ValueError(
            f"tokens_per_sequence={tokens_per_sequence} must be >= 1 and divide the {n} examples"
        )
    token_logp = gaussian_token_logprobs(pred, y, noise_std).reshape(-1, tokens_per_sequence)
    logp = token_logp.sum(axis=1)
    return logp, jnp.full(logp.shape, float(tokens_per_sequence), logp.dtype)


def nll_loss(logp: jax.Array, n_tokens: jax.Array, total_tokens: float | None = None) -> jax.Array:
    """Token-averaged negative log-likelihood, the fine-tuning (and retain) loss.

    ``total_tokens`` overrides the normaliser ``n_tokens.sum()`` (accumulated batches).
    """
    denom = n_tokens.sum() if total_tokens is None else total_tokens
    return -logp.sum() / denom


def gradient_ascent_loss(
    logp: jax.Array, n_tokens: jax.Array, total_tokens: float | None = None
) -> jax.Array:
    """Gradient ascent (GA): L_GA = E log pi_theta(y|x), token-averaged (paper Sec. 4.1)."""
    return -nll_loss(logp, n_tokens, total_tokens)


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def npo_loss(logp: jax.Array, ref_logp: jax.Array, beta: float = 0.5) -> jax.Array:
    """NPO (Zhang et al. 2024; paper Sec. 4.1):
    L = E -(2/beta) log sigmoid(-beta (log pi_theta(y|x) - log pi_ref(y|x))), pi_ref = the model
    before unlearning; mean over sequences."""
    _check_beta(beta)
    return -(2.0 / beta) * jax.nn.log_sigmoid(-beta * (logp - ref_logp)).mean()


def simnpo_loss(
    logp: jax.Array,
    n_tokens: jax.Array,
    beta: float = 2.5,
    margin: float = 0.0,
    length_normalize: bool = True,
) -> jax.Array:
    """SimNPO (Fan et al. 2024): L = E -(2/beta) log sigmoid(-beta r - margin), with
    r = log pi_theta(y|x) / |y| when ``length_normalize`` (the SimNPO authors' form, margin =
    their gamma), r = log pi_theta(y|x) otherwise; ``length_normalize=False, margin=0`` is the
    simplified form printed in the paper. |y| is clamped at 1 as in llm.objectives."""
    _check_beta(beta)
    reward = logp / jnp.maximum(n_tokens, 1.0) if length_normalize else logp
    return -(2.0 / beta) * jax.nn.log_sigmoid(-beta * reward - margin).mean()


def combine(
    forget: jax.Array,
    retain: jax.Array | None,
    forget_weight: float = 1.0,
    retain_weight: float = 0.0,
) -> jax.Array:
    """``forget_weight * forget + retain_weight * retain`` (gradient difference when ``forget``
    is GA and ``retain`` is :func:`nll_loss` on retain data): the weakly local objectives."""
    if retain is None or retain_weight == 0.0:
        return forget_weight * forget
    return forget_weight * forget + retain_weight * retain


FORGET_OBJECTIVES: dict[str, Callable[..., jax.Array]] = {
    "ga": gradient_ascent_loss,
    "npo": npo_loss,
    "simnpo": simnpo_loss,
}
