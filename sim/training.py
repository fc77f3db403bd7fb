"""Training one stage: the proximal closed form (linear model) or an optax optimizer run.

Stage objective (paper Sec. 3, generalised to any parameter pytree):

    L(params) = (1/n) [ sum_i (f(x_i) - y_i)^2 + mu ||params - params_prev||^2 ],

whose minimiser for the linear model is theta = (X^T X + mu I)^{-1} (X^T y + mu theta_prev). The
1/n only rescales the objective (same minimiser), so optimizer step sizes do not depend on n.
As in the paper's protocol, the optimizer state and the learning-rate schedule are created afresh
for every stage (:func:`train_stage` builds them inside).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import optax

from sim.models import Model, Params, sq_distance

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "wsd", "cosine")


@dataclass(frozen=True)
class OptimizerConfig:
    """How a stage is trained by an optimizer.

    Attributes:
        name: "sgd" (with optional momentum) or "adamw" (betas 0.9/0.999 as in the paper).
        lr: peak learning rate.
        schedule: "constant", "wsd" (linear warm-up, constant, linear decay to 0) or "cosine"
            (linear warm-up then cosine decay to 0).
        warmup_frac: share of the stage's steps spent warming up (paper: 2%).
        decay_frac: share of the steps spent decaying in WSD (paper: 2%).
        weight_decay: AdamW decoupled weight decay (paper: 0).
        momentum: SGD momentum (0 = plain SGD).
        epochs: passes over the stage's data.
        batch_size: minibatch size; None = full batch. Each epoch reshuffles and drops the
            remainder of n / batch_size.
    """

    name: str = "adamw"
    lr: float = 1e-2
    schedule: str = "wsd"
    warmup_frac: float = 0.02
    decay_frac: float = 0.02
    weight_decay: float = 0.0
    momentum: float = 0.0
    epochs: int = 100
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ValueError(f"OptimizerConfig.name must be one of {OPTIMIZERS}, got {self.name!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"OptimizerConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"OptimizerConfig.lr must be finite and > 0, got {self.lr}")
        if self.epochs < 1:
            raise ValueError(f"OptimizerConfig.epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"OptimizerConfig.batch_size must be >= 1, got {self.batch_size}")
        for name in ("warmup_frac", "decay_frac"):
            if not 0.0 <= getattr(self, name) < 0.5:
                raise ValueError(
                    f"OptimizerConfig.{name} must be in [0, 0.5), got {getattr(self, name)}"
                )


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Learning rate per step for one stage of ``total_steps`` steps."""
    lr = cfg.lr
    warm = int(round(cfg.warmup_frac * total_steps))
    if cfg.schedule == "constant":
        return optax.constant_schedule(lr)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(total_steps, warm + 1), 0.0)
    decay = max(int(round(cfg.decay_frac * total_steps)), 1)
    stable = max(total_steps - warm - decay, 0)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, lr, warm),
            optax.constant_schedule(lr),
            optax.linear_schedule(lr, 0.0, decay),
        ],
        boundaries=[warm, warm + stable],
    )


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    schedule = make_schedule(cfg, total_steps)
    if cfg.name == "sgd":
        return optax.sgd(schedule, momentum=cfg.momentum or None)
    return optax.adamw(schedule, b1=0.9, b2=0.999, weight_decay=cfg.weight_decay)


def stage_loss(
    model: Model, params: Params, X: jax.Array, y: jax.Array, prev: Params, mu: float, n_total: int
) -> jax.Array:
    """(1/|batch|) sum (f(x)-y)^2 + (mu/n) ||params - prev||^2: an unbiased minibatch estimate
    of the stage objective above."""
    resid = model.apply(params, X) - y
    return jnp.mean(resid**2) + (mu / n_total) * sq_distance(params, prev)


def steps_per_epoch(cfg: OptimizerConfig, n: int) -> int:
    return 1 if cfg.batch_size is None else max(n // min(cfg.batch_size, n), 1)


@partial(jax.jit, static_argnums=(0, 1))
def train_stage(
    model: Model,
    cfg: OptimizerConfig,
    params: Params,
    X: jax.Array,
    y: jax.Array,
    mu: float,
    key: jax.Array,
) -> tuple[Params, jax.Array]:
    """Train one stage from ``params`` with a fresh optimizer and schedule.

    Args:
        X: (n, d), y: (n,), mu: proximal weight towards the stage's starting params.
        key: shuffles the minibatches (unused for full batch).
    Returns:
        final params, and the full-data stage loss after every epoch (epochs,).
    """
    n = X.shape[0]
    batch = n if cfg.batch_size is None else min(cfg.batch_size, n)
    per_epoch = steps_per_epoch(cfg, n)
    opt = make_optimizer(cfg, cfg.epochs * per_epoch)
    prev = params
    grad_fn = jax.grad(lambda p, xb, yb: stage_loss(model, p, xb, yb, prev, mu, n))

    def step(carry, idx):
        p, state = carry
        updates, state = opt.update(grad_fn(p, X[idx], y[idx]), state, p)
        return (optax.apply_updates(p, updates), state), None

    def epoch(carry, k):
        order = jnp.arange(n) if cfg.batch_size is None else jax.random.permutation(k, n)
        batches = order[: per_epoch * batch].reshape(per_epoch, batch)
        carry, _ = jax.lax.scan(step, carry, batches)
        return carry, stage_loss(model, carry[0], X, y, prev, mu, n)

    (params, _), losses = jax.lax.scan(
        epoch, (params, opt.init(params)), jax.random.split(key, cfg.epochs)
    )
    return params, losses


def proximal_stage(theta_prev: jax.Array, X: jax.Array, y: jax.Array, mu: float) -> jax.Array:
    """Closed form of a linear stage: (X^T X + mu I)^{-1} (X^T y + mu theta_prev). (d,)"""
    d = X.shape[1]
    return jnp.linalg.solve(X.T @ X + mu * jnp.eye(d), X.T @ y + mu * theta_prev)
