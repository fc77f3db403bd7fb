"""Local unlearning objectives as small pure functions of per-sequence log-probabilities.

Every objective here is a function of two per-sequence numbers that one primitive computes:
``logp`` (the summed log-probability of the response tokens, log pi_theta(y|x)) and ``n_tokens``
(the number of response tokens, |y|). A loss is *minimised*; the sign conventions follow the paper
(Yu et al. 2025, Section 4.1) and the cited method papers. A retain term is added by composition
(:func:`combine`), never by subclassing.

The JAX twins of these functions live in :mod:`sim.objectives`; a test holds the two together.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def sequence_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability and token count of the labelled tokens of each sequence.

    Args:
        logits: (B, T, V) next-token logits as returned by a causal LM for ``input_ids``.
        labels: (B, T) token ids aligned with ``input_ids``; ``ignore_index`` marks tokens that
            carry no loss (prompt, padding). The usual causal shift is applied here.

    Returns:
        ``(logp, n_tokens)``, both (B,): sum over labelled positions of log p(token | prefix), and
        the number of labelled positions (float, so it can divide).
    """
    if logits.ndim != 3 or labels.ndim != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits (B, T, V) and labels (B, T); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    shift_logits = logits[:, :-1, :]  # (B, T-1, V): position t predicts token t+1
    if shift_logits.dtype != torch.float64:  # half precision is scored in fp32; fp64 stays fp64
        shift_logits = shift_logits.float()
    shift_labels = labels[:, 1:]  # (B, T-1)
    mask = shift_labels != ignore_index
    safe_labels = shift_labels.masked_fill(~mask, 0)
    token_logp = torch.gather(F.log_softmax(shift_logits, dim=-1), 2, safe_labels.unsqueeze(-1))
    token_logp = token_logp.squeeze(-1) * mask  # (B, T-1)
    return token_logp.sum(dim=1), mask.sum(dim=1).to(token_logp.dtype)


def nll_loss(logp: torch.Tensor, n_tokens: torch.Tensor, total_tokens: float | None = None):
    """Token-averaged negative log-likelihood, the fine-tuning (and retain) loss.

    ``total_tokens`` is the normaliser; pass the global token count of an accumulated batch so
    that batch x accumulation splits give the same gradient. Defaults to ``n_tokens.sum()``.
    """
    denom = n_tokens.sum() if total_tokens is None else total_tokens
    return -logp.sum() / denom


def gradient_ascent_loss(
    logp: torch.Tensor, n_tokens: torch.Tensor, total_tokens: float | None = None
):
    """Gradient ascent (GA): L_GA = E log pi_theta(y|x), token-averaged (paper Sec. 4.1).

    Minimising it raises the NLL of the forget set; it is exactly ``-nll_loss``.
    """
    return -nll_loss(logp, n_tokens, total_tokens)


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float = 0.5):
    """Negative Preference Optimization (Zhang et al. 2024; paper Sec. 4.1).

    L_NPO = E -(2/beta) log sigmoid(-beta (log pi_theta(y|x) - log pi_ref(y|x))), with pi_ref the
    model before unlearning. Averaged over sequences.
    """
    _check_beta(beta)
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def simnpo_loss(
    logp: torch.Tensor,
    n_tokens: torch.Tensor,
    beta: float = 2.5,
    margin: float = 0.0,
    length_normalize: bool = True,
):
    """SimNPO (Fan et al. 2024): reference-free NPO.

    L = E -(2/beta) log sigmoid(-beta * r(y|x) - margin), with r = log pi_theta(y|x) / |y| when
    ``length_normalize`` (the SimNPO authors' form, margin = their gamma) and r = log pi_theta(y|x)
    otherwise. ``length_normalize=False, margin=0`` is the simplified form printed in the paper.
    """
    _check_beta(beta)
    reward = logp / n_tokens.clamp_min(1.0) if length_normalize else logp
    return -(2.0 / beta) * F.logsigmoid(-beta * reward - margin).mean()


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def combine(
    forget: torch.Tensor,
    retain: torch.Tensor | None,
    forget_weight: float = 1.0,
    retain_weight: float = 0.0,
) -> torch.Tensor:
    """Weighted sum ``forget_weight * forget + retain_weight * retain`` (gradient difference when
    ``forget`` is GA and ``retain`` is :func:`nll_loss` on the retain set)."""
    if retain is None or retain_weight == 0.0:
        return forget_weight * forget
    return forget_weight * forget + retain_weight * retain


FORGET_OBJECTIVES: dict[str, Callable[..., torch.Tensor]] = {
    "ga": gradient_ascent_loss,
    "npo": npo_loss,
    "simnpo": simnpo_loss,
}
