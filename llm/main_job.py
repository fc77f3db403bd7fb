"""The main job (`make demo`): theorem, linear-model prediction and the LLM protocol, one report.

``python -m llm.main_job --out DIR [--seeds N] [--quick]`` runs, with progress on stderr:

1. ``models``: the built-in default Llama and Qwen2 (:mod:`llm.default_models`), built once and
   cached; ``--quick`` uses the tiny test configuration, ``--models DIR`` any folder holding
   ``llama/`` and ``qwen2/``.
2. ``theory``: Theorem 3.1 checked on a random instance (:func:`theory.instance.check_instance`,
   the same instance and figure as ``python -m theory demo``), and the linear model's own
   prediction of the recency effect (:func:`theory.stages.forget_position_study`).
3. ``sim``: the simulation's path study (:func:`sim.paths.run_paths`): the forget stage at
   each position of a four-stage linear model, GA, divergence and recency.
4. ``llm``: the paper's Section 4 protocol (:func:`llm.protocol.run_protocol`) on each
   architecture and seed: the forget stage at positions 1..4, GA / NPO / SimNPO, the retrain
   baseline; and the Section 4.3 R/C/U study (six orders of R, C, U, then GA on U).
5. ``report``: ``DIR/metrics.json`` holds every number the report states, and ``DIR/report.md``
   is rendered from that file alone (:func:`render_report`), so the two cannot disagree.

Every finding carries a verdict computed from the numbers with the criterion written beside it;
nothing in the report is typed in by hand. Before any finding, the report checks the
precondition that makes the LLM findings meaningful: every path must still hold the forget stage
when unlearning starts (see :data:`CHANCE_MARGIN`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm.checkpoint import atomic_write_json, atomic_write_text

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
ARCHS = ("llama", "qwen2")

# Precondition thresholds (nats per token). A model that has learned nothing about a phrase
# scores about log(1/V) per token (uniform chance); the base models score far below that
# (about -13 against log(1/2560) = -7.85) because they confidently predict other text. A path
# "holds" S_U when the label is clearly above chance AND clearly above the retrain baseline,
# the same stages without S_U; 1 nat = the label tokens are e = 2.7 times likelier than under
# the reference (in the default three-seed run the retrain model sits 1.8 to 5 nats below
# chance, so chance + 1 is the binding bar, and the paths sit 1.9 to 4.4 nats above chance:
# README.md, "Three seeds at full size").
CHANCE_MARGIN = 1.0
RETRAIN_MARGIN = 1.0
# "Similar utility across paths" before unlearning: spread (max - min) across paths of the TOFU
# answers' and of the math solutions' log-likelihood per token; 0.5 nat = a factor 1.65 in
# per-token likelihood.
UTILITY_SPREAD_MAX = 0.5
# Utilities measured as answer log-likelihoods (per token): TOFU answers and the gold solutions of
# the held-out math problems (teacher-forced; the default models solve almost none of them).
UTILITY_LOGLIKS = ("tofu", "math_loglik")
BEFORE_KEYS = ("label", *UTILITY_LOGLIKS, "math_flexible")
# The paper's Table 1 calls a utility loss path dependent when it differs by > 20% across paths.
RELATIVE_SPREAD_MIN = 0.2
# R/C/U: forgetting is "deep" on a path when C falls by at least half as much as U does.
DEEP_RATIO = 0.5
# Math utility is judged only when the paths answer at least this fraction before unlearning: with
# 12 questions x 2 samples one lucky sample is already 0.04, and a drop from 0.04 to 0 is noise.
MIN_MATH_ACCURACY = 0.1
# A method "forgets" when some path's label log-prob falls by at least this much (nats/token);
# the paper's SimNPO form saturates at this size (sigma(beta log pi) ~ 0 for a whole response)
# and leaves the model unchanged, so its rows say nothing about paths and are left out of verdicts.
MIN_FORGETTING = 0.05
# Likewise a utility (log-lik) loss is judged only under a method where some path loses at least
# this much: (max - min) / max of losses that are all ~0 is a ratio of noise.
MIN_UTILITY_LOSS = 0.05
# Distance to retrain is called path dependent when the farthest path is >= 1.25x the nearest.
RE_RATIO_MIN = 1.25

# --quick: the tiny models and a few examples per stage (seconds per stage, for tests/notebooks).
QUICK_OVERRIDES = [
    "data.sizes={inst=8, tofu_authors=1, math=8, unlearn=8, math_test=2, rcu=4}",
    "unlearn.max_steps=2",
    "eval.n_forget_prompts=4",
    "eval.n_tofu=4",
    "eval.n_math=2",
    "eval.math_samples=1",
    "eval.max_new_tokens=8",
    "eval.n_re=4",
]
QUICK_RCU_OVERRIDES = [
    "data.sizes={inst=2, tofu_authors=1, math=2, unlearn=2, math_test=2, rcu=4}",
    "unlearn.max_steps=2",
    "eval.n_forget_prompts=2",
    "eval.n_rcu=4",
    "eval.n_re=4",
]
# --quick: every stage trained for this many epochs (stages are an array, not a dotted key).
QUICK_EPOCHS = 1.0


class MainJobError(ValueError):
    """Bad input to the main job (seeds, folders, architectures)."""


@dataclass(frozen=True)
class MainJobConfig:
    """What one main job runs.

    Attributes:
        out: report folder (created; an existing folder resumes finished protocol runs).
        seeds: protocol seeds 0..seeds-1 (data order, data draw, sampling); >= 3 gives 95% CIs.
        quick: tiny models and a few examples per stage (tests, notebooks).
        archs: default architectures to run.
        models_dir: folder holding ``llama/`` and ``qwen2/``; "" = built-in defaults (built if
            not cached).
        rcu: also run the Section 4.3 R/C/U study.
        progress: progress bars and phase messages on stderr.
        report_only: run no protocol; analyse the protocol folders already in ``out`` (e.g.
            after changing a threshold) and keep their phase times from ``out/metrics.json``.
    """

    out: Path
    seeds: int = 1
    quick: bool = False
    archs: tuple[str, ...] = ARCHS
    models_dir: str = ""
    rcu: bool = True
    progress: bool = True
    report_only: bool = False


def _log(cfg: MainJobConfig, message: str) -> None:
    if cfg.progress:
        print(f"[main job] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------
# Statistics


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and the two-sided t-distribution confidence half-width (paper App. H.1).

    ``half_width`` is None for fewer than two values (no interval can be estimated).
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise MainJobError("t_interval needs at least one value")
    mean = float(np.mean(x))
    if x.size < 2:
        return {"mean": mean, "half_width": None, "n": int(x.size), "values": x.tolist()}
    sem = float(np.std(x, ddof=1) / math.sqrt(x.size))
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1) * sem)
    return {"mean": mean, "half_width": half, "n": int(x.size), "values": x.tolist()}


# ------------------------------------------------------------------------------------------
# Phase 1: models


def resolve_models(cfg: MainJobConfig) -> dict[str, Path]:
    """Folders of the models to run, building the default ones if they are not cached."""
    for arch in cfg.archs:
        if arch not in ARCHS:
            raise MainJobError(f"unknown architecture {arch!r} (have {', '.join(ARCHS)})")
    if cfg.models_dir:
        root = Path(cfg.models_dir).expanduser()
        paths = {a: root / a for a in cfg.archs}
        for a, p in paths.items():
            if not (p / "config.json").is_file():
                raise MainJobError(f"--models {root}: no model folder {a}/ with a config.json")
        return paths
    from llm.default_models import DefaultModelConfig, ensure_default_models

    config = DefaultModelConfig.tiny() if cfg.quick else DefaultModelConfig()
    # The full-size models take minutes each on one thread: build them side by side. The tiny
    # ones take seconds, less than starting a process.
    workers = 1 if cfg.quick else "auto"
    built = ensure_default_models(
        config=config, archs=cfg.archs, progress=cfg.progress, workers=workers
    )
    return {a: Path(built[a]) for a in cfg.archs}


def vocab_size(model_dir: Path) -> int:
    """Size of the model's output distribution (config.json ``vocab_size``)."""
    return int(json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"])


# ------------------------------------------------------------------------------------------
# Phase 2: theory


THEORY_SEED = 0
THEORY_STEPS = 600
RECENCY_T = 10


def run_theory(out: Path) -> dict[str, Any]:
    """Theorem 3.1 on the demo instance of ``python -m theory demo`` and the linear model's
    recency prediction on a random 4-stage instance; writes ``out/`` and returns the numbers."""
    import jax.numpy as jnp

    from theory.cli import DEMO_EPSILON, DEMO_SHAPE
    from theory.instance import check_instance, random_instance, save_instance
    from theory.plotting import plot_bound_vs_exact
    from theory.stages import forget_position_study

    out.mkdir(parents=True, exist_ok=True)
    inst = random_instance(THEORY_SEED, **DEMO_SHAPE)
    check = check_instance(inst, THEORY_STEPS, DEMO_EPSILON)
    save_instance(inst, out / "instance.npz")
    atomic_write_json(out / "check.json", check)
    plot_bound_vs_exact(check, out / "bound_vs_exact.png")
    exact = np.asarray([np.nan if v is None else v for v in check["log10_re_distance"]])
    bound = np.asarray([np.nan if v is None else v for v in check["log10_bound"]])
    start = int(check["bound_holds_from"] or 0)
    holds = bool(np.all(exact[start:] >= bound[start:] - 1e-9))

    # Recency in the linear model: three retain stages and a forget stage, the forget stage at
    # each position; forgetting speed = log10 increase of the forget loss after RECENCY_T GA steps.
    rng = np.random.default_rng(THEORY_SEED)
    d, n, k = 40, 12, 5
    retain = [(rng.normal(size=(n, d)) / math.sqrt(d), rng.normal(size=n), 1.0) for _ in range(3)]
    forget = (rng.normal(size=(k, d)) / math.sqrt(d), rng.normal(size=k), 1.0)
    study = forget_position_study(retain, forget, 0.05, jnp.asarray([float(RECENCY_T)]))
    increase = np.asarray(study.log10_increase)[:, 0].tolist()
    rate = np.asarray(study.initial_rate).tolist()
    return {
        "seed": THEORY_SEED,
        "shape": DEMO_SHAPE,
        "epsilon": DEMO_EPSILON,
        "steps": THEORY_STEPS,
        "rho_star": check["rho_star"],
        "sigma_U": check["sigma_U"],
        "t0": check["t0"],
        "t_star": check["t_star"],
        "log10_d_first": float(exact[0]),
        "log10_d_last": float(exact[-1]),
        "log10_bound_last": float(bound[-1]),
        "min_log10_tightness": check["min_log10_tightness_guaranteed"],
        "bound_holds": holds,
        "figure": "theory/bound_vs_exact.png",
        "recency": {
            "t": RECENCY_T,
            "log10_forget_loss_increase": increase,
            "initial_rate": rate,
            "slowest_position": int(np.argmin(increase)) + 1,
            "predicts_recency": int(np.argmin(increase)) + 1 == 4,
        },
    }


# ------------------------------------------------------------------------------------------
# Phase 3: the LLM protocol


def protocol_config(arch: str, seed: int, quick: bool, model_dir: Path, rcu: bool = False):
    """The :class:`llm.config.RunConfig` of one protocol run of the main job."""
    import tomllib

    from llm.config import ConfigError, apply_overrides, config_from_dict

    path = CONFIG_DIR / ("demo_rcu.toml" if rcu else f"demo_{arch}.toml")
    raw = tomllib.loads(path.read_text())
    overrides = [f"seed={seed}", f"data.seed={seed}", f"model.path={json.dumps(str(model_dir))}"]
    if quick:
        overrides += QUICK_RCU_OVERRIDES if rcu else QUICK_OVERRIDES
        for stage in raw.get("stages", []):
            stage["epochs"] = QUICK_EPOCHS
    try:
        return config_from_dict(apply_overrides(raw, overrides))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def existing_folders(cfg: MainJobConfig) -> dict[str, Any]:
    """The protocol folders a previous main job left in ``cfg.out`` (same layout as run_llm)."""
    runs: dict[str, dict[str, str]] = {}
    rcu: dict[str, dict[str, str]] = {}
    for arch in cfg.archs:
        for seed in range(cfg.seeds):
            for kind, table in (("seed", runs), ("rcu_seed", rcu)):
                rel = f"llm/{arch}/{kind}{seed}"
                if (cfg.out / rel / "re_distance.json").is_file():
                    table.setdefault(arch, {})[str(seed)] = rel
                elif kind == "seed":
                    raise MainJobError(f"--report-only: {cfg.out / rel} holds no finished run")
    return {"runs": runs, "rcu": rcu}


def run_llm(
    cfg: MainJobConfig, models: dict[str, Path], timings: dict[str, float]
) -> dict[str, Any]:
    """Run every protocol; returns {"runs": {arch: {seed: folder}}, "rcu": {...}} (relative)."""
    from llm.protocol import run_protocol

    runs: dict[str, dict[str, str]] = {}
    rcu: dict[str, dict[str, str]] = {}
    for arch in cfg.archs:
        for seed in range(cfg.seeds):
            rel = f"llm/{arch}/seed{seed}"
            _log(cfg, f"LLM protocol: {arch}, seed {seed} -> {cfg.out / rel}")
            started = time.perf_counter()
            run_protocol(
                protocol_config(arch, seed, cfg.quick, models[arch]), cfg.out / rel, cfg.progress
            )
            timings[f"llm_{arch}_seed{seed}"] = time.perf_counter() - started
            runs.setdefault(arch, {})[str(seed)] = rel
            # --quick runs R/C/U on the first architecture only (it checks the wiring, not a claim).
            if cfg.rcu and not (cfg.quick and arch != cfg.archs[0]):
                rel = f"llm/{arch}/rcu_seed{seed}"
                _log(cfg, f"R/C/U study: {arch}, seed {seed} -> {cfg.out / rel}")
                started = time.perf_counter()
                run_protocol(
                    protocol_config(arch, seed, cfg.quick, models[arch], rcu=True),
                    cfg.out / rel,
                    cfg.progress,
                )
                timings[f"rcu_{arch}_seed{seed}"] = time.perf_counter() - started
                rcu.setdefault(arch, {})[str(seed)] = rel
    return {"runs": runs, "rcu": rcu}


# ------------------------------------------------------------------------------------------
# Phase 4: numbers of one protocol folder


def _pairs_mean(between: dict[str, list[float]], index: int) -> float:
    return float(np.mean([v[index] for v in between.values()]))


def protocol_numbers(folder: Path, vocab: int) -> dict[str, Any]:
    """Every per-path / per-method number the report uses, from one protocol folder's files."""
    from llm.report import load_runs

    runs = load_runs(folder)
    retrain = json.loads((folder / "runs" / "retrain" / "metrics.json").read_text())["summary"]
    re = json.loads((folder / "re_distance.json").read_text())
    paths = sorted(runs)
    methods = sorted({m for p in runs.values() for m in p})
    before: dict[str, dict[str, float]] = {}
    for p in paths:
        first = runs[p][methods[0]][0]  # step 0: the trained path, identical for every method
        before[p] = {k: float(first[k]) for k in BEFORE_KEYS if k in first}
    per_method: dict[str, Any] = {}
    for m in methods:
        entry: dict[str, Any] = {"paths": {}}
        for p in paths:
            recs = runs[p].get(m)
            if not recs:
                continue
            first, last = recs[0], recs[-1]
            row: dict[str, Any] = {
                "steps": int(last["step"]),
                "label_first": float(first["label"]),
                "label_last": float(last["label"]),
                "label_drop": float(first["label"] - last["label"]),
                "label_curve": [[int(r["step"]), float(r["label"])] for r in recs],
            }
            for key in UTILITY_LOGLIKS:
                if key in first:
                    row[f"{key}_loss"] = float(abs(last[key] - first[key]))
            if "math_flexible" in first and "math_flexible" in last:
                row["math_first"] = float(first["math_flexible"])
                row["math_drop"] = float(first["math_flexible"] - last["math_flexible"])
            for key in ("rcu_R", "rcu_C", "rcu_U"):
                if key in first:
                    row[f"{key}_drop"] = float(first[key] - last[key])
            e = re.get(m, {})
            if e.get("steps") and p in e["to_retrain"]:
                row["re_first"] = float(e["to_retrain"][p][0])
                row["re_last"] = float(e["to_retrain"][p][-1])
            entry["paths"][p] = row
        e = re.get(m, {})
        if e.get("steps") and e.get("between"):
            entry["between_first"] = _pairs_mean(e["between"], 0)
            entry["between_last"] = _pairs_mean(e["between"], -1)
            entry["between_max_last"] = float(max(v[-1] for v in e["between"].values()))
        per_method[m] = entry
    return {
        "paths": paths,
        "methods": methods,
        "vocab_size": vocab,
        "chance": -math.log(vocab),
        "retrain_label": float(retrain["label"]),
        "retrain_tofu": float(retrain["tofu"]) if "tofu" in retrain else None,
        "before": before,
        "methods_data": per_method,
    }


# ------------------------------------------------------------------------------------------
# Aggregation over seeds and verdicts


def _ci(values: list[float]) -> dict[str, Any]:
    return t_interval(values)


def precondition(seed_numbers: list[dict[str, Any]]) -> dict[str, Any]:
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
            min(over_chance["values"]) > CHANCE_MARGIN
            and min(over_retrain["values"]) > RETRAIN_MARGIN
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
    similar = all(v <= UTILITY_SPREAD_MAX for v in spreads.values())
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


def findings(seed_numbers: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's findings on one architecture, each with its numbers and a computed verdict."""
    first = seed_numbers[0]
    paths, methods = first["paths"], first["methods"]
    last = _last_position(paths)
    out: dict[str, Any] = {}
    inert = [
        m
        for m in methods
        if max(
            np.mean([s["methods_data"][m]["paths"][p]["label_drop"] for s in seed_numbers])
            for p in paths
        )
        < MIN_FORGETTING
    ]
    active = [m for m in methods if m not in inert]
    out["inert_methods"] = inert

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
                "path_dependent": bool(rel > RELATIVE_SPREAD_MIN),
                # Accuracy has its own floor (MIN_MATH_ACCURACY, below).
                "loses": bool(name == "math" or top >= MIN_UTILITY_LOSS),
            }
        judged = [m for m in per if m in active and per[m]["loses"]]
        if name == "math":
            acc = [s["before"][p].get("math_flexible", 0.0) for s in seed_numbers for p in paths]
            measurable = bool(acc) and float(np.mean(acc)) >= MIN_MATH_ACCURACY
        else:
            measurable = bool(judged)
        util[name] = {
            "methods": per,
            "measurable": measurable,
            "reproduced": measurable
            and bool(judged)
            and all(per[m]["path_dependent"] for m in judged),
        }
    out["utility"] = {
        **util,
        "criterion": f"(max - min) / max over paths of the utility loss > {RELATIVE_SPREAD_MIN:g} "
        "for every method (paper: GSM8K degradation differs by > 20% across paths) under which "
        f"some path loses >= {MIN_UTILITY_LOSS:g} nat/token; math accuracy counts only when the "
        f"mean accuracy before unlearning is >= {MIN_MATH_ACCURACY:g}",
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
            "path_dependent": bool(ratio >= RE_RATIO_MIN),
        }
    out["retrain_distance"] = {
        "methods": dist,
        "reproduced": any(m in active for m in dist)
        and all(v["path_dependent"] for m, v in dist.items() if m in active),
        "criterion": f"farthest / nearest path's RE distance to retrain at the last step >= "
        f"{RE_RATIO_MIN:g} for every method; epsilon_guaranteed = (largest distance between two "
        "paths) / 4: no ball around the retrained model of a smaller radius holds every path "
        "(triangle inequality on the root of d)",
    }
    return out


def rcu_findings(seed_numbers: list[dict[str, Any]]) -> dict[str, Any]:
    """Superficial vs deep forgetting (Sec. 4.3): per order, drops of R, C and U under GA on U."""
    first = seed_numbers[0]
    m = first["methods"][0]
    rows = {}
    for p in first["paths"]:
        drops = {
            k: _ci([s["methods_data"][m]["paths"][p][f"rcu_{k}_drop"] for s in seed_numbers])
            for k in "RCU"
        }
        u = drops["U"]["mean"]
        ratio = drops["C"]["mean"] / u if u > 0 else float("nan")
        rows[p] = {
            "drops": drops,
            "c_over_u": ratio,
            "kind": "deep" if u > 0 and ratio >= DEEP_RATIO else "superficial",
        }
    kinds = {r["kind"] for r in rows.values()}
    return {
        "method": m,
        "orders": rows,
        "reproduced": len(kinds) == 2,
        "criterion": f"deep = C falls by >= {DEEP_RATIO:g} x the fall of U; reproduced when the "
        "six orders do not all forget the same way (the paper: depth depends on the order)",
    }


# ------------------------------------------------------------------------------------------
# Report


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "nan"
    return f"{x:.{digits}f}" if abs(x) >= 10 ** (-digits) or x == 0 else f"{x:.3e}"


def _ci_text(c: dict[str, Any], digits: int = 3) -> str:
    if c["half_width"] is None:
        return _f(c["mean"], digits)
    return f"{_f(c['mean'], digits)} ± {_f(c['half_width'], digits)}"


def _verdict(ok: bool) -> str:
    return "**reproduced**" if ok else "**not reproduced**"


def _precondition_note(pre: dict[str, Any]) -> str:
    notes = []
    if not pre["all_paths_hold"]:
        notes.append(
            "some path lost S_U before unlearning, so it has nothing to forget and the "
            "recency and divergence findings do not test the paper's claims"
        )
    if not pre["utility_similar"]:
        notes.append(
            "every path holds S_U, but utility differs across paths before unlearning by "
            "more than the bound, so the utility findings partly reflect the starting points"
            if pre["all_paths_hold"]
            else "utility also differs across paths before unlearning"
        )
    return f" ({'; '.join(notes)})" if notes else ""


def render_report(metrics: dict[str, Any]) -> str:
    """The Markdown report, a pure function of ``metrics.json``."""
    L: list[str] = []
    job = metrics["job"]
    seeds_note = (
        "95% t-intervals over seeds: mean ± half-width"
        if job["seeds"] > 1
        else "one seed, no interval"
    )
    L += [
        "# pathdep main job: report",
        "",
        f"Seeds: {job['seeds']} ({seeds_note}); "
        f"quick mode: {_f(job['quick'])}; architectures: {', '.join(job['archs'])}.",
        "",
        "## Time per phase (seconds)",
        "",
        "| phase | seconds |",
        "|---|---|",
    ]
    for k, v in metrics["timings"]:
        L.append(f"| {k} | {_f(v, 1)} |")
    th = metrics["theory"]
    L += [
        "",
        "## 1. Theorem 3.1 on a random linear instance (`theory`)",
        "",
        f"Instance seed {th['seed']}, shape {th['shape']}: ρ* = {_f(th['rho_star'], 4)}, "
        f"σ_U = {_f(th['sigma_U'], 4)}, t0 = {th['t0']}, t* (ε = {th['epsilon']:g}) = "
        f"{th['t_star']}. Exact log10 d(t) goes from {_f(th['log10_d_first'])} at t = 0 to "
        f"{_f(th['log10_d_last'])} at t = {th['steps']}; the bound there is "
        f"{_f(th['log10_bound_last'])}. Minimum of log10(exact / bound) where the theorem "
        f"applies: {_f(th['min_log10_tightness'], 4)}.",
        "",
        f"Bound holds for every t ≥ max(t0, 0): {_verdict(th['bound_holds'])}.",
        "",
        f"![Theorem 3.1: exact divergence vs bound]({th['figure']})",
        "",
        "Linear-model recency prediction (three retain stages, forget stage at position p, "
        f"increase of the forget loss after {th['recency']['t']} GA steps, log10):",
        "",
        "| position p | "
        + " | ".join(str(i + 1) for i in range(len(th["recency"]["log10_forget_loss_increase"])))
        + " |",
        "|---|" + "---|" * len(th["recency"]["log10_forget_loss_increase"]),
        "| log10 increase | "
        + " | ".join(_f(v) for v in th["recency"]["log10_forget_loss_increase"])
        + " |",
        "",
        f"Slowest forgetting at p = {th['recency']['slowest_position']}: the linear model "
        f"{'predicts' if th['recency']['predicts_recency'] else 'does not predict'} the recency "
        "effect on this instance.",
        "",
        "## 2. Simulation: the path study of `sim` (forget stage at p = 1..4)",
        "",
    ]
    sm = metrics["sim"]
    sv = sm["summary"]
    L += [
        f"Configuration: {sm['config']}. Largest RE distance between two paths: "
        f"{_f(sv['pairwise_re_initial_max'], 4)} before unlearning, "
        f"{_f(sv['pairwise_re_final_max'], 4)} after {sv['steps']} steps "
        f"(log10 growth {_f(sv['pairwise_growth_log10'])}).",
        "",
        "| position p | " + " | ".join(str(p) for p in sv["forget_position"]) + " |",
        "|---|" + "---|" * len(sv["forget_position"]),
        "| drop of forget log-lik | " + " | ".join(_f(v) for v in sv["forget_logp_drop"]) + " |",
        "| RE distance to retrain (end) | "
        + " | ".join(_f(v, 4) for v in sv["re_to_retrain_final"])
        + " |",
        "",
        f"Paths diverge during unlearning: {_verdict(sm['diverges'])}. Forgetting slowest when "
        f"S_U is last (recency): {_verdict(sm['recency'])}.",
        "",
        f"![sim path study]({sm['figure']})",
        "",
    ]
    for arch in job["archs"]:
        a = metrics["llm"][arch]
        pre = a["precondition"]
        L += [
            f"## 3. LLM protocol: default {arch}",
            "",
            f"Protocol folders: {', '.join(a['folders'])}. Paths: "
            + "; ".join(f"{p} = {' → '.join(seq)}" for p, seq in a["sequences"].items())
            + f"; retrain = {' → '.join(a['retrain_sequence'])}.",
            "",
            "### Precondition: every path still holds S_U when unlearning starts",
            "",
            f"Uniform chance log(1/V) = {_f(pre['chance'])} (V = {pre['vocab_size']}); the "
            f"retrain baseline (never saw S_U) scores the label at "
            f"{_ci_text(pre['retrain_label'])}. A path holds S_U when its label log-prob per "
            f"token is > chance + {CHANCE_MARGIN:g} and > retrain + {RETRAIN_MARGIN:g} "
            f"(every seed); utility is similar when the spread across paths of the TOFU and of "
            f"the math log-lik is ≤ {UTILITY_SPREAD_MAX:g} each.",
            "",
            "| path | label log-prob | over chance | over retrain | TOFU log-lik | math log-lik "
            "| math acc | holds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p, r in pre["paths"].items():
            L.append(
                f"| {p} | {_ci_text(r['label'])} | {_ci_text(r['over_chance'])} | "
                f"{_ci_text(r['over_retrain'])} | "
                f"{_ci_text(r['tofu']) if 'tofu' in r else 'n/a'} | "
                f"{_ci_text(r['math_loglik']) if 'math_loglik' in r else 'n/a'} | "
                f"{_ci_text(r['math']) if 'math' in r else 'n/a'} | {_f(r['holds'])} |"
            )
        L += [
            "",
            "Log-lik spread across paths (max over seeds): "
            + ", ".join(f"{k} {_f(v)}" for k, v in pre["utility_spread_max"].items())
            + ". "
            + f"Precondition: {'**holds**' if pre['holds'] else '**fails**'}"
            + _precondition_note(pre)
            + ".",
            "",
        ]
        fd = a["findings"]
        if fd["inert_methods"]:
            L += [
                f"Methods that did not forget (no path's label log-prob fell by "
                f"≥ {MIN_FORGETTING:g} nat/token), shown but left out of every verdict: "
                f"{', '.join(fd['inert_methods'])}.",
                "",
            ]
        L += [
            "### Finding 1: divergence between paths during unlearning",
            "",
            "| method | mean pairwise RE distance, step 0 | last step | grows |",
            "|---|---|---|---|",
        ]
        for m, v in fd["divergence"]["methods"].items():
            L.append(
                f"| {m} | {_ci_text(v['first'], 4)} | {_ci_text(v['last'], 4)} | {_f(v['grows'])} |"
            )
        L += [
            "",
            f"Criterion: {fd['divergence']['criterion']}. "
            f"{_verdict(fd['divergence']['reproduced'])}.",
            "",
        ]
        rec = fd["recency"]
        L += [
            "### Finding 2: recency effect",
            "",
            "Drop of the label log-prob per token over unlearning (larger = faster forgetting):",
            "",
            "| method | " + " | ".join(a["paths"]) + " | slowest |",
            "|---|" + "---|" * (len(a["paths"]) + 1),
        ]
        for m, v in rec["methods"].items():
            L.append(
                f"| {m} | "
                + " | ".join(_ci_text(v["drop"][p]) for p in a["paths"])
                + f" | {v['slowest']} |"
            )
        L += [
            "",
            f"Criterion: {rec['criterion']}. Cells with recency: {rec['cells']} of "
            f"{rec['judged_cells']} judged. {_verdict(rec['reproduced'])}.",
            "",
        ]
        ut = fd["utility"]
        L += ["### Finding 3: path-dependent loss of utility", ""]
        for name, title in (
            ("tofu", "TOFU: |Δ log-lik| of true answers (1 − TOFU utility)"),
            ("math_loglik", "math: |Δ log-lik| of the gold solutions (teacher-forced)"),
            ("math", "math: drop of accuracy (flexible extraction)"),
        ):
            u = ut[name]
            L += [
                f"{title}:",
                "",
                "| method | " + " | ".join(a["paths"]) + " | relative spread |",
                "|---|" + "---|" * (len(a["paths"]) + 1),
            ]
            for m, v in u["methods"].items():
                # A spread of losses that are all noise (accuracy ~0, or no path losing
                # utility) would read as a finding.
                if not u["measurable"]:
                    spread = "n/a"
                elif not v.get("loses", True):
                    spread = f"n/a (every loss < {MIN_UTILITY_LOSS:g})"
                else:
                    spread = _f(v["relative_spread"])
                L.append(
                    f"| {m} | "
                    + " | ".join(_ci_text(v["values"][p]) for p in a["paths"])
                    + f" | {spread} |"
                )
            if u["measurable"]:
                extra = ""
            elif name == "math":
                extra = (
                    f" Not measurable: mean accuracy before unlearning "
                    f"< {MIN_MATH_ACCURACY:g} at this size."
                )
            else:
                extra = (
                    f" Not measurable: no path loses >= {MIN_UTILITY_LOSS:g} nat/token under "
                    "a method that forgets."
                )
            L += ["", f"{name}: {_verdict(u['reproduced'])}.{extra}", ""]
        L += [f"Criterion: {ut['criterion']}.", ""]
        if "rcu" in a:
            r = a["rcu"]
            L += [
                "### Finding 4: superficial vs deep forgetting (R/C/U, Sec. 4.3)",
                "",
                f"GA ({r['method']}) on U after each order; drops of the log-prob per token:",
                "",
                "| order | R drop | C drop | U drop | C/U | kind |",
                "|---|---|---|---|---|---|",
            ]
            for p, v in r["orders"].items():
                L.append(
                    f"| {p} | {_ci_text(v['drops']['R'])} | {_ci_text(v['drops']['C'])} | "
                    f"{_ci_text(v['drops']['U'])} | {_f(v['c_over_u'])} | {v['kind']} |"
                )
            L += ["", f"Criterion: {r['criterion']}. {_verdict(r['reproduced'])}.", ""]
        rd = fd["retrain_distance"]
        L += [
            "### Finding 5: distance of each unlearned model to the retrained baseline",
            "",
            "RE distance d (Def. 2.1; Pred = per-token log-probs of held-out paraphrased TOFU "
            "answers), before → after unlearning:",
            "",
            "| method | " + " | ".join(a["paths"]) + " | far/near | ε guaranteed |",
            "|---|" + "---|" * (len(a["paths"]) + 2),
        ]
        for m, v in rd["methods"].items():
            cells = [
                f"{_ci_text(v['paths'][p]['first'], 4)} → {_ci_text(v['paths'][p]['last'], 4)}"
                for p in a["paths"]
            ]
            L.append(
                f"| {m} | " + " | ".join(cells) + f" | {_f(v['ratio'])} | "
                f"{_f(v['epsilon_guaranteed'], 4)} |"
            )
        L += [
            "",
            f"Criterion: {rd['criterion']}. {_verdict(rd['reproduced'])}.",
            "",
            f"Figures: label log-prob per step ({a['folders'][0]}/report/fig1_label_logprob.png),"
            f" RE distance ({a['folders'][0]}/report/fig_re_distance.png), Table 1 "
            f"({a['folders'][0]}/report/table1.md).",
            "",
        ]
    L += [
        "## Summary",
        "",
        "| finding | " + " | ".join(job["archs"]) + " |",
        "|---|" + "---|" * len(job["archs"]),
    ]
    for key, title in metrics["summary_rows"]:
        L.append(
            f"| {title} | "
            + " | ".join(_f(metrics["summary"][arch].get(key)) for arch in job["archs"])
            + " |"
        )
    L += ["", "![label log-prob during unlearning, all paths](fig_label_curves.png)", ""]
    return "\n".join(L)


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


def plot_label_curves(metrics: dict[str, Any], folder: Path, path: Path) -> None:
    """Mean label log-prob per unlearning step, one line per path, panels = arch x method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = metrics["job"]["archs"]
    methods = metrics["llm"][archs[0]]["methods"]
    fig, axes = plt.subplots(
        len(archs), len(methods), figsize=(3.6 * len(methods), 2.9 * len(archs)), squeeze=False
    )
    for i, arch in enumerate(archs):
        a = metrics["llm"][arch]
        for j, m in enumerate(methods):
            ax = axes[i][j]
            for p in a["paths"]:
                curves = [s["methods_data"][m]["paths"][p]["label_curve"] for s in a["seeds"]]
                n = min(len(c) for c in curves)
                steps = [c[0] for c in curves[0][:n]]
                vals = np.asarray([[c[1] for c in cur[:n]] for cur in curves])
                ax.plot(steps, vals.mean(axis=0), marker="o", ms=2.5, label=p)
                if vals.shape[0] > 1:
                    ax.fill_between(steps, vals.min(axis=0), vals.max(axis=0), alpha=0.15)
            ax.axhline(a["precondition"]["chance"], color="gray", ls=":", lw=1)
            ax.set_title(f"{arch}, {m}", fontsize=9)
            ax.set_xlabel("unlearning step", fontsize=8)
            ax.set_ylabel("label log-prob / token", fontsize=8)
            ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


# ------------------------------------------------------------------------------------------
# The job


def analyse(cfg: MainJobConfig, folders: dict[str, Any], models: dict[str, Path]) -> dict:
    """Numbers, aggregates and verdicts of every protocol folder (reads files only)."""
    result: dict[str, Any] = {}
    for arch, seeds in folders["runs"].items():
        vocab = vocab_size(models[arch])
        nums = [protocol_numbers(cfg.out / rel, vocab) for _, rel in sorted(seeds.items())]
        paths_file = json.loads((cfg.out / seeds["0"] / "paths.json").read_text())
        entry: dict[str, Any] = {
            "folders": [seeds[k] for k in sorted(seeds)],
            "paths": nums[0]["paths"],
            "methods": nums[0]["methods"],
            "sequences": paths_file["paths"],
            "retrain_sequence": paths_file["retrain"],
            "precondition": precondition(nums),
            "findings": findings(nums),
            "seeds": nums,
        }
        if arch in folders["rcu"]:
            rseeds = folders["rcu"][arch]
            rnums = [protocol_numbers(cfg.out / rel, vocab) for _, rel in sorted(rseeds.items())]
            entry["rcu"] = rcu_findings(rnums)
            entry["rcu_folders"] = [rseeds[k] for k in sorted(rseeds)]
        result[arch] = entry
    return result


def summarise(llm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for arch, a in llm.items():
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


def run_sim(out: Path) -> dict[str, Any]:
    """The simulation's path study (:func:`sim.paths.run_paths`, its default configuration: a
    linear model, four stages, the forget stage at p = 1..4, GA); writes ``out/`` and returns the
    summary with two verdicts: the paths diverge, and forgetting is slowest for p = 4."""
    from sim.io import save_figure
    from sim.paths import PathsConfig, run_paths
    from sim.plots import paths_figure

    out.mkdir(parents=True, exist_ok=True)
    result = run_paths(PathsConfig())
    summary = result.summary()
    atomic_write_json(out / "paths_summary.json", summary)
    import matplotlib.pyplot as plt

    fig = paths_figure(result, "sim: forget stage at p = 1..4")
    save_figure(fig, out / "paths.png")
    plt.close(fig)
    growth = summary.get("pairwise_growth_log10")
    return {
        "config": "sim.paths.PathsConfig() defaults (linear model, proximal stages, GA)",
        "summary": summary,
        "diverges": bool(growth is not None and math.isfinite(growth) and growth > 0),
        "recency": bool(summary.get("recency_slowest_is_last", False)),
        "figure": "sim/paths.png",
    }


def run_main_job(cfg: MainJobConfig) -> dict[str, Any]:
    """Run every phase and write ``cfg.out/{metrics.json, report.md, fig_label_curves.png}``."""
    if cfg.seeds < 1:
        raise MainJobError(f"--seeds must be >= 1, got {cfg.seeds}")
    out = Path(cfg.out)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    _log(cfg, "phase 1/5: default models (built once, then cached)")
    models = resolve_models(cfg)
    timings["models"] = time.perf_counter() - t
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    _log(cfg, "phase 2/5: Theorem 3.1 and the linear recency prediction")
    theory = run_theory(out / "theory")
    timings["theory"] = time.perf_counter() - t
    t = time.perf_counter()
    _log(cfg, "phase 3/5: simulation path study (sim.paths)")
    sim = run_sim(out / "sim")
    timings["sim"] = time.perf_counter() - t
    _log(cfg, f"phase 4/5: LLM protocol on {', '.join(cfg.archs)} x {cfg.seeds} seed(s)")
    if cfg.report_only:
        folders = existing_folders(cfg)
        old = out / "metrics.json"
        if old.is_file():  # keep the times of the run that produced the folders
            for k, v in json.loads(old.read_text())["timings"]:
                if k.startswith(("llm_", "rcu_")):
                    timings[k] = v
    else:
        folders = run_llm(cfg, models, timings)
    t = time.perf_counter()
    _log(cfg, "phase 5/5: report")
    llm = analyse(cfg, folders, models)
    timings["report"] = time.perf_counter() - t
    timings["total"] = sum(timings.values())
    metrics = {
        "job": {
            "seeds": cfg.seeds,
            "quick": cfg.quick,
            "archs": list(cfg.archs),
            "models": {a: str(p) for a, p in models.items()},
        },
        "timings": [[k, v] for k, v in timings.items()],  # a list: phase order survives sorting
        "theory": theory,
        "sim": sim,
        "llm": llm,
        "summary": summarise(llm),
        "summary_rows": SUMMARY_ROWS,
        "thresholds": {
            "chance_margin": CHANCE_MARGIN,
            "min_forgetting": MIN_FORGETTING,
            "min_math_accuracy": MIN_MATH_ACCURACY,
            "min_utility_loss": MIN_UTILITY_LOSS,
            "retrain_margin": RETRAIN_MARGIN,
            "utility_spread_max": UTILITY_SPREAD_MAX,
            "relative_spread_min": RELATIVE_SPREAD_MIN,
            "deep_ratio": DEEP_RATIO,
            "re_ratio_min": RE_RATIO_MIN,
        },
    }
    atomic_write_json(out / "metrics.json", metrics)
    metrics = json.loads((out / "metrics.json").read_text())  # render exactly what the file holds
    plot_label_curves(metrics, out, out / "fig_label_curves.png")
    atomic_write_text(out / "report.md", render_report(metrics))
    _log(cfg, f"wrote {out / 'report.md'} ({timings['total']:.0f} s)")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llm.main_job",
        description="Theorem 3.1, the linear recency prediction and the LLM protocol on the "
        "default Llama and Qwen2, with one report that says what reproduced.",
    )
    p.add_argument("--out", required=True, help="report folder, e.g. results/demo")
    p.add_argument("--seeds", type=int, default=1, help="protocol seeds (>= 3 for 95%% CIs)")
    p.add_argument("--quick", action="store_true", help="tiny models and data (tests, notebooks)")
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated: llama,qwen2")
    p.add_argument("--models", default="", help="folder with llama/ and qwen2/ (else defaults)")
    p.add_argument("--no-rcu", action="store_true", help="skip the R/C/U (Sec. 4.3) study")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run no protocol: re-analyse the protocol folders already in --out",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from llm.config import ConfigError
    from llm.protocol import ProtocolError

    try:
        if args.threads < 0:
            raise MainJobError(f"--threads must be >= 0, got {args.threads}")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        archs = tuple(a.strip() for a in args.archs.split(",") if a.strip())
        if not archs:
            raise MainJobError("--archs is empty")
        cfg = MainJobConfig(
            out=Path(args.out),
            seeds=args.seeds,
            quick=args.quick,
            archs=archs,
            models_dir=args.models,
            rcu=not args.no_rcu,
            progress=not args.no_progress,
            report_only=args.report_only,
        )
        if cfg.seeds < 1:
            raise MainJobError(f"--seeds must be >= 1, got {cfg.seeds}")
        for a in archs:
            if a not in ARCHS:
                raise MainJobError(f"unknown architecture {a!r} (have {', '.join(ARCHS)})")
        run_main_job(cfg)
    except (MainJobError, ConfigError, ProtocolError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "MainJobConfig",
    "MainJobError",
    "run_main_job",
    "render_report",
    "protocol_numbers",
    "precondition",
    "findings",
    "rcu_findings",
    "t_interval",
    "main",
]
