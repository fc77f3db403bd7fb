"""Command line for pathdep.sim (``python -m sim``): a thin wrapper over the library.

    python -m sim theorem --n-instances 2000 --out results/sim/theorem
    python -m sim paths --model mlp --objective npo --out results/sim/paths
    python -m sim paths --objective npo --retain-weight 1 --out results/sim/paths_npo_retain
    python -m sim sweep --parameter overlap --values 0,0.25,0.5,1 --out results/sim/sweep
    python -m sim bench
    python -m sim paths --config results/sim/paths/config.toml --out results/sim/paths_again

Every command writes its resolved config (``config.toml``, which ``--config`` reads back, and
``config.json`` with the config's hash) and its results into --out. A run starts from
``--config FILE`` (a saved ``config.toml``) or from the config's defaults; every option given on
the command line overrides that value, so ``--config OLD/config.toml --out NEW`` repeats a run
exactly. Bad arguments and bad config values exit with status 2 and one line on stderr.

(Just over 400 lines: the table of options, flag -> config key with its help text, from which
all four commands' parsers and overrides are built, sits beside the code that reads it.)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib.pyplot as plt

from pathdep.cli import OneLineParser, run_command
from pathdep.configs import (
    ConfigError,
    check_finite,
    from_dict,
    load_toml,
    save_config,
    to_dict,
)
from pathdep.errors import BadInput
from pathdep.io import (
    atomic_save_figure,
    atomic_write_csv,
    atomic_write_json,
    check_output_folder,
)
from pathdep.lock import hold
from pathdep.resources import check_fits
from sim.bench import BenchConfig
from sim.models import MODEL_KINDS
from sim.paths import TRAINERS, PathsConfig, all_orders, run_paths
from sim.sweeps import SWEEP_PARAMETERS, SweepConfig
from sim.theorem import TheoremConfig
from sim.training import OPTIMIZERS, SCHEDULES
from sim.unlearning import OBJECTIVES


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


class Option(NamedTuple):
    """A command-line option that sets config values: ``flag`` sets the dotted ``keys`` of the
    config (all of them, to the one value given); not given (None), the config keeps its value."""

    flag: str
    keys: tuple[str, ...]
    kwargs: dict[str, Any]

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


def _opt(flag: str, *keys: str, **kwargs: Any) -> Option:
    return Option(flag, keys, kwargs)


PATHS_OPTIONS = (
    _opt("--d", "data.d", type=int, help="feature dimension"),
    _opt("--n-stages", "data.n_stages", type=int, help="K, including the forget stage"),
    _opt("--n-per-stage", "data.n_per_stage", type=int, help="rows per retain stage"),
    _opt("--k", "data.k", type=int, help="rows of the forget stage"),
    _opt("--m", "data.m", type=int, help="test rows for RE distances"),
    _opt("--overlap", "data.overlap", type=float, help="shared fraction of coordinates"),
    _opt("--model", "model.kind", choices=MODEL_KINDS),
    _opt("--width", "model.width", type=int, help="MLP width"),
    _opt("--depth", "model.depth", type=int, help="MLP hidden layers"),
    _opt(
        "--trainer",
        "trainer",
        choices=TRAINERS,
        help="when --model changes the model and --trainer is not given: proximal for linear, "
        "optimizer otherwise",
    ),
    _opt("--mu", "mu", type=float, help="proximal weight of every stage"),
    _opt("--optimizer", "optimizer.name", choices=OPTIMIZERS),
    _opt("--schedule", "optimizer.schedule", choices=SCHEDULES),
    _opt("--train-lr", "optimizer.lr", type=float, help="peak learning rate of every stage"),
    _opt("--epochs", "optimizer.epochs", type=int),
    _opt("--batch-size", "optimizer.batch_size", type=int, help="none = full batch"),
    _opt("--objective", "unlearn.objective", choices=OBJECTIVES, help="forget objective"),
    _opt("--beta", "unlearn.beta", type=float, help="NPO / SimNPO inverse temperature"),
    _opt("--margin", "unlearn.margin", type=float, help="SimNPO margin (the authors' gamma)"),
    _opt(
        "--no-length-normalize",
        "unlearn.length_normalize",
        action="store_const",
        const=False,
        help="SimNPO on log pi instead of log pi / |y| (with margin 0: the paper's form)",
    ),
    _opt("--forget-weight", "unlearn.forget_weight", type=float),
    _opt(
        "--retain-weight",
        "unlearn.retain_weight",
        type=float,
        help="weight of the retain NLL added to the objective (0 = none)",
    ),
    _opt("--unlearn-lr", "unlearn.lr", type=float),
    _opt("--unlearn-steps", "unlearn.steps", type=int),
    _opt("--tokens-per-sequence", "unlearn.tokens_per_sequence", type=int),
    _opt("--seed", "seed", type=int),
)

THEOREM_OPTIONS = (
    _opt("--n-instances", "n_instances", type=int),
    _opt("--n-steps", "n_steps", type=int, help="GA steps T"),
    _opt("--chunk-size", "chunk_size", type=int, help="instances per vmapped chunk"),
    _opt("--seed", "seed", type=int),
)

SWEEP_OPTIONS = (
    _opt("--parameter", "parameter", choices=sorted(SWEEP_PARAMETERS), help="swept parameter"),
    _opt("--values", "values", type=_floats, help="comma-separated values"),
    _opt("--n-seeds", "n_seeds", type=int, help="seeds per point (medians reported)"),
)

BENCH_OPTIONS = (
    _opt("--n-instances", "n_instances", type=int),
    _opt("--chunk-size", "chunk_size", type=int),
    _opt("--numpy-direct-subset", "numpy_direct_subset", type=int),
    _opt("--numpy-spectral-subset", "numpy_spectral_subset", type=int),
    _opt("--workers", "workers", type=int, help="JAX worker processes"),
    _opt("--d", "shape.d", type=int),
    _opt("--k", "shape.k", type=int),
    _opt("--m", "shape.m", type=int),
    _opt("--n-stage", "shape.n_a", "shape.n_b", type=int, help="rows of each training stage"),
    _opt("--n-steps", "n_steps", type=int),
    _opt("--seed", "seed", type=int),
)


def _lookup(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _add_options(group, options: Sequence[Option], defaults: Any) -> None:
    """Add ``options``, each defaulting to None (= keep the config's value); the help shows the
    value of the default config ``defaults``."""
    for o in options:
        kwargs = dict(o.kwargs)
        text = kwargs.pop("help", "")
        if kwargs.get("action") is None:
            shown = _lookup(defaults, o.keys[0])
            text = f"{text}{'; ' if text else ''}default {'none' if shown is None else shown}"
        group.add_argument(o.flag, default=None, help=text, **kwargs)


def _set(raw: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        raw = raw[part]
    raw[last] = value


def _given(a: argparse.Namespace, options: Sequence[Option]) -> list[tuple[str, Any]]:
    """(key, value) of every option given on the command line."""
    return [
        (key, getattr(a, o.dest))
        for o in options
        if getattr(a, o.dest) is not None
        for key in o.keys
    ]


def _paths_overrides(a: argparse.Namespace, base: PathsConfig) -> list[tuple[str, Any]]:
    """The paths options given, plus the trainer that goes with a new model kind and the
    orders of --all-orders."""
    items = _given(a, PATHS_OPTIONS)
    if a.trainer is None and a.model is not None and a.model != base.model.kind:
        items.append(("trainer", "proximal" if a.model == "linear" else "optimizer"))
    if a.all_orders:
        n_stages = a.n_stages if a.n_stages is not None else base.data.n_stages
        items.append(("orders", [list(o) for o in all_orders(n_stages)]))
    return items


def base_config(cls: type, config_file: Path | None) -> Any:
    """The config a command starts from: ``config_file`` read into ``cls``, or its defaults."""
    return cls() if config_file is None else load_toml(cls, config_file)


def override(base: Any, items: Sequence[tuple[str, Any]]) -> Any:
    """A copy of the config ``base`` with the dotted ``items`` set, checked field by field as a
    loaded file is (a bad value raises :class:`pathdep.configs.ConfigError`, a ValueError)."""
    raw = to_dict(base)
    for key, value in items:
        _set(raw, key, value)
    return from_dict(type(base), raw)


def config_from_args(cls: type, a: argparse.Namespace, options: Sequence[Option]) -> Any:
    """The ``cls`` config of a command line: --config (or the defaults), then the options."""
    return override(base_config(cls, a.config), _given(a, options))


def paths_config_from_args(a: argparse.Namespace) -> PathsConfig:
    """The PathsConfig of a ``paths`` command line."""
    base = base_config(PathsConfig, a.config)
    return override(base, _paths_overrides(a, base))


def sweep_config_from_args(a: argparse.Namespace) -> SweepConfig:
    """The SweepConfig of a ``sweep`` command line (the paths options set its ``base``)."""
    base = base_config(SweepConfig, a.config)
    if a.parameter is not None and a.parameter != base.parameter and a.values is None:
        raise ValueError(
            f"--values is needed with --parameter {a.parameter} (the values {base.values} "
            f"are for {base.parameter})"
        )
    items = _given(a, SWEEP_OPTIONS)
    items += [(f"base.{key}", value) for key, value in _paths_overrides(a, base.base)]
    return override(base, items)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m sim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    t = sub.add_parser("theorem", help="Monte Carlo check of Theorem 3.1")
    _add_options(t, THEOREM_OPTIONS, TheoremConfig())
    t.add_argument(
        "--workers", type=int, default=1, help="core-pinned worker processes (same results)"
    )
    p = sub.add_parser("paths", help="multi-stage paths, forget stage at each position")
    s = sub.add_parser("sweep", help="one-parameter sweep of the paths experiment")
    _add_options(s, SWEEP_OPTIONS, SweepConfig())
    for q in (p, s):
        stages = q.add_argument_group("stages, model, training and unlearning")
        _add_options(stages, PATHS_OPTIONS, PathsConfig())
        stages.add_argument(
            "--all-orders", action="store_true", help="every permutation of the stages"
        )
    b = sub.add_parser("bench", help="jit/vmap vs numpy benchmark of the Monte Carlo check")
    _add_options(b, BENCH_OPTIONS, BenchConfig())
    for q in (t, p, s, b):
        q.add_argument(
            "--config",
            type=Path,
            default=None,
            metavar="FILE",
            help="start from this saved config.toml (options given override its values)",
        )
        q.add_argument("--out", type=Path, default=None, help="output folder")
        q.add_argument("--no-progress", action="store_true")
    return parser


def _locked(out: Path, body) -> int:
    """Check the output folder (writing nothing), then run ``body`` holding its lock."""
    check_output_folder(out)
    with hold(out):
        return body()


def _theorem(a) -> int:
    if a.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {a.workers}")
    cfg = config_from_args(TheoremConfig, a, THEOREM_OPTIONS)
    out = a.out or Path("results/sim/theorem")
    check_finite(cfg)
    check_fits(a.workers * cfg.memory_bytes(), f"the check with {cfg.n_steps} steps")
    return _locked(out, lambda: _write_theorem(a, cfg, out))


def _write_theorem(a, cfg, out: Path) -> int:
    from sim.plots import theorem_figure
    from sim.theorem import INSTANCE_FIELDS, run_theorem_check

    save_config(cfg, out)
    res = run_theorem_check(cfg, progress=not a.no_progress, workers=a.workers)
    summary = res.summary()
    rows = [{f: getattr(res, f)[i].item() for f in INSTANCE_FIELDS} for i in range(res.t0.size)]
    atomic_write_csv(out / "instances.csv", rows)
    atomic_write_json(out / "summary.json", summary)
    fig = theorem_figure(res)
    atomic_save_figure(fig, out / "theorem.png")
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
    cfg = paths_config_from_args(a)
    out = a.out or Path("results/sim/paths")
    check_finite(cfg)
    check_fits(cfg.memory_bytes(), f"sim paths with {cfg.unlearn.steps} unlearning steps")
    return _locked(out, lambda: _write_paths(cfg, out))


def _write_paths(cfg, out: Path) -> int:
    from sim.plots import paths_figure

    save_config(cfg, out)
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
    atomic_write_csv(out / "steps.csv", rows)
    atomic_write_json(out / "summary.json", summary)
    fig = paths_figure(res, f"{cfg.model.kind}, {cfg.trainer}, {cfg.unlearn.label}")
    atomic_save_figure(fig, out / "paths.png")
    plt.close(fig)
    print(
        json.dumps(
            {k: summary[k] for k in ("n_paths", "pairwise_re_initial_max", "pairwise_re_final_max")}
        )
    )
    return 0


def _sweep(a) -> int:
    cfg = sweep_config_from_args(a)
    out = a.out or Path(f"results/sim/sweep_{cfg.parameter}")
    check_finite(cfg)
    return _locked(out, lambda: _write_sweep(a, cfg, out))


def _write_sweep(a, cfg, out: Path) -> int:
    from sim.plots import sweep_figure
    from sim.sweeps import run_sweep

    save_config(cfg, out)
    rows = run_sweep(cfg, progress=not a.no_progress)
    atomic_write_csv(out / "sweep.csv", rows)
    fig = sweep_figure(rows)
    atomic_save_figure(fig, out / "sweep.png")
    plt.close(fig)
    print(json.dumps({"rows": len(rows), "csv": str(out / "sweep.csv")}))
    return 0


def _bench(a) -> int:
    cfg = config_from_args(BenchConfig, a, BENCH_OPTIONS)
    check_finite(cfg)
    check_fits(cfg.memory_bytes(), f"the benchmark with {cfg.n_steps} steps")
    if a.out is not None:
        return _locked(a.out, lambda: _write_bench(a, cfg))
    return _write_bench(a, cfg)


def _write_bench(a, cfg) -> int:
    from sim.bench import run_bench

    if a.out is not None:
        save_config(cfg, a.out)
    res = run_bench(cfg, progress=not a.no_progress)
    if a.out is not None:
        atomic_write_json(a.out / "bench.json", res)
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

    def body() -> int:
        try:
            return handler[args.command](args)
        except BadInput:
            raise
        except ValueError as exc:  # a config class's own check: bad input, one line
            raise ConfigError(" ".join(str(exc).split())) from None

    return run_command(body, prog=f"python -m sim {args.command}")
