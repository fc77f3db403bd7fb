"""NPO / SimNPO in the linear-Gaussian model: update maps vs jax.grad, drift bound vs GA."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import theory as T
from theory import preference as P

CONFIGS = {
    "ga": P.PreferenceConfig(method="ga"),
    "npo": P.PreferenceConfig(method="npo", beta=0.5),
    "simnpo_paper": P.PreferenceConfig(method="simnpo", beta=0.5),
    "simnpo_authors": P.PreferenceConfig(
        method="simnpo", beta=2.0, margin=1.0, response_length=3.0, noise_var=0.8
    ),
}


def rel_err(a, b) -> float:
    return float(jnp.linalg.norm(jnp.asarray(a) - jnp.asarray(b)) / jnp.linalg.norm(b))


INST = T.random_instance(6, d=8, nA=5, nB=5, k=3, m=6, eta=0.1)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_update_map_and_jacobian_match_autodiff(name):
    config = CONFIGS[name]
    XU, yU = jnp.asarray(INST.XU), jnp.asarray(INST.yU)
    theta_ref = jnp.linspace(-1, 1, 8)
    ref_logp = P.gaussian_logprob(theta_ref, XU, yU, config.noise_var)
    theta = theta_ref + 0.7 * jnp.cos(jnp.arange(8.0))
    eta = 0.3
    by_grad = theta - eta * jax.grad(P.objective)(theta, XU, yU, ref_logp, config)
    assert rel_err(P.update(theta, XU, yU, ref_logp, eta, config), by_grad) <= 1e-12
    jac = jax.jacfwd(P.update)(theta, XU, yU, ref_logp, eta, config)
    np.testing.assert_allclose(
        P.update_jacobian(theta, XU, yU, ref_logp, eta, config), jac, atol=1e-12
    )
    # The weight is the derivative of the per-example loss with respect to log pi.
    logp = P.gaussian_logprob(theta, XU, yU, config.noise_var)
    if name == "npo":
        summed = lambda lp: (
            -(2.0 / config.beta) * jnp.sum(jax.nn.log_sigmoid(-config.beta * (lp - ref_logp)))
        )
    elif name.startswith("simnpo"):
        scaled = config.beta / config.response_length
        summed = lambda lp: (
            -(2.0 / config.beta) * jnp.sum(jax.nn.log_sigmoid(-scaled * lp - config.margin))
        )
    else:
        summed = jnp.sum
    weights = P.example_weights(theta, XU, yU, ref_logp, config)
    np.testing.assert_allclose(jax.grad(summed)(logp), weights, rtol=1e-12)


def test_paper_ga_is_the_gaussian_ga_and_npo_starts_as_ga():
    theta0 = jnp.linspace(-1, 1, 8)
    ga = P.iterate(theta0, INST.XU, INST.yU, 0.1, CONFIGS["ga"], 20)
    np.testing.assert_allclose(ga, T.iterate_ga(theta0, INST.XU, INST.yU, 0.1, 20), rtol=1e-12)
    npo = P.iterate(theta0, INST.XU, INST.yU, 0.1, CONFIGS["npo"], 2)
    assert rel_err(npo[1], ga[1]) <= 1e-14  # all NPO weights are 1 at theta = theta_ref
    assert rel_err(npo[2], ga[2]) > 1e-6  # and differ afterwards


@pytest.mark.parametrize("name", ["npo", "simnpo_paper", "simnpo_authors"])
def test_npo_simnpo_divergence_is_at_most_quadratic(name):
    config = CONFIGS[name]
    theta_ba = jnp.zeros(8)
    delta0 = T.history_difference(INST.XA, INST.yA, 1.0, INST.XB, INST.yB, 1.0)
    theta_ab = theta_ba + delta0
    eta, steps = 0.5, 1500
    runs = {}
    bounds = {}
    for key, start in (("ab", theta_ab), ("ba", theta_ba)):
        runs[key] = P.iterate(start, INST.XU, INST.yU, eta, config, steps)
        ref = P.gaussian_logprob(start, INST.XU, INST.yU, config.noise_var)
        bounds[key] = float(P.step_bound(INST.XU, ref, eta, config))
        step_sizes = jnp.linalg.norm(jnp.diff(runs[key], axis=0), axis=1)
        assert float(jnp.max(step_sizes)) <= bounds[key] * (1 + 1e-12)
    ts = jnp.arange(steps + 1)
    d = T.re_distance(runs["ab"], runs["ba"], INST.Xtest)
    upper = P.drift_bound(delta0, INST.Xtest, bounds["ab"], bounds["ba"], ts)
    assert bool(jnp.all(d <= upper * (1 + 1e-12)))
    # GA under the same step size leaves that polynomial envelope behind.
    ga_logd = T.log10_re_distance(delta0, INST.XU, eta, INST.Xtest, ts)
    assert float(ga_logd[-1]) > float(jnp.log10(upper[-1])) + 10


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        P.objective(jnp.zeros(8), INST.XU, INST.yU, jnp.zeros(3), P.PreferenceConfig(method="dpo"))
