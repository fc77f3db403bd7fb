"""sim.objectives (JAX) against llm.objectives (torch), through the one calling convention
``FORGET_OBJECTIVES[name](scores, params)``: same SequenceScores and ObjectiveParams in, the same
loss and gradients out (float64, 1e-12)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import sim  # noqa: F401  (enables float64)
from llm import objectives as torch_obj
from sim import objectives as jax_obj

RNG = np.random.default_rng(1234)
B = 7
LOGP = -RNG.uniform(0.5, 40.0, B)  # summed log-probs of sequences
REF = LOGP + RNG.normal(0.0, 2.0, B)
NTOK = RNG.integers(2, 30, B).astype(np.float64)
NTOK[0] = 0.0  # exercises the clamp at one token (away from the kink at exactly 1)
RETAIN_LOGP = -RNG.uniform(0.5, 20.0, 5)
RETAIN_NTOK = RNG.integers(1, 30, 5).astype(np.float64)

# (name, params, totals): totals = (total_tokens, total_sequences) of a larger global batch.
PARAMS = [
    ("default", jax_obj.ObjectiveParams(), (None, None)),
    ("beta2_margin", jax_obj.ObjectiveParams(beta=2.0, margin=1.5), (None, None)),
    ("paper_form", jax_obj.ObjectiveParams(beta=0.5, length_normalize=False), (None, None)),
    ("totals", jax_obj.ObjectiveParams(beta=1.3, margin=0.4), (123.0, 19.0)),
    ("totals_paper", jax_obj.ObjectiveParams(2.5, 0.0, False), (77.0, 11.0)),
]


def _torch_value_grads(loss_of, arrays):
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    value = loss_of(torch_obj, *tensors)
    value.backward()
    # An input the loss does not use gets grad None in torch and zeros in JAX.
    return value.item(), [np.zeros(t.shape) if t.grad is None else t.grad.numpy() for t in tensors]


def _jax_value_grads(loss_of, arrays):
    fn = lambda *xs: loss_of(jax_obj, *xs)  # noqa: E731
    value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(arrays))))(
        *[jnp.asarray(a, jnp.float64) for a in arrays]
    )
    return float(value), [np.asarray(g) for g in grads]


def _assert_same(loss_of, arrays):
    tv, tg = _torch_value_grads(loss_of, arrays)
    jv, jg = _jax_value_grads(loss_of, arrays)
    assert np.isfinite(tv) and tv != 0.0
    assert np.any(tg[0] != 0.0)  # d loss / d logp: the comparison is not vacuous
    assert jv == pytest.approx(tv, rel=1e-12, abs=1e-12)
    for a, b in zip(jg, tg, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    return jv


@pytest.mark.parametrize("name", sorted(torch_obj.FORGET_OBJECTIVES))
@pytest.mark.parametrize("pname,params,totals", PARAMS, ids=[p[0] for p in PARAMS])
def test_registry_objectives_agree(name, pname, params, totals):
    """Values and gradients (in logp, n_tokens and ref_logp) of every registered objective."""

    def loss_of(m, logp, n_tokens, ref_logp):
        scores = m.SequenceScores(logp, n_tokens, ref_logp, *totals)
        return m.FORGET_OBJECTIVES[name](scores, m.ObjectiveParams(*params))

    value = _assert_same(loss_of, [LOGP, NTOK, REF])
    if totals[1] is not None and name != "ga":  # a mean over the global batch's sequences
        no_totals = jax_obj.FORGET_OBJECTIVES[name](
            jax_obj.SequenceScores(jnp.asarray(LOGP), jnp.asarray(NTOK), jnp.asarray(REF)),
            jax_obj.ObjectiveParams(*params),
        )
        assert value == pytest.approx(float(no_totals) * B / totals[1], rel=1e-14)


@pytest.mark.parametrize("totals", [None, 123.0], ids=["batch", "total_tokens"])
def test_nll_agrees(totals):
    _assert_same(
        lambda m, lp, n: m.nll_loss(m.SequenceScores(lp, n, total_tokens=totals)),
        [LOGP, NTOK + 1],
    )


@pytest.mark.parametrize("name", sorted(torch_obj.FORGET_OBJECTIVES))
def test_forget_loss_and_combine_agree(name):
    """forget_loss dispatch + a retain NLL through combine, with the global batch's totals."""
    params = (0.7, 0.3, True)

    def forget_of(m, lp, n, ref):
        scores = m.SequenceScores(lp, n, ref, 90.0, 13.0)
        return m.forget_loss(name, scores, m.ObjectiveParams(*params))

    def loss_of(m, lp, n, ref, r_lp, r_n):
        retain = m.nll_loss(m.SequenceScores(r_lp, r_n))
        return m.combine(forget_of(m, lp, n, ref), retain, 0.7, 1.3)

    value = _assert_same(loss_of, [LOGP, NTOK, REF, RETAIN_LOGP, RETAIN_NTOK])
    forget = float(forget_of(jax_obj, *map(jnp.asarray, (LOGP, NTOK, REF))))
    retain = -RETAIN_LOGP.sum() / RETAIN_NTOK.sum()
    assert value == pytest.approx(0.7 * forget + 1.3 * retain, rel=1e-13)
    assert float(jax_obj.combine(jnp.asarray(2.0), None, 0.5, 3.0)) == 1.0
    assert float(jax_obj.combine(jnp.asarray(2.0), jnp.asarray(5.0), 0.5, 0.0)) == 1.0


