"""The main job's phases, each writing its own part of the output folder (:mod:`study.layout`):
models, the theory check, the sim path study, and the LLM protocols."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathdep.errors import BadInput
from pathdep.io import atomic_write_json
from study.config import ARCHS, QUICK_THEORY_TOP, StudyConfig, StudyError, protocol_config
from study.layout import StudyLayout

THEORY_SEED = 0
RECENCY_T = 10  # GA steps after which the linear model's forgetting is compared across positions


def log(progress: bool, message: str) -> None:
    if progress:
        print(f"[main job] {message}", file=sys.stderr, flush=True)


def resolve_models(cfg: StudyConfig, progress: bool) -> dict[str, Path]:
    """Folders of the models to run, building the default ones if they are not cached."""
    if cfg.models_dir:
        root = Path(cfg.models_dir).expanduser()
        paths = {a: root / a for a in cfg.archs}
        for a, p in paths.items():
            if not (p / "config.json").is_file():
                raise StudyError(f"--models {root}: no model folder {a}/ with a config.json")
        return paths
    from llm.default_models import DefaultModelConfig, ensure_default_models

    config = DefaultModelConfig.tiny() if cfg.quick else DefaultModelConfig()
    # The full-size models take minutes each on one thread: build them side by side. The tiny
    # ones take seconds, less than starting a process.
    workers = 1 if cfg.quick else "auto"
    built = ensure_default_models(
        config=config, archs=cfg.archs, progress=progress, workers=workers
    )
    return {a: Path(built[a]) for a in cfg.archs}


def run_theory(out: Path) -> dict[str, Any]:
    """Theorem 3.1 on the demo instance of ``python -m theory demo`` and the linear model's
    recency prediction on a random 4-stage instance; writes ``out/`` and returns the numbers."""
    import jax.numpy as jnp

    from theory.instance import (
        DEMO_EPSILON,
        DEMO_SHAPE,
        DEMO_STEPS,
        check_instance,
        random_instance,
        save_instance,
    )
    from theory.plotting import plot_bound_vs_exact
    from theory.stages import forget_position_study

    out.mkdir(parents=True, exist_ok=True)
    inst = random_instance(THEORY_SEED, **DEMO_SHAPE)
    check = check_instance(inst, DEMO_STEPS, DEMO_EPSILON)
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
        "steps": DEMO_STEPS,
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


def run_sim(out: Path) -> dict[str, Any]:
    """The simulation's path study (:func:`sim.paths.run_paths`, its default configuration: a
    linear model, four stages, the forget stage at p = 1..4, GA); writes ``out/`` and returns the
    summary with two verdicts: the paths diverge, and forgetting is slowest for p = 4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pathdep.io import atomic_save_figure
    from sim.paths import PathsConfig, run_paths
    from sim.plots import paths_figure

    out.mkdir(parents=True, exist_ok=True)
    result = run_paths(PathsConfig())
    summary = result.summary()
    atomic_write_json(out / "paths_summary.json", summary)
    fig = paths_figure(result, "sim: forget stage at p = 1..4")
    atomic_save_figure(fig, out / "paths.png")
    plt.close(fig)
    growth = summary.get("pairwise_growth_log10")
    return {
        "config": "sim.paths.PathsConfig() defaults (linear model, proximal stages, GA)",
        "summary": summary,
        "diverges": bool(growth is not None and math.isfinite(growth) and growth > 0),
        "recency": bool(summary.get("recency_slowest_is_last", False)),
        "figure": "sim/paths.png",
    }


def existing_folders(cfg: StudyConfig, layout: StudyLayout) -> dict[str, Any]:
    """The protocol folders a previous main job left in the output folder (``--report-only``)."""
    from llm.layout import ProtocolLayout

    runs: dict[str, dict[str, str]] = {}
    rcu: dict[str, dict[str, str]] = {}
    for arch in cfg.archs:
        for seed in cfg.seed_list:
            for is_rcu, table in ((False, runs), (True, rcu)):
                rel = layout.protocol(arch, seed, rcu=is_rcu)
                if ProtocolLayout(layout.root / rel).re_distance.is_file():
                    table.setdefault(arch, {})[str(seed)] = rel
                elif not is_rcu:
                    raise StudyError(f"--report-only: {layout.root / rel} holds no finished run")
    return {"runs": runs, "rcu": rcu}


@dataclass(frozen=True)
class ProtocolRun:
    """One protocol of the main job: where it writes and the config it runs."""

    arch: str
    seed: int
    rcu: bool
    folder: Path  # absolute
    rel: str  # relative to the output folder, as metrics.json records it
    config: Any  # llm.config.RunConfig
    theory_top: int = 0  # > 0: measure the theory's quantities on it (llm.path_theory)


