"""Local unlearning of one trained model: any forget objective of :mod:`sim.objectives` (GA, NPO,
SimNPO), optionally with a retain NLL term (the weakly local objectives).

The loss is built from :mod:`sim.objectives` through the linear-Gaussian log-likelihood
log pi_theta(y|x) = -(y - f(x))^2 / (2 s^2) - log(2 pi s^2) / 2
(:func:`sim.objectives.gaussian_sequence_logprobs`): the forget objective registered as
``objective`` (:data:`sim.objectives.FORGET_OBJECTIVES`) on the forget set, composed with
``retain_weight`` x NLL on the retain data by :func:`sim.objectives.combine`. The parameter names
are :mod:`llm`'s. A run is a ``lax.scan`` of optimizer steps that records, per step, the quantities
the paper plots.
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

OBJECTIVES = tuple(obj.FORGET_OBJECTIVES)


@dataclass(frozen=True)
class UnlearnConfig:
    """Local unlearning on the forget set (the parameter names of :mod:`llm`'s methods).

    Attributes:
        objective: the forget objective, a key of :data:`sim.objectives.FORGET_OBJECTIVES`:
            "ga" (gradient ascent), "npo" (reference = the model before unlearning) or
            "simnpo" (reference-free; ``length_normalize`` and ``margin`` choose the form).
        steps: number of unlearning steps.
        lr: step size (plain gradient descent on the loss, as in the theory).
        noise_std: s of the Gaussian likelihood; s^2 = 1/2 makes GA the paper's GA at step lr.
        tokens_per_sequence: forget examples per "sequence" (|y|); 1 = one token each.
        beta: NPO / SimNPO inverse temperature.
        margin: SimNPO margin (the SimNPO authors' gamma).
        length_normalize: SimNPO: log pi / |y| (the authors' form) or log pi; False with margin 0
            is the simplified form printed in the paper.
        forget_weight: weight of the forget objective.
        retain_weight: weight of the token-averaged NLL on the retain data; > 0 adds the retain
            term to any objective (GA with 1.0 is gradient difference: weakly local).
    """

    objective: str = "ga"
    steps: int = 50
    lr: float = 0.01
    noise_std: float = math.sqrt(0.5)
    tokens_per_sequence: int = 1
    beta: float = 0.5
    margin: float = 0.0
    length_normalize: bool = True
    forget_weight: float = 1.0
    retain_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"UnlearnConfig.objective must be one of {OBJECTIVES}, got {self.objective!r}"
            )
        if self.steps < 0:
            raise ValueError(f"UnlearnConfig.steps must be >= 0, got {self.steps}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"UnlearnConfig.lr must be finite and > 0, got {self.lr}")
        if not self.noise_std > 0:
            raise ValueError(f"UnlearnConfig.noise_std must be > 0, got {self.noise_std}")
        if self.tokens_per_sequence < 1:
            raise ValueError(
                f"UnlearnConfig.tokens_per_sequence must be >= 1, got {self.tokens_per_sequence}"
            )
        if not self.beta > 0:
            raise ValueError(f"UnlearnConfig.beta must be > 0, got {self.beta}")
        if not math.isfinite(self.margin):
            raise ValueError(f"UnlearnConfig.margin must be finite, got {self.margin}")
        for name in ("forget_weight", "retain_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"UnlearnConfig.{name} must be finite and >= 0, got {value}")

    @property
    def params(self) -> obj.ObjectiveParams:
        """The forget objective's hyperparameters."""
        return obj.ObjectiveParams(
            beta=self.beta, margin=self.margin, length_normalize=self.length_normalize
        )

    @property
    def label(self) -> str:
        """Short name for titles: the objective, then the settings that differ from a plain run
        (``retain_weight``, ``forget_weight``, ``length_normalize=False``)."""
        parts = [self.objective]
        if not self.length_normalize:
            parts.append("length_normalize=False")
        if self.forget_weight != 1.0:
            parts.append(f"forget_weight={self.forget_weight:g}")
        if self.retain_weight > 0:
            parts.append(f"retain_weight={self.retain_weight:g}")
        return ", ".join(parts)


def _logprobs(model: Model, cfg: UnlearnConfig, params: Params, X, y, tokens: int = 1):
    return obj.gaussian_sequence_logprobs(model.apply(params, X), y, cfg.noise_std, tokens)


def unlearning_loss(
    model: Model, cfg: UnlearnConfig, params: Params, forget, retain, ref_logp: jax.Array
) -> jax.Array:
    """The unlearning loss at ``params``: ``forget_weight`` x the forget objective on
    forget = (X_U, y_U) (+ ``retain_weight`` x the NLL on retain = (X_R, y_R) when > 0)."""
    logp, n_tok = _logprobs(model, cfg, params, *forget, cfg.tokens_per_sequence)
    scores = obj.SequenceScores(logp, n_tok, ref_logp=ref_logp)
    forget_term = obj.forget_loss(cfg.objective, scores, cfg.params)
    retain_term = None
    if cfg.retain_weight > 0:
        r_logp, r_tok = _logprobs(model, cfg, params, *retain)
        retain_term = obj.nll_loss(obj.SequenceScores(r_logp, r_tok))
    return obj.combine(forget_term, retain_term, cfg.forget_weight, cfg.retain_weight)


class UnlearnTrace(NamedTuple):
    """Per-step records for t = 0..steps (index 0 = before unlearning)."""

    loss: jax.Array  # (T+1,) the unlearning loss
    forget_logp: jax.Array  # (T+1,) mean per-token log-likelihood of the forget set
    retain_logp: jax.Array  # (T+1,) mean per-token log-likelihood of the retain data (utility)
    test_pred: jax.Array  # (T+1, m) predictions on the test set (for RE distances)


@partial(jax.jit, static_argnums=(0, 1))
def unlearn(
    model: Model, cfg: UnlearnConfig, params: Params, forget, retain, Xtest: jax.Array
) -> tuple[Params, UnlearnTrace]:
    """Run ``cfg.steps`` steps of gradient descent on the unlearning loss from ``params``.

    forget = (X_U (k, d), y_U (k,)), retain = (X_R (n_R, d), y_R (n_R,)), Xtest (m, d).
    NPO's reference log-probabilities are those of ``params`` (the model before unlearning).
    """
    ref_logp, _ = _logprobs(model, cfg, params, *forget, cfg.tokens_per_sequence)
    opt = optax.sgd(cfg.lr)
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
