"""Multi-stage paths, optimizer-trained stages and unlearning methods."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim  # noqa: F401
from sim.models import ModelConfig, make_model
from sim.paths import (
    PathsConfig,
    StageDataConfig,
    all_orders,
    forget_position_orders,
    make_stages,
    run_paths,
)
from sim.training import OptimizerConfig, make_schedule, proximal_stage, train_stage
from sim.unlearning import METHODS, UnlearnConfig

DATA = StageDataConfig(d=10, n_stages=3, n_per_stage=16, k=4, m=20, overlap=0.5)


def _stage(key=0, n=30, d=6):
    k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
    X = jax.random.normal(k1, (n, d))
    return X, jax.random.normal(k2, (n,)), jax.random.normal(k3, (d,))


@pytest.mark.parametrize(
    "opt",
    [
        OptimizerConfig(name="sgd", learning_rate=0.2, schedule="constant", epochs=1500),
        OptimizerConfig(name="adamw", learning_rate=0.05, schedule="wsd", epochs=3000),
        OptimizerConfig(name="adamw", learning_rate=0.05, schedule="cosine", epochs=3000),
    ],
    ids=["sgd-constant", "adamw-wsd", "adamw-cosine"],
)
def test_optimizer_stage_converges_to_proximal_closed_form(opt):
    X, y, prev = _stage()
    model = make_model(ModelConfig("linear"))
    exact = proximal_stage(prev, X, y, 2.0)
    trained, losses = train_stage(model, opt, prev, X, y, 2.0, jax.random.key(0))
    np.testing.assert_allclose(trained, exact, atol=1e-6)
    assert losses[-1] <= losses[0]


def test_minibatch_sgd_approaches_closed_form():
    X, y, prev = _stage(n=32)
    model = make_model(ModelConfig("linear"))
    opt = OptimizerConfig(
        name="sgd", learning_rate=0.05, schedule="cosine", epochs=600, batch_size=8
    )
    trained, _ = train_stage(model, opt, prev, X, y, 2.0, jax.random.key(1))
    exact = proximal_stage(prev, X, y, 2.0)
    assert float(jnp.linalg.norm(trained - exact)) < 1e-2 * float(jnp.linalg.norm(exact))


def test_schedules_have_the_documented_shape():
    wsd = make_schedule(
        OptimizerConfig(schedule="wsd", learning_rate=1.0, warmup_fraction=0.1, decay_fraction=0.1),
        100,
    )
    assert float(wsd(0)) == 0.0 and float(wsd(10)) == pytest.approx(1.0)
    assert float(wsd(50)) == pytest.approx(1.0) and float(wsd(100)) == pytest.approx(0.0)
    cos = make_schedule(
        OptimizerConfig(schedule="cosine", learning_rate=1.0, warmup_fraction=0.1), 100
    )
    assert float(cos(10)) == pytest.approx(1.0) and float(cos(100)) == pytest.approx(0.0)


def test_orders():
    assert forget_position_orders(3) == ((2, 0, 1), (0, 2, 1), (0, 1, 2))
    assert len(all_orders(4)) == 24
    with pytest.raises(ValueError, match="permutation"):
        PathsConfig(data=DATA, orders=((0, 1, 1),))


def test_two_stage_paths_match_theory():
    """K = 2 with the proximal trainer is the paper's setting: the pairwise RE distance at every
    GA step equals theory's closed form for Delta theta_t."""
    from theory.linear import history_difference
    from theory.unlearning import log10_re_distance

    data = StageDataConfig(d=8, n_stages=2, n_per_stage=5, k=3, m=12, overlap=1.0)
    cfg = PathsConfig(
        data=data,
        mu=0.7,
        orders=((0, 1), (1, 0)),
        unlearn=UnlearnConfig(method="ga", steps=25, learning_rate=0.02),
    )
    res = run_paths(cfg)
    stages = make_stages(data, jax.random.fold_in(jax.random.key(0), 1))
    # order (0, 1) = "A then B" with A = stage 0 (retain), B = stage 1 (forget).
    delta0 = history_difference(stages.X[0], stages.y[0], 0.7, stages.X[1], stages.y[1], 0.7)
    ref = log10_re_distance(delta0, stages.X[1], 0.02, stages.Xtest, jnp.arange(26))
    np.testing.assert_allclose(np.log10(res.re_pairwise[:, 0, 1]), ref, atol=1e-8)
    # Retrain baseline of both paths is stage 0 alone.
    theta_r = proximal_stage(jnp.zeros(8), stages.X[0], stages.y[0], 0.7)
    theta_p = proximal_stage(
        proximal_stage(jnp.zeros(8), stages.X[0], stages.y[0], 0.7), stages.X[1], stages.y[1], 0.7
    )
    expected = float(jnp.mean((stages.Xtest @ (theta_p - theta_r)) ** 2))
    assert res.re_to_retrain[0, 0] == pytest.approx(expected, rel=1e-10)