def protocol_configs(
    cfg: StudyConfig, layout: StudyLayout, models: dict[str, Path]
) -> list[ProtocolRun]:
    """Every protocol the job runs, in order, its config built and checked (nothing written)."""
    runs = []
    for arch in cfg.archs:
        for seed in cfg.seed_list:
            # --quick runs R/C/U on the first architecture only (it checks the wiring).
            with_rcu = cfg.rcu and not (cfg.quick and arch != cfg.archs[0])
            for rcu in (False, True) if with_rcu else (False,):
                rel = layout.protocol(arch, seed, rcu=rcu)
                config = protocol_config(arch, seed, cfg.quick, models[arch], rcu=rcu)
                top = 0 if rcu else cfg.theory_top
                if cfg.quick:
                    top = min(top, QUICK_THEORY_TOP)
                runs.append(ProtocolRun(arch, seed, rcu, layout.root / rel, rel, config, top))
    return runs


def _run_protocol(run: ProtocolRun, threads: int, progress: bool) -> dict[str, float]:
    """One protocol on ``threads`` torch threads, then the theory's quantities on it; the seconds
    of each (a worker process's task)."""
    import torch

    from llm.models import transformers_progress
    from llm.protocol import run_protocol

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    seconds = {}
    try:
        started = time.perf_counter()
        with transformers_progress(progress):  # a spawned worker starts with the bars on
            run_protocol(run.config, run.folder, progress)
        seconds["llm" if not run.rcu else "rcu"] = time.perf_counter() - started
        if run.theory_top > 0:
            started = time.perf_counter()
            with transformers_progress(progress):
                _measure_theory(run, progress)
            seconds["theory_llm"] = time.perf_counter() - started
        return seconds
    finally:
        torch.set_num_threads(previous)


def _measure_theory(run: ProtocolRun, progress: bool) -> None:
    """``theory_llm.json`` of a finished protocol (kept when it holds the same request)."""
    import json

    from llm.layout import ProtocolLayout
    from llm.path_theory import analyse_protocol

    path = ProtocolLayout(run.folder).theory_llm
    if path.is_file() and json.loads(path.read_text()).get("top") == run.theory_top:
        return
    log(progress, f"theory ↔ LLM: {run.arch}, seed {run.seed} (top {run.theory_top})")
    try:
        result = analyse_protocol(run.config, run.folder, top=run.theory_top)
    except BadInput as err:  # e.g. a protocol whose GA runs failed: reported, not fatal
        result = {"top": run.theory_top, "error": str(err)}
    atomic_write_json(path, result)


def run_llm(
    runs: list[ProtocolRun],
    timings: dict[str, float],
    progress: bool,
    threads: int = 1,
    workers: int = 1,
) -> dict[str, Any]:
    """Run every protocol; returns {"runs": {arch: {seed: folder}}, "rcu": {...}} (relative).

    Each protocol runs on ``threads`` torch threads, and ``workers`` of them side by side in
    spawned processes (the protocols are independent folders, so the order does not matter).
    A protocol's numbers depend on its thread count (the order of float reductions), not on how
    many run at once: workers = 1 and workers = 2 give the same files.
    """
    from tqdm.auto import tqdm

    seconds: dict[ProtocolRun, dict[str, float]] = {}
    if workers <= 1:
        for run in runs:
            kind = "R/C/U study" if run.rcu else "LLM protocol"
            log(progress, f"{kind}: {run.arch}, seed {run.seed} -> {run.folder}")
            seconds[run] = _run_protocol(run, threads, progress)
    else:
        from concurrent.futures import as_completed

        from pathdep.workers import spawn_pool

        # The longest first (the R/C/U studies are short), so the workers finish together.
        ordered = sorted(runs, key=lambda r: r.rcu)
        log(progress, f"{len(runs)} protocols, {workers} side by side ({threads} thread each)")
        bar = tqdm(total=len(runs), desc="protocols", disable=not progress)
        with spawn_pool(workers) as pool:
            futures = {pool.submit(_run_protocol, r, threads, False): r for r in ordered}
            for future in as_completed(futures):
                run = futures[future]
                seconds[run] = future.result()
                bar.update(1)
                bar.set_postfix(done=f"{run.arch} seed {run.seed}{' R/C/U' if run.rcu else ''}")
        bar.close()
    folders: dict[str, dict[str, dict[str, str]]] = {"runs": {}, "rcu": {}}
    for run in runs:  # in the job's order, whatever order they finished in
        for kind, s in seconds[run].items():
            timings[f"{kind}_{run.arch}_seed{run.seed}"] = s
        folders["rcu" if run.rcu else "runs"].setdefault(run.arch, {})[str(run.seed)] = run.rel
    return folders


__all__ = [
    "ARCHS",
    "ProtocolRun",
    "existing_folders",
    "protocol_configs",
    "resolve_models",
    "run_llm",
    "run_sim",
    "run_theory",
]
