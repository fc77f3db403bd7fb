"""Tables and figures of a protocol folder, from its metrics files alone (no model is loaded).

- ``table1.md`` / ``table1.csv``: forget score, TOFU utility and math utility (strict and
  flexible answer extraction) per path x method, the layout of the paper's Table 1.
- ``fig1_label_logprob.png``: average per-token log-prob of the unlearn label vs unlearning step,
  one line per path, one panel per method (paper Fig. 1/3, top).
- ``fig3_tofu_utility.png``: TOFU utility vs step (Fig. 3, bottom).
- ``fig4_rcu.png``: log-probs of R, C and U vs step per path (Fig. 4; when R/C/U was evaluated).
- ``fig_re_distance.png``: RE distance of each path to the retrain baseline vs step.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from llm.evaluate import forget_score, math_utility, tofu_utility
from llm.layout import ProtocolLayout
from pathdep.errors import BadInput
from pathdep.io import atomic_save_figure, atomic_write_json, atomic_write_text


class ReportError(BadInput):
    """The folder holds no protocol metrics."""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def load_runs(out: str | Path) -> dict[str, dict[str, list[dict]]]:
    """``{path: {method: [eval records sorted by step]}}`` of a protocol folder; an eval record
    is a metrics line that carries the evaluation fields (``label``)."""
    layout = ProtocolLayout(Path(out))
    if not layout.runs.is_dir():
        raise ReportError(f"{out} has no runs/ folder (not a protocol output)")
    result: dict[str, dict[str, list[dict]]] = {}
    for path, methods in layout.unlearning_runs().items():
        for method, run in methods.items():
            if not run.metrics.exists():
                continue
            records = [r for r in read_jsonl(run.metrics) if "label" in r]
            records.sort(key=lambda r: r["step"])
            if records:
                result.setdefault(path, {})[method] = records
    if not result:
        raise ReportError(f"{out}/runs holds no metrics.jsonl with evaluations")
    return result


def run_status(out: Path, path: str, method: str) -> str:
    """The status of one unlearning run: done, non-finite, ... or running (no status yet)."""
    f = ProtocolLayout(out).run(path, method).status
    return json.loads(f.read_text()).get("status", "?") if f.exists() else "running"


def summary_row(records: list[dict]) -> dict[str, float]:
    """Table 1 scores from the step-0 and the last evaluated records of one run."""
    first, last = records[0], records[-1]
    if first["step"] != 0:
        raise ReportError("a run's metrics lack the step-0 evaluation")
    row: dict[str, Any] = {"steps": last["step"]}
    if "phrases" in first:
        row["forget_score"] = forget_score(first["phrases"], last["phrases"])
    row["label_logprob_drop"] = first["label"] - last["label"]
    if "tofu" in first:
        row["tofu_utility"] = tofu_utility(first["tofu"], last["tofu"])
    for kind in ("strict", "flexible"):
        key = f"math_{kind}"
        if key in first and key in last:
            row[f"math_utility_{kind}"] = math_utility(first[key], last[key])
    return row


COLUMNS = (
    "forget_score",
    "tofu_utility",
    "math_utility_strict",
    "math_utility_flexible",
    "label_logprob_drop",
)


def table1(out: str | Path) -> list[dict]:
    """One row per (path, method) with the run status and its Table 1 scores: for a run that
    finished cleanly (``done``) or is still under way (``running``, so far); a non-finite or
    collapsed run has no scores to show."""
    out = Path(out)
    layout = ProtocolLayout(out)
    folders = layout.unlearning_runs()
    if not folders:
        raise ReportError(f"{out} has no unlearning runs (not a protocol output)")
    records = (
        load_runs(out)
        if any(r.metrics.exists() for m in folders.values() for r in m.values())
        else {}
    )
    rows = []
    for path, methods in folders.items():
        for method in methods:
            row = {"path": path, "method": method, "status": run_status(out, path, method)}
            recs = records.get(path, {}).get(method)
            if row["status"] in ("done", "running") and recs:
                row |= summary_row(recs)
            rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table1_markdown(rows: list[dict]) -> str:
    """Paper layout: one block per score, rows = paths, columns = methods."""
    paths = sorted({r["path"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    lookup = {(r["path"], r["method"]): r for r in rows}
    lines = []
    # Every score some run has; when no run has one (all failed), the main two, all "–".
    shown = [c for c in COLUMNS if any(c in r for r in rows)] or [COLUMNS[0], COLUMNS[-1]]
    for col in shown:
        lines.append(f"**{col.replace('_', ' ')}**\n")
        lines.append("| path | " + " | ".join(methods) + " |")
        lines.append("|---|" + "---|" * len(methods))
        for p in paths:
            cells = []
            for m in methods:
                r = lookup.get((p, m), {})
                cell = _fmt(r[col]) if col in r else "–"
                if r.get("status") == "running":
                    cell += " (running)"
                elif r.get("status") not in (None, "done"):
                    cell = f"– ({r['status']})"  # a failed run's last numbers are no result
                cells.append(cell)
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def table1_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    fields = ["path", "method", "status", "steps", *COLUMNS]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in fields})
    return buf.getvalue()


def _save_fig(fig, path: Path) -> None:
    atomic_save_figure(fig, path, dpi=110)


def _curves(runs, key, transform=None):
    """{method: {path: (steps, values)}} of one metric."""
    out: dict[str, dict[str, tuple[list, list]]] = {}
    for path, methods in runs.items():
        for method, records in methods.items():
            pts = [(r["step"], r[key]) for r in records if key in r]
            if not pts:
                continue
            steps = [s for s, _ in pts]
            values = [v for _, v in pts]
            if transform is not None:
                values = transform(values)
            out.setdefault(method, {})[path] = (steps, values)
    return out


def _panels(curves: dict, ylabel: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted(curves)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.2 * len(methods), 3.4), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        for p in sorted(curves[method]):
            steps, values = curves[method][p]
            ax.plot(steps, values, marker="o", ms=3, label=p)
        ax.set_title(f"{title}: {method}")
        ax.set_xlabel("unlearning step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save_fig(fig, path)
    plt.close(fig)


def figures(out: str | Path, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    try:
        runs = load_runs(out)
    except ReportError:  # no run measured anything (every path failed to train): no curves
        return []
    written = []
    f1 = folder / "fig1_label_logprob.png"
    _panels(_curves(runs, "label"), "avg log-prob of label", "label", f1)
    written.append(f1)
    tofu = _curves(runs, "tofu", lambda v: [tofu_utility(v[0], x) for x in v])
    if tofu:
        f3 = folder / "fig3_tofu_utility.png"
        _panels(tofu, "TOFU utility", "TOFU", f3)
        written.append(f3)
    rcu = {k: _curves(runs, f"rcu_{k}") for k in "RCU"}
    if rcu["R"]:
        pairs = sorted({(m, p) for m in rcu["R"] for p in rcu["R"][m]})
        cols = min(3, len(pairs))
        rows = -(-len(pairs) // cols)
        fig, axes = plt.subplots(
            rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False, sharey=True
        )
        for ax in axes.flat[len(pairs) :]:
            ax.set_visible(False)
        for ax, (m, p) in zip(axes.flat, pairs, strict=False):
            for k in "RCU":
                steps, values = rcu[k][m][p]
                ax.plot(steps, values, marker="o", ms=3, label=k)
            ax.set_title(f"{p} ({m})", fontsize=8)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        for row in axes:
            row[0].set_ylabel("avg log-prob")
        fig.tight_layout()
        f4 = folder / "fig4_rcu.png"
        _save_fig(fig, f4)
        plt.close(fig)
        written.append(f4)
    re_file = ProtocolLayout(out).re_distance
    if re_file.exists():
        re = json.loads(re_file.read_text())
        curves = {
            m: {p: (e["steps"], v) for p, v in e["to_retrain"].items()}
            for m, e in re.items()
            if e["steps"]
        }
        if curves:
            f5 = folder / "fig_re_distance.png"
            _panels(curves, "RE distance to retrain", "RE", f5)
            written.append(f5)
    return written


def write_report(out: str | Path) -> dict[str, Path]:
    """Write ``OUT/report/`` (tables, figures, summary.json) from the metrics files."""
    out = Path(out)
    layout = ProtocolLayout(out)
    folder = layout.report
    rows = table1(out)  # reads (and checks) everything before the first write
    folder.mkdir(parents=True, exist_ok=True)
    md = "# Table 1 (forget score, TOFU utility, math utility)\n\n" + table1_markdown(rows)
    re_file = layout.re_distance
    if re_file.exists():
        re = json.loads(re_file.read_text())
        md += "\n## RE distance at the last evaluated step\n\n| method | pair | distance |\n"
        md += "|---|---|---|\n"
        failed = {(r["path"], r["method"]): r["status"] for r in rows if r["status"] != "done"}

        def cell(method: str, paths: list[str], value: float) -> str:
            bad = [failed[p, method] for p in paths if (p, method) in failed]
            return f"– ({bad[0]})" if bad else f"{value:.4g}"

        for m, e in sorted(re.items()):
            if not e["steps"]:
                continue
            for p, v in sorted(e["to_retrain"].items()):
                md += f"| {m} | {p} vs retrain | {cell(m, [p], v[-1])} |\n"
            for pair, v in sorted(e["between"].items()):
                md += f"| {m} | {pair.replace('|', ' vs ')} | {cell(m, pair.split('|'), v[-1])} |\n"
    atomic_write_text(folder / "table1.md", md)
    atomic_write_text(folder / "table1.csv", table1_csv(rows))
    atomic_write_json(folder / "summary.json", rows)
    written = {"table1.md": folder / "table1.md", "table1.csv": folder / "table1.csv"}
    for f in figures(out, folder):
        written[f.name] = f
    return written
