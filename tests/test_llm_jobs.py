"""The protocol as submitit jobs (llm.jobs) on the local executor: two workers write the files of
one sequential run bit for bit; re-submitting resumes what did not finish and reads back what
did; a missing submitit or a bad worker count is a one-line error before anything is written.
On SLURM (no cluster here: submitit's executor with stand-in ``srun``/``sbatch``, or stand-in
executors) both waves are queued at once, wave 2 with ``afterok`` on its path's wave-1 jobs, and
wave-2 jobs whose prefixes are missing train them and still give the sequential run's files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from test_llm_protocol import TINY, tiny_config

from llm import jobs as J
from llm import protocol as P
from llm.jobs import JobsError, run_protocol_jobs

pytestmark = pytest.mark.usefixtures("one_thread")
submitit = pytest.importorskip("submitit")


def _files(out: Path) -> dict[str, object]:
    """Every result file of a protocol folder, without wall-clock fields."""
    found: dict[str, object] = {}
    for f in sorted(out.glob("runs/*/*/metrics.jsonl")):
        rows = [json.loads(x) for x in f.read_text().splitlines()]
        found[str(f.relative_to(out))] = [{k: v for k, v in r.items() if k != "time"} for r in rows]
    for f in sorted(out.glob("runs/*/*/status.json")):
        status = json.loads(f.read_text())
        status.pop("seconds", None)
        found[str(f.relative_to(out))] = status
    for name in ("re_distance.json", "runs/retrain/metrics.json", "paths.json", "eval_suite.json"):
        found[name] = json.loads((out / name).read_text())
    found["runs/retrain/metrics.json"].pop("model")  # the cache folder's absolute path
    found["table1.csv"] = (out / "report" / "table1.csv").read_text()
    found["cache"] = sorted(p.parent.name for p in out.glob("cache/*/stage.json"))
    return found


@pytest.fixture(scope="module")
def sequential(tiny_models_dir, tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("seq") / "run"
    P.run_protocol(tiny_config(tiny_models_dir / "llama"), out, progress=False)
    return out


def test_two_local_workers_equal_one_sequential_run(tiny_models_dir, tmp_path, sequential):
    cfg = tiny_config(tiny_models_dir / "llama")
    out = tmp_path / "jobs"
    result = run_protocol_jobs(cfg, out, "local", workers=2, threads=1, progress=False)
    assert len(result.trained_prefixes) == 8  # every prefix once, shared ones included
    assert all(s["status"] == "done" for s in result.statuses) and len(result.statuses) == 6
    assert _files(out) == _files(sequential)
    # one job per prefix (three paths + the retrain baseline) and per (path, method)
    assert len(list((out / "jobs").glob("*_submitted.pkl"))) == 4 + 6

    # A run that never finished (its status and metrics gone, as after a kill) is redone on
    # re-submission; the finished ones are read back, no prefix is trained again.
    run = out / "runs" / "p2" / "npo"
    (run / "status.json").unlink()
    (run / "metrics.jsonl").unlink()
    again = run_protocol_jobs(cfg, out, "local", workers=2, threads=1, progress=False)
    assert again.trained_prefixes == []
    assert _files(out) == _files(sequential)


def test_bad_requests_write_nothing(tiny_models_dir, tmp_path, monkeypatch, capsys):
    cfg = tiny_config(tiny_models_dir / "llama")
    out = tmp_path / "run"
    with pytest.raises(JobsError, match="--workers and --threads must be >= 1"):
        run_protocol_jobs(cfg, out, "local", workers=0, progress=False)
    with pytest.raises(JobsError, match="--jobs must be one of"):
        run_protocol_jobs(cfg, out, "pbs", progress=False)
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    with pytest.raises(JobsError, match="needs submitit, which is not installed"):
        run_protocol_jobs(cfg, out, "slurm", progress=False)
    # the command line: exit 2, one line
    from llm.cli import main

    argv = ["protocol", "--config", "llm/configs/tiny.toml", "--out", str(out), "--no-progress"]
    argv += ["--set", f"model.path={json.dumps(str(tiny_models_dir / 'llama'))}"]
    assert main([*argv, "--jobs", "slurm", "--slurm", "slurm_partition=gpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs submitit" in err[0]
    assert not out.exists()


# ------------------------------------------------------------------------------------------
# SLURM: both waves at once, afterok dependencies

SEQUENCES = {"p1": ("u", "i", "t"), "p2": ("i", "u", "t"), "p3": ("i", "t", "u")}
PREFIXES = [*SEQUENCES.values(), ("i", "t")]  # the retrain baseline's is a prefix of p3's
METHODS = ["ga", "npo"]
AFTEROK = {"p1": "afterok:101", "p2": "afterok:102", "p3": "afterok:103:104"}


def test_wave_dependencies():
    ids = {p: str(101 + i) for i, p in enumerate(PREFIXES)}
    assert J.wave_dependencies(ids, SEQUENCES) == AFTEROK
    assert J.wave_dependencies({("i",): "7", ("i", "t"): "8", ("t",): "9"}, {"p": ("i", "t")}) == {
        "p": "afterok:7:8"
    }
    with pytest.raises(ValueError, match="no wave-1 job trains a prefix of path p1"):
        J.wave_dependencies({("i",): "7"}, {"p1": ("u", "i")})


def test_slurm_executor_writes_afterok_into_sbatch(tmp_path, monkeypatch):
    """submitit's own SLURM executor (stand-in srun; sbatch numbers the jobs from 101): wave 2
    is submitted with wave 1, each job's sbatch file carries its path's dependency, the user's
    parameters stay, and each job runs unlearn_job on its path's prefix."""
    from submitit.core.utils import DelayedSubmission

    bin_dir, counter = tmp_path / "bin", tmp_path / "last_id"
    bin_dir.mkdir()
    counter.write_text("100")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f"#!/bin/sh\nn=$(( $(cat {counter}) + 1 ))\necho $n > {counter}\n"
        'echo "Submitted batch job $n"\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    executor = J.make_executor("slurm", tmp_path / "jobs", {"slurm_partition": "gpu"})
    wave1, wave2 = J.submit_dependent_waves(
        executor, {"raw": 1}, "/out", PREFIXES, SEQUENCES, METHODS, 3
    )

    def flags(job) -> list[str]:
        text = Path(job.paths.submission_file).read_text()
        return [x for x in text.splitlines() if x.startswith("#SBATCH")]

    assert [wave1[p].job_id for p in PREFIXES] == ["101", "102", "103", "104"]
    for prefix, job in wave1.items():
        assert "#SBATCH --partition=gpu" in flags(job)
        assert not any("dependency" in x for x in flags(job)), prefix
    assert [job.job_id for job in wave2] == [str(i) for i in range(105, 111)]
    runs = [(name, method) for name in SEQUENCES for method in METHODS]
    for job, (name, method) in zip(wave2, runs, strict=True):
        assert "#SBATCH --partition=gpu" in flags(job)
        assert [x for x in flags(job) if "dependency" in x] == [
            f"#SBATCH --dependency={AFTEROK[name]}"
        ]
        call = DelayedSubmission.load(job.paths.submitted_pickle)  # pickled by this test
        assert call.function is J.unlearn_job
        assert call.args == ({"raw": 1}, "/out", name, list(SEQUENCES[name]), method, 3)


