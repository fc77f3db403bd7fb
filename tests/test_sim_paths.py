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
from sim.unlearning import OBJECTIVES, UnlearnConfig, unlearn, unlearning_loss

DATA = StageDataConfig(d=10, n_stages=3, n_per_stage=16, k=4, m=20, overlap=0.5)


def _stage(key=0, n=30, d=6):
    k1, k2, k3 = jax.random.split(jax.random.key(key), 3)
    X = jax.random.normal(k1, (n, d))
    return X, jax.random.normal(k2, (n,)), jax.random.normal(k3, (d,))


@pytest.mark.parametrize(
    "opt",
    [
        OptimizerConfig(name="sgd", lr=0.2, schedule="constant", epochs=1500),
        OptimizerConfig(name="adamw", lr=0.05, schedule="wsd", epochs=3000),
        OptimizerConfig(name="adamw", lr=0.05, schedule="cosine", epochs=3000),
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
    opt = OptimizerConfig(name="sgd", lr=0.05, schedule="cosine", epochs=600, batch_size=8)
    trained, _ = train_stage(model, opt, prev, X, y, 2.0, jax.random.key(1))
    exact = proximal_stage(prev, X, y, 2.0)
    assert float(jnp.linalg.norm(trained - exact)) < 1e-2 * float(jnp.linalg.norm(exact))


def test_schedules_have_the_documented_shape():
    wsd = make_schedule(
        OptimizerConfig(schedule="wsd", lr=1.0, warmup_frac=0.1, decay_frac=0.1),
        100,
    )
    assert float(wsd(0)) == 0.0 and float(wsd(10)) == pytest.approx(1.0)
    assert float(wsd(50)) == pytest.approx(1.0) and float(wsd(100)) == pytest.approx(0.0)
    cos = make_schedule(OptimizerConfig(schedule="cosine", lr=1.0, warmup_frac=0.1), 100)
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
        unlearn=UnlearnConfig(objective="ga", steps=25, lr=0.02),
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
        unlearn=UnlearnConfig(steps=10, lr=0.05),
    )
    res = run_paths(cfg)
    assert np.max(res.re_pairwise) < 1e-20
    cfg1 = dataclasses.replace(cfg, data=dataclasses.replace(DATA, overlap=1.0))
    assert np.max(run_paths(cfg1).re_pairwise[0]) > 1e-6


# Every objective, SimNPO in both forms, and the retain term composed with each objective (the old
# methods "simnpo_paper" and "ga_retain" are simnpo without length normalisation and ga + retain).
METHODS = {
    **{name: {"objective": name} for name in OBJECTIVES},
    "simnpo_paper": {"objective": "simnpo", "length_normalize": False},
    **{f"{name}_retain": {"objective": name, "retain_weight": 1.0} for name in OBJECTIVES},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_and_is_deterministic(method):
    cfg = PathsConfig(data=DATA, unlearn=UnlearnConfig(**METHODS[method], steps=8, lr=0.02))
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
        optimizer=OptimizerConfig(name="adamw", lr=0.02, epochs=60),
        unlearn=UnlearnConfig(steps=10, lr=0.01),
    )
    res = run_paths(cfg)
    s = res.summary()
    assert s["pairwise_re_initial_max"] > 0
    assert np.all(np.isfinite(res.re_pairwise))
    with pytest.raises(ValueError, match="proximal"):
        dataclasses.replace(cfg, trainer="proximal")


def test_recency_summary_is_computed_from_the_traces():
    res = run_paths(PathsConfig(data=DATA, unlearn=UnlearnConfig(steps=20, lr=0.02)))
    s = res.summary()
    drop = res.forget_logp[:, 0] - res.forget_logp[:, -1]
    last = res.forget_position == 3
    assert s["recency_slowest_is_last"] == bool(drop[last].min() < drop[~last].min())
    assert s["recency_drop_last_over_first"] == pytest.approx(drop[last][0] / drop[0])


def _gaussian_logp(pred, y, s):
    return -((y - pred) ** 2) / (2 * s**2) - 0.5 * np.log(2 * np.pi * s**2)


def _unlearning_problem(seed=3, d=5, k=4, n_retain=9):
    rng = np.random.default_rng(seed)
    forget = (rng.normal(size=(k, d)), rng.normal(size=k))
    retain = (rng.normal(size=(n_retain, d)), rng.normal(size=n_retain))
    theta0, theta = rng.normal(size=d), rng.normal(size=d)
    return forget, retain, theta0, theta


def test_npo_with_retain_weight_is_npo_plus_weighted_retain_nll():
    """UnlearnConfig(objective="npo", retain_weight=0.5): NPO on the forget set + 0.5 x the
    token-averaged NLL on the retain data, recomputed here in numpy."""
    (Xu, yu), (Xr, yr), theta0, theta = _unlearning_problem()
    cfg = UnlearnConfig(objective="npo", retain_weight=0.5, beta=0.7)
    s = cfg.noise_std
    ref = _gaussian_logp(Xu @ theta0, yu, s)
    logp = _gaussian_logp(Xu @ theta, yu, s)
    npo = -(2 / 0.7) * np.mean(np.log(1 / (1 + np.exp(0.7 * (logp - ref)))))
    nll = -np.mean(_gaussian_logp(Xr @ theta, yr, s))
    model = make_model(ModelConfig("linear"))
    j = lambda a: jnp.asarray(a)  # noqa: E731
    forget, retain = (j(Xu), j(yu)), (j(Xr), j(yr))
    got = unlearning_loss(model, cfg, j(theta), forget, retain, j(ref))
    assert float(got) == pytest.approx(npo + 0.5 * nll, rel=1e-12)
    assert npo > 0 and 0.5 * nll > 1e-3 * npo  # both terms matter
    # The trace's loss at step 0 is the same loss with the reference = the starting model.
    _, trace = unlearn(model, cfg, j(theta0), forget, retain, j(Xu))
    nll0 = -np.mean(_gaussian_logp(Xr @ theta0, yr, s))
    assert float(trace.loss[0]) == pytest.approx((2 / 0.7) * np.log(2) + 0.5 * nll0, rel=1e-12)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_retain_term_composes_with_every_objective(objective):
    (Xu, yu), (Xr, yr), theta0, theta = _unlearning_problem(seed=4, k=6)
    model = make_model(ModelConfig("linear"))
    j = lambda a: jnp.asarray(a)  # noqa: E731
    forget, retain = (j(Xu), j(yu)), (j(Xr), j(yr))
    ref = j(_gaussian_logp(Xu @ theta0, yu, np.sqrt(0.5)).reshape(-1, 2).sum(axis=1))
    kw = {"objective": objective, "tokens_per_sequence": 2, "margin": 0.3}

    def loss(**extra):
        cfg = UnlearnConfig(**kw, **extra)
        return float(unlearning_loss(model, cfg, j(theta), forget, retain, ref))

    nll = -np.mean(_gaussian_logp(Xr @ theta, yr, np.sqrt(0.5)))
    plain = loss()
    assert loss(retain_weight=0.25) == pytest.approx(plain + 0.25 * nll, rel=1e-12)
    assert loss(forget_weight=2.0, retain_weight=1.5) == pytest.approx(
        2.0 * plain + 1.5 * nll, rel=1e-12
    )


def test_simnpo_forms_match_their_formulas():
    (Xu, yu), (Xr, yr), _, theta = _unlearning_problem(seed=5, k=6)
    model = make_model(ModelConfig("linear"))
    j = lambda a: jnp.asarray(a)  # noqa: E731
    forget, retain = (j(Xu), j(yu)), (j(Xr), j(yr))
    logp = _gaussian_logp(Xu @ theta, yu, np.sqrt(0.5)).reshape(-1, 3).sum(axis=1)
    logsig = lambda x: -np.log1p(np.exp(-x))  # noqa: E731
    for normalize, margin, reward in ((True, 0.4, logp / 3), (False, 0.0, logp)):
        cfg = UnlearnConfig(
            objective="simnpo",
            beta=2.5,
            margin=margin,
            length_normalize=normalize,
            tokens_per_sequence=3,
        )
        expected = -(2 / 2.5) * np.mean(logsig(-2.5 * reward - margin))
        got = unlearning_loss(model, cfg, j(theta), forget, retain, j(logp))
        assert float(got) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "field,value",
    [
        ("objective", "simnpo_paper"),
        ("steps", -1),
        ("lr", 0.0),
        ("lr", float("inf")),
        ("lr", float("nan")),
        ("noise_std", 0.0),
        ("tokens_per_sequence", 0),
        ("beta", 0.0),
        ("margin", float("nan")),
        ("forget_weight", -1.0),
        ("retain_weight", -0.5),
        ("retain_weight", float("inf")),
    ],
)
def test_unlearn_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"UnlearnConfig.{field}"):
        UnlearnConfig(**{field: value})


def test_unlearn_config_params_and_label():
    cfg = UnlearnConfig(objective="simnpo", beta=1.5, margin=0.2, length_normalize=False)
    assert tuple(cfg.params) == (1.5, 0.2, False)
    assert UnlearnConfig().params == (0.5, 0.0, True)  # llm's defaults
    assert cfg.label == "simnpo, length_normalize=False"
    assert UnlearnConfig(objective="npo", retain_weight=0.5).label == "npo, retain_weight=0.5"
    assert UnlearnConfig().label == "ga"
    assert (UnlearnConfig().retain_weight, UnlearnConfig().margin) == (0.0, 0.0)
