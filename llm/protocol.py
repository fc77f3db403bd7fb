"""The paper's Section 4 as one function: paths x methods, retrain baseline, evaluation, report.

:func:`run_protocol` trains every path's stage prefixes through the shared cache
(:mod:`llm.stage_cache`), unlearns each path's model with each configured method, evaluates the
retrain baseline, and writes the RE distances (:mod:`llm.distances`) and the report
(:mod:`llm.report`). Where each file goes is defined once, in :mod:`llm.layout`. Every finished
unlearning run leaves a ``status.json``; a rerun into the same folder skips it (resume).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from llm import distributed as D
from llm.config import RunConfig, lora_shape, path_sequences, retrain_sequence
from llm.distances import re_distances, save_pred
from llm.stage_cache import ensure_prefix
from llm.workspace import ProtocolError, Workspace, load_model, protocol_session
from pathdep.io import atomic_write_json

__all__ = [
    "ProtocolError",
    "ProtocolResult",
    "build_eval_suite",
    "check_config_paths",
    "evaluate_retrain",
    "evaluate_with_config",
    "failed_path_statuses",
    "finish_protocol",
    "run_protocol",
    "run_unlearning",
    "write_eval_suite",
]


def build_eval_suite(ws: Workspace):
    """The protocol's evaluation items (:func:`llm.evaluate.build_suite`) from the config."""
    from llm.evaluate import build_suite
    from llm.prompts import GSM8K_EVAL_PROMPT, UNLEARN_LABEL, unlearn_paraphrases

    ev, cfg = ws.cfg.eval, ws.cfg
    forget = ws.examples(cfg.paths.forget_stage)[: ev.n_forget_prompts]
    rcu = ws.rcu_items(ev.rcu_stage)[: ev.n_rcu] if ev.rcu_stage else []
    re_sets = []
    for name in ev.re_stages:
        re_sets.extend(ws.examples(name))
    return build_suite(
        ws.tokenizer,
        forget=forget,
        phrases=[UNLEARN_LABEL, *unlearn_paraphrases()],
        label=UNLEARN_LABEL,
        tofu=ws.examples(ev.tofu_stage)[: ev.n_tofu] if ev.tofu_stage else [],
        math=ws.examples(ev.math_stage)[: ev.n_math] if ev.math_stage else [],
        math_template=GSM8K_EVAL_PROMPT if ev.math_prompt == "paper" else "{question}",
        rcu=rcu,
        re_sets=re_sets[: ev.n_re],
        max_length=cfg.finetune.max_length,
        template_tokenizer=ws.template_tokenizer,
    )


# What a light evaluation (between full ones, unlearn.full_eval_every) scores besides Pred: the
# groups whose per-step curves the reports draw (Figure 1's label, Figure 4's R, C and U).
CURVE_GROUPS = ("label", "rcu_R", "rcu_C", "rcu_U")


def evaluate_with_config(ws: Workspace, suite, model, math: bool, full: bool = True):
    """Score ``model`` on ``suite`` with the run's [eval] settings: (summary, per_example, pred);
    not ``full``: Pred and :data:`CURVE_GROUPS` only."""
    from llm.batches import stable_seed
    from llm.evaluate import evaluate_model

    ev = ws.cfg.eval
    return evaluate_model(
        model,
        ws.tokenizer,
        suite,
        batch_size=ev.batch_size,
        math=math,
        math_samples=ev.math_samples,
        math_batch_size=ev.math_batch_size,
        max_new_tokens=ev.max_new_tokens,
        temperature=ev.temperature,
        top_p=ev.top_p,
        seed=stable_seed(ws.cfg.seed, "math-eval"),
        pad_token_id=ws.pad_id,
        groups=None if full else CURVE_GROUPS,
    )


# A run collapsed when its gradient vanishes for the rest of the run after it moved the model, or
# its model scores every evaluated phrase as a uniform distribution over the vocabulary would.
ZERO_GRADIENT = 1e-12
UNIFORM_TOLERANCE = 1e-3
# ... unless the loss vanished with it: NPO and SimNPO are bounded below by 0 and reach it once
# log pi falls far enough (NPO: below the reference), so the gradient is ~0 by design.
SATURATED_LOSS = 1e-6  # |loss| <= this x |first loss|


