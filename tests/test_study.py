"""The main job (study) end to end in --quick mode on the tiny models: files, numbers, verdicts,
the saved config, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from study import verdicts as V
from study.cli import main as study_main
from study.config import StudyConfig, StudyError, Thresholds
from study.job import run_study
from study.render import forgetting_lines, render_report
from study.text import ci_text, fmt

TH = Thresholds()


@pytest.fixture(scope="module")
def quick_job(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("main-job") / "demo"
    cfg = StudyConfig(quick=True, models_dir=str(tiny_models_dir))
    metrics = run_study(cfg, out, progress=False)
    return out, metrics


@pytest.fixture(scope="module")
def two_seed_job(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("main-job-seeds") / "demo"
    cfg = StudyConfig(
        seeds=2, quick=True, archs=("llama",), models_dir=str(tiny_models_dir), rcu=False
    )
    return out, run_study(cfg, out, progress=False)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_report_files_exist(quick_job) -> None:
    out, _ = quick_job
    for name in (
        "report.md",
        "metrics.json",
        "fig_label_curves.png",
        "theory/check.json",
        "theory/bound_vs_exact.png",
    ):
        assert (out / name).is_file(), name
    for arch in ("llama", "qwen2"):
        for rel in ("seed0/report/table1.md", "seed0/re_distance.json"):
            assert (out / "llm" / arch / rel).is_file(), rel
    # --quick runs R/C/U on the first architecture only
    assert (out / "llm" / "llama" / "rcu_seed0" / "runs" / "retrain" / "metrics.json").is_file()
    assert not (out / "llm" / "qwen2" / "rcu_seed0").exists()
    assert not list(out.glob(".*.tmp*"))


def test_report_is_rendered_from_metrics_file(quick_job) -> None:
    out, metrics = quick_job
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics
    assert (out / "report.md").read_text() == render_report(on_disk)
    text = (out / "report.md").read_text()
    for heading in (
        "Theorem 3.1",
        "Precondition",
        "Finding 1",
        "Finding 2",
        "Finding 3",
        "Finding 4",
        "Finding 5",
        "Summary",
    ):
        assert heading in text
    # Quick models cannot do the arithmetic: the accuracy table has no spread to read.
    tables = [t.split("math: ")[0] for t in text.split("math: drop of accuracy")[1:]]
    for (arch, section), table in zip(metrics["llm"].items(), tables, strict=True):
        if not section["findings"]["utility"]["math"]["measurable"]:
            rows = [x for x in table.splitlines() if x.startswith("| ") and "method" not in x]
            assert rows and all(x.endswith("| n/a |") for x in rows), arch


def test_report_numbers_equal_protocol_files(quick_job, tiny_models_dir: Path) -> None:
    """Numbers in the report come from the protocol's own metrics files (read independently)."""
    out, metrics = quick_job
    text = (out / "report.md").read_text()
    for arch in ("llama", "qwen2"):
        run = out / "llm" / arch / "seed0"
        vocab = json.loads((tiny_models_dir / arch / "config.json").read_text())["vocab_size"]
        retrain = json.loads((run / "runs" / "retrain" / "metrics.json").read_text())["summary"]
        pre = metrics["llm"][arch]["precondition"]
        assert pre["chance"] == pytest.approx(-math.log(vocab), abs=1e-12)
        for p in ("p1", "p2", "p3", "p4"):
            step0 = _jsonl(run / "runs" / p / "ga" / "metrics.jsonl")[0]
            assert step0["step"] == 0
            row = pre["paths"][p]
            assert row["label"]["mean"] == pytest.approx(step0["label"], abs=1e-12)
            assert row["over_retrain"]["mean"] == pytest.approx(
                step0["label"] - retrain["label"], abs=1e-12
            )
            holds = (step0["label"] + math.log(vocab) > TH.chance_margin) and (
                step0["label"] - retrain["label"] > TH.retrain_margin
            )
            assert row["holds"] == holds
            line = (
                f"| {p} | {ci_text(row['label'])} | {ci_text(row['over_chance'])} | "
                f"{ci_text(row['over_retrain'])} |"
            )
            assert line in text
        # Recency verdict recomputed from the metrics.jsonl files.
        rec = metrics["llm"][arch]["findings"]["recency"]
        for m in ("ga", "npo", "simnpo"):
            drops = {}
            for p in ("p1", "p2", "p3", "p4"):
                recs = [r for r in _jsonl(run / "runs" / p / m / "metrics.jsonl") if "label" in r]
                drops[p] = recs[0]["label"] - recs[-1]["label"]
                assert rec["methods"][m]["drop"][p]["mean"] == pytest.approx(drops[p], abs=1e-12)
            assert rec["methods"][m]["slowest"] == min(drops, key=drops.get)
        # RE distance to retrain at the last step equals re_distance.json.
        re = json.loads((run / "re_distance.json").read_text())
        dist = metrics["llm"][arch]["findings"]["retrain_distance"]["methods"]["ga"]["paths"]
        assert dist["p2"]["last"]["mean"] == pytest.approx(re["ga"]["to_retrain"]["p2"][-1])


