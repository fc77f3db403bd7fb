"""Command line for pathdep.llm (``python -m llm``): thin wrappers over :mod:`llm.protocol`.

Bad input (config, paths, data, models) exits with status 2 and one line on stderr; a run that
turned non-finite exits with status 1 after keeping what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _config_args(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    p.add_argument("--config", required=True, help="run config (TOML), e.g. llm/configs/tiny.toml")
    p.add_argument("--out", required=out_required, help="output folder (resumes if it exists)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set model.path=/models/Llama-3.2-1B",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads per process (0: torch default)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llm",
        description="Staged fine-tuning, local unlearning and evaluation (paper Section 4).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("build-default", help="build the offline default Llama and Qwen2 models")
    p.add_argument("--out", required=True, help="folder; writes OUT/llama and OUT/qwen2")
    p.add_argument("--tiny", action="store_true", help="the small test configuration")
    p = sub.add_parser("finetune", help="train every path's stages (shared prefixes once)")
    _config_args(p)
    p = sub.add_parser("unlearn", help="unlearn the trained paths with the config's methods")
    _config_args(p)
    p.add_argument("--path", action="append", default=[], help="only these paths (names)")
    p.add_argument("--method", action="append", default=[], help="only these methods (names)")
    p = sub.add_parser("evaluate", help="evaluate one model folder on the config's metrics")
    _config_args(p)
    p.add_argument("--model", required=True, help="model folder to evaluate")
    p.add_argument("--no-math", action="store_true", help="skip math generation")
    p = sub.add_parser("protocol", help="paths x methods, baseline, evaluation, report")
    _config_args(p)
    p = sub.add_parser("report", help="tables and figures from a protocol folder's metrics")
    p.add_argument("--out", required=True, help="protocol output folder")
    return parser


def _load(args):
    from llm.config import load_config
    from llm.protocol import check_config_paths

    cfg = load_config(args.config, args.set)
    check_config_paths(cfg)
    return cfg


def _run(args) -> int:
    from llm import protocol as P
    from llm.stage_cache import ensure_prefix
    from llm.workspace import load_model, open_workspace

    if args.command == "build-default":
        from llm.default_models import DefaultModelConfig, build_default

        config = DefaultModelConfig.tiny() if args.tiny else DefaultModelConfig()
        written = build_default(args.out, config=config, workers=1 if args.tiny else "auto")
        for arch, path in written.items():
            print(f"{arch}: {path}")
        return 0
    if args.command == "report":
        from llm.report import write_report

        for name, path in write_report(args.out).items():
            print(f"{name}: {path}")
        return 0
    cfg = _load(args)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    progress = not args.no_progress
    if args.command == "protocol":
        result = P.run_protocol(cfg, args.out, progress=progress)
        bad = [s for s in result.statuses if s.get("status") != "done"]
        print(f"report: {Path(args.out) / 'report' / 'table1.md'}")
        for s in bad:
            print(
                f"{s['path']}/{s['method']}: {s.get('message', s.get('status'))}", file=sys.stderr
            )
        return 1 if bad else 0
    ws = open_workspace(cfg, args.out, progress)
    from llm.config import path_sequences, retrain_sequence

    sequences = path_sequences(cfg.paths)
    if args.command == "finetune":
        for name, seq in [*sequences.items(), ("retrain", retrain_sequence(cfg.paths))]:
            print(f"{name} ({'-'.join(seq)}): {ensure_prefix(ws, seq)}")
        return 0
    suite = P.build_eval_suite(ws)
    if args.command == "evaluate":
        summary, values, _ = P.evaluate_with_config(
            ws, suite, load_model(ws, Path(args.model)), not args.no_math
        )
        print(json.dumps({"model": args.model, "summary": summary}, indent=2))
        return 0
    if args.command == "unlearn":
        unknown = set(args.path) - set(sequences)
        methods = [m for m in cfg.unlearn.methods if not args.method or m.name in args.method]
        if unknown or not methods:
            raise P.ProtocolError(f"unknown --path {sorted(unknown)} or no matching --method")
        code = 0
        for name, seq in sequences.items():
            if args.path and name not in args.path:
                continue
            model_dir = ensure_prefix(ws, seq)
            for method in methods:
                status = P.run_unlearning(ws, suite, name, model_dir, method)
                print(f"{name}/{method.name}: {status['status']}")
                code = code or int(status["status"] != "done")
        return code
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    from llm.config import ConfigError
    from llm.protocol import ProtocolError
    from llm.report import ReportError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    bad_input: tuple[type[BaseException], ...] = (
        ConfigError,
        ProtocolError,
        ReportError,
        FileNotFoundError,
    )
    try:
        from llm.chat import DatasetError

        bad_input += (DatasetError,)
    except ImportError:  # pragma: no cover - F's module is part of the package
        pass
    try:
        from llm.models import ModelLoadError

        bad_input += (ModelLoadError,)
    except ImportError:  # pragma: no cover
        pass
    try:
        return _run(args)
    except bad_input as err:
        print(f"error: {err}".splitlines()[0], file=sys.stderr)
        return 2
