"""Sweeps (a tiny grid against direct runs) and the command line."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys

import pytest

import sim  # noqa: F401
from pathdep.configs import load_toml
from sim.bench import BenchConfig
from sim.cli import main
from sim.paths import PathsConfig, StageDataConfig, run_paths
from sim.sweeps import SweepConfig, run_sweep, summary_row
from sim.theorem import TheoremConfig
from sim.unlearning import UnlearnConfig

BASE = PathsConfig(
    data=StageDataConfig(d=8, n_stages=3, n_per_stage=10, k=3, m=10),
    unlearn=UnlearnConfig(steps=6, lr=0.02),
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
        cfg = dataclasses.replace(BASE, unlearn=dataclasses.replace(BASE.unlearn, lr=v))
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
        ["paths", "--method", "npo"],
        ["paths", "--objective", "ga_retain"],
        ["paths", "--beta", "0"],
        ["paths", "--retain-weight", "-1"],
        ["paths", "--unlearn-lr", "inf"],
        ["paths", "--model", "mlp", "--trainer", "proximal"],
        ["paths", "--config", "/nonexistent/config.toml"],
        ["sweep", "--parameter", "mu"],
        ["sweep", "--parameter", "mu", "--values", "0"],
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
    assert cfg["config"]["data"]["d"] == 8 and len(cfg["hash"]) == 16
    assert cfg["type"] == "PathsConfig" and "config_hash" not in cfg
    paths_cfg = load_toml(PathsConfig, tmp_path / "p/config.toml")
    assert paths_cfg.data.d == 8 and paths_cfg.unlearn.steps == 5
    sweep_cfg = load_toml(SweepConfig, tmp_path / "s/config.toml")
    assert sweep_cfg.values == (0.0, 1.0) and sweep_cfg.base.data == paths_cfg.data


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
    assert load_toml(TheoremConfig, tmp_path / "t/config.toml") == TheoremConfig(
        n_instances=40, n_steps=30, chunk_size=10
    )
    bench_args = "bench --n-instances 20 --chunk-size 10 --d 10 --k 3 --m 6 --n-stage 5"
    bench_args += " --n-steps 20 --numpy-direct-subset 3 --numpy-spectral-subset 5 --no-progress"
    bench_args += f" --workers 1 --out {tmp_path / 'b'}"
    capsys.readouterr()
    assert main(bench_args.split()) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"speedup_vs_numpy", "jax_seconds"} <= set(last)
    bench_cfg = load_toml(BenchConfig, tmp_path / "b/config.toml")
    assert (bench_cfg.shape.d, bench_cfg.shape.n_a, bench_cfg.shape.n_b) == (10, 5, 5)
    assert bench_cfg.workers == 1 and bench_cfg.numpy_direct_subset == 3
    assert json.loads((tmp_path / "b/bench.json").read_text())["n_instances"] == 20


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


SMALL = "--d 8 --n-stages 3 --n-per-stage 10 --k 4 --m 10 --no-progress".split()


def test_paths_config_file_repeats_a_run_exactly(tmp_path):
    """paths ... --out A, then paths --config A/config.toml --out B: the same files."""
    a, b = tmp_path / "A", tmp_path / "B"
    flags = "--objective npo --beta 0.8 --retain-weight 0.5 --unlearn-steps 4 --unlearn-lr 0.03"
    flags += " --tokens-per-sequence 2 --all-orders --seed 3"
    assert main(["paths", *SMALL, *flags.split(), "--out", str(a)]) == 0
    r = _run_cli("paths", "--no-progress", "--config", str(a / "config.toml"), "--out", str(b))
    assert r.returncode == 0, r.stderr
    for name in ("steps.csv", "summary.json", "config.toml", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    cfg = load_toml(PathsConfig, b / "config.toml")
    assert (cfg.unlearn.objective, cfg.unlearn.beta, cfg.unlearn.retain_weight) == ("npo", 0.8, 0.5)
    assert len(cfg.orders) == 6 and cfg.seed == 3 and cfg.data.k == 4
    summary = json.loads((b / "summary.json").read_text())
    assert summary["n_paths"] == 6 and summary["steps"] == 4


def test_options_override_the_config_file(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    assert main(["paths", *SMALL, "--unlearn-steps", "3", "--out", str(a)]) == 0
    args = ["--config", str(a / "config.toml"), "--objective", "simnpo", "--no-length-normalize"]
    assert main(["paths", *args, "--no-progress", "--out", str(b)]) == 0
    first, second = (load_toml(PathsConfig, f / "config.toml") for f in (a, b))
    assert second.unlearn.objective == "simnpo" and second.unlearn.length_normalize is False
    assert second == dataclasses.replace(
        first,
        unlearn=dataclasses.replace(first.unlearn, objective="simnpo", length_normalize=False),
    )
    # A new model kind brings its trainer unless --trainer says otherwise.
    c = tmp_path / "C"
    args = ["--config", str(a / "config.toml"), "--model", "mlp", "--width", "4", "--depth", "1"]
    args += ["--epochs", "5", "--out", str(c)]
    assert main(["paths", *args, "--no-progress"]) == 0
    third = load_toml(PathsConfig, c / "config.toml")
    assert (third.model.kind, third.trainer, third.optimizer.epochs) == ("mlp", "optimizer", 5)


def test_sweep_and_theorem_config_files_repeat(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    args = ["sweep", *SMALL, "--parameter", "mu", "--values", "0.5,2", "--unlearn-steps", "3"]
    assert main([*args, "--out", str(a)]) == 0
    assert (
        main(["sweep", "--config", str(a / "config.toml"), "--out", str(b), "--no-progress"]) == 0
    )
    for name in ("sweep.csv", "config.toml"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    t = tmp_path / "T"
    args = ["theorem", "--n-instances", "8", "--n-steps", "10", "--chunk-size", "4"]
    assert main([*args, "--no-progress", "--out", str(t)]) == 0
    u = tmp_path / "U"
    assert (
        main(["theorem", "--config", str(t / "config.toml"), "--no-progress", "--out", str(u)]) == 0
    )
    for name in ("instances.csv", "summary.json", "config.toml"):
        assert (t / name).read_bytes() == (u / name).read_bytes(), name


def test_bad_config_file_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[unlearn]\nmethod = 'npo'\n")
    assert main(["paths", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unlearn.method" in err
    bad.write_text("[unlearn]\nbeta = -1.0\n")
    assert main(["paths", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "beta" in err
    bad.write_text("n_instances = [\n")
    assert main(["theorem", "--config", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
