"""`python -m theory`: check output, bad inputs (status 2, one line, nothing written), demo."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import theory as T
from theory.cli import main

GOOD = T.random_instance(4, d=10, nA=4, nB=5, k=3, m=4, eta=0.1)


def write_npz(path: Path, **overrides) -> Path:
    fields = {
        name: getattr(GOOD, name) for name in T.instance.ARRAY_NAMES + T.instance.SCALAR_NAMES
    }
    fields.update(overrides)
    np.savez(path, **{k: v for k, v in fields.items() if v is not None})
    return path


def test_check_writes_the_documented_json(tmp_path):
    inst_path = write_npz(tmp_path / "inst.npz")
    out = tmp_path / "out" / "check.json"
    assert main(["check", "--instance", str(inst_path), "--steps", "50", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("delta0_norm", "proj_norm", "rho_star", "sigma_U", "C0", "t0", "t_star"):
        assert isinstance(result[key], float) and math.isfinite(result[key]), key
    assert len(result["log10_re_distance"]) == 51 and len(result["log10_bound"]) == 51
    # Same numbers as the library.
    delta0 = T.history_difference(GOOD.XA, GOOD.yA, GOOD.muA, GOOD.XB, GOOD.yB, GOOD.muB)
    q = T.theorem_3_1(delta0, GOOD.XU, GOOD.eta, GOOD.Xtest)
    assert result["rho_star"] == pytest.approx(float(q.rho_star), rel=1e-12)
    assert result["t_star"] == float(T.corollary_t_star(q, 1e-3))
    exact = T.log10_re_distance(delta0, GOOD.XU, GOOD.eta, GOOD.Xtest, np.arange(51))
    np.testing.assert_allclose(result["log10_re_distance"], exact, atol=1e-12)
    assert sorted(p.name for p in out.parent.iterdir()) == ["check.json"]  # no temp files left


def test_check_prints_to_stdout_with_epsilon(tmp_path, capsys):
    inst_path = write_npz(tmp_path / "inst.npz")
    assert main(["check", "--instance", str(inst_path), "--steps", "3", "--epsilon", "10"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epsilon"] == 10.0 and len(result["log10_bound"]) == 4


RANK_DEFICIENT = np.vstack([GOOD.XU[:2], GOOD.XU[0] + GOOD.XU[1]])
_NULL = np.linalg.svd(GOOD.XU)[2][3:]  # (d - k, d) basis of the complement of the forget span
BLIND_TEST = np.random.default_rng(0).normal(size=(4, 7)) @ _NULL  # sees nothing of the span
BAD_CASES = {
    "missing_array": (dict(yB=None), "missing array"),
    "shape_columns": (dict(XB=np.ones((5, 9))), "mismatched shapes"),
    "shape_rows": (dict(yA=np.ones(3)), "mismatched shapes"),
    "not_2d": (dict(Xtest=np.ones(10)), "must be 2-D"),
    "rank": (dict(XU=RANK_DEFICIENT), "full row rank"),
    "m_lt_k": (dict(Xtest=GOOD.Xtest[:2]), "m >= k"),
    "blind_test": (dict(Xtest=BLIND_TEST), "does not see the whole forget span"),
    "mu_zero": (dict(muA=np.float64(0.0)), "'muA' must be > 0"),
    "mu_negative": (dict(muB=np.float64(-1.0)), "'muB' must be > 0"),
    "eta_zero": (dict(eta=np.float64(0.0)), "'eta' must be > 0"),
    "nan": (dict(XA=np.where(np.eye(4, 10) > 0, np.nan, GOOD.XA)), "NaN or infinite"),
    "inf": (dict(yU=np.array([1.0, np.inf, 0.0])), "NaN or infinite"),
    "nan_scalar": (dict(eta=np.float64(np.nan)), "NaN or infinite"),
    "text_array": (dict(yA=np.array(["a", "b", "c", "d"])), "not numeric"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_instance_exits_2_with_one_line(case, tmp_path, capsys):
    overrides, message = BAD_CASES[case]
    inst_path = write_npz(tmp_path / "bad.npz", **overrides)
    out = tmp_path / "out.json"
    code = main(["check", "--instance", str(inst_path), "--steps", "5", "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz"]


@pytest.mark.parametrize("kind", ["missing", "garbage", "directory"])
def test_unreadable_file_exits_2(kind, tmp_path, capsys):
    path = tmp_path / "inst.npz"
    if kind == "garbage":
        path.write_bytes(b"this is not a zip file")
    elif kind == "directory":
        path.mkdir()
    out = tmp_path / "out.json"
    assert main(["check", "--instance", str(path), "--steps", "5", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("not found" in err[0] or "cannot read" in err[0])
    assert not out.exists()


def test_bad_arguments_exit_2(tmp_path, capsys):
    inst_path = write_npz(tmp_path / "inst.npz")
    for argv in (
        ["check", "--instance", str(inst_path), "--steps", "-1"],
        ["check", "--instance", str(inst_path), "--steps", "3", "--epsilon", "0"],
    ):
        assert main(argv) == 2
    with pytest.raises(SystemExit) as exc:  # argparse: missing --steps
        main(["check", "--instance", str(inst_path)])
    assert exc.value.code == 2


def test_module_entry_point_help_and_bad_input():
    run = subprocess.run(
        [sys.executable, "-m", "theory", "--help"], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0 and "check" in run.stdout and "demo" in run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "theory", "check", "--instance", "/nonexistent.npz", "--steps", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "python -m theory: error: instance file not found: /nonexistent.npz"
    ]


def test_demo_writes_all_outputs_and_is_reproducible(tmp_path):
    for name in ("a", "b"):
        assert main(["demo", "--out", str(tmp_path / name), "--seed", "3", "--steps", "200"]) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    # .lock: the folder's lock (empty once released; kept, so that no two runs race on it)
    assert files == [".lock", "bound_vs_exact.png", "check.json", "instance.npz", "report.md"]
    assert (tmp_path / "a" / ".lock").read_text() == ""
    assert (tmp_path / "a" / "check.json").read_bytes() == (
        tmp_path / "b" / "check.json"
    ).read_bytes()
    inst = T.load_instance(tmp_path / "a" / "instance.npz")
    assert inst.d == 40 and inst.k == 5
    assert "bound_vs_exact.png" in (tmp_path / "a" / "report.md").read_text()
    assert (tmp_path / "a" / "bound_vs_exact.png").read_bytes()[:4] == b"\x89PNG"


def test_save_load_roundtrip(tmp_path):
    T.save_instance(GOOD, tmp_path / "x.npz")
    back = T.load_instance(tmp_path / "x.npz")
    for name in T.instance.ARRAY_NAMES:
        np.testing.assert_array_equal(getattr(back, name), getattr(GOOD, name))
    assert (back.muA, back.muB, back.eta) == (GOOD.muA, GOOD.muB, GOOD.eta)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_lemma_c1_degenerate_instance_is_reported(tmp_path):
    """Orthogonal feature supports: the orders coincide, Delta theta_0 = 0, the theorem is void."""
    XA = np.zeros((4, 10))
    XA[:, :5] = GOOD.XA[:, :5]
    XB = np.zeros((5, 10))
    XB[:, 5:] = GOOD.XB[:, 5:]
    inst_path = write_npz(tmp_path / "deg.npz", XA=XA, XB=XB)
    out = tmp_path / "deg.json"
    assert main(["check", "--instance", str(inst_path), "--steps", "5", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["orders_commute"] is True and result["commutation_residual"] == 0.0
    assert result["delta0_norm"] == 0.0 and result["t0"] is None and result["t_star"] is None
    assert result["log10_re_distance"] == [None] * 6