def test_orthogonal_stages_do_not_diverge():
    """overlap = 0: stages live on disjoint coordinates, commute (Lemma C.1) and GA keeps the
    paths identical."""
    cfg = PathsConfig(
        data=dataclasses.replace(DATA, overlap=0.0),
        unlearn=UnlearnConfig(steps=10, learning_rate=0.05),
    )
    res = run_paths(cfg)
    assert np.max(res.re_pairwise) < 1e-20
    cfg1 = dataclasses.replace(cfg, data=dataclasses.replace(DATA, overlap=1.0))
    assert np.max(run_paths(cfg1).re_pairwise[0]) > 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_is_deterministic(method):
    cfg = PathsConfig(data=DATA, unlearn=UnlearnConfig(method=method, steps=8, learning_rate=0.02))
    a, b = run_paths(cfg), run_paths(cfg)
    np.testing.assert_array_equal(a.re_pairwise, b.re_pairwise)
    np.testing.assert_array_equal(a.loss, b.loss)
    assert np.all(np.isfinite(a.loss)) and np.all(np.isfinite(a.re_pairwise))
    # Unlearning lowers the forget log-likelihood on every path.
    assert np.all(a.forget_logp[:, -1] < a.forget_logp[:, 0])
    if method == "npo":  # reference = the model itself at step 0: loss = (2/beta) log 2
        np.testing.assert_allclose(a.loss[:, 0], (2 / 0.5) * np.log(2.0), rtol=1e-12)


def test_seed_changes_result():
    cfg = PathsConfig(data=DATA, unlearn=UnlearnConfig(steps=3))
    a = run_paths(cfg)
    b = run_paths(dataclasses.replace(cfg, seed=1))
    assert not np.array_equal(a.re_pairwise, b.re_pairwise)


@pytest.mark.parametrize("kind", ["mlp", "diagonal"])
def test_nonlinear_models_train_and_diverge(kind):
    cfg = PathsConfig(
        data=DATA,
        model=ModelConfig(kind, width=8, depth=1),
        trainer="optimizer",
        mu=0.1,
        optimizer=OptimizerConfig(name="adamw", learning_rate=0.02, epochs=60),
        unlearn=UnlearnConfig(steps=10, learning_rate=0.01),
    )
    res = run_paths(cfg)
    s = res.summary()
    assert s["pairwise_re_initial_max"] > 0
    assert np.all(np.isfinite(res.re_pairwise))
    with pytest.raises(ValueError, match="proximal"):
        dataclasses.replace(cfg, trainer="proximal")


def test_recency_summary_is_computed_from_the_traces():
    res = run_paths(PathsConfig(data=DATA, unlearn=UnlearnConfig(steps=20, learning_rate=0.02)))
    s = res.summary()
    drop = res.forget_logp[:, 0] - res.forget_logp[:, -1]
    last = res.forget_position == 3
    assert s["recency_slowest_is_last"] == bool(drop[last].min() < drop[~last].min())
    assert s["recency_drop_last_over_first"] == pytest.approx(drop[last][0] / drop[0])
