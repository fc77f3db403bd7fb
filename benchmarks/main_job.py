"""Benchmark of the main job: time per phase, training tokens/s, batched vs one-at-a-time scoring.

    python benchmarks/main_job.py [--full] [--out DIR] [--threads N]

Everything is measured in this one run and printed:

1. the main job (:mod:`study`; ``--quick`` by default, the default models with ``--full``) and
   the seconds of each of its phases (read from its ``metrics.json``; ``--from DIR`` reads a
   finished job's instead of running one);
2. training throughput: one fine-tuning stage (the demo config's S_inst settings) on the model,
   in labelled tokens per second and in all (non-padding) tokens per second;
3. scoring throughput: the label and its paraphrases scored on forget prompts by
   :func:`llm.evaluate.score_examples` in batches, against the paper's code's way of scoring one
   prompt and one phrase per forward pass; both give the same numbers (checked), the ratio of
   their times is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _models(full: bool) -> dict[str, Path]:
    from llm.default_models import DefaultModelConfig, ensure_default_models

    config = DefaultModelConfig() if full else DefaultModelConfig.tiny()
    return {a: Path(p) for a, p in ensure_default_models(config=config, progress=False).items()}


def bench_main_job(out: Path, full: bool, existing: str = "") -> dict[str, float]:
    from study import StudyConfig, run_study

    if existing:  # phases of a main job that already ran (e.g. the default `make demo` run)
        timings = dict(json.loads((Path(existing) / "metrics.json").read_text())["timings"])
        timings["wall"] = timings["total"]
        return timings
    started = time.perf_counter()
    metrics = run_study(StudyConfig(quick=not full), out, progress=False)
    timings = dict(metrics["timings"])
    timings["wall"] = time.perf_counter() - started
    return timings


def bench_training(model_dir: Path, full: bool, workdir: Path) -> dict[str, float]:
    from llm.data import load_examples
    from llm.models import load_model
    from llm.synthetic import write_default_datasets
    from llm.tokenization import encode_examples
    from llm.train import train_stage
    from study.config import protocol_config

    cfg = protocol_config("llama", 0, not full, model_dir)
    files = write_default_datasets(workdir / "data", dict(cfg.data.sizes), 0)
    model, tok = load_model(str(model_dir))
    examples = encode_examples(tok, load_examples(files["inst"]), cfg.finetune.max_length).examples
    stage = cfg.stage("inst")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    started = time.perf_counter()
    _, records = train_stage(
        model, examples, stage, cfg.finetune, pad_token_id=pad, seed=0, progress=False
    )
    seconds = time.perf_counter() - started
    epochs = stage.epochs
    labelled = sum(sum(1 for t in ex.labels if t != -100) for ex in examples) * epochs
    tokens = sum(len(ex.input_ids) for ex in examples) * epochs
    return {
        "seconds": seconds,
        "steps": len(records),
        "tokens_per_s": tokens / seconds,
        "labelled_tokens_per_s": labelled / seconds,
    }


def bench_scoring(model_dir: Path, n_prompts: int, workdir: Path) -> dict[str, float]:
    from llm.evaluate import score_examples
    from llm.models import load_model
    from llm.prompts import UNLEARN_LABEL, unlearn_paraphrases
    from llm.synthetic import safety_refusals
    from llm.tokenization import encode_prompt_completion

    model, tok = load_model(str(model_dir))
    model.eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompts = [ex.messages[:-1] for ex in safety_refusals(n_prompts, 0)]
    phrases = [UNLEARN_LABEL, *unlearn_paraphrases()]
    items = [encode_prompt_completion(tok, list(p), ph, 256) for p in prompts for ph in phrases]
    started = time.perf_counter()
    batched = score_examples(model, items, pad, batch_size=64)
    t_batched = time.perf_counter() - started
    started = time.perf_counter()
    single = [score_examples(model, [it], pad, batch_size=1)[0] for it in items]
    t_single = time.perf_counter() - started
    max_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(batched, single, strict=True))
    return {
        "sequences": len(items),
        "batched_s": t_batched,
        "one_at_a_time_s": t_single,
        "speedup": t_single / t_batched,
        "max_abs_diff": max_diff,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="the default models (else tiny, --quick)")
    p.add_argument("--out", default="", help="main job folder (default: a temporary folder)")
    p.add_argument(
        "--from",
        dest="existing",
        default="",
        help="read the phase times of a finished main job folder instead of running one",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--prompts", type=int, default=24, help="forget prompts for the scoring test")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = Path(args.out) if args.out else work / "main_job"
        models = _models(args.full)
        result = {
            "mode": "full" if args.full else "quick",
            "threads": torch.get_num_threads(),
            "main_job": bench_main_job(out, args.full, args.existing),
            "training": bench_training(models["llama"], args.full, work),
            "scoring": bench_scoring(models["llama"], args.prompts, work),
        }
    print(json.dumps(result, indent=2))
    mj, tr, sc = result["main_job"], result["training"], result["scoring"]
    print(
        f"main job ({result['mode']}): total {mj['total']:.1f} s; phases: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in mj.items() if k not in ("total", "wall"))
    )
    print(
        f"training: {tr['tokens_per_s']:.0f} tokens/s ({tr['labelled_tokens_per_s']:.0f} "
        f"labelled tokens/s), {tr['steps']} steps in {tr['seconds']:.1f} s"
    )
    print(
        f"scoring {sc['sequences']} (prompt, phrase) pairs: batched {sc['batched_s']:.2f} s, "
        f"one at a time {sc['one_at_a_time_s']:.2f} s, ratio {sc['speedup']:.1f}x "
        f"(max |difference| {sc['max_abs_diff']:.2e})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
