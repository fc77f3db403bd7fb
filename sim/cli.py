"""Command line for pathdep.sim (``python -m sim``)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sim",
        description="Numerical verification of path dependence (not yet implemented: see issue 3).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in [
        ("theorem", "Monte Carlo check of Theorem 3.1 (not yet)"),
        ("paths", "multi-stage paths with the forget stage at each position (not yet)"),
        ("sweep", "hyper-parameter sweeps (not yet)"),
        ("bench", "jit/vmap vs numpy benchmark (not yet)"),
    ]:
        sub.add_parser(name, help=text)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    parser.error(f"'{args.command}' is not implemented yet")
    return 2
