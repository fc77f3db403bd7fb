"""Random two-stage instances of the linear theory (paper Sec. 3), one instance per call.

An instance is the data of Eq. (1) plus a forget set and a test set: stages S_A = (X_A, y_A) and
S_B = (X_B, y_B) with proximal weights mu_A, mu_B, a forget set S_U = (X_U, y_U), a test matrix
X_test and a gradient-ascent step eta. :func:`sample_instance` draws one instance from a key;
batches come from ``jax.vmap`` over keys (shapes are static: one shape per batch).

Feature model (why: the theorem must hold for any features, so the check should not only see
isotropic Gaussians). Each of the four sets s in {A, B, U, test} draws rows

    x = sqrt(1 - corr) * z + sqrt(corr) * F_s g + shift * c_s,

with z ~ N(0, I_d), g ~ N(0, I_r), F_s a (d, r) matrix of N(0, 1) entries (correlated features:
covariance (1 - corr) I + corr F_s F_s^T) and c_s ~ N(0, I_d) a per-set mean (distribution shift
between stages and between training and test). ``corr`` and ``shift`` are drawn per instance from
ranges, as are mu_A, mu_B and eta (log-uniform). Labels are y = x^T (theta_star + offset_s) + noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class InstanceShape:
    """Static shapes of an instance.

    Attributes:
        d: number of parameters (features).
        n_a: rows of X_A.
        n_b: rows of X_B.
        k: rows of the forget set X_U (1 <= k <= d, full row rank almost surely).
        m: rows of X_test (m >= k so that sigma_U, the k-th singular value, exists).
    """

    d: int
    n_a: int
    n_b: int
    k: int
    m: int

    def __post_init__(self) -> None:
        for name in ("d", "n_a", "n_b", "k", "m"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"InstanceShape.{name} must be >= 1, got {getattr(self, name)}")
        if self.k > self.d:
            raise ValueError(
                f"InstanceShape needs k <= d (X_U full row rank); got k={self.k} > d={self.d}"
            )
        if self.m < self.k:
            raise ValueError(
                f"InstanceShape needs m >= k (sigma_U is the k-th singular value); "
                f"got m={self.m} < k={self.k}"
            )


@dataclass(frozen=True)
class InstanceDistribution:
    """Ranges the per-instance scalars are drawn from (low, high); log-uniform for mu and eta.

    Attributes:
        mu_range: proximal weights mu_A and mu_B (drawn independently).
        eta_range: gradient-ascent step eta.
        corr_range: factor correlation ``corr`` in [0, 1): 0 = isotropic features.
        shift_range: scale of the per-set mean shift: 0 = all sets from one distribution.
        n_factors: rank r of the correlated part.
        label_noise: standard deviation of the label noise.
        teacher_offset: scale of the per-stage perturbation of the teacher (conflicting stages).
    """

    mu_range: tuple[float, float] = (0.1, 10.0)
    eta_range: tuple[float, float] = (1e-3, 3e-2)
    corr_range: tuple[float, float] = (0.0, 0.9)
    shift_range: tuple[float, float] = (0.0, 1.0)
    n_factors: int = 3
    label_noise: float = 0.1
    teacher_offset: float = 0.5

    def __post_init__(self) -> None:
        for name in ("mu_range", "eta_range", "corr_range", "shift_range"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # hashable (jit static)
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(
                    f"InstanceDistribution.{name} must satisfy low <= high, got {(lo, hi)}"
                )
        for name in ("mu_range", "eta_range"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(
                    f"InstanceDistribution.{name} must be positive, got {getattr(self, name)}"
                )
        if not (0.0 <= self.corr_range[0] and self.corr_range[1] < 1.0):
            raise ValueError(
                f"InstanceDistribution.corr_range must lie in [0, 1), got {self.corr_range}"
            )
        if self.shift_range[0] < 0:
            raise ValueError(
                f"InstanceDistribution.shift_range must be >= 0, got {self.shift_range}"
            )
        if self.n_factors < 1:
            raise ValueError(f"InstanceDistribution.n_factors must be >= 1, got {self.n_factors}")


class LinearInstance(NamedTuple):
    """One instance (a pytree, so a batch is the same NamedTuple with a leading axis).

    Shapes: XA (n_a, d), yA (n_a,), XB (n_b, d), yB (n_b,), XU (k, d), yU (k,), Xtest (m, d);
    muA, muB, eta, corr, shift are scalars.
    """

    XA: jax.Array
    yA: jax.Array
    XB: jax.Array
    yB: jax.Array
    XU: jax.Array
    yU: jax.Array
    Xtest: jax.Array
    muA: jax.Array
    muB: jax.Array
    eta: jax.Array
    corr: jax.Array
    shift: jax.Array


def _log_uniform(u: jax.Array, bounds: tuple[float, float]) -> jax.Array:
    """Map u ~ U(0, 1) to a log-uniform draw on bounds."""
    lo, hi = jnp.log(bounds[0]), jnp.log(bounds[1])
    return jnp.exp(lo + u * (hi - lo))


def sample_instance(
    key: jax.Array, shape: InstanceShape, dist: InstanceDistribution = InstanceDistribution()
) -> LinearInstance:
    """Draw one instance; :func:`sample_instances` (a ``vmap`` over keys) draws a batch.

    All Gaussian numbers come from one ``jax.random.normal`` call (float32: half the random bits
    of float64; the distribution is what matters here) that is sliced into the pieces below, and
    all arithmetic is float64. One call rather than ~20 keeps XLA's compile time to about a
    second instead of ~15 s per shape.
    """
    d, r = shape.d, dist.n_factors
    sizes = {"A": shape.n_a, "B": shape.n_b, "U": shape.k, "test": shape.m}
    # Per set: z (n, d), g (n, r), factors (d, r), centre (d,); per labelled set: offset (d,),
    # noise (n,); plus the teacher (d,).
    counts = []
    for name, n in sizes.items():
        counts += [n * d, n * r, d * r, d] + ([d, n] if name != "test" else [])
    counts.append(d)
    k_normal, k_unif = jax.random.split(key)
    flat = jax.random.normal(k_normal, (sum(counts),), jnp.float32).astype(jnp.float64)
    pieces = iter(jnp.split(flat, list(np.cumsum(counts)[:-1])))
    u = jax.random.uniform(k_unif, (5,), jnp.float64)
    corr = dist.corr_range[0] + u[0] * (dist.corr_range[1] - dist.corr_range[0])
    shift = dist.shift_range[0] + u[1] * (dist.shift_range[1] - dist.shift_range[0])
    mu_a = _log_uniform(u[2], dist.mu_range)
    mu_b = _log_uniform(u[3], dist.mu_range)
    eta = _log_uniform(u[4], dist.eta_range)

    sets = {}
    for name, n in sizes.items():
        z = next(pieces).reshape(n, d)
        g = next(pieces).reshape(n, r)
        factors = next(pieces).reshape(d, r)
        centre = next(pieces)
        X = jnp.sqrt(1.0 - corr) * z + jnp.sqrt(corr) * (g @ factors.T) + shift * centre
        if name != "test":
            offset = dist.teacher_offset * next(pieces) / jnp.sqrt(d)
            noise = dist.label_noise * next(pieces)
            sets[name] = (X, offset, noise)
        else:
            sets[name] = (X, None, None)
    teacher = next(pieces) / jnp.sqrt(d)

    def labels(name: str) -> jax.Array:
        X, offset, noise = sets[name]
        return X @ (teacher + offset) + noise

    return LinearInstance(
        XA=sets["A"][0],
        yA=labels("A"),
        XB=sets["B"][0],
        yB=labels("B"),
        XU=sets["U"][0],
        yU=labels("U"),
        Xtest=sets["test"][0],
        muA=mu_a,
        muB=mu_b,
        eta=eta,
        corr=corr,
        shift=shift,
    )


@partial(jax.jit, static_argnums=(1, 2, 3))
def sample_instances(
    key: jax.Array,
    n: int,
    shape: InstanceShape,
    dist: InstanceDistribution = InstanceDistribution(),
) -> LinearInstance:
    """A batch of ``n`` instances (leading axis n on every field), one key each."""
    keys = jax.random.split(key, n)
    return jax.vmap(lambda k: sample_instance(k, shape, dist))(keys)