class _Recorder:
    """A stand-in SLURM executor recording update_parameters, submit, result and cancel in
    order; its jobs return canned results, or raise for the ids in ``fail``."""

    def __init__(self, fail=()):
        self.events: list[tuple] = []
        self.params: dict = {}
        self.fail = set(fail)

    def update_parameters(self, **kwargs):
        self.params.update(kwargs)

    def submit(self, fn, *args):
        job = _RecordedJob(self, str(101 + sum(e[0] == "submit" for e in self.events)), fn, args)
        self.events.append(("submit", job.job_id, fn.__name__, self.params.get("slurm_dependency")))
        return job


class _RecordedJob:
    def __init__(self, executor, job_id, fn, args):
        self.executor, self.job_id, self.fn, self.args = executor, job_id, fn, args

    def result(self):
        self.executor.events.append(("result", self.job_id))
        if self.job_id in self.executor.fail:
            raise RuntimeError("boom\n(the job's traceback)")
        if self.fn is J.prefix_job:
            return {"model": "/m/" + "-".join(self.args[2]), "trained": [self.args[2]]}
        return {"path": self.args[2], "method": self.args[4], "status": "done"}

    def cancel(self, check=True):
        self.executor.events.append(("cancel", self.job_id))


def test_slurm_waves_are_submitted_before_any_result():
    executor = _Recorder()
    trained, statuses = J.run_dependent_waves(executor, {}, "/out", PREFIXES, SEQUENCES, METHODS, 1)
    submits = [e for e in executor.events if e[0] == "submit"]
    assert executor.events[: len(submits)] == submits  # every job queued before any result
    assert [e[2:] for e in submits[:4]] == [("prefix_job", None)] * 4
    assert [e[2:] for e in submits[4:]] == [
        ("unlearn_job", AFTEROK[name]) for name in SEQUENCES for _ in METHODS
    ]
    assert trained[("i", "t")] == {"model": "/m/i-t", "trained": [["i", "t"]]}
    assert [(s["path"], s["method"]) for s in statuses] == [
        (n, m) for n in SEQUENCES for m in METHODS
    ]
    # A wave-1 job that fails: its dependants could never start, so wave 2 is cancelled.
    executor = _Recorder(fail={"102"})
    with pytest.raises(RuntimeError, match=r"job 102 \(prefix_job\) failed: boom"):
        J.run_dependent_waves(executor, {}, "/out", PREFIXES, SEQUENCES, METHODS, 1)
    assert [e[1] for e in executor.events if e[0] == "cancel"] == [str(i) for i in range(105, 111)]
    assert ("result", "105") not in executor.events


