"""Nothing lost, nothing mixed, nothing executed: the output lock, the shared stage cache, a full
disk, the non-finite guard, collapsed runs, and checkpoints that are never unpickled."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from llm import config as C
from llm import protocol as P
from pathdep.configs import to_toml
from pathdep.lock import hold

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "name": "robust",
    "finetune": {"lora_rank": 4, "lora_alpha": 8, "max_length": 128, "checkpoint_every": 1},
    "data": {"sizes": {"inst": 4, "tofu_authors": 1, "math": 2, "unlearn": 4, "math_test": 1}},
    "stages": [{"name": s, "epochs": 1, "lr": 1e-2, "batch_size": 4} for s in ("inst", "unlearn")],
    "paths": {"order": ["inst", "unlearn"], "forget_stage": "unlearn", "positions": [1, 2]},
    "unlearn": {"epochs": 2, "lr": 1e-2, "batch_size": 2, "methods": [{"name": "ga"}]},
    "eval": {"n_forget_prompts": 2, "n_tofu": 2, "n_math": 1, "math_samples": 1,
             "max_new_tokens": 4, "n_re": 2},
}  # fmt: skip


def tiny(model_dir: Path, **changes) -> C.RunConfig:
    raw = json.loads(json.dumps(TINY))
    raw["model"] = {"path": str(model_dir), "device": "cpu"}
    for key, value in changes.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return C.config_from_dict(raw)


def _metrics(folder: Path) -> dict[str, list[dict]]:
    """Every run's metrics lines without wall-clock fields (equal across equal runs)."""
    out = {}
    for f in sorted((folder / "runs").glob("*/*/metrics.jsonl")):
        lines = [json.loads(x) for x in f.read_text().splitlines()]
        out[str(f.relative_to(folder))] = [
            {k: v for k, v in r.items() if k != "time"} for r in lines
        ]
    return out


# ------------------------------------------------------------------------------------------
# The output lock


