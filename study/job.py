"""The main job: models, theory, sim and the LLM protocols, then one report.

:func:`run_study` runs the phases (:mod:`study.phases`), reads the protocol folders
(:mod:`study.results`), judges the findings (:mod:`study.verdicts`), and writes ``metrics.json``
(every number the report states, with the thresholds), ``report.md``
(:func:`study.render.render_report` of that file) and the figure, where :mod:`study.layout` says.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from llm.models import transformers_progress
from pathdep.configs import ConfigError, config_hash, save_config, saved_hash, to_dict
from pathdep.io import atomic_write_json, atomic_write_text, check_output_folder
from pathdep.lock import hold
from pathdep.resources import usable_cores
from study import theory_llm
from study.config import StudyConfig, StudyError
from study.figures import plot_label_curves, plot_theory_llm
from study.layout import StudyLayout
from study.phases import (
    existing_folders,
    log,
    protocol_configs,
    resolve_models,
    run_llm,
    run_sim,
    run_theory,
)
from study.render import render_report
from study.results import path_sequences, protocol_numbers, vocab_size
from study.table1 import beside_paper
from study.verdicts import SUMMARY_ROWS, findings, precondition, rcu_findings, summarise


def analyse(
    cfg: StudyConfig, layout: StudyLayout, folders: dict[str, Any], models: dict[str, Path]
) -> dict[str, Any]:
    """Numbers, aggregates and verdicts of every protocol folder (reads files only)."""
    th = cfg.thresholds
    result: dict[str, Any] = {}
    for arch, by_seed in folders["runs"].items():
        seeds = {int(k): v for k, v in by_seed.items()}
        vocab = vocab_size(models[arch])
        nums = [protocol_numbers(layout.root / rel, vocab) for _, rel in sorted(seeds.items())]
        broken = [n["incomplete"] for n in nums if "incomplete" in n]
        if broken:  # a stage failed: no verdict can be computed for this architecture
            result[arch] = {"folders": [seeds[k] for k in sorted(seeds)], "incomplete": broken[0]}
            continue
        sequences = path_sequences(layout.root / seeds[min(seeds)])
        found = findings(nums, th)
        entry: dict[str, Any] = {
            "folders": [seeds[k] for k in sorted(seeds)],
            "paths": nums[0]["paths"],
            "methods": nums[0]["methods"],
            "sequences": sequences["paths"],
            "retrain_sequence": sequences["retrain"],
            "precondition": precondition(nums, th),
            "findings": found,
            "table1": beside_paper(
                arch,
                [layout.root / seeds[k] for k in sorted(seeds)],
                found["inert_methods"],
                found["utility"]["math"],
                [findings([n], th)["utility"]["math"] for n in nums],
            ),
            "seeds": nums,
        }
        if arch in folders["rcu"]:
            rseeds = {int(k): v for k, v in folders["rcu"][arch].items()}
            rnums = [
                protocol_numbers(layout.root / rel, vocab) for _, rel in sorted(rseeds.items())
            ]
            broken = [n["incomplete"] for n in rnums if "incomplete" in n]
            entry["rcu"] = (
                {"method": "", "failed": broken[0], "orders": {}, "reproduced": None}
                if broken
                else rcu_findings(rnums, th)
            )
            entry["rcu_folders"] = [rseeds[k] for k in sorted(rseeds)]
        result[arch] = entry
    return result


def run_study(
    cfg: StudyConfig,
    out: str | Path,
    *,
    progress: bool = True,
    report_only: bool = False,
    workers: int | str = 1,
) -> dict[str, Any]:
    """Run every phase into ``out`` and write the report; returns the metrics as written.

    An existing ``out`` of the same config resumes (finished protocol runs are kept); one of
    another config is refused. ``report_only`` runs no protocol: it re-analyses the protocol
    folders already in ``out`` (e.g. with other thresholds) and keeps their phase times.
    ``workers`` protocols run side by side in spawned processes (``"auto"``: one per usable
    core, at most one per protocol); the files do not depend on it.
    """
    layout = StudyLayout(Path(out))
    check_output_folder(layout.root)
    old = saved_hash(layout.root)
    if not report_only and old is not None and old != config_hash(cfg):
        raise StudyError(
            f"{layout.root} holds a main job of a different config (hash {old} != "
            f"{config_hash(cfg)}); use a new --out, or --config {layout.root / 'config.toml'}"
        )
    timings: dict[str, float] = {}
    job_started = time.perf_counter()
    t = time.perf_counter()
    log(progress, "phase 1/5: default models (built once, then cached)")
    models = resolve_models(cfg, progress)  # into the model cache, not into out
    timings["models"] = time.perf_counter() - t
    configs = protocol_configs(cfg, layout, models)  # every protocol's config checked first
    with transformers_progress(progress), hold(layout.root):
        save_config(cfg, layout.root)
        t = time.perf_counter()
        log(progress, "phase 2/5: Theorem 3.1 and the linear recency prediction")
        theory = run_theory(layout.theory)
        timings["theory"] = time.perf_counter() - t
        t = time.perf_counter()
        log(progress, "phase 3/5: simulation path study (sim.paths)")
        sim = run_sim(layout.sim)
        timings["sim"] = time.perf_counter() - t
        log(progress, f"phase 4/5: LLM protocol on {', '.join(cfg.archs)}, seeds {cfg.seed_list}")
        if report_only:
            folders = existing_folders(cfg, layout)
            if layout.metrics.is_file():  # keep the times of the run that produced the folders
                for k, v in json.loads(layout.metrics.read_text())["timings"]:
                    if k.startswith(("llm_", "rcu_", "theory_llm_")):
                        timings[k] = v
        else:
            n = len(configs) if workers == "auto" else int(workers)
            folders = run_llm(
                configs, timings, progress, cfg.torch_threads, min(n, len(configs), usable_cores())
            )
        return _write_report(
            cfg, layout, folders, models, timings, theory, sim, progress, job_started
        )


def _write_report(
    cfg, layout, folders, models, timings, theory, sim, progress, job_started
) -> dict[str, Any]:
    t = time.perf_counter()
    log(progress, "phase 5/5: report")
    llm = analyse(cfg, layout, folders, models)
    timings["report"] = time.perf_counter() - t
    # Wall time: protocols that ran side by side overlap, so their seconds do not add up to it.
    timings["total"] = time.perf_counter() - job_started
    metrics = {
        "job": {
            "seeds": cfg.seeds,
            "seed_list": cfg.seed_list,
            "quick": cfg.quick,
            "archs": list(cfg.archs),
            "models": {a: str(p) for a, p in models.items()},
            "config_hash": config_hash(cfg),
        },
        "timings": [[k, v] for k, v in timings.items()],  # a list: phase order survives sorting
        "theory": theory,
        "sim": sim,
        "llm": llm,
        "theory_llm": theory_llm.collect(layout.root, folders["runs"]),
        "summary": summarise(llm),
        "summary_rows": SUMMARY_ROWS,
        "thresholds": to_dict(cfg.thresholds),
        "failed_runs": failed_runs(llm),
    }
    atomic_write_json(layout.metrics, metrics)
    metrics = json.loads(layout.metrics.read_text())  # render exactly what the file holds
    plot_label_curves(metrics, layout.label_curves)
    if metrics["theory_llm"] is not None:
        plot_theory_llm(metrics["theory_llm"], layout.theory_llm_figure)
    atomic_write_text(layout.report, render_report(metrics))
    log(progress, f"wrote {layout.report} ({timings['total']:.0f} s)")
    return metrics


def failed_runs(llm: dict[str, Any]) -> list[str]:
    """One line per architecture and method whose runs did not finish cleanly (empty: none)."""
    lines = []
    for arch, a in llm.items():
        if "incomplete" in a:
            lines.append(f"{arch}: {a['incomplete']}")
            continue
        lines += [f"{arch}/{m}: {why}" for m, why in a["findings"]["failed_methods"].items()]
        if a.get("rcu", {}).get("failed"):
            lines.append(f"{arch}/R/C/U: {a['rcu']['failed']}")
    return lines


__all__ = ["ConfigError", "analyse", "failed_runs", "run_study"]
