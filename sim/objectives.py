"""JAX twins of :mod:`llm.objectives`: local unlearning losses as small pure functions of
per-sequence log-probabilities, with the same names, the same calling convention and the same
semantics (tests/test_sim_objectives_parity.py holds the two implementations together to 1e-12 in
float64, values and gradients).

Every objective has one calling convention, ``loss = objective(scores, params)``:

- ``scores`` (:class:`SequenceScores`): per-sequence ``logp`` = log pi_theta(y|x) summed over the
  sequence's tokens, ``n_tokens`` = |y|, NPO's reference ``ref_logp`` = log pi_ref(y|x), and the
  totals of the global batch the sequences belong to (``total_tokens``, ``total_sequences``;
  None = this batch alone).
- ``params`` (:class:`ObjectiveParams`): ``beta``, ``margin``, ``length_normalize``.

:data:`FORGET_OBJECTIVES` maps a name to its function; :func:`forget_loss` dispatches through it.
A retain term is added by composition (:func:`combine` with :func:`nll_loss`). A loss is
*minimised*. In the simulations the "sequences" come from a linear-Gaussian model
(:func:`gaussian_sequence_logprobs`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "FORGET_OBJECTIVES",
    "ObjectiveParams",
    "SequenceScores",
    "combine",
    "forget_loss",
    "gaussian_sequence_logprobs",
    "gaussian_token_logprobs",
    "gradient_ascent_loss",
    "nll_loss",
    "npo_loss",
    "simnpo_loss",
]


class SequenceScores(NamedTuple):
    """Per-sequence numbers of a (micro-)batch, and the totals of its global batch."""

    logp: jax.Array  # (B,) log pi_theta(y|x), summed over the sequence's tokens
    n_tokens: jax.Array  # (B,) |y|
    ref_logp: jax.Array | None = None  # (B,) log pi_ref(y|x): NPO's reference
    total_tokens: jax.Array | float | None = None  # tokens of the global batch
    total_sequences: jax.Array | float | None = None  # sequences of the global batch


class ObjectiveParams(NamedTuple):
    """Hyperparameters of the forget objectives (each uses the ones it names)."""

    beta: float = 0.5  # NPO / SimNPO inverse temperature
    margin: float = 0.0  # SimNPO margin (the SimNPO authors' gamma)
    length_normalize: bool = True  # SimNPO: log pi / |y| (authors' form) or log pi (paper's)


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


def nll_loss(scores: SequenceScores) -> jax.Array:
    """Token-averaged negative log-likelihood: the fine-tuning and retain loss,
    ``-sum(logp) / total_tokens``."""
    denom = scores.n_tokens.sum() if scores.total_tokens is None else scores.total_tokens
    return -scores.logp.sum() / denom


def _sequence_share(scores: SequenceScores):
    # A mean over this batch's sequences, rescaled to a mean over the global batch.
    if scores.total_sequences is None:
        return None
    return scores.logp.shape[0] / scores.total_sequences


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def gradient_ascent_loss(scores: SequenceScores, params: ObjectiveParams) -> jax.Array:
    """Gradient ascent (GA): L_GA = E log pi_theta(y|x), token-averaged (paper Sec. 4.1);
    exactly ``-nll_loss``."""
    return -nll_loss(scores)


def npo_loss(scores: SequenceScores, params: ObjectiveParams) -> jax.Array:
    """Negative Preference Optimization (Zhang et al. 2024; paper Sec. 4.1):
    L_NPO = E -(2/beta) log sigmoid(-beta (log pi_theta(y|x) - log pi_ref(y|x))), pi_ref = the
    model before unlearning; a mean over sequences."""
    _check_beta(params.beta)
    if scores.ref_logp is None:
        raise ValueError("NPO needs the reference log-probabilities (scores.ref_logp)")
    beta = params.beta
    loss = -(2.0 / beta) * jax.nn.log_sigmoid(-beta * (scores.logp - scores.ref_logp)).mean()
    share = _sequence_share(scores)
    return loss if share is None else loss * share


def simnpo_loss(scores: SequenceScores, params: ObjectiveParams) -> jax.Array:
    """SimNPO (Fan et al. 2024), reference-free NPO:
    L = E -(2/beta) log sigmoid(-beta r(y|x) - margin), r = log pi_theta(y|x) / |y| with
    ``length_normalize`` (the SimNPO authors' form; margin = their gamma), r = log pi_theta(y|x)
    without. ``length_normalize=False, margin=0`` is the simplified form printed in the paper.
    |y| is clamped at 1."""
    _check_beta(params.beta)
    logp, beta = scores.logp, params.beta
    reward = logp / jnp.maximum(scores.n_tokens, 1.0) if params.length_normalize else logp
    loss = -(2.0 / beta) * jax.nn.log_sigmoid(-beta * reward - params.margin).mean()
    share = _sequence_share(scores)
    return loss if share is None else loss * share


FORGET_OBJECTIVES: dict[str, Callable[[SequenceScores, ObjectiveParams], jax.Array]] = {
    "ga": gradient_ascent_loss,
    "npo": npo_loss,
    "simnpo": simnpo_loss,
}


def forget_loss(name: str, scores: SequenceScores, params: ObjectiveParams) -> jax.Array:
    """The forget objective registered as ``name``, at ``scores``."""
    if name not in FORGET_OBJECTIVES:
        raise ValueError(f"unknown objective {name!r} (have {', '.join(FORGET_OBJECTIVES)})")
    return FORGET_OBJECTIVES[name](scores, params)


def combine(
    forget: jax.Array,
    retain: jax.Array | None,
    forget_weight: float = 1.0,
    retain_weight: float = 0.0,
) -> jax.Array:
    """``forget_weight * forget + retain_weight * retain`` (gradient difference when ``forget``
    is GA and ``retain`` is :func:`nll_loss` on retain data: the weakly local objectives)."""
    if retain is None or retain_weight == 0.0:
        return forget_weight * forget
    return forget_weight * forget + retain_weight * retain
