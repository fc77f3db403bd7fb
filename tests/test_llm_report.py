"""Reports come from metrics files alone; Table 1 cells equal their definitions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from llm import report as R


def write_run(out: Path, path: str, method: str, records: list[dict], status="done") -> None:
    folder = out / "runs" / path / method
    folder.mkdir(parents=True)
    lines = [json.dumps(r) for r in records]
    lines.insert(1, json.dumps({"step": 1, "loss": 0.5}))  # a training-only line is skipped
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "status.json").write_text(json.dumps({"status": status}))


def rec(step, label, phrases, tofu, math=None, rcu=None):
    r = {"step": step, "label": label, "phrases": phrases, "tofu": tofu}
    if math is not None:
        r["math_strict"], r["math_flexible"] = math
    if rcu is not None:
        r["rcu_R"], r["rcu_C"], r["rcu_U"] = rcu
    return r


@pytest.fixture
def folder(tmp_path):
    write_run(
        tmp_path,
        "p1",
        "ga",
        [
            rec(0, -1.0, -2.0, -0.5, (0.6, 0.8), (-1, -2, -3)),
            rec(2, -3.0, -4.5, -0.9, None, (-1, -3, -5)),
            rec(4, -6.0, -7.0, -1.5, (0.2, 0.5), (-1, -4, -9)),
        ],
    )
    write_run(
        tmp_path,
        "p4",
        "ga",
        [rec(0, -1.0, -2.0, -0.5, (0.6, 0.8)), rec(4, -1.5, -2.5, -0.25, (0.6, 0.6))],
        status="non-finite",
    )
    (tmp_path / "re_distance.json").write_text(
        json.dumps(
            {"ga": {"steps": [0, 4], "to_retrain": {"p1": [0.1, 2.0], "p4": [0.2, 0.3]},
                    "between": {"p1|p4": [0.05, 3.0]}}}
        )
    )  # fmt: skip
    return tmp_path


def test_table1_cells_equal_their_definitions(folder):
    rows = {(r["path"], r["method"]): r for r in R.table1(folder)}
    p1, p4 = rows["p1", "ga"], rows["p4", "ga"]
    assert p1["forget_score"] == pytest.approx(-2.0 - -7.0)
    assert p1["tofu_utility"] == pytest.approx(1 - abs(-1.5 - -0.5))
    assert p1["math_utility_strict"] == pytest.approx(0.2 - 0.6)
    assert p1["math_utility_flexible"] == pytest.approx(0.5 - 0.8)
    assert p1["steps"] == 4 and p1["status"] == "done"
    # a non-finite run's last numbers are no result: its row carries the status, no scores
    assert p4["status"] == "non-finite" and "forget_score" not in p4 and "tofu_utility" not in p4


def test_write_report_files(folder):
    written = R.write_report(folder)
    for name in ("table1.md", "table1.csv", "fig1_label_logprob.png", "fig3_tofu_utility.png"):
        assert written[name].stat().st_size > 0
    assert "fig4_rcu.png" in written and "fig_re_distance.png" in written
    md = written["table1.md"].read_text()
    assert "| p1 | 5.000 |" in md and "| p4 | – (non-finite) |" in md
    assert "| ga | p1 vs retrain | 2 |" in md and "| ga | p1 vs p4 | – (non-finite) |" in md
    rows = list(csv.DictReader(written["table1.csv"].read_text().splitlines()))
    assert {r["path"] for r in rows} == {"p1", "p4"}
    assert float(rows[0]["forget_score"]) == pytest.approx(5.0)
    assert rows[1]["status"] == "non-finite" and rows[1]["forget_score"] == ""


def test_report_of_a_folder_without_runs_is_an_error(tmp_path):
    with pytest.raises(R.ReportError, match="no unlearning runs"):
        R.write_report(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written
    (tmp_path / "runs" / "p1" / "ga").mkdir(parents=True)
    rows = R.table1(tmp_path)  # a run with no metrics yet: listed as running, no scores
    assert rows == [{"path": "p1", "method": "ga", "status": "running"}]
    for status in ("collapsed", "non-finite"):  # a failed run's numbers are not shown
        write_run(tmp_path / status, "p1", "ga", [rec(0, -1, -1, -1), rec(2, -5, -5, -5)], status)
        assert "forget_score" not in R.table1(tmp_path / status)[0]
        assert f"| p1 | – ({status}) |" in R.table1_markdown(R.table1(tmp_path / status))


def test_missing_step_zero_is_an_error(tmp_path):
    write_run(tmp_path, "p1", "ga", [rec(2, -1, -1, -1)])
    with pytest.raises(R.ReportError, match="step-0"):
        R.table1(tmp_path)
