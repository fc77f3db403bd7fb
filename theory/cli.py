"""Command line for pathdep.theory (``python -m theory`` or ``pathdep-theory``).

Subcommands:
  check  Theorem 3.1 / Corollary 1 for one instance (.npz) -> one JSON object.
  demo   random instance -> instance.npz, check.json, bound_vs_exact.png, report.md.

Bad input (missing/unreadable file, missing array, mismatched shapes, X_U without full row rank,
m < k, mu or eta <= 0, NaN/inf entries) exits with status 2 and a one-line message on stderr and
writes nothing. Outputs are written to a temporary file and renamed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from pathdep.cli import OneLineParser, run_command
from pathdep.io import atomic_write_text, check_output_file, check_output_folder
from pathdep.lock import hold
from theory.instance import DEMO_EPSILON, DEMO_SHAPE, DEMO_STEPS


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m theory",
        description=(
            "Closed-form linear theory of path-dependent unlearning (Yu et al. 2025, Sec. 3): "
            "two models trained on stages A,B in opposite orders, both unlearned by gradient "
            "ascent on a forget set, drift apart exponentially (Theorem 3.1)."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    check = sub.add_parser(
        "check",
        help="check Theorem 3.1 / Corollary 1 on an instance (.npz) and print one JSON object",
        description=(
            "Reads arrays XA, yA, XB, yB, XU, yU, Xtest and scalars muA, muB, eta from a .npz; "
            "theta0 = 0. Prints (or writes to --json) delta0_norm, proj_norm, rho_star, sigma_U, "
            "C0, t0, t_star and the lists log10_re_distance, log10_bound for t = 0..T. The bound "
            "is guaranteed only for t >= max(t0, 0); non-finite numbers are written as null. "
            "Exit status 2 on malformed input."
        ),
    )
    check.add_argument("--instance", required=True, type=Path, help="input .npz file")
    check.add_argument("--steps", required=True, type=int, help="T, last GA step (t = 0..T)")
    check.add_argument(
        "--epsilon", type=float, default=1e-3, help="RE tolerance for t_star (default 1e-3)"
    )
    check.add_argument("--json", type=Path, default=None, help="write the JSON here, not stdout")
    demo = sub.add_parser(
        "demo",
        help="random instance -> instance.npz, check.json, bound_vs_exact.png, report.md",
    )
    demo.add_argument("--out", required=True, type=Path, help="output directory")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--steps", type=int, default=DEMO_STEPS, help=f"GA steps (default {DEMO_STEPS})"
    )
    return parser


def _run_check(args: argparse.Namespace) -> int:
    from theory.instance import InstanceError, check_instance, load_instance

    if args.steps < 0:
        raise InstanceError(f"--steps must be >= 0; got {args.steps}")
    if not (math.isfinite(args.epsilon) and args.epsilon > 0):
        raise InstanceError(f"--epsilon must be a finite number > 0; got {args.epsilon}")
    if args.json is not None:
        check_output_file(args.json)
    inst = load_instance(args.instance)
    start = time.perf_counter()
    result = check_instance(inst, args.steps, args.epsilon)
    text = json.dumps(result, allow_nan=False)
    print(
        f"checked {args.instance} (d={inst.d}, k={inst.k}, m={inst.m}, T={args.steps}) "
        f"in {time.perf_counter() - start:.2f}s",
        file=sys.stderr,
    )
    if args.json is None:
        sys.stdout.write(text + "\n")
    else:
        atomic_write_text(args.json, text + "\n")
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from theory.instance import InstanceError, check_instance, random_instance

    if args.steps < 1:
        raise InstanceError(f"--steps must be >= 1; got {args.steps}")
    out: Path = args.out
    check_output_folder(out)
    print(
        f"[theory demo] seed {args.seed}: building a random instance {DEMO_SHAPE}", file=sys.stderr
    )
    inst = random_instance(args.seed, **DEMO_SHAPE)
    print(f"[theory demo] checking Theorem 3.1 for t = 0..{args.steps}", file=sys.stderr)
    result = check_instance(inst, args.steps, DEMO_EPSILON)
    with hold(out):
        _write_demo(args, out, inst, result)
    return 0


def _write_demo(args: argparse.Namespace, out: Path, inst, result: dict) -> None:
    from theory.instance import save_instance
    from theory.plotting import plot_bound_vs_exact, write_report

    save_instance(inst, out / "instance.npz")
    atomic_write_text(out / "check.json", json.dumps(result, allow_nan=False) + "\n")
    print("[theory demo] plotting bound_vs_exact.png", file=sys.stderr)
    plot_bound_vs_exact(result, out / "bound_vs_exact.png")
    atomic_write_text(out / "report.md", write_report(result, seed=args.seed))
    print(
        f"[theory demo] wrote {out}/{{instance.npz,check.json,bound_vs_exact.png,report.md}}",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handlers: dict[str, Any] = {"check": _run_check, "demo": _run_demo}
    return run_command(lambda: handlers[args.command](args), prog="python -m theory")