def test_totals_rescale_to_the_global_batch():
    """With the global batch's totals, a loss over a split batch sums to the whole batch's."""
    p = jax_obj.ObjectiveParams(beta=0.9, margin=0.2)
    lp, n, ref = jnp.asarray(LOGP), jnp.asarray(NTOK), jnp.asarray(REF)
    for name in jax_obj.FORGET_OBJECTIVES:
        whole = jax_obj.forget_loss(name, jax_obj.SequenceScores(lp, n, ref), p)
        parts = sum(
            jax_obj.forget_loss(
                name,
                jax_obj.SequenceScores(lp[s], n[s], ref[s], n.sum(), float(B)),
                p,
            )
            for s in (slice(0, 3), slice(3, B))
        )
        assert float(parts) == pytest.approx(float(whole), rel=1e-12), name


def test_registries_match():
    assert list(jax_obj.FORGET_OBJECTIVES) == list(torch_obj.FORGET_OBJECTIVES)
    assert set(jax_obj.FORGET_OBJECTIVES) == {"ga", "npo", "simnpo"}
    assert jax_obj.ObjectiveParams._fields == torch_obj.ObjectiveParams._fields
    assert jax_obj.ObjectiveParams() == torch_obj.ObjectiveParams()
    assert jax_obj.SequenceScores._fields == torch_obj.SequenceScores._fields
    assert jax_obj.SequenceScores._field_defaults == torch_obj.SequenceScores._field_defaults


def test_bad_inputs_raise():
    s = jax_obj.SequenceScores(jnp.ones(2), jnp.ones(2), jnp.ones(2))
    for name in ("npo", "simnpo"):
        with pytest.raises(ValueError, match="beta"):
            jax_obj.forget_loss(name, s, jax_obj.ObjectiveParams(beta=0.0))
    with pytest.raises(ValueError, match="ref_logp"):
        jax_obj.npo_loss(s._replace(ref_logp=None), jax_obj.ObjectiveParams())
    with pytest.raises(ValueError, match="unknown objective"):
        jax_obj.forget_loss("nope", s, jax_obj.ObjectiveParams())


def test_gaussian_logprob_matches_scipy_and_paper_ga():
    from scipy.stats import norm

    pred = RNG.normal(size=6)
    y = RNG.normal(size=6)
    lp = jax_obj.gaussian_token_logprobs(jnp.asarray(pred), jnp.asarray(y), 0.7)
    np.testing.assert_allclose(lp, norm.logpdf(y, loc=pred, scale=0.7), rtol=1e-13)
    # With s^2 = 1/2, one GD step on the GA loss equals the paper's GA step (Sec. 3).
    X = RNG.normal(size=(6, 4))
    theta = RNG.normal(size=4)
    eta = 0.03

    def ga(th):
        logp, n = jax_obj.gaussian_sequence_logprobs(X @ th, jnp.asarray(y), np.sqrt(0.5))
        return jax_obj.gradient_ascent_loss(
            jax_obj.SequenceScores(logp, n), jax_obj.ObjectiveParams()
        )

    stepped = theta - eta * np.asarray(jax.grad(ga)(jnp.asarray(theta)))
    paper = theta + (2 * eta / 6) * X.T @ (X @ theta - y)
    np.testing.assert_allclose(stepped, paper, rtol=1e-12)


def test_sequence_grouping_sums_tokens():
    pred = jnp.arange(6.0)
    y = jnp.zeros(6)
    logp, n = jax_obj.gaussian_sequence_logprobs(pred, y, 1.0, tokens_per_sequence=3)
    tok = jax_obj.gaussian_token_logprobs(pred, y, 1.0)
    np.testing.assert_allclose(logp, [tok[:3].sum(), tok[3:].sum()])
    np.testing.assert_allclose(n, [3.0, 3.0])
    with pytest.raises(ValueError, match="tokens_per_sequence"):
        jax_obj.gaussian_sequence_logprobs(pred, y, 1.0, tokens_per_sequence=4)
