"""A concrete two-stage instance of Theorem 3.1: data, validation, .npz I/O and the full check.

An instance holds two training stages (X_A, y_A, mu_A), (X_B, y_B, mu_B), a forget set (X_U, y_U)
unlearned by GA with step eta, and a test set X_test. theta_0 = 0; one model is trained A then B,
the other B then A (paper Eq. 1).
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pathdep.errors import BadInput
from pathdep.io import atomic_path
from pathdep.resources import check_fits
from theory.bound import (
    corollary_t_star,
    corollary_threshold,
    log10_bound,
    theorem_3_1,
)
from theory.linear import commutation_residual, history_difference
from theory.unlearning import log10_re_distance

ARRAY_NAMES = ("XA", "yA", "XB", "yB", "XU", "yU", "Xtest")
SCALAR_NAMES = ("muA", "muB", "eta")


class InstanceError(BadInput):
    """A malformed instance; the message is one line naming the problem."""


@dataclass(frozen=True)
class Instance:
    """Arrays (float64 numpy) and scalars of one instance.

    Shapes: XA (nA, d), yA (nA,), XB (nB, d), yB (nB,), XU (k, d), yU (k,), Xtest (m, d).
    """

    XA: np.ndarray
    yA: np.ndarray
    XB: np.ndarray
    yB: np.ndarray
    XU: np.ndarray
    yU: np.ndarray
    Xtest: np.ndarray
    muA: float
    muB: float
    eta: float

    @property
    def d(self) -> int:
        return int(self.XA.shape[1])

    @property
    def k(self) -> int:
        return int(self.XU.shape[0])

    @property
    def m(self) -> int:
        return int(self.Xtest.shape[0])


def validate_instance(inst: Instance) -> Instance:
    """Check shapes, finiteness, signs and ranks; raise :class:`InstanceError` on the first problem.

    Returns the instance unchanged so it can be used inline.
    """
    for name in ARRAY_NAMES:
        arr = getattr(inst, name)
        if not np.all(np.isfinite(arr)):
            raise InstanceError(f"array '{name}' contains NaN or infinite entries")
    for name, ndim in zip(ARRAY_NAMES, (2, 1, 2, 1, 2, 1, 2), strict=True):
        arr = getattr(inst, name)
        if arr.ndim != ndim:
            raise InstanceError(f"array '{name}' must be {ndim}-D; got shape {arr.shape}")
    d = inst.XA.shape[1]
    for name in ("XB", "XU", "Xtest"):
        if getattr(inst, name).shape[1] != d:
            raise InstanceError(
                f"mismatched shapes: '{name}' has {getattr(inst, name).shape[1]} columns, "
                f"XA has {d}"
            )
    for xname, yname in (("XA", "yA"), ("XB", "yB"), ("XU", "yU")):
        n_x, n_y = getattr(inst, xname).shape[0], getattr(inst, yname).shape[0]
        if n_x != n_y:
            raise InstanceError(f"mismatched shapes: '{xname}' has {n_x} rows but '{yname}' {n_y}")
    if min(inst.XA.shape[0], inst.XB.shape[0], inst.XU.shape[0], inst.Xtest.shape[0], d) == 0:
        raise InstanceError("empty array: every array needs at least one row and one column")
    for name in SCALAR_NAMES:
        value = getattr(inst, name)
        if not math.isfinite(value):
            raise InstanceError(f"scalar '{name}' is NaN or infinite")
        if value <= 0:
            raise InstanceError(f"scalar '{name}' must be > 0; got {value}")
    k, m = inst.XU.shape[0], inst.Xtest.shape[0]
    if m < k:
        raise InstanceError(f"need m >= k test points; got m = {m} < k = {k}")
    if k > d or _numerical_rank(inst.XU) < k:
        raise InstanceError(f"XU ({k}x{d}) does not have full row rank {k}")
    _, _, vt = np.linalg.svd(inst.XU, full_matrices=False)
    test_scale = float(np.linalg.norm(inst.Xtest, 2))  # rank relative to X_test, not to X_test V
    if _numerical_rank(inst.Xtest @ vt.T, scale=test_scale) < k:
        raise InstanceError("Xtest does not see the whole forget span (rank of Xtest P_U < k)")
    return inst


def _numerical_rank(matrix: np.ndarray, scale: float | None = None) -> int:
    """Rank with numpy's default tolerance, scale * max(shape) * eps, where ``scale`` defaults to
    the largest singular value of ``matrix``."""
    s = np.linalg.svd(matrix, compute_uv=False)
    scale = (s[0] if s.size else 0.0) if scale is None else scale
    if s.size == 0 or scale == 0:
        return 0
    return int(np.sum(s > scale * max(matrix.shape) * np.finfo(np.float64).eps))


def load_instance(path: str | os.PathLike) -> Instance:
    """Read and validate an instance from a .npz file; raise :class:`InstanceError` if malformed."""
    path = Path(path)
    if not path.exists():
        raise InstanceError(f"instance file not found: {path}")
    if not path.is_file():
        raise InstanceError(f"cannot read instance file {path}: not a regular file")
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InstanceError(f"cannot read instance file {path}: {exc}".splitlines()[0]) from exc
    missing = [n for n in ARRAY_NAMES + SCALAR_NAMES if n not in contents]
    if missing:
        raise InstanceError(f"missing array(s) in {path.name}: {', '.join(missing)}")
    fields: dict[str, Any] = {}
    for name in ARRAY_NAMES + SCALAR_NAMES:
        raw = contents[name]
        if raw.dtype.kind not in "biuf":
            raise InstanceError(f"array '{name}' is not numeric (dtype {raw.dtype})")
        arr = raw.astype(np.float64)
        if name in SCALAR_NAMES:
            if arr.size != 1:
                raise InstanceError(f"scalar '{name}' must have one value; got shape {arr.shape}")
            fields[name] = float(arr.reshape(()))
        else:
            fields[name] = arr
    return validate_instance(Instance(**fields))


def save_instance(inst: Instance, path: str | os.PathLike) -> None:
    """Write an instance to .npz atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(getattr(inst, name), dtype=np.float64) for name in ARRAY_NAMES}
    scalars = {name: np.float64(getattr(inst, name)) for name in SCALAR_NAMES}
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays, **scalars)


