"""Command line for pathdep.sim (``python -m sim``): a thin wrapper over the library.

    python -m sim theorem --n-instances 2000 --out results/sim/theorem
    python -m sim paths --model mlp --trainer optimizer --method npo --out results/sim/paths
    python -m sim sweep --parameter overlap --values 0,0.25,0.5,1 --out results/sim/sweep
    python -m sim bench

Every command writes config.json (resolved config + hash) and its results into --out.
Bad arguments exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from sim.instances import InstanceShape
from sim.io import config_record, save_figure, write_csv, write_json
from sim.models import MODEL_KINDS, ModelConfig
from sim.parallel import usable_cores
from sim.paths import TRAINERS, PathsConfig, StageDataConfig, all_orders, run_paths
from sim.training import OPTIMIZERS, SCHEDULES, OptimizerConfig
from sim.unlearning import METHODS, UnlearnConfig


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, status 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _add_paths_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stages and model")
    g.add_argument("--d", type=int, default=24, help="feature dimension")
    g.add_argument("--n-stages", type=int, default=4, help="K, including the forget stage")
    g.add_argument("--n-per-stage", type=int, default=40, help="rows per retain stage")
    g.add_argument("--k", type=int, default=8, help="rows of the forget stage")
    g.add_argument("--m", type=int, default=64, help="test rows for RE distances")
    g.add_argument("--overlap", type=float, default=0.5, help="shared fraction of coordinates")
    g.add_argument("--model", choices=MODEL_KINDS, default="linear")
    g.add_argument("--width", type=int, default=32, help="MLP width")
    g.add_argument("--depth", type=int, default=2, help="MLP hidden layers")
    g.add_argument(
        "--trainer",
        choices=TRAINERS,
        default=None,
        help="default: proximal for linear, optimizer otherwise",
    )
    g.add_argument("--mu", type=float, default=1.0, help="proximal weight of every stage")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    g.add_argument("--schedule", choices=SCHEDULES, default="wsd")
    g.add_argument("--train-lr", type=float, default=1e-2)
    g.add_argument("--epochs", type=int, default=100)
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--all-orders", action="store_true", help="every permutation of the stages")
    u = p.add_argument_group("unlearning")
    u.add_argument("--method", choices=METHODS, default="ga")
    u.add_argument("--unlearn-steps", type=int, default=50)
    u.add_argument("--unlearn-lr", type=float, default=1e-2)
    u.add_argument("--retain-weight", type=float, default=1.0)
    u.add_argument("--tokens-per-sequence", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)


def paths_config_from_args(a: argparse.Namespace) -> PathsConfig:
    trainer = a.trainer or ("proximal" if a.model == "linear" else "optimizer")
    data = StageDataConfig(
        d=a.d, n_stages=a.n_stages, n_per_stage=a.n_per_stage, k=a.k, m=a.m, overlap=a.overlap
    )
    return PathsConfig(
        data=data,
        model=ModelConfig(kind=a.model, width=a.width, depth=a.depth),
        trainer=trainer,
        optimizer=OptimizerConfig(
            name=a.optimizer,
            schedule=a.schedule,
            learning_rate=a.train_lr,
            epochs=a.epochs,
            batch_size=a.batch_size,
        ),
        mu=a.mu,
        unlearn=UnlearnConfig(
            method=a.method,
            steps=a.unlearn_steps,
            learning_rate=a.unlearn_lr,
            retain_weight=a.retain_weight,
            tokens_per_sequence=a.tokens_per_sequence,
        ),
        orders=all_orders(a.n_stages) if a.all_orders else None,
        seed=a.seed,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m sim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    t = sub.add_parser("theorem", help="Monte Carlo check of Theorem 3.1")
    t.add_argument("--n-instances", type=int, default=2000)
    t.add_argument("--n-steps", type=int, default=200)
    t.add_argument("--chunk-size", type=int, default=500)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--workers", type=int, default=1, help="core-pinned worker processes (same results)"
    )
    p = sub.add_parser("paths", help="multi-stage paths, forget stage at each position")
    _add_paths_args(p)
    s = sub.add_parser("sweep", help="one-parameter sweep of the paths experiment")
    from sim.sweeps import SWEEP_PARAMETERS

    s.add_argument("--parameter", choices=sorted(SWEEP_PARAMETERS), required=True)
    s.add_argument("--values", type=_floats, required=True, help="comma-separated values")
    s.add_argument("--n-seeds", type=int, default=1, help="seeds per point (medians reported)")
    _add_paths_args(s)
    b = sub.add_parser("bench", help="jit/vmap vs numpy benchmark of the Monte Carlo check")
    b.add_argument("--n-instances", type=int, default=10_000)
    b.add_argument("--chunk-size", type=int, default=250)
    b.add_argument("--numpy-direct-subset", type=int, default=200)
    b.add_argument("--numpy-spectral-subset", type=int, default=250)
    b.add_argument(
        "--workers", type=int, default=usable_cores(), help="JAX worker processes (default: cores)"
    )
    b.add_argument("--d", type=int, default=100)
    b.add_argument("--k", type=int, default=10)
    b.add_argument("--m", type=int, default=50)
    b.add_argument("--n-stage", type=int, default=50, help="rows of each training stage")
    b.add_argument("--n-steps", type=int, default=200)
    b.add_argument("--seed", type=int, default=0)
    for q in (t, p, s, b):
        q.add_argument("--out", type=Path, default=None, help="output folder")
        q.add_argument("--no-progress", action="store_true")
    return parser


def _theorem(a) -> int:
    from sim.plots import theorem_figure
    from sim.theorem import INSTANCE_FIELDS, TheoremConfig, run_theorem_check

    cfg = TheoremConfig(
        n_instances=a.n_instances, n_steps=a.n_steps, chunk_size=a.chunk_size, seed=a.seed
    )
    out = a.out or Path("results/sim/theorem")
    res = run_theorem_check(cfg, progress=not a.no_progress, workers=a.workers)
    summary = res.summary()
    rows = [{f: getattr(res, f)[i].item() for f in INSTANCE_FIELDS} for i in range(res.t0.size)]
    write_csv(out / "instances.csv", rows)
    write_json(out / "config.json", config_record(cfg))
    write_json(out / "summary.json", summary)
    fig = theorem_figure(res)
    save_figure(fig, out / "theorem.png")
    plt.close(fig)
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("n_instances", "n_checked", "fraction_bound_holds", "n_violations")
            }
        )
    )
    return 0


def _paths(a) -> int:
    from sim.plots import paths_figure

    cfg = paths_config_from_args(a)
    out = a.out or Path("results/sim/paths")
    res = run_paths(cfg)
    summary = res.summary()
    rows = []
    for i, order in enumerate(res.orders):
        for t in range(res.loss.shape[1]):
            rows.append(
                {
                    "path": i,
                    "order": "-".join(map(str, order)),
                    "forget_position": int(res.forget_position[i]),
                    "step": t,
                    "loss": res.loss[i, t],
                    "forget_logp": res.forget_logp[i, t],
                    "retain_logp": res.retain_logp[i, t],
                    "re_to_retrain": res.re_to_retrain[i, t],
                    "max_pairwise_re": res.re_pairwise[t, i].max(),
                }
            )
    write_csv(out / "steps.csv", rows)
    write_json(out / "config.json", config_record(cfg))
    write_json(out / "summary.json", summary)
    fig = paths_figure(res, f"{cfg.model.kind}, {cfg.trainer}, {cfg.unlearn.method}")
    save_figure(fig, out / "paths.png")
    plt.close(fig)
    print(
        json.dumps(
            {k: summary[k] for k in ("n_paths", "pairwise_re_initial_max", "pairwise_re_final_max")}
        )
    )
    return 0


def _sweep(a) -> int:
    from sim.plots import sweep_figure
    from sim.sweeps import SweepConfig, run_sweep

    cfg = SweepConfig(
        parameter=a.parameter, values=a.values, base=paths_config_from_args(a), n_seeds=a.n_seeds
    )
    out = a.out or Path(f"results/sim/sweep_{a.parameter}")
    rows = run_sweep(cfg, progress=not a.no_progress)
    write_csv(out / "sweep.csv", rows)
    write_json(out / "config.json", config_record(cfg))
    fig = sweep_figure(rows)
    save_figure(fig, out / "sweep.png")
    plt.close(fig)
    print(json.dumps({"rows": len(rows), "csv": str(out / "sweep.csv")}))
    return 0


def _bench(a) -> int:
    from sim.bench import BenchConfig, run_bench

    cfg = BenchConfig(
        n_instances=a.n_instances,
        shape=InstanceShape(d=a.d, n_a=a.n_stage, n_b=a.n_stage, k=a.k, m=a.m),
        n_steps=a.n_steps,
        chunk_size=a.chunk_size,
        numpy_direct_subset=a.numpy_direct_subset,
        numpy_spectral_subset=a.numpy_spectral_subset,
        workers=a.workers,
        seed=a.seed,
    )
    res = run_bench(cfg, progress=not a.no_progress)
    if a.out is not None:
        write_json(a.out / "config.json", config_record(cfg))
        write_json(a.out / "bench.json", res)
    n, w = res["n_instances"], res["workers"]
    print(
        f"JAX check of {n} instances: {res['jax_seconds']:.2f} s with {w} worker(s) "
        f"(wall {res['jax_wall_seconds_including_sampling']:.2f} s with sampling; worker "
        f"start-up {res['jax_worker_startup_seconds']:.1f} s), "
        f"{res['jax_one_process_seconds']:.2f} s in one process "
        f"(+ sampling {res['jax_one_process_sampling_seconds']:.2f} s, compile + first chunk "
        f"{res['jax_compile_plus_first_chunk_seconds']:.2f} s)"
    )
    print(
        f"numpy direct loop: {res['numpy_direct_seconds']:.1f} s (measured on "
        f"{res['numpy_direct_measured_on']} instances, extrapolated linearly)"
    )
    print(
        f"numpy k-dim loop:  {res['numpy_spectral_seconds']:.1f} s (measured on "
        f"{res['numpy_spectral_measured_on']} instances, extrapolated linearly)"
    )
    print(
        f"speedup vs direct numpy: {res['speedup_vs_numpy']:.1f}x ({w} workers), "
        f"{res['speedup_vs_numpy_one_process']:.1f}x (one process), "
        f"{res['speedup_vs_numpy_including_sampling']:.1f}x ({w} workers, sampling included); "
        f"{res['speedup_vs_numpy_same_algorithm']:.1f}x vs the same algorithm in numpy"
    )
    print(json.dumps(res, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler = {"theorem": _theorem, "paths": _paths, "sweep": _sweep, "bench": _bench}
    try:
        return handler[args.command](args)
    except ValueError as exc:  # bad configuration values: one line, status 2
        sys.stderr.write(f"python -m sim {args.command}: error: {exc}\n")
        return 2