def test_a_second_holder_is_refused_at_once_naming_the_first(tmp_path):
    with hold(tmp_path) as me:
        started = time.perf_counter()
        code = (
            "import sys; from pathdep.lock import hold, LockedError\n"
            "try:\n    hold(sys.argv[1]).__enter__()\nexcept LockedError as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True
        )
        assert proc.returncode == 3 and time.perf_counter() - started < 30
        assert f"pid {me['pid']}" in proc.stdout and "in use by" in proc.stdout
    with hold(tmp_path):  # released: free again
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    code = (
        "import os, signal, sys\nfrom pathdep.lock import hold\n"
        "hold(sys.argv[1]).__enter__()\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)])
    assert proc.returncode == -signal.SIGKILL
    dead = json.loads((tmp_path / ".lock").read_text())["pid"]
    with hold(tmp_path) as me:
        assert me["taken_over_from"]["pid"] == dead and me["pid"] == os.getpid()


def test_two_protocols_into_one_folder(tiny_models_dir, tmp_path, capsys):
    """While one run works in a folder, a second is refused at once with one line; the first
    one's files equal those of a run that was alone."""
    from llm.cli import main

    cfg = tiny(tiny_models_dir / "llama", **{"unlearn.epochs": 10.0})
    out = tmp_path / "shared"
    (tmp_path / "cfg.toml").write_text(to_toml(cfg))
    argv = ["protocol", "--config", str(tmp_path / "cfg.toml"), "--out", str(out)]
    first = subprocess.Popen(
        [sys.executable, "-m", "llm", *argv, "--no-progress", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (out / "runs").is_dir():  # the first run is unlearning: well inside its lock
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.05)
    assert main([*argv, "--no-progress"]) == 2
    assert first.poll() is None  # refused while the first was still running
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"in use by pid {first.pid}" in lines[0]
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    alone = tmp_path / "alone"
    P.run_protocol(cfg, alone, progress=False)
    assert _metrics(out) == _metrics(alone)
    for f in ("re_distance.json", "report/table1.csv"):
        assert (out / f).read_text() == (alone / f).read_text()


def test_runs_sharing_a_stage_cache_train_each_prefix_once(tiny_models_dir, tmp_path):
    cfg = tiny(tiny_models_dir / "llama", cache_dir=str(tmp_path / "cache"))
    (tmp_path / "cfg.toml").write_text(to_toml(cfg))
    code = textwrap.dedent(
        """
        import json, sys, torch
        torch.set_num_threads(1)
        from llm.config import load_config
        from llm.stage_cache import ensure_prefix
        from llm.workspace import protocol_session
        cfg = load_config(sys.argv[1])
        with protocol_session(cfg, sys.argv[2], progress=False) as ws:
            for seq in (("inst", "unlearn"), ("unlearn", "inst"), ("inst",)):
                ensure_prefix(ws, seq)
            print(json.dumps([list(p) for p in ws.trained]))
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / "cfg.toml"), str(tmp_path / f"run{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    trained = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        trained += [tuple(p) for p in json.loads(stdout)]
    expected = {("inst",), ("inst", "unlearn"), ("unlearn",), ("unlearn", "inst")}
    assert sorted(trained) == sorted(expected)  # every prefix once, by one of the two runs
    assert len(list((tmp_path / "cache").glob("*/stage.json"))) == 4


# ------------------------------------------------------------------------------------------
# A full disk


def test_full_disk_fails_with_one_line_and_a_rerun_equals_an_uninterrupted_run(
    tiny_models_dir, tmp_path, monkeypatch, capsys
):
    from llm import distances
    from llm.cli import main

    cfg = tiny(tiny_models_dir / "llama")
    (tmp_path / "cfg.toml").write_text(to_toml(cfg))
    argv = ["protocol", "--config", str(tmp_path / "cfg.toml"), "--out", str(tmp_path / "run")]
    argv += ["--no-progress"]
    real = distances.atomic_path
    target = tmp_path / "run" / "runs" / "p2" / "ga" / "pred" / "step_00002.npy"

    def filling_up(path, suffix=""):  # the disk fills up in the middle of an unlearning run
        if Path(path) == target:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, suffix)

    monkeypatch.setattr(distances, "atomic_path", filling_up)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and str(tmp_path) in err[0]
    assert (tmp_path / "run" / "runs" / "p2" / "ga" / "ckpt").is_dir()  # resumable, not done
    monkeypatch.setattr(distances, "atomic_path", real)
    assert main(argv) == 0  # the space is back: resume
    P.run_protocol(cfg, tmp_path / "alone", progress=False)
    assert _metrics(tmp_path / "run") == _metrics(tmp_path / "alone")
    for f in ("re_distance.json", "report/table1.csv"):
        assert (tmp_path / "run" / f).read_text() == (tmp_path / "alone" / f).read_text()


# ------------------------------------------------------------------------------------------
# The non-finite guard, collapse


def test_an_optimizer_overflow_is_a_non_finite_run_with_a_report(tiny_models_dir, tmp_path):
    """lr 1e38: AdamW's step size overflows (a RuntimeError inside torch); the run is marked
    non-finite, its measured steps are kept, the report is written and shows no score."""
    cfg = tiny(tiny_models_dir / "llama", **{"unlearn.lr": 1e38, "unlearn.optimizer": "adamw"})
    result = P.run_protocol(cfg, tmp_path, progress=False)
    assert {s["status"] for s in result.statuses} == {"non-finite"}
    for path in ("p1", "p2"):
        status = json.loads((tmp_path / "runs" / path / "ga" / "status.json").read_text())
        assert "step 1" in status["message"]
        lines = (tmp_path / "runs" / path / "ga" / "metrics.jsonl").read_text().splitlines()
        assert json.loads(lines[0])["step"] == 0  # the evaluation before unlearning is kept
    table = (tmp_path / "report" / "table1.md").read_text()
    assert "| p1 | – (non-finite) |" in table


def test_a_stage_that_diverges_fails_its_paths_and_the_report_is_still_written(
    tiny_models_dir, tmp_path
):
    stages = [{"name": "inst", "epochs": 1, "lr": 1e38, "batch_size": 4},
              {"name": "unlearn", "epochs": 1, "lr": 1e-2, "batch_size": 4}]  # fmt: skip
    raw = {**json.loads(json.dumps(TINY)), "stages": stages}
    raw["model"] = {"path": str(tiny_models_dir / "llama"), "device": "cpu"}
    raw["finetune"]["optimizer"] = "sgd"
    result = P.run_protocol(C.config_from_dict(raw), tmp_path, progress=False)
    assert all(s["status"] == "non-finite" for s in result.statuses)
    assert any("training" in s.get("message", "") for s in result.statuses)
    assert (tmp_path / "report" / "table1.md").is_file()


def test_collapse_is_recognised():
    def steps(*norms):
        return [{"step": i, "grad_norm": g} for i, g in enumerate(norms, start=1)]

    records = steps(0.5, 0.2, 0.0, 0.0)
    assert "zero gradient from step 3 to the end (step 4)" in P.collapse_reason(records, {}, 100)
    assert P.collapse_reason(records[:3], {}, 100) is None  # one zero step is not a collapse
    assert "from step 2" in P.collapse_reason(steps(0.5, 0.0), {}, 100)  # a two-step run
    # zero from the first step: a saturated objective never moved the model (inert, not broken)
    assert P.collapse_reason(steps(0.0, 0.0, 0.0), {}, 100) is None
    uniform = -math.log(100)
    assert "uniform output" in P.collapse_reason(
        records[:2], {"label": uniform, "tofu": uniform + 1e-4}, 100
    )
    assert P.collapse_reason(records[:2], {"label": uniform, "tofu": -2.0}, 100) is None
    # NPO met its objective: the loss vanished with the gradient (saturation, not collapse) ...
    npo = [{**r, "loss": v} for r, v in zip(records, (2.77, 1e-6, 1e-9, 1e-12), strict=True)]
    assert P.collapse_reason(npo, {}, 100) is None
    # ... but a gradient that vanishes while the loss stays is a collapse
    stuck = [{**r, "loss": v} for r, v in zip(records, (2.77, 1.0, 0.9, 0.9), strict=True)]
    assert "zero gradient from step 3" in P.collapse_reason(stuck, {}, 100)


# ------------------------------------------------------------------------------------------
# Checkpoints: safetensors + JSON, never unpickled


def test_checkpoint_state_round_trips_exactly():
    from llm.checkpoint import flatten_state, unflatten_state

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.99))
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "extra": {"records": [{"loss": math.inf}]}, "step": 3}
    skeleton, tensors = flatten_state(state)
    back = unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert back["step"] == 3 and back["extra"]["records"][0]["loss"] == math.inf
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    for k, v in state["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(back["optimizer"]["state"][k][name], t)
    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    fresh.load_state_dict(back["optimizer"])  # loads into a real optimizer


def test_a_crafted_pickle_is_refused_not_run(tmp_path):
    from llm.checkpoint import CheckpointError, read_checkpoint

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"step": 1, "x": Evil()}, folder / "state.pt")
    (folder / "step.json").write_text('{"step": 1}')
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_checkpoint(folder)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------
# The main job's verdicts leave failed runs out


def test_a_failed_method_is_left_out_of_every_verdict_and_shown_as_a_dash():
    from study import verdicts as V
    from study.config import Thresholds
    from study.render import _dash_rows

    paths = ["p1", "p2"]
    rows = {p: {"label_drop": d, "tofu_loss": d, "re_first": 1.0, "re_last": 2.0 + d}
            for p, d in zip(paths, (2.0, 0.5), strict=True)}  # fmt: skip
    entry = {"paths": rows, "between_first": 1.0, "between_last": 3.0, "between_max_last": 4.0}
    seed = {
        "paths": paths,
        "methods": ["ga", "npo"],
        "before": {p: {"label": -2.0, "tofu": -1.0, "math_flexible": 0.0} for p in paths},
        "methods_data": {"ga": entry, "npo": entry},
        "failed": {"npo": {"p2": "non-finite: step 3"}},
    }
    f = V.findings([seed], Thresholds())
    assert f["failed_methods"] == {"npo": "p2: non-finite: step 3"}
    for finding in ("divergence", "recency", "retrain_distance"):
        assert set(f[finding]["methods"]) == {"ga"}, finding
    assert _dash_rows(f["failed_methods"], 2) == ["| npo | – | – |"]