# The demo instance of ``python -m theory demo`` (and of the main job's theory phase).
DEMO_SHAPE = {"d": 40, "nA": 15, "nB": 15, "k": 5, "m": 20}
DEMO_STEPS = 600
DEMO_EPSILON = 1e-3


@partial(jax.jit, static_argnames=("d", "nA", "nB", "k", "m"))
def random_instance_arrays(
    key: jax.Array, d: int, nA: int, nB: int, k: int, m: int
) -> tuple[jax.Array, ...]:
    """(XA, yA, XB, yB, XU, yU, Xtest) with i.i.d. N(0, 1/d) features and N(0, 1) targets.

    Pure and vmappable over ``key`` (shapes are static), for batched checks of the theorem. Rows
    have unit expected norm, so the eigenvalues of M_U are about 2 eta / k.
    """
    # One draw, sliced: a single random-number kernel compiles much faster than seven.
    sizes = (nA * d, nA, nB * d, nB, k * d, k, m * d)
    shapes = ((nA, d), (nA,), (nB, d), (nB,), (k, d), (k,), (m, d))
    flat = jax.random.normal(key, (sum(sizes),))
    parts, start = [], 0
    for size, shape in zip(sizes, shapes, strict=True):
        parts.append(flat[start : start + size].reshape(shape))
        start += size
    XA, yA, XB, yB, XU, yU, Xtest = parts
    scale = 1.0 / jnp.sqrt(d)
    XA, XB, XU, Xtest = scale * XA, scale * XB, scale * XU, scale * Xtest
    return XA, yA, XB, yB, XU, yU, Xtest


