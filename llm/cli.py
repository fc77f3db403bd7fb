"""Command line for pathdep.llm (``python -m llm``)."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm",
        description="Staged fine-tuning, local unlearning and evaluation (not yet: issues 4-5).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in [
        ("build-default", "build the offline default tiny Llama and Qwen2 models (not yet)"),
        ("finetune", "staged fine-tuning (not yet)"),
        ("unlearn", "local unlearning (not yet)"),
        ("evaluate", "the paper's metrics (not yet)"),
        ("protocol", "paths x methods, baseline, evaluation, report (not yet)"),
        ("report", "tables and figures from metrics files (not yet)"),
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
