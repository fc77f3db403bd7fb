"""Command line of the main job: ``python -m study`` (``pathdep-study``), what ``make demo`` runs.

    python -m study --out results/demo [--seed 7] [--seeds 3] [--quick] [--archs llama,qwen2]
    python -m study --out results/demo2 --config results/demo/config.toml   # the same job again
    python -m study --out results/demo --report-only --set thresholds.deep_ratio=0.4

Options that set config values override the ``--config`` file's (or the defaults). Bad input exits
with status 2 and one line on stderr, having written nothing; a run that turned non-finite or
collapsed exits with status 1 once its report is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pathdep.cli import OneLineParser, run_command
from pathdep.configs import apply_overrides, from_dict, read_toml


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m study",
        description="Theorem 3.1, the sim path study and the LLM protocol on the default Llama "
        "and Qwen2, with one report that says what reproduced.",
    )
    p.add_argument("--out", required=True, help="report folder, e.g. results/demo")
    p.add_argument(
        "--config",
        default=None,
        help="a saved StudyConfig (OUT/config.toml); with --report-only, default: --out's own",
    )
    p.add_argument("--seed", type=int, default=None, help="first protocol seed (default 0)")
    p.add_argument(
        "--seeds", type=int, default=None, help="seeds to run: seed..seed+N-1 (>= 3 for CIs)"
    )
    p.add_argument(
        "--quick", action="store_true", default=None, help="tiny models and data (tests)"
    )
    p.add_argument("--archs", default=None, help="comma-separated: llama,qwen2")
    p.add_argument("--models", default=None, help="folder with llama/ and qwen2/ (else defaults)")
    p.add_argument(
        "--no-rcu", action="store_true", default=None, help="skip the R/C/U (Sec. 4.3) study"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set thresholds.deep_ratio=0.4",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads of each protocol (default 1)"
    )
    p.add_argument(
        "--workers",
        default="auto",
        help="protocols side by side in their own processes (default auto: one per core); "
        "the results do not depend on it",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress output")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run no protocol: re-analyse the protocol folders already in --out",
    )
    return p


def config_from_args(args: argparse.Namespace):
    """The :class:`study.config.StudyConfig` of the command line: the ``--config`` file (with
    ``--report-only``, the one saved in ``--out`` when none is given), then the flags, then
    ``--set``."""
    from study.config import StudyConfig

    config = args.config
    saved = Path(args.out) / "config.toml"
    if config is None and args.report_only and saved.is_file():
        config = saved  # re-judge the job that is there, not a default one
    raw = read_toml(config) if config else {}
    if args.seed is not None:
        raw["seed"] = args.seed
    if args.seeds is not None:
        raw["seeds"] = args.seeds
    if args.quick:
        raw["quick"] = True
    if args.archs is not None:
        raw["archs"] = [a.strip() for a in args.archs.split(",") if a.strip()]
    if args.models is not None:
        raw["models_dir"] = args.models
    if args.no_rcu:
        raw["rcu"] = False
    if args.threads is not None:
        raw["torch_threads"] = args.threads
    return from_dict(StudyConfig, apply_overrides(raw, args.set))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from study.config import StudyError
        from study.job import run_study

        workers = args.workers
        if workers != "auto" and not (workers.isdigit() and int(workers) >= 1):
            raise StudyError(f"--workers must be an integer >= 1 or auto, got {workers!r}")
        cfg = config_from_args(args)
        metrics = run_study(
            cfg,
            Path(args.out),
            progress=not args.no_progress,
            report_only=args.report_only,
            workers=workers if workers == "auto" else int(workers),
        )
        for line in metrics["failed_runs"]:  # the report is written; the job still failed
            print(f"failed: {line}", file=sys.stderr)
        return 1 if metrics["failed_runs"] else 0

    return run_command(body, prog="python -m study")
