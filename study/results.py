"""Reading the numbers of one protocol folder: every per-path and per-method number the report
uses, from the folder's own files (:mod:`llm.layout` says where each lives). No model is loaded."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

# Utilities measured as answer log-likelihoods (per token): TOFU answers and the gold solutions of
# the held-out math problems (teacher-forced).
UTILITY_LOGLIKS = ("tofu", "math_loglik")
BEFORE_KEYS = ("label", *UTILITY_LOGLIKS, "math_flexible")


def vocab_size(model_dir: Path) -> int:
    """Size of the model's output distribution (config.json ``vocab_size``)."""
    return int(json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"])


def _pairs_mean(between: dict[str, list[float]], index: int) -> float:
    return float(np.mean([v[index] for v in between.values()]))


def protocol_numbers(folder: Path, vocab: int) -> dict[str, Any]:
    """Every per-path / per-method number the report uses, from one protocol folder's files.

    ``failed`` lists the runs that did not finish cleanly (non-finite, collapsed); a folder in
    which some path has no trained model at all gives only ``incomplete`` (why) and ``failed``.
    """
    from llm.layout import ProtocolLayout
    from llm.report import load_runs

    layout = ProtocolLayout(folder)
    folders = layout.unlearning_runs()
    failed = {}  # method -> {path: "status: message"} of runs that did not finish cleanly
    for p, by_method in folders.items():
        for m, run in by_method.items():
            status = json.loads(run.status.read_text()) if run.status.exists() else {}
            if status.get("status") != "done":
                text = f"{status.get('status', 'unfinished')}: {status.get('message', '')}"
                failed.setdefault(m, {})[p] = text.rstrip(": ")
    runs = load_runs(folder)
    untrained = sorted(set(folders) - set(runs))  # no step-0 evaluation: its stages failed
    if untrained or not layout.retrain_metrics.exists():
        what = ", ".join(untrained) or "the retrain baseline"
        return {
            "incomplete": f"{folder}: no trained model for {what} (a stage turned non-finite)",
            "failed": failed,
        }
    retrain = json.loads(layout.retrain_metrics.read_text())["summary"]
    re = json.loads(layout.re_distance.read_text())
    paths = sorted(runs)
    methods = sorted({m for p in runs.values() for m in p})
    before: dict[str, dict[str, float]] = {}
    for p in paths:
        first = runs[p][methods[0]][0]  # step 0: the trained path, identical for every method
        before[p] = {k: float(first[k]) for k in BEFORE_KEYS if k in first}
    per_method: dict[str, Any] = {}
    for m in methods:
        entry: dict[str, Any] = {"paths": {}}
        for p in paths:
            recs = runs[p].get(m)
            if not recs:
                continue
            first, last = recs[0], recs[-1]
            row: dict[str, Any] = {
                "steps": int(last["step"]),
                "label_first": float(first["label"]),
                "label_last": float(last["label"]),
                "label_drop": float(first["label"] - last["label"]),
                "label_curve": [[int(r["step"]), float(r["label"])] for r in recs],
            }
            if "simnpo_weight" in first:  # SimNPO's sigmoid at step 0: saturated near 0
                row["simnpo_weight"] = float(first["simnpo_weight"])
            for key in UTILITY_LOGLIKS:
                if key in first:
                    row[f"{key}_loss"] = float(abs(last[key] - first[key]))
            if "math_flexible" in first and "math_flexible" in last:
                row["math_first"] = float(first["math_flexible"])
                row["math_drop"] = float(first["math_flexible"] - last["math_flexible"])
                per_question = _math_per_question(folders[p][m].per_example)
                if per_question is not None:
                    row["math_drop_per_question"] = per_question
            for key in ("rcu_R", "rcu_C", "rcu_U"):
                if key in first:
                    row[f"{key}_drop"] = float(first[key] - last[key])
            e = re.get(m, {})
            if e.get("steps") and p in e["to_retrain"]:
                row["re_first"] = float(e["to_retrain"][p][0])
                row["re_last"] = float(e["to_retrain"][p][-1])
            entry["paths"][p] = row
        e = re.get(m, {})
        if e.get("steps") and e.get("between"):
            entry["between_first"] = _pairs_mean(e["between"], 0)
            entry["between_last"] = _pairs_mean(e["between"], -1)
            entry["between_max_last"] = float(max(v[-1] for v in e["between"].values()))
        per_method[m] = entry
    return {
        "paths": paths,
        "methods": methods,
        "vocab_size": vocab,
        "chance": -math.log(vocab),
        "retrain_label": float(retrain["label"]),
        "retrain_tofu": float(retrain["tofu"]) if "tofu" in retrain else None,
        "before": before,
        "methods_data": per_method,
        "failed": failed,
    }


def _math_per_question(per_example: Path) -> list[float] | None:
    """Per held-out question, the drop of its fraction of correct samples (flexible) from the
    first to the last evaluation of one unlearning run; None without per-question records."""
    if not per_example.exists():
        return None
    scored = [
        rec["math_flexible"]
        for rec in map(json.loads, per_example.read_text().splitlines())
        if rec.get("math_flexible") is not None
    ]
    if len(scored) < 2:
        return None
    return [float(a - b) for a, b in zip(scored[0], scored[-1], strict=True)]


def path_sequences(folder: Path) -> dict[str, Any]:
    """``{"paths": {name: [stages]}, "retrain": [stages]}`` of a protocol folder."""
    from llm.layout import ProtocolLayout

    return json.loads(ProtocolLayout(folder).paths_json.read_text())