def random_instance(
    key: jax.Array | int,
    d: int,
    nA: int,
    nB: int,
    k: int,
    m: int,
    muA: float = 1.0,
    muB: float = 1.0,
    eta: float = 0.05,
) -> Instance:
    """A random, validated instance; same key (int seed or JAX key), same instance.

    Same distribution as :func:`random_instance_arrays` but drawn with numpy (a JAX random kernel
    costs seconds to compile for every new shape); use that function to batch under ``vmap``.
    """
    if isinstance(key, int):
        seed: int | list[int] = key
    else:
        seed = np.asarray(jax.random.key_data(key)).ravel().astype(np.int64).tolist()
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(d)
    XA = scale * rng.normal(size=(nA, d))
    XB = scale * rng.normal(size=(nB, d))
    XU = scale * rng.normal(size=(k, d))
    Xtest = scale * rng.normal(size=(m, d))
    yA, yB, yU = rng.normal(size=nA), rng.normal(size=nB), rng.normal(size=k)
    return validate_instance(
        Instance(XA, yA, XB, yB, XU, yU, Xtest, muA=float(muA), muB=float(muB), eta=float(eta))
    )


def _finite_or_none(value: float) -> float | None:
    """JSON has no inf/NaN: such values become null (documented in the CLI help)."""
    return value if math.isfinite(value) else None


def check_instance(inst: Instance, steps: int, epsilon: float = 1e-3) -> dict[str, Any]:
    """Run the full Theorem 3.1 / Corollary 1 check for t = 0..steps; returns a JSON-ready dict.

    Keys: delta0_norm, proj_norm, rho_star, sigma_U, C0, t0, t_star (Corollary 1 at ``epsilon``),
    log10_re_distance and log10_bound (lists of length steps + 1), plus context: d, k, m, steps,
    epsilon, off_norm, t_star_paper (the real-valued threshold), bound_holds_from (max(t0, 0)),
    min_log10_tightness_guaranteed (min of exact - bound over t >= max(t0, 0); >= 0 when the
    theorem holds), commutation_residual and orders_commute (Lemma C.1). Non-finite numbers are
    written as null (e.g. t0 = -inf when the difference lies in the forget span).
    """
    if steps < 0:
        raise InstanceError(f"steps must be >= 0; got {steps}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InstanceError(f"epsilon must be a finite number > 0; got {epsilon}")
    # log10 d(t) for every t goes through (steps + 1) x m x (k + 1) powers: refuse it up front.
    check_fits(8.0 * 3 * (steps + 1) * (inst.m * (inst.k + 2) + 16), f"steps = {steps}")
    delta0 = history_difference(inst.XA, inst.yA, inst.muA, inst.XB, inst.yB, inst.muB)
    q = theorem_3_1(delta0, inst.XU, inst.eta, inst.Xtest)
    ts = jnp.arange(steps + 1, dtype=jnp.float64)
    exact = np.asarray(log10_re_distance(delta0, inst.XU, inst.eta, inst.Xtest, ts))
    bound = np.asarray(log10_bound(q, ts))
    holds_from = max(float(q.t0), 0.0)
    guaranteed = np.arange(steps + 1) >= holds_from
    tightness = exact[guaranteed] - bound[guaranteed]
    residual = float(commutation_residual(inst.XA, inst.XB))
    return {
        "delta0_norm": float(q.delta0_norm),
        "proj_norm": float(q.proj_norm),
        "off_norm": float(q.off_norm),
        "rho_star": float(q.rho_star),
        "sigma_U": float(q.sigma_U),
        "C0": float(q.C0),
        "t0": _finite_or_none(float(q.t0)),
        "bound_holds_from": _finite_or_none(holds_from),
        "t_star": _finite_or_none(float(corollary_t_star(q, epsilon))),
        "t_star_paper": _finite_or_none(float(corollary_threshold(q, epsilon))),
        "epsilon": float(epsilon),
        "steps": int(steps),
        "d": inst.d,
        "k": inst.k,
        "m": inst.m,
        "commutation_residual": residual,
        "orders_commute": bool(residual <= 1e-10),
        "min_log10_tightness_guaranteed": _finite_or_none(float(np.min(tightness)))
        if tightness.size
        else None,
        "log10_re_distance": [_finite_or_none(v) for v in exact.tolist()],
        "log10_bound": [_finite_or_none(v) for v in bound.tolist()],
    }