def test_theory_numbers_match_check_json(quick_job) -> None:
    out, metrics = quick_job
    check = json.loads((out / "theory" / "check.json").read_text())
    th = metrics["theory"]
    assert th["rho_star"] == check["rho_star"]
    assert th["log10_d_last"] == pytest.approx(check["log10_re_distance"][-1])
    assert th["bound_holds"] == (check["min_log10_tightness_guaranteed"] >= -1e-9)
    assert f"ρ* = {fmt(check['rho_star'], 4)}" in (out / "report.md").read_text()


def test_sim_numbers_match_paths_summary(quick_job) -> None:
    out, metrics = quick_job
    summary = json.loads((out / "sim" / "paths_summary.json").read_text())
    sim = metrics["sim"]
    assert sim["summary"] == summary
    assert (out / sim["figure"]).is_file()
    assert sim["diverges"] == (summary["pairwise_growth_log10"] > 0)
    assert sim["recency"] == summary["recency_slowest_is_last"]
    growth = f"(log10 growth {fmt(summary['pairwise_growth_log10'])})"
    assert growth in (out / "report.md").read_text()


def test_summary_verdicts_follow_findings(quick_job) -> None:
    _, metrics = quick_job
    for arch, s in metrics["summary"].items():
        a = metrics["llm"][arch]
        assert s["precondition"] == a["precondition"]["holds"]
        assert s["recency"] == a["findings"]["recency"]["reproduced"]
        if arch == "llama":
            kinds = {v["kind"] for v in a["rcu"]["orders"].values()}
            assert s["rcu"] == (len(kinds) == 2)
        else:
            assert "rcu" not in a and s["rcu"] is None
        active = [m for m in a["methods"] if m not in a["findings"]["inert_methods"]]
        rec = a["findings"]["recency"]
        assert rec["judged_cells"] == len(active)
        assert rec["reproduced"] == (2 * rec["cells"] > len(active))


def test_seeds_give_t_intervals(two_seed_job) -> None:
    out, metrics = two_seed_job
    a = metrics["llm"]["llama"]
    assert a["folders"] == ["llm/llama/seed0", "llm/llama/seed1"]
    row = a["precondition"]["paths"]["p4"]["label"]
    labels = [
        _jsonl(out / f / "runs" / "p4" / "ga" / "metrics.jsonl")[0]["label"] for f in a["folders"]
    ]
    assert row["values"] == pytest.approx(labels)
    # t(0.975, df=1) = 12.7062; half-width = t * s / sqrt(n)
    expected = 12.706204736 * np.std(labels, ddof=1) / math.sqrt(2)
    assert row["half_width"] == pytest.approx(expected, rel=1e-6)
    assert f"{ci_text(row)}" in (out / "report.md").read_text()


def test_t_interval_against_hand_computation() -> None:
    r = V.t_interval([1.0, 2.0, 3.0])
    assert r["mean"] == 2.0
    assert r["half_width"] == pytest.approx(4.302652730 / math.sqrt(3), rel=1e-8)
    assert V.t_interval([5.0])["half_width"] is None
    with pytest.raises(StudyError):
        V.t_interval([])


