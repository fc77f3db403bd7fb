"""One-parameter sweeps of the multi-stage experiment: each grid point is a full
:func:`sim.paths.run_paths` run, summarised into one CSV row."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sim.paths import PathsConfig, run_paths


def _set_unlearn(name: str) -> Callable[[PathsConfig, float], PathsConfig]:
    return lambda c, v: dataclasses.replace(
        c, unlearn=dataclasses.replace(c.unlearn, **{name: type(getattr(c.unlearn, name))(v)})
    )


def _set_data(name: str, cast=float) -> Callable[[PathsConfig, float], PathsConfig]:
    return lambda c, v: dataclasses.replace(c, data=dataclasses.replace(c.data, **{name: cast(v)}))


def _set_k_over_d(c: PathsConfig, v: float) -> PathsConfig:
    return dataclasses.replace(c, data=dataclasses.replace(c.data, k=max(1, round(v * c.data.d))))


SWEEP_PARAMETERS: dict[str, Callable[[PathsConfig, float], PathsConfig]] = {
    "unlearn_lr": _set_unlearn("lr"),
    "unlearn_steps": lambda c, v: dataclasses.replace(
        c, unlearn=dataclasses.replace(c.unlearn, steps=int(v))
    ),
    "mu": lambda c, v: dataclasses.replace(c, mu=float(v)),
    "n_stages": _set_data("n_stages", int),
    "overlap": _set_data("overlap"),
    "k_over_d": _set_k_over_d,
    "train_lr": lambda c, v: dataclasses.replace(
        c, optimizer=dataclasses.replace(c.optimizer, lr=float(v))
    ),
}


@dataclass(frozen=True)
class SweepConfig:
    """Sweep ``parameter`` (a key of SWEEP_PARAMETERS) over ``values`` around ``base``.

    ``n_seeds`` > 1 repeats every point with seeds base.seed + 0..n_seeds-1 (new data, new
    initialisation) and reports the median of each number and the fraction of seeds with the
    recency ordering.
    """

    parameter: str = "overlap"
    values: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    base: PathsConfig = field(default_factory=PathsConfig)
    n_seeds: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))  # hashable, whatever was passed
        if self.parameter not in SWEEP_PARAMETERS:
            raise ValueError(
                f"SweepConfig.parameter must be one of {sorted(SWEEP_PARAMETERS)}, "
                f"got {self.parameter!r}"
            )
        if not self.values:
            raise ValueError("SweepConfig.values must not be empty")
        if self.n_seeds < 1:
            raise ValueError(f"SweepConfig.n_seeds must be >= 1, got {self.n_seeds}")
        for v in self.values:  # build every point now so a bad value fails before any work
            self.point(v)

    def point(self, value: float) -> PathsConfig:
        return SWEEP_PARAMETERS[self.parameter](self.base, value)


def summary_row(parameter: str, value: float, summary: dict[str, Any]) -> dict[str, Any]:
    """Flatten a :meth:`PathsResult.summary` into scalar CSV columns."""
    drop = np.asarray(summary["forget_logp_drop"])
    to_retrain = np.asarray(summary["re_to_retrain_final"])
    return {
        "parameter": parameter,
        "value": value,
        "n_paths": summary["n_paths"],
        "steps": summary["steps"],
        "pairwise_re_initial_max": summary["pairwise_re_initial_max"],
        "pairwise_re_final_max": summary["pairwise_re_final_max"],
        "pairwise_growth_log10": summary["pairwise_growth_log10"],
        "re_to_retrain_final_min": float(to_retrain.min()),
        "re_to_retrain_final_max": float(to_retrain.max()),
        "forget_drop_min": float(drop.min()),
        "forget_drop_max": float(drop.max()),
        "recency_slowest_is_last": summary.get("recency_slowest_is_last", ""),
        "recency_drop_last_over_first": summary.get("recency_drop_last_over_first", ""),
    }


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-seed rows: median of numbers, fraction of True for the recency flag."""
    if len(rows) == 1:
        return dict(rows[0])
    out: dict[str, Any] = {}
    for key, first in rows[0].items():
        values = [r[key] for r in rows]
        if key == "recency_slowest_is_last":
            flags = [v for v in values if v != ""]
            out[key] = float(np.mean(flags)) if flags else ""
        elif isinstance(first, str) or key in ("parameter", "value", "n_paths", "steps"):
            out[key] = first
        else:
            numbers = [float(v) for v in values if v != ""]
            out[key] = float(np.median(numbers)) if numbers else ""
    out["n_seeds"] = len(rows)
    return out


def run_sweep(config: SweepConfig, progress: bool = True) -> list[dict[str, Any]]:
    """One row per value (see :func:`summary_row`; medians over seeds, see :func:`median_row`)."""
    rows = []
    points = [(v, s) for v in config.values for s in range(config.n_seeds)]
    per_value: dict[float, list[dict[str, Any]]] = {}
    for value, s in tqdm(points, desc=f"sweep {config.parameter}", disable=not progress):
        cfg = dataclasses.replace(config.point(value), seed=config.base.seed + s)
        per_value.setdefault(value, []).append(
            summary_row(config.parameter, value, run_paths(cfg).summary())
        )
    for value in config.values:
        rows.append(median_row(per_value[value]))
    return rows
