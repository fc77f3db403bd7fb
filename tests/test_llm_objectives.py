"""The torch objectives equal their formulas computed by hand on fixed numbers."""

import math

import pytest
import torch

from llm import objectives as obj


def _hand_logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_sequence_logprobs_matches_manual_gather():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 6, -100, -100]])
    logp, n = obj.sequence_logprobs(logits, labels)
    logsm = torch.log_softmax(logits, -1)
    expected0 = logsm[0, 1, 3] + logsm[0, 2, 4] + logsm[0, 3, 1]
    expected1 = logsm[1, 0, 2] + logsm[1, 1, 6]
    assert torch.allclose(logp, torch.stack([expected0, expected1]))
    assert n.tolist() == [3.0, 2.0]


def test_sequence_logprobs_rejects_bad_shapes():
    with pytest.raises(ValueError, match="logits"):
        obj.sequence_logprobs(torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.long))


def test_losses_equal_hand_values():
    logp = torch.tensor([-3.0, -8.0], dtype=torch.float64)
    ref = torch.tensor([-2.0, -9.0], dtype=torch.float64)
    n = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert obj.gradient_ascent_loss(logp, n).item() == pytest.approx(-11.0 / 7.0)
    assert obj.nll_loss(logp, n, total_tokens=14.0).item() == pytest.approx(11.0 / 14.0)
    beta = 0.5
    npo = -(2 / beta) * 0.5 * (_hand_logsigmoid(-beta * -1.0) + _hand_logsigmoid(-beta * 1.0))
    assert obj.npo_loss(logp, ref, beta).item() == pytest.approx(npo)
    beta, margin = 2.5, 0.3
    sim = (
        -(2 / beta)
        * 0.5
        * (_hand_logsigmoid(-beta * (-1.0) - margin) + _hand_logsigmoid(-beta * (-2.0) - margin))
    )
    got = obj.simnpo_loss(logp, n, beta=beta, margin=margin, length_normalize=True)
    assert got.item() == pytest.approx(sim)
    paper = -(2 / beta) * 0.5 * (_hand_logsigmoid(beta * 3.0) + _hand_logsigmoid(beta * 8.0))
    got = obj.simnpo_loss(logp, n, beta=beta, margin=0.0, length_normalize=False)
    assert got.item() == pytest.approx(paper)
    assert obj.combine(torch.tensor(2.0), torch.tensor(3.0), 1.0, 0.5).item() == pytest.approx(3.5)


def test_beta_must_be_positive():
    with pytest.raises(ValueError, match="beta"):
        obj.npo_loss(torch.zeros(1), torch.zeros(1), beta=0.0)
