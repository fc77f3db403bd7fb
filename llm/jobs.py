"""A protocol as independent jobs on submitit: SLURM on a cluster, its local executor on one
machine (``python -m llm protocol --jobs local|slurm --workers N``).

Wave 1 trains the stage prefix of every path and of the retrain baseline, one job each; a prefix
shared by several paths is trained once (every cache entry has its own lock, so a job that needs
a prefix another job is training waits for it, then reads it: :mod:`llm.stage_cache`). Wave 2
unlearns every path with every method, one job each; a job reads its path's model from the cache
(and trains it there, under the entry's lock, if it is missing). The driver, the process that
calls :func:`run_protocol_jobs`, holds the output folder's lock throughout. On SLURM it submits
both waves at once, every wave-2 job with ``--dependency=afterok:...`` on the wave-1 jobs of its
path's prefixes (:func:`wave_dependencies`), so SLURM enforces the order and queues everything;
the local executor has no dependencies: the driver starts wave 2 when wave 1 has finished, at
most ``workers`` jobs in flight. The driver then evaluates the retrain baseline and writes the
RE distances and the report as :func:`llm.protocol.run_protocol` does.

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

__all__ = [
    "JOB_KINDS",
    "JobsError",
    "make_executor",
    "run_dependent_waves",
    "run_protocol_jobs",
    "run_wave",
    "submit_dependent_waves",
    "wave_dependencies",
]

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
    raw: dict, out: str, path: str, prefix: list[str], method: str, threads: int
) -> dict[str, Any]:
    """Wave 2: one path unlearned with one method; its status. The path's model (after
    ``prefix``) comes from the stage cache; if wave 1 left it missing, this job trains it there
    under the entry's lock, and a prefix that turns non-finite gives a non-finite status."""
    from llm.loop import NonFiniteError
    from llm.protocol import failed_path_statuses, run_unlearning
    from llm.stage_cache import ensure_prefix

    ws = _workspace(raw, out, threads)
    chosen = next(m for m in ws.cfg.unlearn.methods if m.name == method)
    try:
        model = ensure_prefix(ws, tuple(prefix))
    except NonFiniteError as err:
        message = f"training {'-'.join(prefix)}: {err}"
        return failed_path_statuses(ws, path, message, [method])[0]
    return run_unlearning(ws, ws.suite, path, model, chosen)


def _result(job, fn: Callable) -> Any:
    """A finished job's result; a job that failed raises (its error and id in the message)."""
    try:
        return job.result()
    except Exception as err:  # submitit wraps the job's traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err)
        raise RuntimeError(f"job {job.job_id} ({fn.__name__}) failed: {first}") from err


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
            results[i] = _result(running.pop(i), fn)
        if not finished:
            time.sleep(poll)
    return results


def wave_dependencies(
    prefix_jobs: dict[tuple[str, ...], str], sequences: dict[str, tuple[str, ...]]
) -> dict[str, str]:
    """SLURM's ``--dependency`` of each path's wave-2 jobs: ``afterok:ID:ID...`` over the wave-1
    jobs (``prefix_jobs``: prefix -> job id) whose prefix the path's sequence starts with (its
    own sequence's job, and a shorter prefix's job such as the retrain baseline's)."""
    out = {}
    for name, seq in sequences.items():
        ids = [job for prefix, job in prefix_jobs.items() if tuple(seq[: len(prefix)]) == prefix]
        if not ids:
            raise ValueError(f"no wave-1 job trains a prefix of path {name} ({'-'.join(seq)})")
        out[name] = "afterok:" + ":".join(map(str, ids))
    return out


def submit_dependent_waves(
    executor,
    raw: dict,
    root: str,
    prefixes: Sequence[tuple[str, ...]],
    sequences: dict[str, tuple[str, ...]],
    methods: Sequence[str],
    threads: int,
) -> tuple[dict[tuple[str, ...], Any], list[Any]]:
    """Submit wave 1, then at once every (path, method) job with its path's ``afterok``
    dependency (submitit's ``slurm_dependency``: sbatch's ``--dependency``; the user's other
    parameters, ``slurm_additional_parameters`` included, stay as they are). Returns
    ({prefix: wave-1 job}, wave-2 jobs in (path, method) order)."""
    wave1 = {p: executor.submit(prefix_job, raw, root, list(p), threads) for p in prefixes}
    needs = wave_dependencies({p: job.job_id for p, job in wave1.items()}, sequences)
    wave2 = []
    for name, seq in sequences.items():
        executor.update_parameters(slurm_dependency=needs[name])
        for method in methods:
            wave2.append(executor.submit(unlearn_job, raw, root, name, list(seq), method, threads))
    return wave1, wave2


def run_dependent_waves(
    executor, raw, root, prefixes, sequences, methods, threads
) -> tuple[dict[tuple[str, ...], dict], list[dict]]:
    """Both waves queued at once (:func:`submit_dependent_waves`), then their results:
    ({prefix: wave-1 result}, wave-2 statuses in (path, method) order). A wave-1 job that fails
    cancels wave 2 (its dependants could never start) and raises. A prefix that turned
    non-finite is a wave-1 job that succeeded (its result says so): the path's wave-2 jobs resume
    it from its last step checkpoint, meet the same non-finite step and report it."""
    wave1, wave2 = submit_dependent_waves(
        executor, raw, root, prefixes, sequences, methods, threads
    )
    try:
        trained = {p: _result(job, prefix_job) for p, job in wave1.items()}
    except RuntimeError:
        for job in wave2:
            job.cancel(check=False)
        raise
    return trained, [_result(job, unlearn_job) for job in wave2]


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
    :class:`llm.protocol.ProtocolResult`. ``workers`` bounds the local executor's jobs in
    flight; SLURM gets every job at once (its own limits and the dependencies apply)."""
    import torch

    from llm.config import path_sequences, retrain_sequence
    from llm.loop import NonFiniteError
    from llm.models import transformers_progress
    from llm.protocol import (
        ProtocolResult,
        evaluate_retrain,
        failed_path_statuses,
        finish_protocol,
        retrain_status,
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
        methods = [m.name for m in cfg.unlearn.methods]
        if jobs == "slurm":  # SLURM keeps the order (afterok) and the queue: no waiting here
            trained, statuses = run_dependent_waves(
                executor, raw, root, prefixes, sequences, methods, threads
            )
        else:
            calls = [(raw, root, list(p), threads) for p in prefixes]
            results = run_wave(executor, prefix_job, calls, workers)
            trained = dict(zip(prefixes, results, strict=True))
            statuses, calls = [], []
            for name, seq in sequences.items():
                if "error" in trained[seq]:
                    message = f"training {'-'.join(seq)}: {trained[seq]['error']}"
                    statuses += failed_path_statuses(ws, name, message)
                else:
                    calls += [(raw, root, name, list(seq), m, threads) for m in methods]
            statuses += run_wave(executor, unlearn_job, calls, workers)
        if "error" in trained[retrain]:
            message = f"training {'-'.join(retrain)}: {trained[retrain]['error']}"
            statuses.append(retrain_status(message))
        else:
            try:
                evaluate_retrain(ws, ws.suite, Path(trained[retrain]["model"]))
            except NonFiniteError as err:
                statuses.append(retrain_status(str(err)))
        finish_protocol(ws, sequences, retrain)
        done = [tuple(p) for r in trained.values() for p in r.get("trained", [])]
        return ProtocolResult(ws.layout.root, sequences, list(dict.fromkeys(done)), statuses)
