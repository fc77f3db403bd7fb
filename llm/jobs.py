"""A protocol as independent jobs on submitit: SLURM on a cluster, its local executor on one
machine (``python -m llm protocol --jobs local|slurm --workers N``).

Wave 1 trains the stage prefix of every path and of the retrain baseline, one job each; a prefix
shared by several paths is trained once (every cache entry has its own lock, so a job that needs
a prefix another job is training waits for it, then reads it: :mod:`llm.stage_cache`). Wave 2
unlearns every path with every method, one job each. The driver, the process that calls
:func:`run_protocol_jobs`, holds the output folder's lock throughout, starts a wave only when the
one before it has finished (the dependency between them), keeps at most ``workers`` jobs in
flight, and then evaluates the retrain baseline and writes the RE distances and the report as
:func:`llm.protocol.run_protocol` does.

Resume: a job killed mid-way leaves its step checkpoints, and a finished run leaves its
``status.json``; calling again with the same config and folder (re-submitting) resumes the
unfinished jobs and reads the finished ones back.

Every job runs ``threads`` torch threads in one process; at the same thread count the files
equal a sequential ``run_protocol``'s bit for bit (tests/test_llm_jobs.py). Several GPUs within
one job stay torchrun's (docs/full_scale.md). submitit moves each job's function and arguments
through a pickle in the executor's folder that the driver itself wrote; nothing a user supplies is
unpickled.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pathdep.errors import BadInput

__all__ = ["JOB_KINDS", "JobsError", "make_executor", "run_protocol_jobs", "run_wave"]

JOB_KINDS = ("local", "slurm")


class JobsError(BadInput):
    """A job request that cannot run: submitit missing, bad worker or thread counts."""


def _submitit(kind: str):
    """submitit, or a one-line error naming what is missing (checked before anything runs)."""
    if kind not in JOB_KINDS:
        raise JobsError(f"--jobs must be one of {JOB_KINDS}, got {kind!r}")
    try:
        import submitit
    except ImportError:
        raise JobsError(
            f"--jobs {kind} needs submitit, which is not installed (pip install 'pathdep[cluster]')"
        ) from None
    return submitit


def make_executor(kind: str, folder: str | Path, slurm: dict[str, Any] | None = None):
    """A submitit executor writing its job files under ``folder`` (created here): ``"local"``
    (one subprocess per job on this machine) or ``"slurm"`` (``slurm``: submitit's parameters,
    e.g. ``{"slurm_partition": "gpu", "timeout_min": 240, "gpus_per_node": 1}``)."""
    submitit = _submitit(kind)
    if kind == "local":
        return submitit.LocalExecutor(folder=str(folder))
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(**(slurm or {}))
    return executor


def _workspace(raw: dict, out: str, threads: int):
    """Inside a job: one process, ``threads`` torch threads, the driver's checked workspace
    (read again; the driver wrote it)."""
    import torch

    from llm.config import config_from_dict
    from llm.workspace import prepare_workspace

    torch.set_num_threads(threads)
    return prepare_workspace(config_from_dict(raw), Path(out), progress=False)


def prefix_job(raw: dict, out: str, prefix: list[str], threads: int) -> dict[str, Any]:
    """Wave 1: train one stage prefix through the cache; {"model", "trained"} or {"error"}."""
    from llm.loop import NonFiniteError
    from llm.stage_cache import ensure_prefix

    ws = _workspace(raw, out, threads)
    try:
        model = ensure_prefix(ws, tuple(prefix))
    except NonFiniteError as err:
        return {"error": str(err)}
    return {"model": str(model), "trained": [list(p) for p in ws.trained]}


def unlearn_job(
    raw: dict, out: str, path: str, model_dir: str, method: str, threads: int
) -> dict[str, Any]:
    """Wave 2: one path unlearned with one method; its status."""
    from llm.protocol import run_unlearning

    ws = _workspace(raw, out, threads)
    chosen = next(m for m in ws.cfg.unlearn.methods if m.name == method)
    return run_unlearning(ws, ws.suite, path, Path(model_dir), chosen)


def run_wave(
    executor, fn: Callable, calls: Sequence[tuple], workers: int, poll: float = 0.2
) -> list[Any]:
    """``fn(*call)`` for every call as a job, at most ``workers`` in flight; the results in the
    order of ``calls``. A job that fails raises here (its error and log folder in the message)."""
    results: list[Any] = [None] * len(calls)
    pending, running = deque(enumerate(calls)), {}
    while pending or running:
        while pending and len(running) < workers:
            i, call = pending.popleft()
            running[i] = executor.submit(fn, *call)
        finished = [i for i, job in running.items() if job.done()]
        for i in finished:
            job = running.pop(i)
            try:
                results[i] = job.result()
            except Exception as err:  # submitit wraps the job's traceback
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err)
                raise RuntimeError(f"job {job.job_id} ({fn.__name__}) failed: {first}") from err
        if not finished:
            time.sleep(poll)
    return results


def run_protocol_jobs(
    cfg,
    out: str | Path,
    jobs: str = "local",
    *,
    workers: int = 2,
    threads: int = 1,
    slurm: dict[str, Any] | None = None,
    progress: bool = True,
):
    """:func:`llm.protocol.run_protocol` as submitit jobs (``jobs``: ``"local"`` or
    ``"slurm"``, :func:`make_executor`; its files in ``OUT/jobs``); the same
    :class:`llm.protocol.ProtocolResult`."""
    import torch

    from llm.config import path_sequences, retrain_sequence
    from llm.loop import NonFiniteError
    from llm.models import transformers_progress
    from llm.protocol import (
        ProtocolResult,
        evaluate_retrain,
        failed_path_statuses,
        finish_protocol,
        write_eval_suite,
    )
    from llm.workspace import protocol_session
    from pathdep.configs import to_dict

    if workers < 1 or threads < 1:
        raise JobsError(f"--workers and --threads must be >= 1, got {workers} and {threads}")
    _submitit(jobs)
    torch.set_num_threads(threads)  # the driver evaluates the retrain baseline itself
    with transformers_progress(progress), protocol_session(cfg, out, progress) as ws:
        executor = make_executor(jobs, ws.layout.jobs, slurm)
        raw, root = to_dict(cfg), str(ws.layout.root)
        sequences, retrain = path_sequences(cfg.paths), retrain_sequence(cfg.paths)
        write_eval_suite(ws)
        prefixes = list(dict.fromkeys([*sequences.values(), retrain]))
        calls = [(raw, root, list(p), threads) for p in prefixes]
        trained = dict(zip(prefixes, run_wave(executor, prefix_job, calls, workers), strict=True))
        final_models, statuses = {}, []
        for name, seq in sequences.items():
            if "error" in trained[seq]:
                message = f"training {'-'.join(seq)}: {trained[seq]['error']}"
                statuses += failed_path_statuses(ws, name, message)
            else:
                final_models[name] = trained[seq]["model"]
        calls = [
            (raw, root, name, model, m.name, threads)
            for name, model in final_models.items()
            for m in cfg.unlearn.methods
        ]
        statuses += run_wave(executor, unlearn_job, calls, workers)
        if "error" in trained[retrain]:
            message = f"training {'-'.join(retrain)}: {trained[retrain]['error']}"
            statuses.append({"path": "retrain", "status": "non-finite", "message": message})
        else:
            try:
                evaluate_retrain(ws, ws.suite, Path(trained[retrain]["model"]))
            except NonFiniteError as err:
                statuses.append({"path": "retrain", "status": "non-finite", "message": str(err)})
        finish_protocol(ws, sequences, retrain)
        done = [tuple(p) for r in trained.values() for p in r.get("trained", [])]
        return ProtocolResult(ws.layout.root, sequences, list(dict.fromkeys(done)), statuses)