def collapse_reason(records: list[dict], last_eval: dict, vocab_rows: int) -> str | None:
    """Why a finished unlearning run's model collapsed (None: it did not).

    Collapsed: the gradient moved the model and then vanished for the rest of the run (at least
    two steps, or the last one of a two-step run), or the final evaluation scores every phrase
    as a uniform distribution over the vocabulary would. A gradient that is zero from the first
    step (a saturated objective, e.g. the paper's SimNPO on whole responses) leaves the model as
    it was: that run did not forget, it did not collapse. Nor did one whose loss vanished with
    its gradient (NPO once log pi is far below the reference): the objective is met.
    ``records`` are the loop's per-step records (``grad_norm``, ``loss``), ``last_eval`` the
    final evaluation, ``vocab_rows`` the output size.
    """
    stepped = [r for r in records if "grad_norm" in r]
    norms = [r["grad_norm"] for r in stepped]
    moved = [i for i, g in enumerate(norms) if g > ZERO_GRADIENT]
    tail = len(norms) - 1 - moved[-1] if moved else 0
    losses = [abs(r["loss"]) for r in stepped if "loss" in r]
    saturated = (
        len(losses) == len(stepped) and tail > 0 and losses[-tail] <= SATURATED_LOSS * losses[0]
    )
    if moved and tail >= min(2, len(norms) - 1) and tail > 0 and not saturated:
        first = records[len(norms) - tail]["step"]
        return f"zero gradient from step {first} to the end (step {records[-1]['step']})"
    if vocab_rows > 1:
        uniform = -math.log(vocab_rows)
        scores = [last_eval[k] for k in ("label", "phrases", "tofu") if k in last_eval]
        if scores and all(abs(v - uniform) <= UNIFORM_TOLERANCE for v in scores):
            return (
                f"uniform output: every evaluated score is log(1/{vocab_rows}) = {uniform:.4f} "
                "at the last evaluation"
            )
    return None


def _sharded(ws: Workspace) -> bool:
    """Whether this run shards its models with FSDP (``strategy = "fsdp"``, several processes)."""
    return ws.cfg.distributed.strategy == "fsdp" and D.current().world_size > 1


def run_unlearning(ws: Workspace, suite, path_name: str, model_dir: Path, method) -> dict:
    """Unlearn one path's model with one method into its run folder (resumes; a finished run is
    read back from its ``status.json``)."""
    from llm.batches import stable_seed
    from llm.loop import NonFiniteError
    from llm.unlearn import MetricsLog, checkpoint_step, unlearn

    cfg, info = ws.cfg, D.current()
    run = ws.layout.run(path_name, method.name)
    if run.status.exists():
        return json.loads(run.status.read_text())
    run.root.mkdir(parents=True, exist_ok=True)
    math_every, full_every = cfg.unlearn.math_every, cfg.unlearn.full_eval_every
    resumed = checkpoint_step(run.ckpt)
    MetricsLog(run.per_example, keep_up_to=resumed if resumed is not None else -1)  # drop stale

    last_eval: dict[str, float] = {}

    def evaluator(model, step: int, final: bool) -> dict:
        ends = step == 0 or final
        with_math = ends or (math_every > 0 and step % math_every == 0)
        full = ends or (full_every > 0 and step % (full_every * cfg.unlearn.eval_every) == 0)
        summary, values, pred = evaluate_with_config(ws, suite, model, with_math, full)
        save_pred(run.pred(step), pred)
        if info.is_main:
            with run.per_example.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
        last_eval.clear()
        last_eval.update(summary)
        return summary

    retain = []
    if method.retain_weight > 0:
        retain = ws.tokenized(method.retain_stage)
    model = load_model(ws, model_dir, on_cpu=_sharded(ws))  # FSDP moves the shards itself
    started = time.time()
    status: dict[str, Any] = {"path": path_name, "method": method.name}
    try:
        _, records = unlearn(
            model,
            ws.tokenized(cfg.paths.forget_stage),
            method,
            cfg.unlearn,
            cfg.finetune,
            pad_token_id=ws.pad_id,
            seed=stable_seed(cfg.seed, "unlearn", path_name, method.name),
            lora=lora_shape(cfg) if cfg.finetune.method == "lora" else None,
            retain=retain,
            ckpt_dir=run.ckpt,
            metrics_path=run.metrics,
            evaluator=evaluator,
            progress=ws.progress,
            tensorboard=run.tensorboard if ws.tensorboard else None,
            strategy=cfg.distributed.strategy,
        )
        reason = collapse_reason(records, last_eval, ws.vocab_rows)
        status["status"] = "collapsed" if reason else "done"
        if reason:
            status["message"] = reason
    except NonFiniteError as err:
        status.update(status="non-finite", message=str(err))
    status["seconds"] = time.time() - started
    if info.is_main:
        atomic_write_json(run.status, status)
        shutil.rmtree(run.ckpt, ignore_errors=True)
    D.barrier()
    return status


