"""Theorem 3.1 Monte Carlo: the k-dim JAX computation against numpy iteration and theory/."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim  # noqa: F401
from sim.bench import BenchConfig, run_bench
from sim.instances import InstanceDistribution, InstanceShape, sample_instances
from sim.numpy_reference import direct_check, spectral_check_numpy
from sim.spectral import check_instance, order_difference
from sim.theorem import TheoremConfig, run_theorem_check

SMALL = InstanceShape(d=12, n_a=6, n_b=9, k=3, m=8)  # n < d: Woodbury stages
TALL = InstanceShape(d=8, n_a=14, n_b=10, k=4, m=8)  # n >= d: primal stages
STEPS = 40


def _as_numpy(batch, i):
    return {f: np.asarray(getattr(batch, f)[i]) for f in batch._fields}


@pytest.mark.parametrize("shape", [SMALL, TALL], ids=["n<d", "n>=d"])
def test_spectral_check_matches_explicit_iteration(shape):
    batch = sample_instances(jax.random.key(3), 4, shape)
    res = jax.jit(jax.vmap(lambda inst: check_instance(inst, STEPS)))(batch)
    for i in range(4):
        log10_d, t0, log10_bound = direct_check(_as_numpy(batch, i), STEPS)
        np.testing.assert_allclose(res.log10_distance[i], log10_d, atol=1e-8)
        np.testing.assert_allclose(res.log10_bound[i], log10_bound, atol=1e-9)
        assert res.t0[i] == t0
        log10_d2, t02, _ = spectral_check_numpy(_as_numpy(batch, i), STEPS)
        np.testing.assert_allclose(res.log10_distance[i], log10_d2, atol=1e-9)
        assert t02 == t0


def test_spectral_check_matches_theory_package():
    from theory.bound import log10_bound, theorem_3_1
    from theory.linear import history_difference
    from theory.unlearning import log10_re_distance

    batch = sample_instances(jax.random.key(5), 2, SMALL)
    ts = jnp.arange(STEPS + 1)
    for i in range(2):
        inst = jax.tree_util.tree_map(lambda x, i=i: x[i], batch)
        delta0 = jax.jit(order_difference)(inst)
        ref_delta = history_difference(inst.XA, inst.yA, inst.muA, inst.XB, inst.yB, inst.muB)
        np.testing.assert_allclose(delta0, ref_delta, rtol=1e-8, atol=1e-12)
        res = check_instance(inst, STEPS)
        q = theorem_3_1(delta0, inst.XU, inst.eta, inst.Xtest)
        np.testing.assert_allclose(res.rho_star, q.rho_star, rtol=1e-9)
        np.testing.assert_allclose(res.sigma_u, q.sigma_U, rtol=1e-9)
        np.testing.assert_allclose(res.c0, q.C0, rtol=1e-9)
        assert res.t0 == q.t0
        np.testing.assert_allclose(res.log10_bound, log10_bound(q, ts), atol=1e-9)
        ref_d = log10_re_distance(delta0, inst.XU, inst.eta, inst.Xtest, ts)
        np.testing.assert_allclose(res.log10_distance, ref_d, atol=1e-9)


def test_bound_holds_on_every_instance_of_a_small_monte_carlo():
    cfg = TheoremConfig(n_instances=300, shapes=(SMALL, TALL), n_steps=120, chunk_size=150)
    res = run_theorem_check(cfg, progress=False)
    s = res.summary()
    assert s["n_instances"] == 300
    assert s["n_checked"] > 150  # most instances reach t0 within T
    assert s["fraction_bound_holds"] == 1.0 and s["n_violations"] == 0
    assert np.all(res.log10_tightness_final[res.checked] >= 0)


def test_bound_check_detects_a_violation():
    """``holds`` must be able to fail: shrink the real distance and the check flags it."""
    batch = sample_instances(jax.random.key(1), 3, SMALL)
    inst = jax.tree_util.tree_map(lambda x: x[0], batch)
    from sim.spectral import spectral_check

    res = jax.jit(spectral_check, static_argnums=4)(
        jax.jit(order_difference)(inst), inst.XU, inst.eta, inst.Xtest, 300
    )
    assert bool(res.holds) and bool(res.checked)
    # Same check with a bound inflated by a factor 4 (drop the 1/4): some instance must fail.
    inflated = res.log10_bound + np.log10(4.0) + 1.0
    ts = np.arange(301)
    assert np.any((res.log10_distance < inflated)[ts >= max(res.t0, 0)])


def test_same_seed_same_result_and_chunking_invariance():
    cfg = TheoremConfig(n_instances=30, shapes=(SMALL,), n_steps=30, chunk_size=30, seed=11)
    a = run_theorem_check(cfg, progress=False)
    b = run_theorem_check(cfg, progress=False)
    c = run_theorem_check(dataclasses.replace(cfg, chunk_size=12), progress=False)
    d = run_theorem_check(dataclasses.replace(cfg, seed=12), progress=False)
    np.testing.assert_array_equal(a.log10_tightness_final, b.log10_tightness_final)
    np.testing.assert_allclose(a.log10_tightness_final, c.log10_tightness_final, rtol=1e-12)
    np.testing.assert_array_equal(a.t0, c.t0)
    assert not np.array_equal(a.t0, d.t0)


def test_worker_processes_give_identical_results():
    cfg = TheoremConfig(n_instances=60, shapes=(SMALL, TALL), n_steps=30, chunk_size=10, seed=4)
    one = run_theorem_check(cfg, progress=False)
    two = run_theorem_check(cfg, progress=False, workers=2)
    for name in ("shape_index", "t0", "holds", "log10_tightness_final", "eta", "corr"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))
    np.testing.assert_array_equal(one.example_log10_distance, two.example_log10_distance)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_theorem_check(cfg, progress=False, workers=0)


def _failing_warmup() -> None:
    raise OSError("warm-up failed on purpose")


def test_pinned_pool_fails_fast_when_a_worker_cannot_warm_up():
    import time

    from sim.parallel import pinned_pool

    t = time.perf_counter()
    with pytest.raises(RuntimeError, match="worker processes did not start"):
        with pinned_pool(2, _failing_warmup):
            pass
    assert time.perf_counter() - t < 60  # not the 600 s start-up timeout


def test_distribution_ranges_are_respected():
    dist = InstanceDistribution(mu_range=(0.5, 2.0), eta_range=(1e-3, 1e-2), corr_range=(0.2, 0.3))
    batch = sample_instances(jax.random.key(0), 50, SMALL, dist)
    assert np.all((batch.muA >= 0.5) & (batch.muA <= 2.0))
    assert np.all((batch.eta >= 1e-3) & (batch.eta <= 1e-2))
    assert np.all((batch.corr >= 0.2) & (batch.corr <= 0.3))
    with pytest.raises(ValueError, match="corr_range"):
        InstanceDistribution(corr_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="k <= d"):
        InstanceShape(d=3, n_a=2, n_b=2, k=4, m=5)


def test_bench_small_run_reports_consistent_numbers():
    cfg = BenchConfig(
        n_instances=40,
        shape=SMALL,
        n_steps=30,
        chunk_size=20,
        numpy_direct_subset=4,
        numpy_spectral_subset=8,
        workers=2,
    )
    res = run_bench(cfg, progress=False)
    assert res["fraction_bound_holds"] == 1.0
    assert res["max_abs_log10_diff_vs_numpy_direct"] < 1e-7
    assert res["max_abs_log10_diff_vs_numpy_spectral"] < 1e-7
    assert res["jax_seconds"] > 0 and res["speedup_vs_numpy"] > 0
    assert res["numpy_direct_extrapolated"] is True
    assert res["workers"] == 2 and res["workers_match_one_process"] is True
    assert res["jax_worker_startup_seconds"] > 0
    with pytest.raises(ValueError, match="workers"):
        BenchConfig(workers=0)
