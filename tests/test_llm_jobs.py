"""The protocol as submitit jobs (llm.jobs) on the local executor: two workers write the files of
one sequential run bit for bit; re-submitting resumes what did not finish and reads back what
did; a missing submitit or a bad worker count is a one-line error before anything is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_llm_protocol import tiny_config

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
