"""Multi-stage training paths with the forget stage anywhere, then local unlearning on each.

The paper's protocol (Sec. 4) in miniature: K stages S_1..S_{K-1} (retain) and S_U (forget); a
path is an order of the stages; every path is trained stage by stage from the same initial
model (proximal closed form for the linear model, or an optax optimizer re-initialised with its
schedule at every stage), then unlearned on S_U with the same local rule. The retrain baseline of
a path is the same sequence without S_U. Recorded per unlearning step: the unlearning loss, the
forget and retain log-likelihoods, the RE distance between every pair of paths, and the RE
distance of each path to its retrain baseline.

Stage features and overlap: coordinates [0, r) with r = round(overlap * d) are shared by every
stage; the remaining d - r coordinates are split into K disjoint private blocks, one per stage
(the forget stage is the last block). A stage's rows are N(0, 1) on its shared and private
coordinates and 0 elsewhere; test rows use every coordinate. overlap = 0 makes all stages
orthogonal (X_i^T X_j = 0), where the theory says the order cannot matter (Lemma C.1).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pathdep.configs import check_finite
from pathdep.resources import check_fits
from sim.models import Model, ModelConfig, Params, make_model
from sim.training import OptimizerConfig, proximal_stage, train_stage
from sim.unlearning import UnlearnConfig, unlearn

TRAINERS = ("proximal", "optimizer")


@dataclass(frozen=True)
class StageDataConfig:
    """Synthetic stages.

    Attributes:
        d: feature dimension.
        n_stages: K, the number of stages including the forget stage.
        n_per_stage: rows of each retain stage.
        k: rows of the forget stage.
        m: rows of the test set used for RE distances.
        overlap: fraction of coordinates shared by all stages (see module docstring).
        label_noise: standard deviation of label noise.
        teacher_offset: per-stage perturbation of the linear teacher (stages that disagree).
    """

    d: int = 24
    n_stages: int = 4
    n_per_stage: int = 40
    k: int = 8
    m: int = 64
    overlap: float = 0.5
    label_noise: float = 0.1
    teacher_offset: float = 0.5

    def __post_init__(self) -> None:
        for name in ("d", "n_per_stage", "k", "m"):
            if getattr(self, name) < 1:
                raise ValueError(f"StageDataConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_stages < 2:
            raise ValueError(f"StageDataConfig.n_stages must be >= 2, got {self.n_stages}")
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError(f"StageDataConfig.overlap must be in [0, 1], got {self.overlap}")


@dataclass(frozen=True)
class PathsConfig:
    """A multi-stage path experiment.

    Attributes:
        data: the stages.
        model: the model trained along every path.
        trainer: "proximal" (closed form; linear model only) or "optimizer" (``optimizer``).
        optimizer: optimizer, schedule, epochs, batch size of every stage when trainer is
            "optimizer" (re-initialised at every stage).
        mu: proximal weight of every stage (the paper's mu; 0 allowed with an optimizer).
        unlearn: the local unlearning rule applied to every path.
        orders: stage orders to compare, each a permutation of range(K) where K - 1 is the
            forget stage; None = the paper's design: retain stages in order 0..K-2 and the
            forget stage at every position p = 1..K.
        seed: root of every random key.
    """

    data: StageDataConfig = field(default_factory=StageDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: str = "proximal"
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    mu: float = 1.0
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    orders: tuple[tuple[int, ...], ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.orders is not None:  # hashable, whatever was passed
            object.__setattr__(self, "orders", tuple(tuple(o) for o in self.orders))
        if self.trainer not in TRAINERS:
            raise ValueError(f"PathsConfig.trainer must be one of {TRAINERS}, got {self.trainer!r}")
        if self.trainer == "proximal" and self.model.kind != "linear":
            raise ValueError("PathsConfig.trainer 'proximal' needs model.kind 'linear'")
        if self.trainer == "proximal" and not self.mu > 0:
            raise ValueError(f"PathsConfig.mu must be > 0 for the proximal trainer, got {self.mu}")
        if self.mu < 0:
            raise ValueError(f"PathsConfig.mu must be >= 0, got {self.mu}")
        K = self.data.n_stages
        for order in self.resolved_orders():
            if sorted(order) != list(range(K)):
                raise ValueError(f"PathsConfig.orders: {order} is not a permutation of 0..{K - 1}")

    def resolved_orders(self) -> tuple[tuple[int, ...], ...]:
        if self.orders is not None:
            return self.orders
        return forget_position_orders(self.data.n_stages)

    def memory_bytes(self) -> float:
        """A generous estimate of a run's per-step arrays (bytes): every path's test
        predictions, traces and pairwise distances per unlearning step, and training records."""
        n = len(self.resolved_orders())
        per_step = n * (self.data.m + n + 8)
        training = n * self.data.n_stages * (self.optimizer.epochs + 1) * 8
        return 8.0 * 4 * ((self.unlearn.steps + 1) * per_step + training)


def forget_position_orders(n_stages: int) -> tuple[tuple[int, ...], ...]:
    """Retain stages 0..K-2 in order with the forget stage K-1 inserted at positions 1..K."""
    retain = list(range(n_stages - 1))
    return tuple(tuple(retain[:p] + [n_stages - 1] + retain[p:]) for p in range(n_stages))


def all_orders(n_stages: int) -> tuple[tuple[int, ...], ...]:
    """Every permutation of the K stages (K! paths)."""
    return tuple(itertools.permutations(range(n_stages)))


class Stages(NamedTuple):
    """Stage data: X[i] (n_i, d), y[i] (n_i,) for i in 0..K-1 (last = forget), and Xtest (m, d)."""

    X: tuple[jax.Array, ...]
    y: tuple[jax.Array, ...]
    Xtest: jax.Array


def make_stages(cfg: StageDataConfig, key: jax.Array) -> Stages:
    """Draw the K stages and the test set (see the module docstring for the overlap design)."""
    d, K = cfg.d, cfg.n_stages
    shared = int(round(cfg.overlap * d))
    blocks = np.array_split(np.arange(shared, d), K)
    k_teacher, k_test, *k_stages = jax.random.split(key, K + 2)
    teacher = jax.random.normal(k_teacher, (d,), jnp.float64) / jnp.sqrt(d)
    Xs, ys = [], []
    for s in range(K):
        n = cfg.k if s == K - 1 else cfg.n_per_stage
        mask = np.zeros(d)
        mask[:shared] = 1.0
        mask[blocks[s]] = 1.0
        kx, ko, kn = jax.random.split(k_stages[s], 3)
        X = jax.random.normal(kx, (n, d), jnp.float64) * mask
        offset = cfg.teacher_offset * jax.random.normal(ko, (d,), jnp.float64) / jnp.sqrt(d)
        noise = cfg.label_noise * jax.random.normal(kn, (n,), jnp.float64)
        Xs.append(X)
        ys.append(X @ (teacher + offset) + noise)
    Xtest = jax.random.normal(k_test, (cfg.m, d), jnp.float64)
    return Stages(tuple(Xs), tuple(ys), Xtest)


def train_sequence(
    cfg: PathsConfig, model: Model, params0: Params, stages: Stages, order, stage_key: jax.Array
) -> Params:
    """Train the stages in ``order`` from ``params0``. Stage s always gets the shuffle key
    fold_in(stage_key, s), whatever its position, so paths differ only by the order."""
    params = params0
    for s in order:
        X, y = stages.X[s], stages.y[s]
        if cfg.trainer == "proximal":
            params = proximal_stage(params, X, y, cfg.mu)
        else:
            key = jax.random.fold_in(stage_key, s)
            params, _ = train_stage(model, cfg.optimizer, params, X, y, cfg.mu, key)
    return params


def re_distance(pred_a: jax.Array, pred_b: jax.Array) -> jax.Array:
    """RE distance (paper Def. 2.1) from predictions on the test set: mean over the last axis."""
    return jnp.mean((pred_a - pred_b) ** 2, axis=-1)


@dataclass(frozen=True)
class PathsResult:
    """Per-path unlearning traces and the distances between paths (numpy, t = 0..T).

    orders: the P paths. forget_position: 1-based position of the forget stage in each path.
    loss, forget_logp, retain_logp, re_to_retrain: (P, T+1). re_pairwise: (T+1, P, P).
    """

    config: PathsConfig
    orders: tuple[tuple[int, ...], ...]
    forget_position: np.ndarray
    loss: np.ndarray
    forget_logp: np.ndarray
    retain_logp: np.ndarray
    re_to_retrain: np.ndarray
    re_pairwise: np.ndarray

    def summary(self) -> dict[str, Any]:
        """Numbers for reports: divergence between paths, distance to retrain, recency."""
        P = len(self.orders)
        iu = np.triu_indices(P, 1)
        pair = self.re_pairwise[:, iu[0], iu[1]]  # (T+1, pairs)
        drop = self.forget_logp[:, 0] - self.forget_logp[:, -1]  # forgetting achieved per path
        out: dict[str, Any] = {
            "n_paths": P,
            "steps": int(self.loss.shape[1] - 1),
            "pairwise_re_initial_max": float(pair[0].max()) if P > 1 else 0.0,
            "pairwise_re_final_max": float(pair[-1].max()) if P > 1 else 0.0,
            "pairwise_re_final_mean": float(pair[-1].mean()) if P > 1 else 0.0,
            "pairwise_growth_log10": float(np.log10(pair[-1].max()) - np.log10(pair[0].max()))
            if P > 1 and pair[0].max() > 0 and pair[-1].max() > 0
            else float("nan"),
            "re_to_retrain_final": self.re_to_retrain[:, -1].tolist(),
            "forget_logp_initial": self.forget_logp[:, 0].tolist(),
            "forget_logp_drop": drop.tolist(),
            "retain_logp_final": self.retain_logp[:, -1].tolist(),
            "forget_position": self.forget_position.tolist(),
        }
        last = self.forget_position == len(self.orders[0])
        if last.any() and (~last).any():
            # Recency effect (paper Sec. 4.2): forgetting is slowest when S_U was the last stage.
            out["recency_slowest_is_last"] = bool(drop[last].min() < drop[~last].min())
            out["recency_drop_last_over_first"] = (
                float(drop[last].mean() / drop[self.forget_position == 1].mean())
                if (self.forget_position == 1).any()
                else float("nan")
            )
        return out


def run_paths(cfg: PathsConfig) -> PathsResult:
    """Train every path, unlearn each with ``cfg.unlearn``, and record the traces."""
    check_finite(cfg)
    check_fits(cfg.memory_bytes(), f"sim paths with {cfg.unlearn.steps} unlearning steps")
    model = make_model(cfg.model)
    root = jax.random.key(cfg.seed)
    stages = make_stages(cfg.data, jax.random.fold_in(root, 1))
    params0 = model.init(jax.random.fold_in(root, 0), cfg.data.d)
    stage_key = jax.random.fold_in(root, 2)
    K = cfg.data.n_stages
    forget_idx = K - 1
    retain_ids = [s for s in range(K - 1)]
    retain = (
        jnp.concatenate([stages.X[s] for s in retain_ids]),
        jnp.concatenate([stages.y[s] for s in retain_ids]),
    )
    forget = (stages.X[forget_idx], stages.y[forget_idx])
    orders = cfg.resolved_orders()
    retrain_pred: dict[tuple[int, ...], jax.Array] = {}
    traces = []
    for order in orders:
        retain_order = tuple(s for s in order if s != forget_idx)
        if retain_order not in retrain_pred:
            p = train_sequence(cfg, model, params0, stages, retain_order, stage_key)
            retrain_pred[retain_order] = model.apply(p, stages.Xtest)
        trained = train_sequence(cfg, model, params0, stages, order, stage_key)
        _, trace = unlearn(model, cfg.unlearn, trained, forget, retain, stages.Xtest)
        traces.append((jax.device_get(trace), retrain_pred[retain_order]))
    # GA can blow a nonlinear model up in finite time (the diagonal network: theta = u^2 - v^2
    # grows super-exponentially) and float64 overflows to inf/nan. A diverged model has forgotten
    # without limit and is infinitely far from everything: record log-likelihoods as -inf and
    # distances as +inf rather than nan, so orderings (recency) stay meaningful.
    with np.errstate(over="ignore", invalid="ignore"):
        preds = np.stack([t.test_pred for t, _ in traces])  # (P, T+1, m)
        re_pair = np.mean((preds[:, None] - preds[None, :]) ** 2, axis=-1)  # (P, P, T+1)
        to_retrain = np.stack(
            [np.mean((t.test_pred - np.asarray(r)[None]) ** 2, axis=-1) for t, r in traces]
        )
    neg = lambda x: np.where(np.isnan(x), -np.inf, x)  # noqa: E731
    pos = lambda x: np.where(np.isnan(x), np.inf, x)  # noqa: E731
    return PathsResult(
        config=cfg,
        orders=orders,
        forget_position=np.array([o.index(forget_idx) + 1 for o in orders]),
        loss=np.stack([t.loss for t, _ in traces]),
        forget_logp=neg(np.stack([t.forget_logp for t, _ in traces])),
        retain_logp=neg(np.stack([t.retain_logp for t, _ in traces])),
        re_to_retrain=pos(to_retrain),
        re_pairwise=pos(np.transpose(re_pair, (2, 0, 1))),
    )
