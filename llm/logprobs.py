"""The one token log-probability kernel: log p(token | prefix) of the labelled tokens.

Fine-tuning, unlearning objectives, evaluation scores and the RE distance's Pred all read
log-probabilities through :func:`token_logprobs`; the other functions here only sum or slice its
output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every labelled token, and the label mask.

    Args:
        logits: (B, T, V) next-token logits of a causal LM for ``input_ids``.
        labels: (B, T) token ids aligned with ``input_ids``; ``ignore_index`` marks tokens that
            carry no loss (prompt, padding). The causal shift is applied here.

    Returns:
        ``(token_logp, mask)``, both (B, T-1): log p(labels[t+1] | inputs[:t+1]) where
        ``mask``, 0 elsewhere. Half precision is scored in fp32; fp64 stays fp64.
    """
    if logits.ndim != 3 or labels.ndim != 2 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"expected logits (B, T, V) and labels (B, T); got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    shift_logits = logits[:, :-1, :]  # (B, T-1, V): position t predicts token t+1
    if shift_logits.dtype != torch.float64:
        shift_logits = shift_logits.float()
    shift_labels = labels[:, 1:]  # (B, T-1)
    mask = shift_labels != ignore_index
    safe_labels = shift_labels.masked_fill(~mask, 0)
    token_logp = torch.gather(F.log_softmax(shift_logits, dim=-1), 2, safe_labels.unsqueeze(-1))
    return token_logp.squeeze(-1) * mask, mask  # (B, T-1), (B, T-1)


def sequence_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logp, n_tokens)``, both (B,): summed log pi(y|x) over the labelled tokens of each
    sequence and their count (float, so it can divide)."""
    token_logp, mask = token_logprobs(logits, labels, ignore_index)
    return token_logp.sum(dim=1), mask.sum(dim=1).to(token_logp.dtype)


def per_example_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> list[torch.Tensor]:
    """B float64 CPU vectors: the labelled tokens' log-probs of each row (the Pred of an RE
    distance, and the scores of evaluation)."""
    token_logp, mask = token_logprobs(logits, labels, ignore_index)
    return [token_logp[b][mask[b]].double().cpu() for b in range(token_logp.shape[0])]
