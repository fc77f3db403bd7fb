"""Statistics and verdicts: the paper's findings judged from the numbers of the protocol folders.

Each verdict is computed from the numbers with the criterion written beside it, against the
thresholds of :class:`study.config.Thresholds`; nothing is typed in by hand. Intervals are
two-sided t-intervals over seeds (paper App. H.1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from study.config import StudyError, Thresholds
from study.results import UTILITY_LOGLIKS


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and the two-sided t-distribution confidence half-width (paper App. H.1).

    ``half_width`` is None for fewer than two values (no interval can be estimated).
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise StudyError("t_interval needs at least one value")
    mean = float(np.mean(x))
    if x.size < 2:
        return {"mean": mean, "half_width": None, "n": int(x.size), "values": x.tolist()}
    sem = float(np.std(x, ddof=1) / math.sqrt(x.size))
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1) * sem)
    return {"mean": mean, "half_width": half, "n": int(x.size), "values": x.tolist()}


def _ci(values: list[float]) -> dict[str, Any]:
    return t_interval(values)


def precondition(seed_numbers: list[dict[str, Any]], th: Thresholds) -> dict[str, Any]:
    """Does every path still hold S_U (and similar utility) when unlearning starts?"""
    first = seed_numbers[0]
    rows = {}
    for p in first["paths"]:
        label = _ci([s["before"][p]["label"] for s in seed_numbers])
        over_chance = _ci([s["before"][p]["label"] - s["chance"] for s in seed_numbers])
        over_retrain = _ci([s["before"][p]["label"] - s["retrain_label"] for s in seed_numbers])
        row = {"label": label, "over_chance": over_chance, "over_retrain": over_retrain}
        for key in UTILITY_LOGLIKS:
            if key in first["before"][p]:
                row[key] = _ci([s["before"][p][key] for s in seed_numbers])
        if "math_flexible" in first["before"][p]:
            row["math"] = _ci([s["before"][p]["math_flexible"] for s in seed_numbers])
        row["holds"] = bool(
            min(over_chance["values"]) > th.chance_margin
            and min(over_retrain["values"]) > th.retrain_margin
        )
        rows[p] = row
    spreads = {}  # per utility: the largest spread across paths over seeds
    for key in UTILITY_LOGLIKS:
        per_seed = [
            max(v) - min(v)
            for s in seed_numbers
            if (v := [s["before"][p][key] for p in s["paths"] if key in s["before"][p]])
        ]
        if per_seed:
            spreads[key] = float(max(per_seed))
    similar = all(v <= th.utility_spread_max for v in spreads.values())
    return {
        "chance": first["chance"],
        "vocab_size": first["vocab_size"],
        "retrain_label": _ci([s["retrain_label"] for s in seed_numbers]),
        "paths": rows,
        "utility_spread_max": spreads,
        "all_paths_hold": all(r["holds"] for r in rows.values()),
        "utility_similar": bool(similar),
        "holds": all(r["holds"] for r in rows.values()) and bool(similar),
    }


def _last_position(paths: list[str]) -> str:
    """The path whose forget stage is the most recent one (p4 in the paper's layout)."""
    return max(paths, key=lambda p: int(p[1:]) if p[1:].isdigit() else -1)


def failed_methods(seed_numbers: list[dict[str, Any]]) -> dict[str, str]:
    """Method -> why, for every method with a run (any path, any seed) that did not finish
    cleanly (non-finite, collapsed): its numbers are left out of every table and verdict."""
    out: dict[str, str] = {}
    for s in seed_numbers:
        for m, by_path in sorted(s.get("failed", {}).items()):
            path, why = next(iter(sorted(by_path.items())))
            out.setdefault(m, f"{path}: {why}")
    return out


def forgetting(
    seed_numbers: list[dict[str, Any]], methods: list[str], th: Thresholds
) -> dict[str, Any]:
    """Per method: the paths on which it forgets (seed-mean label drop >= ``min_forgetting``)
    and, for SimNPO, the mean over paths and seeds of its sigmoid at step 0, the factor on GA's
    gradient that says why a saturated form cannot forget."""
    out = {}
    for m in methods:
        runs = [s["methods_data"][m]["paths"] for s in seed_numbers]
        per_path = {
            p: float(np.mean([r[p]["label_drop"] for r in runs])) for p in seed_numbers[0]["paths"]
        }
        weights = [
            row["simnpo_weight"] for r in runs for row in r.values() if "simnpo_weight" in row
        ]
        out[m] = {
            "paths": sorted(p for p, d in per_path.items() if d >= th.min_forgetting),
            "of": len(per_path),
            "simnpo_weight": float(np.mean(weights)) if weights else None,
        }
    return out


def findings(seed_numbers: list[dict[str, Any]], th: Thresholds) -> dict[str, Any]:
    """The paper's findings on one architecture, each with its numbers and a computed verdict."""
    first = seed_numbers[0]
    failed = failed_methods(seed_numbers)
    paths = first["paths"]
    methods = [m for m in first["methods"] if m not in failed]  # a failed run is no result
    last = _last_position(paths)
    out: dict[str, Any] = {"failed_methods": failed}
    inert = [
        m
        for m in methods
        if max(
            np.mean([s["methods_data"][m]["paths"][p]["label_drop"] for s in seed_numbers])
            for p in paths
        )
        < th.min_forgetting
    ]
    active = [m for m in methods if m not in inert]
    out["inert_methods"] = inert
    out["forgetting"] = forgetting(seed_numbers, methods, th)

    # 1. Divergence between paths during unlearning: mean pairwise RE distance, last vs first.
    div = {}
    for m in methods:
        ok = [s for s in seed_numbers if "between_first" in s["methods_data"][m]]
        if not ok:
            continue
        f = _ci([s["methods_data"][m]["between_first"] for s in ok])
        la = _ci([s["methods_data"][m]["between_last"] for s in ok])
        div[m] = {"first": f, "last": la, "grows": bool(la["mean"] > f["mean"])}
    judged = [v["grows"] for m, v in div.items() if m in active]
    out["divergence"] = {
        "methods": div,
        "reproduced": bool(judged) and all(judged),
        "criterion": "mean pairwise RE distance between paths at the last unlearning step > "
        "at step 0, for every method that forgets (seed means)",
    }

    # 2. Recency: forgetting (label log-prob drop) slowest on the last-position path.
    rec = {}
    for m in methods:
        drops = {
            p: _ci([s["methods_data"][m]["paths"][p]["label_drop"] for s in seed_numbers])
            for p in paths
        }
        slowest = min(paths, key=lambda p: drops[p]["mean"])
        rec[m] = {"drop": drops, "slowest": slowest, "recency": slowest == last}
    n_rec = sum(v["recency"] for m, v in rec.items() if m in active)
    out["recency"] = {
        "methods": rec,
        "last_path": last,
        "cells": n_rec,
        "judged_cells": len(active),
        "reproduced": n_rec * 2 > len(active),
        "criterion": f"the path with S_U last ({last}) has the smallest drop of the label "
        "log-prob in a majority of the methods that forget (paper: all but one cell)",
    }

    # 3. Path-dependent utility loss (TOFU, math).
    util: dict[str, Any] = {}
    for key, name in (
        ("tofu_loss", "tofu"),
        ("math_loglik_loss", "math_loglik"),
        ("math_drop", "math"),
    ):
        per = {}
        for m in methods:
            rows = first["methods_data"][m]["paths"]
            if not all(key in rows[p] for p in paths):
                continue
            vals = {
                p: _ci([s["methods_data"][m]["paths"][p][key] for s in seed_numbers]) for p in paths
            }
            means = [v["mean"] for v in vals.values()]
            top = max(abs(x) for x in means)
            rel = (max(means) - min(means)) / top if top > 0 else 0.0
            per[m] = {
                "values": vals,
                "relative_spread": float(rel),
                "path_dependent": bool(rel > th.relative_spread_min),
                # Accuracy has its own floor (th.min_math_accuracy, below).
                "loses": bool(name == "math" or top >= th.min_utility_loss),
            }
            if name == "math":
                # A few questions x samples: a drop, or a spread of drops, can be sampling noise
                # alone. As for the log-liks, a method is judged only when some path loses
                # accuracy (beyond the noise), and path dependent when the spread is beyond it.
                noise = _accuracy_noise(seed_numbers, m, vals)
                per[m]["noise"] = noise
                per[m]["loses"] = bool(noise and noise["largest_drop_z"] > th.accuracy_z)
                per[m]["path_dependent"] = bool(
                    per[m]["path_dependent"] and noise and noise["z"] > th.accuracy_z
                )
        judged = [m for m in per if m in active and per[m]["loses"]]
        accurate = True
        if name == "math":
            acc = [s["before"][p].get("math_flexible", 0.0) for s in seed_numbers for p in paths]
            accurate = bool(acc) and float(np.mean(acc)) >= th.min_math_accuracy
        measurable = accurate and bool(judged)
        util[name] = {
            "methods": per,
            "accurate_enough": accurate,
            "measurable": measurable,
            "reproduced": measurable
            and bool(judged)
            and all(per[m]["path_dependent"] for m in judged),
        }
    out["utility"] = {
        **util,
        "criterion": "(max - min) / max over paths of the utility loss > "
        f"{th.relative_spread_min:g} for every method (paper: GSM8K degradation differs by > 20% "
        "across paths) under which "
        f"some path loses >= {th.min_utility_loss:g} nat/token; math accuracy counts only when the "
        f"mean accuracy before unlearning is >= {th.min_math_accuracy:g}, under methods whose "
        f"largest drop exceeds {th.accuracy_z:g} standard errors (paired over the held-out "
        "questions), and its max - min over paths must exceed as many",
    }

    # 5. Distance of each unlearned model to the retrain baseline.
    dist = {}
    for m in methods:
        rows = first["methods_data"][m]["paths"]
        if not all("re_last" in rows[p] for p in paths):
            continue
        vals = {
            p: {
                "first": _ci([s["methods_data"][m]["paths"][p]["re_first"] for s in seed_numbers]),
                "last": _ci([s["methods_data"][m]["paths"][p]["re_last"] for s in seed_numbers]),
            }
            for p in paths
        }
        lasts = [v["last"]["mean"] for v in vals.values()]
        ratio = max(lasts) / min(lasts) if min(lasts) > 0 else math.inf
        pair_max = float(
            np.mean([s["methods_data"][m].get("between_max_last", 0.0) for s in seed_numbers])
        )
        dist[m] = {
            "paths": vals,
            "ratio": float(ratio),
            "epsilon_guaranteed": pair_max / 4,
            "path_dependent": bool(ratio >= th.re_ratio_min),
        }
    out["retrain_distance"] = {
        "methods": dist,
        "reproduced": any(m in active for m in dist)
        and all(v["path_dependent"] for m, v in dist.items() if m in active),
        "criterion": f"farthest / nearest path's RE distance to retrain at the last step >= "
        f"{th.re_ratio_min:g} for every method; epsilon_guaranteed = (largest distance between two "
        "paths) / 4: no ball around the retrained model of a smaller radius holds every path "
        "(triangle inequality on the root of d)",
    }
    return out


def _accuracy_noise(
    seed_numbers: list[dict[str, Any]], method: str, vals: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """How many standard errors (paired over the held-out questions, the same on every path of a
    seed, pooled over seeds) the largest accuracy drop is above 0 (``largest_drop_z``) and the
    spread between the paths that lose the most and the least is above 0 (``z``). None without
    per-question records."""
    hi = max(vals, key=lambda p: vals[p]["mean"])
    lo = min(vals, key=lambda p: vals[p]["mean"])
    drops: dict[str, list[float]] = {hi: [], lo: []}
    for s in seed_numbers:
        rows = s["methods_data"][method]["paths"]
        for p in drops:
            if "math_drop_per_question" not in rows[p]:
                return None
            drops[p] += rows[p]["math_drop_per_question"]
    spread = [a - b for a, b in zip(drops[hi], drops[lo], strict=True)]
    if len(spread) < 2:
        return None
    return {
        "most": hi,
        "least": lo,
        "questions": len(spread),
        "largest_drop_z": _z(drops[hi]),
        "spread": float(np.mean(spread)),
        "z": _z(spread),
    }


def _z(values: list[float]) -> float:
    """Mean over standard error (se = 0: every value alike, then mean / 1e-9 or 0)."""
    se = float(np.std(values, ddof=1) / math.sqrt(len(values)))
    return float(np.mean(values)) / max(se, 1e-9)


def depth_position(drop_r: float, drop_c: float, drop_u: float) -> float:
    """Where C's fall lies between R's fall (0) and U's fall (1): (ΔC − ΔR) / (ΔU − ΔR).

    The paper calls forgetting deep when C "falls in tandem with U" and superficial when it
    does not (Sec. 4.3), and in its Figure 4 R falls too (by 85–230 nats over 20 GA epochs), so
    C is judged against both: near 0 it stayed with the refusal, near 1 it went with U. NaN when
    U fell no more than R (GA did not single U out).
    """
    if not drop_u > drop_r:
        return float("nan")
    return (drop_c - drop_r) / (drop_u - drop_r)


def rcu_findings(seed_numbers: list[dict[str, Any]], th: Thresholds) -> dict[str, Any]:
    """Superficial vs deep forgetting (Sec. 4.3): per order, drops of R, C and U under GA on U."""
    first = seed_numbers[0]
    m = first["methods"][0]
    failed = failed_methods(seed_numbers)
    if m in failed:
        return {"method": m, "failed": failed[m], "orders": {}, "reproduced": None}
    rows = {}
    for p in first["paths"]:
        drops = {
            k: _ci([s["methods_data"][m]["paths"][p][f"rcu_{k}_drop"] for s in seed_numbers])
            for k in "RCU"
        }
        position = depth_position(*(drops[k]["mean"] for k in "RCU"))
        rows[p] = {
            "drops": drops,
            "c_position": position,
            "kind": "deep" if position >= th.deep_ratio else "superficial",  # NaN: superficial
        }
    kinds = {r["kind"] for r in rows.values()}
    return {
        "method": m,
        "orders": rows,
        "reproduced": len(kinds) == 2,
        "criterion": f"C's position = (ΔC − ΔR)/(ΔU − ΔR), 0 = C fell as R did, 1 = as U did; "
        f"deep when >= {th.deep_ratio:g}; reproduced when the six orders do not all forget the "
        "same way (the paper: depth depends on the order)",
    }


SUMMARY_ROWS = [
    ("precondition", "precondition holds"),
    ("divergence", "1. paths diverge during unlearning"),
    ("recency", "2. recency effect"),
    ("utility_tofu", "3. path-dependent TOFU utility loss"),
    ("utility_math_loglik", "3. path-dependent math utility loss (log-lik of gold solutions)"),
    ("utility_math", "3. path-dependent math utility loss (accuracy)"),
    ("rcu", "4. depth of forgetting depends on the order"),
    ("retrain_distance", "5. distance to retrain is path dependent"),
]


def summarise(llm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Summary table: one verdict per finding and architecture (None: not measurable)."""
    out = {}
    for arch, a in llm.items():
        if "incomplete" in a:  # some path has no trained model: nothing is measurable
            out[arch] = {key: None for key, _ in SUMMARY_ROWS}
            continue
        fd = a["findings"]
        out[arch] = {
            "precondition": a["precondition"]["holds"],
            "divergence": fd["divergence"]["reproduced"],
            "recency": fd["recency"]["reproduced"],
            # None: not measurable (no accuracy, no method losing utility, no math solutions).
            **{
                f"utility_{name}": u["reproduced"] if u["methods"] and u["measurable"] else None
                for name, u in fd["utility"].items()
                if name != "criterion"
            },
            "rcu": a["rcu"]["reproduced"] if "rcu" in a else None,
            "retrain_distance": fd["retrain_distance"]["reproduced"],
        }
    return out
