"""sim.objectives (JAX) against llm.objectives (torch): same inputs, same loss and gradient."""

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
NTOK = RNG.integers(1, 30, B).astype(np.float64)
NTOK[0] = 0.0  # exercises the clamp at one token


def _torch_value_grads(fn, *arrays):
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    value = fn(*tensors)
    value.backward()
    # An argument the loss does not use gets grad None in torch and zeros in JAX.
    return value.item(), [np.zeros(t.shape) if t.grad is None else t.grad.numpy() for t in tensors]


def _jax_value_grads(fn, *arrays):
    value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(arrays))))(
        *[jnp.asarray(a, jnp.float64) for a in arrays]
    )
    return float(value), [np.asarray(g) for g in grads]


CASES = [
    ("nll", lambda m: lambda lp, n: m.nll_loss(lp, n), (LOGP, NTOK[::-1] + 1)),
    ("ga", lambda m: lambda lp, n: m.gradient_ascent_loss(lp, n), (LOGP, NTOK + 1)),
    ("ga_total", lambda m: lambda lp, n: m.gradient_ascent_loss(lp, n, 123.0), (LOGP, NTOK)),
    ("npo", lambda m: lambda lp, ref: m.npo_loss(lp, ref, beta=0.5), (LOGP, REF)),
    ("npo_b2", lambda m: lambda lp, ref: m.npo_loss(lp, ref, beta=2.0), (LOGP, REF)),
    (
        "simnpo_norm_margin",
        lambda m: lambda lp, n: m.simnpo_loss(lp, n, beta=2.5, margin=1.5),
        (LOGP, NTOK),
    ),
    (
        "simnpo_paper",
        lambda m: lambda lp, n: m.simnpo_loss(lp, n, beta=0.5, length_normalize=False),
        (LOGP, NTOK),
    ),
    (
        "combine",
        lambda m: (
            lambda lp, n: m.combine(
                m.gradient_ascent_loss(lp, n), m.nll_loss(lp[::-1] * 0.5 + 0.0, n), 0.7, 1.3
            )
        ),
        (LOGP, NTOK + 1),
    ),
]


@pytest.mark.parametrize("name,make,arrays", CASES, ids=[c[0] for c in CASES])
def test_loss_and_gradient_agree(name, make, arrays):
    if name == "combine":  # torch tensors have no negative-step slicing: flip explicitly
        tfn = lambda lp, n: torch_obj.combine(  # noqa: E731
            torch_obj.gradient_ascent_loss(lp, n),
            torch_obj.nll_loss(torch.flip(lp, [0]) * 0.5, n),
            0.7,
            1.3,
        )
    else:
        tfn = make(torch_obj)
    tv, tg = _torch_value_grads(tfn, *arrays)
    jv, jg = _jax_value_grads(make(jax_obj), *arrays)
    assert jv == pytest.approx(tv, rel=1e-12, abs=1e-12)
    for a, b in zip(jg, tg, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_registries_match():
    assert set(jax_obj.FORGET_OBJECTIVES) == set(torch_obj.FORGET_OBJECTIVES)


def test_bad_beta_raises():
    for fn in (
        lambda: jax_obj.npo_loss(jnp.ones(2), jnp.ones(2), beta=0.0),
        lambda: jax_obj.simnpo_loss(jnp.ones(2), jnp.ones(2), beta=-1.0),
    ):
        with pytest.raises(ValueError, match="beta"):
            fn()


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
        return jax_obj.gradient_ascent_loss(logp, n)

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