def _seed(
    labels: dict[str, float],
    tofu: dict[str, float],
    retrain: float = -8.0,
    math_loglik: dict[str, float] | None = None,
) -> dict:
    math_loglik = math_loglik or {p: -1.5 for p in labels}
    return {
        "paths": sorted(labels),
        "chance": -math.log(100),
        "vocab_size": 100,
        "retrain_label": retrain,
        "before": {
            p: {"label": labels[p], "tofu": tofu[p], "math_loglik": math_loglik[p]} for p in labels
        },
    }


def test_precondition_thresholds() -> None:
    good = _seed({"p1": -2.0, "p2": -2.5}, {"p1": -1.0, "p2": -1.2})
    assert V.precondition([good], TH)["holds"]
    erased = _seed({"p1": -4.4, "p2": -2.5}, {"p1": -1.0, "p2": -1.2})  # p1 below chance + 1
    res = V.precondition([erased], TH)
    assert not res["holds"] and not res["paths"]["p1"]["holds"] and res["paths"]["p2"]["holds"]
    uneven = _seed({"p1": -2.0, "p2": -2.5}, {"p1": -1.0, "p2": -2.0})  # utility spread 1.0
    res = V.precondition([uneven], TH)
    assert res["all_paths_hold"] and not res["utility_similar"] and not res["holds"]
    assert res["utility_spread_max"] == pytest.approx({"tofu": 1.0, "math_loglik": 0.0})
    uneven_math = _seed(
        {"p1": -2.0, "p2": -2.5}, {"p1": -1.0, "p2": -1.2}, math_loglik={"p1": -1.0, "p2": -1.6}
    )
    res = V.precondition([uneven_math], TH)
    assert res["utility_spread_max"]["math_loglik"] == pytest.approx(0.6)
    assert res["all_paths_hold"] and not res["utility_similar"] and not res["holds"]
    close_to_retrain = _seed({"p1": -2.0, "p2": -2.5}, {"p1": -1.0, "p2": -1.2}, retrain=-3.0)
    assert not V.precondition([close_to_retrain], TH)["paths"]["p2"]["holds"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "study", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--seeds", "0"], "seeds must be >= 1"),
        (["--archs", "gpt2"], "gpt2"),
        (["--threads", "-1"], "torch_threads must be >= 1"),
        (["--models", "/nonexistent-pathdep"], "nonexistent"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "out"
    res = _cli("--out", str(out), "--quick", "--no-progress", *args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert not (out / "report.md").exists() and not (out / "metrics.json").exists()


def _method_rows(drops: dict[str, float], between: tuple[float, float]) -> dict:
    return {
        "paths": {
            p: {
                "label_drop": d,
                "tofu_loss": d / 2,
                "math_loglik_loss": 1.0,  # the same on every path: not path dependent
                "math_drop": 0.0,
                "re_first": 1.0,
                "re_last": 1.0 + d,
            }
            for p, d in drops.items()
        },
        "between_first": between[0],
        "between_last": between[1],
        "between_max_last": 2 * between[1],
    }


def test_findings_verdicts_and_inert_methods() -> None:
    paths = ["p1", "p2", "p3", "p4"]
    seed = {
        "paths": paths,
        "methods": ["ga", "simnpo"],
        "before": {p: {"label": -3.0, "tofu": -5.0, "math_flexible": 0.04} for p in paths},
        "methods_data": {
            "ga": _method_rows({"p1": 2.0, "p2": 3.0, "p3": 4.0, "p4": 0.3}, (1.0, 5.0)),
            # does not move: must be left out of every verdict
            "simnpo": _method_rows({p: 0.0 for p in paths}, (1.0, 1.0)),
        },
    }
    for row in seed["methods_data"]["simnpo"]["paths"].values():
        row["simnpo_weight"] = 2e-40  # the paper's form, saturated
    f = V.findings([seed], TH)
    assert f["inert_methods"] == ["simnpo"]
    assert f["forgetting"]["ga"] == {"paths": paths, "of": 4, "simnpo_weight": None}
    assert f["forgetting"]["simnpo"] == {"paths": [], "of": 4, "simnpo_weight": 2e-40}
    lines = "\n".join(forgetting_lines(f, TH))
    assert "ga on 4 of 4 paths; simnpo on 0 of 4 paths (σ(β r + γ) at step 0: 2e-40)" in lines
    assert "did not forget on any path" in lines and "whole response" in lines
    assert f["divergence"]["reproduced"]  # ga grows; simnpo (flat) is not judged
    assert f["recency"]["methods"]["ga"]["slowest"] == "p4"
    assert f["recency"]["judged_cells"] == 1 and f["recency"]["reproduced"]
    assert f["utility"]["tofu"]["reproduced"]  # (2.0 - 0.15) / 2.0 > 0.2
    assert not f["utility"]["math"]["measurable"]  # 0.04 < MIN_MATH_ACCURACY
    math_ll = f["utility"]["math_loglik"]
    assert math_ll["measurable"] and not math_ll["reproduced"]  # 1.0 on every path
    assert math_ll["methods"]["ga"]["relative_spread"] == 0.0
    ratio = f["retrain_distance"]["methods"]["ga"]["ratio"]
    assert ratio == pytest.approx(5.0 / 1.3)
    assert f["retrain_distance"]["methods"]["ga"]["epsilon_guaranteed"] == pytest.approx(2.5)
    # recency fails when another path forgets slowest
    seed["methods_data"]["ga"] = _method_rows({"p1": 0.1, "p2": 3, "p3": 4, "p4": 1}, (1, 5))
    assert not V.findings([seed], TH)["recency"]["reproduced"]


def test_utility_losses_below_the_floor_are_not_a_finding() -> None:
    # GA forgets, but no path loses >= MIN_UTILITY_LOSS of TOFU log-lik: (0.04 - 0) / 0.04 is a
    # ratio of noise, so the verdict is "not measurable", not "path dependent".
    paths = ["p1", "p2", "p3", "p4"]
    rows = _method_rows({"p1": 2.0, "p2": 3.0, "p3": 0.4, "p4": 0.3}, (1.0, 5.0))
    for p, loss in zip(paths, (0.0, 0.01, 0.04, 0.02), strict=True):
        rows["paths"][p]["tofu_loss"] = loss
    seed = {
        "paths": paths,
        "methods": ["ga"],
        "before": {p: {"label": -3.0, "tofu": -5.0, "math_flexible": 0.5} for p in paths},
        "methods_data": {"ga": rows},
    }
    tofu = V.findings([seed], TH)["utility"]["tofu"]
    assert tofu["methods"]["ga"]["relative_spread"] == pytest.approx(1.0)
    assert not tofu["methods"]["ga"]["loses"]
    assert not tofu["measurable"] and not tofu["reproduced"]
    rows["paths"]["p3"]["tofu_loss"] = TH.min_utility_loss  # at the floor: judged
    tofu = V.findings([seed], TH)["utility"]["tofu"]
    assert tofu["measurable"] and tofu["reproduced"]


def test_accuracy_spread_within_sampling_noise_is_not_a_finding() -> None:
    # Math accuracy drops of 0, 0, 0, 0.08 over paths: relative spread 1.0, but one question in
    # 12 changing its answer is what sampling does alone. Only a spread of many standard errors
    # (paired over the same held-out questions) is path dependent.
    paths = ["p1", "p2", "p3", "p4"]
    rows = _method_rows({"p1": 2.0, "p2": 3.0, "p3": 0.4, "p4": 0.3}, (1.0, 5.0))
    noise = {p: [0.0] * 12 for p in paths}
    noise["p4"] = [0.5, 0.0, 0.0, 0.5] + [0.0] * 8  # mean 0.083
    for p in paths:
        rows["paths"][p]["math_drop"] = float(np.mean(noise[p]))
        rows["paths"][p]["math_drop_per_question"] = noise[p]
    seed = {
        "paths": paths,
        "methods": ["ga"],
        "before": {p: {"label": -3.0, "tofu": -5.0, "math_flexible": 0.5} for p in paths},
        "methods_data": {"ga": rows},
    }
    math_v = V.findings([seed], TH)["utility"]["math"]
    ga = math_v["methods"]["ga"]
    assert ga["relative_spread"] == pytest.approx(1.0)
    # Per-question differences p4 - p1: two of 0.5, ten of 0; mean / (std / sqrt(12)).
    diffs = np.array(noise["p4"])
    se = diffs.std(ddof=1) / np.sqrt(12)
    assert ga["noise"]["z"] == pytest.approx(diffs.mean() / se)
    assert ga["noise"]["most"] == "p4" and ga["noise"]["least"] == "p1"
    assert ga["noise"]["z"] < TH.accuracy_z
    # The largest drop is the same two questions, so GA is not judged at all (as a log-lik
    # loss under the floor): accuracy is measurable, no method degrades it beyond the noise.
    assert ga["noise"]["largest_drop_z"] == pytest.approx(ga["noise"]["z"]) and not ga["loses"]
    assert math_v["accurate_enough"] and not math_v["measurable"]
    assert not math_v["reproduced"]
    # Every question loses half its samples on p4 and none elsewhere: far outside the noise.
    rows["paths"]["p4"]["math_drop_per_question"] = [0.5] * 11 + [0.0]
    rows["paths"]["p4"]["math_drop"] = 5.5 / 12
    math_v = V.findings([seed], TH)["utility"]["math"]
    assert math_v["methods"]["ga"]["noise"]["z"] > TH.accuracy_z and math_v["reproduced"]


# The paper's Figure 4 (Llama-3.2-3B, 20 GA epochs on U): log-probs of whole responses at the
# last epoch, read off the plots (all start near 0, so each is minus the fall), and the paper's
# own classification of each panel (Sec. 4.3: theta3 and theta4 deep, the others superficial).
PAPER_FIG4 = {  # order: (R, C, U) at epoch 20, deep?
    "R->C->U": ((-85, -110, -320), False),
    "C->R->U": ((-175, -180, -310), False),
    "U->C->R": ((-230, -450, -370), True),
    "U->R->C": ((-190, -350, -350), True),
    "R->U->C": ((-110, -170, -300), False),
    "C->U->R": ((-140, -180, -310), False),
}


def _rcu_seed(levels: dict[str, tuple[float, float, float]]) -> dict:
    rows = {
        order: {f"rcu_{k}_drop": -v for k, v in zip("RCU", end, strict=True)}
        for order, end in levels.items()
    }
    return {"paths": list(levels), "methods": ["ga"], "methods_data": {"ga": {"paths": rows}}}


def test_rcu_criterion_classifies_the_papers_figure_4_as_the_paper_does() -> None:
    found = V.rcu_findings([_rcu_seed({k: v for k, (v, _) in PAPER_FIG4.items()})], TH)
    assert {k: r["kind"] == "deep" for k, r in found["orders"].items()} == {
        k: deep for k, (_, deep) in PAPER_FIG4.items()
    }
    assert found["reproduced"]
    # by hand: theta5 R->U->C, C at (170 - 110) / (300 - 110) of the way from R's fall to U's
    assert found["orders"]["R->U->C"]["c_position"] == pytest.approx(60 / 190)
    # "C falls by >= half of U's fall", the criterion before R was counted, calls theta2,
    # theta5 and theta6 deep, against the paper
    for order in ("C->R->U", "R->U->C", "C->U->R"):
        (_, c, u), deep = PAPER_FIG4[order]
        assert c / u >= 0.5 and not deep
    # U falling no more than R singles nothing out: superficial, position NaN
    flat = V.rcu_findings([_rcu_seed({"a": (-5, -1, -5), "b": (-1, -9, -10)})], TH)["orders"]
    assert math.isnan(flat["a"]["c_position"]) and flat["a"]["kind"] == "superficial"
    assert flat["b"]["kind"] == "deep"


def test_config_is_saved_and_a_job_repeats_from_it(quick_job, tmp_path: Path) -> None:
    """OUT/config.toml reads back to the config that ran; `--config` of it (report only, in a
    copy of the folder) gives the same numbers; another config is refused in that folder."""
    import shutil

    from pathdep.configs import config_hash, load_toml

    out, metrics = quick_job
    cfg = load_toml(StudyConfig, out / "config.toml")
    assert cfg.quick and cfg.archs == ("llama", "qwen2") and cfg.thresholds == TH
    assert json.loads((out / "config.json").read_text())["hash"] == config_hash(cfg)
    assert metrics["job"]["config_hash"] == config_hash(cfg)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    argv = ["--out", str(copy), "--config", str(out / "config.toml"), "--no-progress"]
    assert study_main([*argv, "--report-only"]) == 0
    again = json.loads((copy / "metrics.json").read_text())
    for key in ("llm", "summary", "theory", "sim", "thresholds", "theory_llm"):
        assert again[key] == metrics[key], key
    # --report-only without --config re-judges the job saved in --out, not a default one
    rejudge = ["--out", str(copy), "--report-only", "--no-progress"]
    assert study_main([*rejudge, "--set", "thresholds.deep_ratio=0.25"]) == 0
    rejudged = json.loads((copy / "metrics.json").read_text())
    assert rejudged["job"]["quick"] and rejudged["thresholds"]["deep_ratio"] == 0.25
    assert load_toml(StudyConfig, copy / "config.toml").thresholds.deep_ratio == 0.25
    before = sorted(p.name for p in copy.rglob("*"))
    assert study_main([*argv, "--seeds", "2"]) == 2  # another config: refused, nothing written
    assert sorted(p.name for p in copy.rglob("*")) == before


def test_theory_llm_section_equals_the_protocol_files(quick_job, tiny_models_dir) -> None:
    """metrics["theory_llm"] holds every pair of paths of every architecture, each row equal to
    its protocol's theory_llm.json; the projection splits Δθ0, the prediction is 2 ln(1 + ρ̂),
    the measurement is the log-slope of re_distance.json; the section and figure are there; the
    R/C/U folders (LoRA) have no such file; a second measurement is skipped."""
    from llm.layout import ProtocolLayout
    from llm.path_theory import log_slope
    from pathdep.configs import load_toml
    from study.layout import StudyLayout
    from study.phases import _measure_theory, protocol_configs

    out, metrics = quick_job
    tl = metrics["theory_llm"]
    assert tl["errors"] == []
    for arch in ("llama", "qwen2"):
        layout = ProtocolLayout(out / "llm" / arch / "seed0")
        res = json.loads(layout.theory_llm.read_text())
        n_paths = len(json.loads(layout.paths_json.read_text())["paths"])
        assert len(res["pairs"]) == n_paths * (n_paths - 1) // 2 and len(res["paths"]) == n_paths
        assert res["top"] == len(res["ggn_eigenvalues"]) == tl["settings"]["top"]
        assert res["ggn_eigenvalues"] == sorted(res["ggn_eigenvalues"], reverse=True)
        re = json.loads(layout.re_distance.read_text())["ga"]
        rows = [r for r in tl["pairs"] if r["arch"] == arch]
        assert len(rows) == len(res["pairs"])
        for row in rows:
            q = res["pairs"][row["pair"]]
            assert {k: row[k] for k in q} == q
            assert q["proj_norm"] ** 2 + q["off_norm"] ** 2 == pytest.approx(
                q["delta0_norm"] ** 2, rel=1e-6
            )
            assert q["predicted_log_growth"] == pytest.approx(2 * math.log1p(q["rho_hat"]))
            measured = log_slope(re["steps"], re["between"][row["pair"]])
            assert q["measured_log_growth"] == pytest.approx(measured)
        for row in (r for r in tl["paths"] if r["arch"] == arch):
            p = res["paths"][row["path"]]
            assert row["gradient_in_span"] == p["gradient_in_span"] <= p["gradient_norm"]
            assert row["linear_regime_steps"] == p["linearised"]["linear_regime_steps"]
    for key in ("growth", "growth_preconditioned", "recency"):
        assert tl[key]["pooled"]["n"] > 0 and tl[key]["within"]["n"] > 0
    assert not list((out / "llm").rglob("rcu_seed0/theory_llm.json"))
    report = (out / "report.md").read_text()
    assert "Theory ↔ LLM" in report and "fig_theory_llm.png" in report
    assert (out / "fig_theory_llm.png").is_file()
    # the measurement is kept when a rerun asks for the same thing
    path = ProtocolLayout(out / "llm" / "llama" / "seed0").theory_llm
    mtime = path.stat().st_mtime_ns
    cfg = load_toml(StudyConfig, out / "config.toml")
    models = {arch: tiny_models_dir / arch for arch in cfg.archs}
    runs = [r for r in protocol_configs(cfg, StudyLayout(out), models) if r.theory_top > 0]
    assert {(r.arch, r.rcu) for r in runs} == {("llama", False), ("qwen2", False)}
    for run in runs:
        _measure_theory(run, progress=False)
    assert path.stat().st_mtime_ns == mtime


def test_report_renders_with_the_thresholds_in_its_metrics(quick_job) -> None:
    _, metrics = quick_job
    changed = json.loads(json.dumps(metrics))
    changed["thresholds"]["chance_margin"] = 7.5
    changed["thresholds"]["min_forgetting"] = 0.125
    text = render_report(changed)
    assert "> chance + 7.5" in text and "> chance + 1 " not in text
    assert render_report(metrics) != text


def test_configs_are_values() -> None:
    """Frozen, hashable, no shared mutable state: two configs built alike are equal and hash
    alike, and no field can be changed in place."""
    import dataclasses

    from llm import config as C

    a, b = StudyConfig(), StudyConfig()
    assert a == b and hash(a) == hash(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.seeds = 3  # type: ignore[misc]
    raw = {"data": {"sizes": {"inst": 3}}, "stages": [{"name": "inst"}]}
    raw["paths"] = {"order": ["inst", "unlearn"], "positions": [2]}
    raw["stages"].append({"name": "unlearn"})
    r1, r2 = C.config_from_dict(raw), C.config_from_dict(raw)
    assert r1 == r2 and hash(r1) == hash(r2)
    assert r1.data.sizes == {"inst": 3}
    with pytest.raises(TypeError, match="read-only"):
        r1.data.sizes["inst"] = 5  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        C.DataConfig().files.update(x="y")  # type: ignore[attr-defined]
    assert r2.data.sizes == {"inst": 3} and C.DataConfig().sizes == {}
    changed = dataclasses.replace(r1, seed=4)
    assert changed != r1 and r1 == r2 and hash(changed) != hash(r1)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--seeds", "-1"], "seeds"),
        (["--set", "thresholds.deep_ratio=nan"], "finite"),
        (["--set", "thresholds.nope=1"], "thresholds.nope"),
        (["--config", "/nonexistent-pathdep.toml"], "not found"),
    ],
)
def test_cli_bad_config_exits_2_in_process(tmp_path: Path, args, needle, capsys) -> None:
    out = tmp_path / "out"
    assert study_main(["--out", str(out), "--quick", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not out.exists()


def test_protocols_side_by_side_give_the_same_files(quick_job, tiny_models_dir, tmp_path):
    """workers = 2 runs the protocols in two spawned processes: the same numbers as one after
    the other (each protocol runs on the config's one torch thread either way)."""
    out, metrics = quick_job
    cfg = StudyConfig(quick=True, models_dir=str(tiny_models_dir))
    side = run_study(cfg, tmp_path / "side", progress=False, workers=2)
    for key in ("llm", "summary", "failed_runs", "theory_llm"):
        assert side[key] == metrics[key], key
    for f in ("llm/llama/seed0/re_distance.json", "llm/qwen2/seed0/runs/p2/npo/metrics.jsonl"):
        a, b = (out / f).read_text(), (tmp_path / "side" / f).read_text()
        if f.endswith(".jsonl"):  # wall-clock times aside
            a, b = (
                [{k: v for k, v in json.loads(x).items() if k != "time"} for x in t.splitlines()]
                for t in (a, b)
            )
        assert a == b, f


def test_paper_table1_shows_what_the_paper_says_of_it() -> None:
    """The copied columns against the paper's text (Sec. 4.2): unlearning is slowest at p4 "in
    all except one cases", Qwen2.5-1.5B with SimNPO, whose p4 score "is still lower than
    average"."""
    from study.table1 import PAPER, PATHS, shows_pattern

    for model, scores in PAPER.items():
        for method, values in scores["forget_score"].items():
            column = dict(zip(PATHS, values, strict=True))
            expected = (model, method) != ("Qwen1B", "simnpo")
            assert shows_pattern("forget_score", column) is expected, (model, method)
    qwen_simnpo = PAPER["Qwen1B"]["forget_score"]["simnpo"]
    assert qwen_simnpo[3] < sum(qwen_simnpo) / 4


def test_table1_patterns_by_hand() -> None:
    from study.table1 import rank_correlation, shows_pattern

    col = {"p1": 3.0, "p2": 2.0, "p3": 1.0, "p4": 0.5}
    assert shows_pattern("forget_score", col) and not shows_pattern("tofu_utility", col)
    assert shows_pattern("tofu_utility", {**col, "p4": 3.5})
    assert shows_pattern("forget_score", {**col, "p4": 1.0}) is False  # a tie is not "least"
    # math: (max - min) / max of |change| > 0.2; all zero: not measurable
    assert shows_pattern("math_utility_flexible", {"p1": -0.5, "p2": 0.1, "p3": 0.3, "p4": 0.4})
    assert not shows_pattern("math_utility_flexible", {p: -0.3 for p in col})
    assert shows_pattern("math_utility_flexible", {p: 0.0 for p in col}) is None
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 1, 1, 1], [1, 2, 3, 4]) is None


def test_table1_math_column_is_judged_as_finding_3(quick_job) -> None:
    """The toy's math column follows Finding 3's verdicts (sampling noise included), not the bare
    relative spread: a method within the noise is not judged, a seed counts when Finding 3 on
    that seed alone says path dependent."""
    from study.table1 import beside_paper, render_section

    out, _ = quick_job
    folder = out / "llm" / "llama" / "seed0"
    pooled = {
        "accurate_enough": True,
        "methods": {
            "ga": {"loses": True, "path_dependent": True},
            "npo": {"loses": False, "path_dependent": True},  # a spread of noise
        },
    }
    alone = [{"accurate_enough": True, "methods": {"ga": {"loses": True, "path_dependent": False}}}]
    t = beside_paper("llama", [folder], [], pooled, alone)
    math_cols = t["scores"]["math_utility_flexible"]
    assert math_cols["ga"]["toy_shows"] is True and math_cols["ga"]["toy_seeds_showing"] == 0
    assert math_cols["npo"]["toy_shows"] is None and math_cols["npo"]["not_judged"] == "noise"
    text = "\n".join(render_section("llama", t))
    assert (
        "- NPO: paper yes; toy: n/a (no path's accuracy drop exceeds the sampling noise)." in text
    )
    low = beside_paper("llama", [folder], [], {**pooled, "accurate_enough": False}, alone)
    judged = [c for c in low["scores"]["math_utility_flexible"].values() if "toy" in c]
    assert judged and all(c["toy_shows"] is None for c in judged)
    assert all(c["not_judged"] == "accuracy" for c in judged)
    # Without Finding 3's verdicts: the relative spread alone, as for the paper's columns.
    bare = beside_paper("llama", [folder])["scores"]["math_utility_flexible"]["ga"]
    assert "not_judged" not in bare


def test_table1_beside_the_paper_equals_the_protocol_tables(quick_job) -> None:
    """The toy's cells are the protocol's own Table 1 (read independently from table1.csv)."""
    import csv
    import io

    from study.table1 import METHODS, PAPER

    out, metrics = quick_job
    text = (out / "report.md").read_text()
    for arch, model in (("llama", "Llama1B"), ("qwen2", "Qwen1B")):
        t = metrics["llm"][arch]["table1"]
        assert t["paper_model"] == model
        assert f"### Table 1 beside the paper ({model})" in text
        table = (out / "llm" / arch / "seed0/report/table1.csv").read_text()
        rows = list(csv.DictReader(io.StringIO(table)))
        for row in rows:
            if row["method"] not in METHODS:
                continue
            for score in ("forget_score", "tofu_utility"):
                column = t["scores"][score][row["method"]]
                assert column["toy"][row["path"]]["mean"] == pytest.approx(float(row[score]))
                column_of = METHODS[row["method"]][1]  # the paper's column beside it
                paper = PAPER[model][score][column_of][int(row["path"][1]) - 1]
                assert column["paper"][row["path"]] == paper
        for method in t["inert"]:
            assert method in metrics["llm"][arch]["findings"]["inert_methods"]
