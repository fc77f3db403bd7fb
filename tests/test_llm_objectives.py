"""The torch objectives: their formulas by hand, the one calling convention, the registry."""

import math

import pytest
import torch

from llm import objectives as obj
from llm.logprobs import sequence_logprobs


def _hand_logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


LOGP = torch.tensor([-3.0, -8.0], dtype=torch.float64)
REF = torch.tensor([-2.0, -9.0], dtype=torch.float64)
N = torch.tensor([3.0, 4.0], dtype=torch.float64)


def test_sequence_logprobs_matches_manual_gather():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 6, -100, -100]])
    logp, n = sequence_logprobs(logits, labels)
    logsm = torch.log_softmax(logits, -1)
    expected0 = logsm[0, 1, 3] + logsm[0, 2, 4] + logsm[0, 3, 1]
    expected1 = logsm[1, 0, 2] + logsm[1, 1, 6]
    assert torch.allclose(logp, torch.stack([expected0, expected1]))
    assert n.tolist() == [3.0, 2.0]


def test_sequence_logprobs_rejects_bad_shapes():
    with pytest.raises(ValueError, match="logits"):
        sequence_logprobs(torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.long))


def test_losses_equal_hand_values():
    s = obj.SequenceScores(LOGP, N, ref_logp=REF)
    p = obj.ObjectiveParams(beta=0.5)
    assert obj.gradient_ascent_loss(s, p).item() == pytest.approx(-11.0 / 7.0)
    assert obj.nll_loss(s._replace(total_tokens=14.0)).item() == pytest.approx(11.0 / 14.0)
    npo = -(2 / 0.5) * 0.5 * (_hand_logsigmoid(-0.5 * -1.0) + _hand_logsigmoid(-0.5 * 1.0))
    assert obj.npo_loss(s, p).item() == pytest.approx(npo)
    beta, margin = 2.5, 0.3
    sim = (
        -(2 / beta)
        * 0.5
        * (_hand_logsigmoid(-beta * (-1.0) - margin) + _hand_logsigmoid(-beta * (-2.0) - margin))
    )
    got = obj.simnpo_loss(s, obj.ObjectiveParams(beta=beta, margin=margin))
    assert got.item() == pytest.approx(sim)
    paper = -(2 / beta) * 0.5 * (_hand_logsigmoid(beta * 3.0) + _hand_logsigmoid(beta * 8.0))
    got = obj.simnpo_loss(s, obj.ObjectiveParams(beta=beta, length_normalize=False))
    assert got.item() == pytest.approx(paper)
    assert obj.combine(torch.tensor(2.0), torch.tensor(3.0), 1.0, 0.5).item() == pytest.approx(3.5)


@pytest.mark.parametrize("name", ["ga", "npo", "simnpo"])
def test_split_batches_with_global_totals_sum_to_the_whole(name):
    """Each half of a batch scored with the global totals sums to the whole batch's loss: the
    invariant that makes accumulated and distributed batches give the same gradient."""
    logp = torch.tensor([-3.0, -8.0, -1.5, -6.0], dtype=torch.float64)
    ref = logp + torch.tensor([0.4, -1.0, 0.2, 0.7], dtype=torch.float64)
    n = torch.tensor([3.0, 4.0, 2.0, 5.0], dtype=torch.float64)
    p = obj.ObjectiveParams(beta=0.7, margin=0.2)
    whole = obj.forget_loss(name, obj.SequenceScores(logp, n, ref), p)
    parts = [
        obj.forget_loss(
            name,
            obj.SequenceScores(logp[i], n[i], ref[i], total_tokens=n.sum(), total_sequences=4),
            p,
        )
        for i in (slice(0, 1), slice(1, 4))
    ]
    assert (parts[0] + parts[1]).item() == pytest.approx(whole.item(), rel=1e-12)


def test_registry_dispatch_and_errors():
    s = obj.SequenceScores(LOGP, N, ref_logp=REF)
    p = obj.ObjectiveParams()
    for name, fn in obj.FORGET_OBJECTIVES.items():
        assert obj.forget_loss(name, s, p).item() == fn(s, p).item()
    with pytest.raises(ValueError, match="unknown objective 'kl'"):
        obj.forget_loss("kl", s, p)
    with pytest.raises(ValueError, match="ref_logp"):
        obj.npo_loss(obj.SequenceScores(LOGP, N), p)
    with pytest.raises(ValueError, match="beta"):
        obj.npo_loss(s, obj.ObjectiveParams(beta=0.0))
