"""Command line for pathdep.llm (``python -m llm``): thin wrappers over :mod:`llm.protocol`.

Bad input (config, paths, data, models, an output folder in use) exits with status 2 and one line
on stderr, having written nothing; a run that turned non-finite or collapsed exits with status 1
after keeping what it measured; so does a failing environment (disk full, read-only, no memory).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pathdep.cli import OneLineParser, run_command


def _config_args(p: argparse.ArgumentParser, out: bool = True) -> None:
    p.add_argument("--config", required=True, help="run config (TOML), e.g. llm/configs/tiny.toml")
    if out:
        p.add_argument("--out", required=True, help="output folder (resumes if it exists)")
        p.add_argument(
            "--tensorboard",
            action="store_true",
            help="also write TensorBoard events of every stage and unlearning run",
        )
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
    parser = OneLineParser(
        prog="python -m llm",
        description="Staged fine-tuning, local unlearning and evaluation (paper Section 4).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    p = sub.add_parser("build-default", help="build the offline default Llama and Qwen2 models")
    p.add_argument("--out", required=True, help="folder; writes OUT/llama and OUT/qwen2")
    p.add_argument("--tiny", action="store_true", help="the small test configuration")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
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
    p.add_argument(
        "--jobs",
        choices=("local", "slurm"),
        default=None,
        help="run the prefixes, then every (path, method), as submitit jobs (llm.jobs)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="--jobs local: jobs in flight at once (SLURM queues every job, wave 2 with afterok)",
    )
    p.add_argument(
        "--slurm",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--jobs slurm: a submitit parameter, e.g. slurm_partition=gpu or timeout_min=240",
    )
    p = sub.add_parser(
        "curvature", help="top eigenvalues of the forget loss's GGN and Hessian at a checkpoint"
    )
    _config_args(p, out=False)
    p.add_argument("--model", required=True, help="model folder (a checkpoint of the config's)")
    p.add_argument("--top", type=int, default=20, help="eigenvalues to compute (Lanczos)")
    p.add_argument("--n-forget", type=int, default=16, help="forget examples in the loss")
    p.add_argument("--trace-samples", type=int, default=32, help="Hutchinson samples")
    p.add_argument("--no-hessian", action="store_true", help="the GGN only (half the time)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p = sub.add_parser("plan", help="memory per GPU of every phase, before loading anything")
    _config_args(p, out=False)
    p.add_argument("--gpus", type=int, default=1, help="GPUs (processes) of the run")
    p.add_argument("--gpu-memory", type=float, default=80.0, help="GiB per GPU")
    p.add_argument(
        "--prompt-tokens", type=int, default=0, help="generation prompt length (0: max_length)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the plan here")
    p.add_argument("--require-fit", action="store_true", help="exit 2 if a phase fits no setting")
    p = sub.add_parser("report", help="tables and figures from a protocol folder's metrics")
    p.add_argument("--out", required=True, help="protocol output folder")
    return parser


def _load(args):
    from llm.config import load_config
    from llm.protocol import check_config_paths
    from llm.workspace import ProtocolError

    if args.threads < 0:
        raise ProtocolError(f"--threads must be >= 0, got {args.threads}")
    cfg = load_config(args.config, args.set)
    check_config_paths(cfg)
    return cfg


def _failed(statuses: list[dict]) -> int:
    bad = [s for s in statuses if s.get("status") != "done"]
    for s in bad:
        where = f"{s['path']}/{s['method']}" if "method" in s else s["path"]
        print(f"{where}: {s.get('status')}: {s.get('message', '')}", file=sys.stderr)
    return 1 if bad else 0


def _run(args) -> int:
    from llm import protocol as P
    from llm.models import transformers_progress
    from llm.stage_cache import ensure_prefix
    from llm.workspace import load_model, protocol_session

    progress = not getattr(args, "no_progress", False)
    if args.command == "build-default":
        from llm.default_models import DefaultModelConfig, build_default

        config = DefaultModelConfig.tiny() if args.tiny else DefaultModelConfig()
        written = build_default(
            args.out, config=config, workers=1 if args.tiny else "auto", progress=progress
        )
        for arch, path in written.items():
            print(f"{arch}: {path}")
        return 0
    if args.command == "report":
        from llm.report import write_report
        from pathdep.lock import hold

        if not Path(args.out).is_dir():
            raise P.ProtocolError(f"no protocol folder at {args.out}")
        with hold(args.out):
            for name, path in write_report(args.out).items():
                print(f"{name}: {path}")
        return 0
    if args.command == "plan":
        return _plan(args)
    cfg = _load(args)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    if args.command == "curvature":
        return _curvature(cfg, args, progress)
    if args.command == "protocol" and args.slurm and args.jobs != "slurm":
        from llm.jobs import JobsError

        raise JobsError("--slurm sets submitit's SLURM parameters: it needs --jobs slurm")
    if args.command == "protocol" and args.jobs:
        from llm.jobs import JobsError, run_protocol_jobs

        if args.tensorboard:
            raise JobsError("--tensorboard is not available with --jobs")
        slurm = {}
        for item in args.slurm:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise JobsError(f"--slurm {item!r}: expected KEY=VALUE")
            slurm[key] = int(value) if value.isdigit() else value
        result = run_protocol_jobs(
            cfg,
            args.out,
            args.jobs,
            workers=args.workers,
            threads=args.threads or 1,
            slurm=slurm,
            progress=progress,
        )
        print(f"report: {Path(args.out) / 'report' / 'table1.md'}")
        return _failed(result.statuses)
    if args.command == "protocol":
        result = P.run_protocol(cfg, args.out, progress=progress, tensorboard=args.tensorboard)
        print(f"report: {Path(args.out) / 'report' / 'table1.md'}")
        return _failed(result.statuses)
    from llm.config import path_sequences, retrain_sequence

    sequences = path_sequences(cfg.paths)
    if args.command == "evaluate":
        from llm.models import check_model_folder

        check_model_folder(args.model)
    if args.command == "unlearn":
        unknown = set(args.path) - set(sequences)
        methods = [m for m in cfg.unlearn.methods if not args.method or m.name in args.method]
        if unknown or not methods:
            raise P.ProtocolError(f"unknown --path {sorted(unknown)} or no matching --method")
    session = protocol_session(cfg, args.out, progress, getattr(args, "tensorboard", False))
    with transformers_progress(progress), session as ws:
        if args.command == "finetune":
            for name, seq in [*sequences.items(), ("retrain", retrain_sequence(cfg.paths))]:
                print(f"{name} ({'-'.join(seq)}): {ensure_prefix(ws, seq)}")
            return 0
        if args.command == "evaluate":
            summary, values, _ = P.evaluate_with_config(
                ws, ws.suite, load_model(ws, Path(args.model)), not args.no_math
            )
            print(json.dumps({"model": args.model, "summary": summary}, indent=2))
            return 0
        assert args.command == "unlearn", args.command
        statuses = []
        for name, seq in sequences.items():
            if args.path and name not in args.path:
                continue
            model_dir = ensure_prefix(ws, seq)
            for method in methods:
                statuses.append(P.run_unlearning(ws, ws.suite, name, model_dir, method))
                print(f"{name}/{method.name}: {statuses[-1]['status']}")
        return _failed(statuses)


def _curvature(cfg, args, progress: bool) -> int:
    from llm.models import check_model_folder, transformers_progress
    from llm.path_theory import checkpoint_curvature
    from pathdep.io import atomic_write_json, check_output_file

    if args.json is not None:
        check_output_file(args.json)
    check_model_folder(args.model)
    with transformers_progress(progress):
        result = checkpoint_curvature(
            cfg,
            args.model,
            top=args.top,
            n_forget=args.n_forget,
            trace_samples=args.trace_samples,
            hessian=not args.no_hessian,
            progress=progress,
        )
    print(
        f"{result['parameters']} parameters ({result['subspace']}), {result['n_forget']} forget "
        f"examples, {result['labelled_tokens']} labelled tokens; {result['loss_normalisation']}"
    )
    for kind in ("ggn", "hessian"):
        if f"{kind}_eigenvalues" in result:
            values = " ".join(f"{v:.4g}" for v in result[f"{kind}_eigenvalues"])
            print(f"{kind} top {args.top}: {values}")
    print(f"ggn trace: {result['ggn_trace']:.4g} ± {result['ggn_trace_se']:.2g} (Hutchinson)")
    if args.json is not None:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _plan(args) -> int:
    """Print the memory plan (:mod:`llm.plan`); nothing is loaded, no model folder is needed."""
    from llm.config import load_config
    from llm.plan import PlanError, plan
    from pathdep.io import atomic_write_json, check_output_file

    if args.json is not None:
        check_output_file(args.json, "--json")
    result = plan(
        load_config(args.config, args.set), args.gpus, args.gpu_memory, args.prompt_tokens
    )
    print(_format_plan(result))
    stuck = [n for n, p in result["phases"].items() if "recommended_total" not in p]
    stuck = [n for n in stuck if not result["phases"][n]["fits"]]
    if args.require_fit and stuck:
        raise PlanError(
            f"{', '.join(stuck)} fits no setting on {args.gpus} x {args.gpu_memory:g} GiB"
        )
    if args.json is not None:
        atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def _format_plan(result: dict) -> str:
    """The plan as a readable table (GiB per GPU, :mod:`llm.plan`), one block per phase."""
    from llm.plan import GIB

    g = lambda n: f"{n / GIB:8.2f}"  # noqa: E731
    lines = [
        f"{result['model']} ({result['source']}, {result['dtype']}) on {result['gpus']} "
        f"GPU(s) x {result['gpu_memory_gib']:g} GiB; fits = total <= "
        f"{result['headroom']:.0%} of a GPU"
    ]
    keys = ("weights", "gradients", "optimizer", "activations", "kv_cache", "fsdp_gather")
    # FSDP + bf16 autocast's unsharded weight copies; foreach AdamW's temporary (the peak when
    # it exceeds activations)
    keys += ("autocast_copies", "step_temp")
    for name, p in result["phases"].items():
        lines.append(f"{name}: {p['params']:,} params, {p['trainable_params']:,} trainable")
        for k in keys:
            if p.get(k):
                lines.append(f"  {k:<22}{g(p[k])} GiB")
        lines.append(
            f"  {'total':<22}{g(p['total'])} GiB  {'fits' if p['fits'] else 'DOES NOT FIT'}"
        )
        if "total_checkpointing" in p:
            lines.append(f"  {'total (checkpointing)':<22}{g(p['total_checkpointing'])} GiB")
        then = f" ({p['recommended_total'] / GIB:.2f} GiB)" if "recommended_total" in p else ""
        lines.append("  recommended: " + "; ".join(p["recommended"]) + then)
    lines += [f"note: {n}" for n in result.get("notes", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return run_command(lambda: _run(args), prog="python -m llm")
