"""Local unlearning of one trained model: GA, NPO, SimNPO (two forms) and GA + retain term.

Every method is a loss on the forget set built from :mod:`sim.objectives` through the
linear-Gaussian log-likelihood log pi_theta(y|x) = -(y - f(x))^2 / (2 s^2) - log(2 pi s^2) / 2
(:func:`sim.objectives.gaussian_sequence_logprobs`); a run is a ``lax.scan`` of optimizer steps
that records, per step, the quantities the paper plots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from sim import objectives as obj
from sim.models import Model, Params

METHODS = ("ga", "npo", "simnpo", "simnpo_paper", "ga_retain")


@dataclass(frozen=True)
class UnlearnConfig:
    """Local unlearning on the forget set.

    Attributes:
        method: "ga" (gradient ascent), "npo" (reference = the model before unlearning),
            "simnpo" (length-normalised, with ``margin``: the SimNPO authors' form),
            "simnpo_paper" (the simplified form printed in the paper: no normalisation, no
            margin), "ga_retain" (GA + ``retain_weight`` x NLL on retain data: weakly local).
        steps: number of unlearning steps.
        learning_rate: step size (plain gradient descent on the loss, as in the theory).
        noise_std: s of the Gaussian likelihood; s^2 = 1/2 makes GA the paper's GA at step eta.
        tokens_per_sequence: forget examples per "sequence" (|y|); 1 = one token each.
        npo_beta, simnpo_beta, margin: NPO / SimNPO hyper-parameters.
        retain_weight: weight of the retain NLL in "ga_retain".
    """

    method: str = "ga"
    steps: int = 50
    learning_rate: float = 0.01
    noise_std: float = math.sqrt(0.5)
    tokens_per_sequence: int = 1
    npo_beta: float = 0.5
    simnpo_beta: float = 2.5
    margin: float = 1.0
    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"UnlearnConfig.method must be one of {METHODS}, got {self.method!r}")
        if self.steps < 0:
            raise ValueError(f"UnlearnConfig.steps must be >= 0, got {self.steps}")
        if not self.learning_rate > 0:
            raise ValueError(f"UnlearnConfig.learning_rate must be > 0, got {self.learning_rate}")
        if not self.noise_std > 0:
            raise ValueError(f"UnlearnConfig.noise_std must be > 0, got {self.noise_std}")
        if self.tokens_per_sequence < 1:
            raise ValueError(
                f"UnlearnConfig.tokens_per_sequence must be >= 1, got {self.tokens_per_sequence}"
            )


def _logprobs(model: Model, cfg: UnlearnConfig, params: Params, X, y, tokens: int = 1):
    return obj.gaussian_sequence_logprobs(model.apply(params, X), y, cfg.noise_std, tokens)


def unlearning_loss(
    model: Model, cfg: UnlearnConfig, params: Params, forget, retain, ref_logp: jax.Array
) -> jax.Array:
    """The method's loss at ``params``; forget = (X_U, y_U), retain = (X_R, y_R)."""
    logp, n_tok = _logprobs(model, cfg, params, *forget, cfg.tokens_per_sequence)
    if cfg.method == "ga":
        return obj.gradient_ascent_loss(logp, n_tok)
    if cfg.method == "npo":
        return obj.npo_loss(logp, ref_logp, beta=cfg.npo_beta)
    if cfg.method == "simnpo":
        return obj.simnpo_loss(logp, n_tok, beta=cfg.simnpo_beta, margin=cfg.margin)
    if cfg.method == "simnpo_paper":
        return obj.simnpo_loss(
            logp, n_tok, beta=cfg.simnpo_beta, margin=0.0, length_normalize=False
        )
    r_logp, r_tok = _logprobs(model, cfg, params, *retain)
    return obj.combine(
        obj.gradient_ascent_loss(logp, n_tok), obj.nll_loss(r_logp, r_tok), 1.0, cfg.retain_weight
    )


class UnlearnTrace(NamedTuple):
    """Per-step records for t = 0..steps (index 0 = before unlearning)."""

    loss: jax.Array  # (T+1,) the method's loss
    forget_logp: jax.Array  # (T+1,) mean per-token log-likelihood of the forget set
    retain_logp: jax.Array  # (T+1,) mean per-token log-likelihood of the retain data (utility)
    test_pred: jax.Array  # (T+1, m) predictions on the test set (for RE distances)


@partial(jax.jit, static_argnums=(0, 1))
def unlearn(
    model: Model, cfg: UnlearnConfig, params: Params, forget, retain, Xtest: jax.Array
) -> tuple[Params, UnlearnTrace]:
    """Run ``cfg.steps`` steps of gradient descent on the method's loss from ``params``.

    forget = (X_U (k, d), y_U (k,)), retain = (X_R (n_R, d), y_R (n_R,)), Xtest (m, d).
    NPO's reference log-probabilities are those of ``params`` (the model before unlearning).
    """
    ref_logp, _ = _logprobs(model, cfg, params, *forget, cfg.tokens_per_sequence)
    opt = optax.sgd(cfg.learning_rate)
    loss_fn = lambda p: unlearning_loss(model, cfg, p, forget, retain, ref_logp)  # noqa: E731

    def record(p):
        f_logp, f_tok = _logprobs(model, cfg, p, *forget)
        r_logp, r_tok = _logprobs(model, cfg, p, *retain)
        return (
            loss_fn(p),
            f_logp.sum() / f_tok.sum(),
            r_logp.sum() / r_tok.sum(),
            model.apply(p, Xtest),
        )

    def step(carry, _):
        p, state = carry
        updates, state = opt.update(jax.grad(loss_fn)(p), state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), record(p)

    (final, _), recs = jax.lax.scan(step, (params, opt.init(params)), None, length=cfg.steps)
    first = record(params)
    trace = UnlearnTrace(*[jnp.concatenate([f[None], r]) for f, r in zip(first, recs, strict=True)])
    return final, trace
