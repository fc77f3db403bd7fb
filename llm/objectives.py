"""Local unlearning objectives: small pure functions of per-sequence log-probabilities.

Every objective has one calling convention, ``loss = objective(scores, params)``:

- ``scores`` (:class:`SequenceScores`): per-sequence ``logp`` = log pi_theta(y|x) summed over the
  response tokens (from :func:`llm.logprobs.sequence_logprobs`), ``n_tokens`` = |y|, NPO's
  reference ``ref_logp`` = log pi_ref(y|x), and the totals of the global batch the sequences
  belong to (``total_tokens``, ``total_sequences``; None = this batch alone). With the totals of
  an accumulated, distributed batch, every split of the batch gives the same gradient.
- ``params`` (:class:`ObjectiveParams`): ``beta``, ``margin``, ``length_normalize``.

:data:`FORGET_OBJECTIVES` maps a name to its function; :func:`forget_loss` dispatches through it.
A retain term is added by composition (:func:`combine` with :func:`nll_loss`), never by
subclassing. A loss is *minimised*; signs follow the paper (Yu et al. 2025, Sec. 4.1) and the
cited method papers. The JAX twins (same names, convention and semantics) are in
:mod:`sim.objectives`; tests/test_sim_objectives_parity.py holds the two together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from llm.logprobs import IGNORE_INDEX, sequence_logprobs

__all__ = [
    "IGNORE_INDEX",
    "FORGET_OBJECTIVES",
    "ObjectiveParams",
    "SequenceScores",
    "combine",
    "forget_loss",
    "gradient_ascent_loss",
    "nll_loss",
    "npo_loss",
    "sequence_logprobs",
    "simnpo_loss",
]


class SequenceScores(NamedTuple):
    """Per-sequence numbers of a (micro-)batch, and the totals of its global batch."""

    logp: torch.Tensor  # (B,) log pi_theta(y|x), summed over response tokens
    n_tokens: torch.Tensor  # (B,) |y|
    ref_logp: torch.Tensor | None = None  # (B,) log pi_ref(y|x): NPO's reference
    total_tokens: torch.Tensor | float | None = None  # response tokens of the global batch
    total_sequences: torch.Tensor | float | None = None  # sequences of the global batch


class ObjectiveParams(NamedTuple):
    """Hyperparameters of the forget objectives (each uses the ones it names)."""

    beta: float = 0.5  # NPO / SimNPO inverse temperature
    margin: float = 0.0  # SimNPO margin (the SimNPO authors' gamma)
    length_normalize: bool = True  # SimNPO: log pi / |y| (authors' form) or log pi (paper's)


def nll_loss(scores: SequenceScores) -> torch.Tensor:
    """Token-averaged negative log-likelihood: the fine-tuning and retain loss,
    ``-sum(logp) / total_tokens``."""
    denom = scores.n_tokens.sum() if scores.total_tokens is None else scores.total_tokens
    return -scores.logp.sum() / denom


def _sequence_share(scores: SequenceScores):
    # A mean over this batch's sequences, rescaled to a mean over the global batch.
    if scores.total_sequences is None:
        return None
    return len(scores.logp) / scores.total_sequences


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def gradient_ascent_loss(scores: SequenceScores, params: ObjectiveParams) -> torch.Tensor:
    """Gradient ascent (GA): L_GA = E log pi_theta(y|x), token-averaged (paper Sec. 4.1);
    exactly ``-nll_loss``."""
    return -nll_loss(scores)


def npo_loss(scores: SequenceScores, params: ObjectiveParams) -> torch.Tensor:
    """Negative Preference Optimization (Zhang et al. 2024; paper Sec. 4.1):
    L_NPO = E -(2/beta) log sigmoid(-beta (log pi_theta(y|x) - log pi_ref(y|x))), pi_ref = the
    model before unlearning; a mean over sequences."""
    _check_beta(params.beta)
    if scores.ref_logp is None:
        raise ValueError("NPO needs the reference log-probabilities (scores.ref_logp)")
    beta = params.beta
    loss = -(2.0 / beta) * F.logsigmoid(-beta * (scores.logp - scores.ref_logp)).mean()
    share = _sequence_share(scores)
    return loss if share is None else loss * share


def simnpo_loss(scores: SequenceScores, params: ObjectiveParams) -> torch.Tensor:
    """SimNPO (Fan et al. 2024), reference-free NPO:
    L = E -(2/beta) log sigmoid(-beta r(y|x) - margin), r = log pi_theta(y|x) / |y| with
    ``length_normalize`` (the SimNPO authors' form; margin = their gamma), r = log pi_theta(y|x)
    without. ``length_normalize=False, margin=0`` is the simplified form printed in the paper.
    |y| is clamped at 1."""
    _check_beta(params.beta)
    logp, beta = scores.logp, params.beta
    reward = logp / scores.n_tokens.clamp_min(1.0) if params.length_normalize else logp
    loss = -(2.0 / beta) * F.logsigmoid(-beta * reward - params.margin).mean()
    share = _sequence_share(scores)
    return loss if share is None else loss * share


FORGET_OBJECTIVES: dict[str, Callable[[SequenceScores, ObjectiveParams], torch.Tensor]] = {
    "ga": gradient_ascent_loss,
    "npo": npo_loss,
    "simnpo": simnpo_loss,
}


def forget_loss(name: str, scores: SequenceScores, params: ObjectiveParams) -> torch.Tensor:
    """The forget objective registered as ``name``, at ``scores``."""
    if name not in FORGET_OBJECTIVES:
        raise ValueError(f"unknown objective {name!r} (have {', '.join(FORGET_OBJECTIVES)})")
    return FORGET_OBJECTIVES[name](scores, params)


def combine(
    forget: torch.Tensor,
    retain: torch.Tensor | None,
    forget_weight: float = 1.0,
    retain_weight: float = 0.0,
) -> torch.Tensor:
    """``forget_weight * forget + retain_weight * retain`` (gradient difference when ``forget``
    is GA and ``retain`` is :func:`nll_loss` on retain data: the weakly local objectives)."""
    if retain is None or retain_weight == 0.0:
        return forget_weight * forget
    return forget_weight * forget + retain_weight * retain