class _Inline:
    """A stand-in SLURM executor that runs every job in this process at the first result, in
    submission order or wave 2 first (``reverse``: as if wave 1 had been lost, each unlearning
    job finds its prefix missing)."""

    def __init__(self, reverse: bool):
        self.jobs: list[_InlineJob] = []
        self.ran, self.reverse = False, reverse

    def update_parameters(self, **kwargs):
        pass

    def submit(self, fn, *args):
        self.jobs.append(_InlineJob(self, str(len(self.jobs) + 1), fn, args))
        return self.jobs[-1]


class _InlineJob:
    def __init__(self, executor, job_id, fn, args):
        self.executor, self.job_id, self.fn, self.args = executor, job_id, fn, args

    def result(self):
        if not self.executor.ran:
            self.executor.ran = True
            jobs = self.executor.jobs
            for job in reversed(jobs) if self.executor.reverse else jobs:
                job.value = job.fn(*job.args)
        return self.value


def test_slurm_jobs_without_their_prefixes_still_give_the_sequential_files(
    tiny_models_dir, tmp_path, sequential, monkeypatch
):
    cfg = tiny_config(tiny_models_dir / "llama")
    out = tmp_path / "slurm"
    executor = _Inline(reverse=True)
    monkeypatch.setattr(J, "make_executor", lambda *args: executor)
    result = run_protocol_jobs(cfg, out, "slurm", workers=1, threads=1, progress=False)
    assert [j.fn for j in executor.jobs] == [J.prefix_job] * 4 + [J.unlearn_job] * 6
    assert result.trained_prefixes == []  # the unlearning jobs had trained every prefix
    assert all(s["status"] == "done" for s in result.statuses) and len(result.statuses) == 6
    assert _files(out) == _files(sequential)


def test_slurm_unlearning_jobs_report_a_prefix_that_diverged(
    tiny_models_dir, tmp_path, monkeypatch
):
    """A wave-1 job whose stage turns non-finite still succeeds (afterok holds): its path's
    unlearning jobs resume the prefix, meet the same step and write the statuses of a
    sequential run."""
    import torch

    raw = json.loads(json.dumps(TINY))
    raw["stages"][0] |= {"lr": 1e38}  # inst: diverges in every path
    raw["finetune"]["optimizer"] = "sgd"
    assert raw["stages"][0]["name"] == "inst"
    cfg = tiny_config(tiny_models_dir / "llama", stages=raw["stages"], finetune=raw["finetune"])
    torch.set_num_threads(1)
    sequential = P.run_protocol(cfg, tmp_path / "seq", progress=False)
    monkeypatch.setattr(J, "make_executor", lambda *args: _Inline(reverse=False))
    result = run_protocol_jobs(cfg, tmp_path / "slurm", "slurm", threads=1, progress=False)

    def key(status: dict) -> str:
        return json.dumps(status, sort_keys=True)

    # every (path, method), and the retrain baseline, non-finite while training a prefix
    assert len(result.statuses) == 7 and {s["status"] for s in result.statuses} == {"non-finite"}
    assert all(s["message"].startswith("training ") for s in result.statuses)
    assert sorted(map(key, result.statuses)) == sorted(map(key, sequential.statuses))
    for f in (tmp_path / "seq").glob("runs/*/*/status.json"):
        mirror = tmp_path / "slurm" / f.relative_to(tmp_path / "seq")
        assert json.loads(mirror.read_text()) == json.loads(f.read_text()), f
