"""Small models for the staged-training simulations, as (init, apply) pairs of pure functions.

``init(key, d) -> params`` and ``apply(params, X) -> predictions (n,)`` for X (n, d). The linear
model is the paper's (Sec. 3); the MLP (flax.linen) and the diagonal linear network test whether
path dependence and the recency effect survive outside the linear theory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Params = Any  # a pytree of float64 arrays

MODEL_KINDS = ("linear", "mlp", "diagonal")


@dataclass(frozen=True)
class ModelConfig:
    """Which model and its size.

    Attributes:
        kind: "linear" (theta in R^d, starts at 0 as in the paper), "mlp" (flax.linen MLP with
            ``depth`` hidden layers of ``width`` tanh units) or "diagonal" (diagonal linear network
            theta = u*u - v*v, u = v = ``init_scale`` at start: the rich/sparse regime).
        width: hidden width of the MLP.
        depth: number of hidden layers of the MLP.
        init_scale: initial u = v of the diagonal network.
    """

    kind: str = "linear"
    width: int = 32
    depth: int = 2
    init_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"ModelConfig.kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.width < 1 or self.depth < 1:
            raise ValueError(f"ModelConfig width/depth must be >= 1, got {self.width}/{self.depth}")
        if not self.init_scale > 0:
            raise ValueError(f"ModelConfig.init_scale must be > 0, got {self.init_scale}")


class MLP(nn.Module):
    """x (n, d) -> tanh hidden layers -> scalar output (n,)."""

    width: int
    depth: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.depth):
            x = jnp.tanh(nn.Dense(self.width, param_dtype=jnp.float64)(x))
        return nn.Dense(1, param_dtype=jnp.float64)(x)[:, 0]


@dataclass(frozen=True)
class Model:
    """A model as two pure functions; ``name`` for reports."""

    name: str
    init: Callable[[jax.Array, int], Params]
    apply: Callable[[Params, jax.Array], jax.Array]


def make_model(cfg: ModelConfig) -> Model:
    if cfg.kind == "linear":
        return Model(
            "linear",
            lambda key, d: jnp.zeros(d, jnp.float64),
            lambda theta, X: X @ theta,
        )
    if cfg.kind == "diagonal":
        scale = cfg.init_scale

        def init_diag(key: jax.Array, d: int) -> Params:
            return {"u": jnp.full(d, scale), "v": jnp.full(d, scale)}

        return Model("diagonal", init_diag, lambda p, X: X @ (p["u"] ** 2 - p["v"] ** 2))
    net = MLP(cfg.width, cfg.depth)

    def init_mlp(key: jax.Array, d: int) -> Params:
        return net.init(key, jnp.zeros((1, d), jnp.float64))

    return Model(f"mlp{cfg.depth}x{cfg.width}", init_mlp, net.apply)


def sq_distance(a: Params, b: Params) -> jax.Array:
    """||a - b||^2 summed over every leaf of two parameter pytrees of one structure."""
    leaves = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda x, y: jnp.sum((x - y) ** 2), a, b)
    )
    return sum(leaves)
