"""Sweeps (a tiny grid against direct runs) and the command line."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys

import pytest

import sim  # noqa: F401
from sim.cli import main
from sim.paths import PathsConfig, StageDataConfig, run_paths
from sim.sweeps import SweepConfig, run_sweep, summary_row
from sim.unlearning import UnlearnConfig

BASE = PathsConfig(
    data=StageDataConfig(d=8, n_stages=3, n_per_stage=10, k=3, m=10),
    unlearn=UnlearnConfig(steps=6, learning_rate=0.02),
)


@pytest.mark.parametrize(
    "parameter,values",
    [
        ("overlap", (0.0, 1.0)),
        ("mu", (0.5, 4.0)),
        ("n_stages", (2, 3)),
        ("k_over_d", (0.25, 0.5)),
        ("unlearn_lr", (0.01, 0.03)),
        ("unlearn_steps", (2, 5)),
    ],
)
def test_sweep_rows_equal_direct_runs(parameter, values):
    rows = run_sweep(SweepConfig(parameter=parameter, values=values, base=BASE), progress=False)
    assert [r["value"] for r in rows] == list(values)
    # Recompute one grid point by hand, without the sweep machinery.
    v = values[1]
    if parameter == "overlap":
        cfg = dataclasses.replace(BASE, data=dataclasses.replace(BASE.data, overlap=v))
    elif parameter == "mu":
        cfg = dataclasses.replace(BASE, mu=v)
    elif parameter == "n_stages":
        cfg = dataclasses.replace(BASE, data=dataclasses.replace(BASE.data, n_stages=v))
    elif parameter == "k_over_d":
        cfg = dataclasses.replace(BASE, data=dataclasses.replace(BASE.data, k=round(v * 8)))
    elif parameter == "unlearn_lr":
        cfg = dataclasses.replace(BASE, unlearn=dataclasses.replace(BASE.unlearn, learning_rate=v))
    else:
        cfg = dataclasses.replace(BASE, unlearn=dataclasses.replace(BASE.unlearn, steps=v))
    assert rows[1] == summary_row(parameter, v, run_paths(cfg).summary())
    assert rows[0] != rows[1]


def test_sweep_rejects_bad_parameter():
    with pytest.raises(ValueError, match="parameter"):
        SweepConfig(parameter="nope", values=(1.0,), base=BASE)
    with pytest.raises(ValueError, match="overlap"):
        SweepConfig(parameter="overlap", values=(2.0,), base=BASE)


def _run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "sim", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "args",
    [
        ["paths", "--model", "nope"],
        ["paths", "--overlap", "2"],
        ["sweep", "--parameter", "mu"],
        ["sweep", "--parameter", "mu", "--values", "a,b"],
        ["theorem", "--n-instances", "0"],
        ["bench", "--numpy-direct-subset", "0"],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, capsys):
    with pytest.raises(SystemExit) as exc:
        code = main(args)
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err and len(err.splitlines()) == 1


def test_cli_commands_write_their_outputs(tmp_path):
    small = [
        "--d",
        "8",
        "--n-stages",
        "3",
        "--n-per-stage",
        "10",
        "--k",
        "3",
        "--m",
        "10",
        "--unlearn-steps",
        "5",
        "--no-progress",
    ]
    assert main(["paths", *small, "--out", str(tmp_path / "p")]) == 0
    assert (
        main(
            [
                "sweep",
                "--parameter",
                "overlap",
                "--values",
                "0,1",
                *small,
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    for f in (
        "p/steps.csv",
        "p/summary.json",
        "p/config.json",
        "p/paths.png",
        "s/sweep.csv",
        "s/sweep.png",
        "s/config.json",
    ):
        assert (tmp_path / f).stat().st_size > 0, f
    with open(tmp_path / "s/sweep.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    cfg = json.loads((tmp_path / "p/config.json").read_text())
    assert cfg["config"]["data"]["d"] == 8 and len(cfg["config_hash"]) == 16


def test_cli_theorem_subprocess_and_bench(tmp_path, capsys):
    r = _run_cli(
        "theorem",
        "--n-instances",
        "40",
        "--n-steps",
        "30",
        "--chunk-size",
        "10",
        "--no-progress",
        "--out",
        str(tmp_path / "t"),
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "t/summary.json").read_text())
    assert summary["fraction_bound_holds"] == 1.0
    assert (tmp_path / "t/theorem.png").exists() and (tmp_path / "t/instances.csv").exists()
    bench_args = "bench --n-instances 20 --chunk-size 10 --d 10 --k 3 --m 6 --n-stage 5"
    bench_args += " --n-steps 20 --numpy-direct-subset 3 --numpy-spectral-subset 5 --no-progress"
    capsys.readouterr()
    assert main(bench_args.split()) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"speedup_vs_numpy", "jax_seconds"} <= set(last)


def test_sweep_over_seeds_reports_medians():
    cfg = SweepConfig(parameter="mu", values=(1.0,), base=BASE, n_seeds=3)
    (row,) = run_sweep(cfg, progress=False)
    direct = [
        summary_row("mu", 1.0, run_paths(dataclasses.replace(BASE, mu=1.0, seed=s)).summary())
        for s in range(3)
    ]
    assert row["n_seeds"] == 3
    for key in ("pairwise_re_final_max", "re_to_retrain_final_min", "forget_drop_min"):
        assert row[key] == pytest.approx(sorted(r[key] for r in direct)[1])
    flags = [r["recency_slowest_is_last"] for r in direct]
    assert row["recency_slowest_is_last"] == pytest.approx(sum(flags) / 3)