def evaluate_retrain(ws: Workspace, suite, model_dir: Path) -> dict:
    """Metrics and Pred of the retrain baseline (the stages without the forget stage)."""
    layout = ws.layout
    if layout.retrain_metrics.exists():
        return json.loads(layout.retrain_metrics.read_text())
    model = load_model(ws, model_dir, on_cpu=_sharded(ws))
    if _sharded(ws):  # scored and sampled sharded, as the unlearned models are
        model = D.shard_model(model, D.current())
    summary, values, pred = evaluate_with_config(ws, suite, model, math=True)
    save_pred(layout.retrain_pred, pred)
    result = {"model": str(model_dir), "summary": summary, "per_example": values}
    if D.current().is_main:
        atomic_write_json(layout.retrain_metrics, result)
    D.barrier()
    return result


@dataclass(frozen=True)
class ProtocolResult:
    out: Path
    paths: dict[str, tuple[str, ...]]
    trained_prefixes: list[tuple[str, ...]]
    statuses: list[dict]


def failed_path_statuses(
    ws: Workspace, path: str, message: str, methods: Sequence[str] | None = None
) -> list[dict]:
    """Statuses of every method (or of ``methods``) of a path whose stages could not be trained."""
    statuses = []
    for name in methods if methods is not None else [m.name for m in ws.cfg.unlearn.methods]:
        status = {"path": path, "method": name, "status": "non-finite", "message": message}
        if D.current().is_main:
            atomic_write_json(ws.layout.run(path, name).status, status)
        statuses.append(status)
    return statuses


def retrain_status(message: str) -> dict:
    """The status of a retrain baseline that turned non-finite (training it, or scoring it)."""
    return {"path": "retrain", "status": "non-finite", "message": message}


def run_protocol(
    cfg: RunConfig, out: str | Path, progress: bool = True, tensorboard: bool = False
) -> ProtocolResult:
    """Train every path (sharing prefixes), unlearn each with each method, evaluate, report.

    Everything is checked before anything is written, and the output folder is locked for the
    whole run (:func:`llm.workspace.protocol_session`). A stage or an unlearning run that turns
    non-finite, or an unlearning run that collapses, is recorded in its status and the report
    shows it as such; the other paths and methods still run.
    """
    from llm.loop import NonFiniteError
    from llm.models import transformers_progress

    with transformers_progress(progress), protocol_session(cfg, out, progress, tensorboard) as ws:
        suite = ws.suite
        sequences = path_sequences(cfg.paths)
        retrain = retrain_sequence(cfg.paths)
        write_eval_suite(ws)
        final_models, statuses = {}, []
        for name, seq in sequences.items():
            try:
                final_models[name] = ensure_prefix(ws, seq)
            except NonFiniteError as err:
                statuses += failed_path_statuses(ws, name, f"training {'-'.join(seq)}: {err}")
        runs = [(name, d, m) for name, d in final_models.items() for m in cfg.unlearn.methods]
        bar = tqdm(runs, desc="unlearning runs", disable=not (progress and D.current().is_main))
        for name, model_dir, method in bar:
            bar.set_postfix(path=name, method=method.name)
            statuses.append(run_unlearning(ws, suite, name, model_dir, method))
        try:
            retrain_dir = ensure_prefix(ws, retrain)
        except NonFiniteError as err:
            statuses.append(retrain_status(f"training {'-'.join(retrain)}: {err}"))
        else:
            try:
                evaluate_retrain(ws, suite, retrain_dir)
            except NonFiniteError as err:
                statuses.append(retrain_status(str(err)))
        finish_protocol(ws, sequences, retrain)
        return ProtocolResult(ws.layout.root, sequences, list(ws.trained), statuses)


def write_eval_suite(ws: Workspace) -> None:
    """``eval_suite.json``: how many items each metric has, and how many were too long."""
    suite = ws.suite
    if D.current().is_main:
        sizes = {k: len(v) for k, v in suite.groups.items()}
        sizes |= {"re": len(suite.re_examples), "math": len(suite.math_prompts)}
        atomic_write_json(ws.layout.eval_suite, {"sizes": sizes, "skipped": suite.skipped})


def finish_protocol(ws: Workspace, sequences: dict, retrain: tuple[str, ...]) -> None:
    """After every run: the RE distances, ``paths.json`` and the report."""
    from llm.report import write_report

    layout = ws.layout
    if D.current().is_main:
        lengths = [sum(1 for t in ex.labels[1:] if t != -100) for ex in ws.suite.re_examples]
        atomic_write_json(layout.re_distance, re_distances(layout, lengths))
        atomic_write_json(
            layout.paths_json,
            {"paths": {k: list(v) for k, v in sequences.items()}, "retrain": list(retrain)},
        )
        write_report(layout.root)
    D.barrier()


def check_config_paths(cfg: RunConfig) -> None:
    """Fail early (ConfigError) on a config that cannot run: e.g. an unset LoRA preset."""
    if cfg.finetune.method == "lora":
        lora_shape(cfg)
