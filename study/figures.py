"""The main job's figures, drawn from ``metrics.json`` alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pathdep.io import atomic_save_figure


def plot_label_curves(metrics: dict[str, Any], path: Path) -> None:
    """Mean label log-prob per unlearning step, one line per path (band: min..max over seeds),
    panels = architecture x method; the dotted line is uniform chance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = [a for a in metrics["job"]["archs"] if "incomplete" not in metrics["llm"][a]]
    if not archs:
        return
    methods = metrics["llm"][archs[0]]["methods"]
    fig, axes = plt.subplots(
        len(archs), len(methods), figsize=(3.6 * len(methods), 2.9 * len(archs)), squeeze=False
    )
    for i, arch in enumerate(archs):
        a = metrics["llm"][arch]
        failed = a["findings"].get("failed_methods", {})
        for j, m in enumerate(methods):
            ax = axes[i][j]
            if m in failed:  # a failed run's curve is no result
                ax.set_title(f"{arch}, {m}: {failed[m].split(':')[1].strip()}", fontsize=9)
                continue
            for p in a["paths"]:
                curves = [s["methods_data"][m]["paths"][p]["label_curve"] for s in a["seeds"]]
                n = min(len(c) for c in curves)
                steps = [c[0] for c in curves[0][:n]]
                vals = np.asarray([[c[1] for c in cur[:n]] for cur in curves])  # (seeds, steps)
                ax.plot(steps, vals.mean(axis=0), marker="o", ms=2.5, label=p)
                if vals.shape[0] > 1:
                    ax.fill_between(steps, vals.min(axis=0), vals.max(axis=0), alpha=0.15)
            ax.axhline(a["precondition"]["chance"], color="gray", ls=":", lw=1)
            ax.set_title(f"{arch}, {m}", fontsize=9)
            ax.set_xlabel("unlearning step", fontsize=8)
            ax.set_ylabel("label log-prob / token", fontsize=8)
            ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=80)
    plt.close(fig)


def plot_theory_llm(tl: dict[str, Any], path: Path) -> None:
    """The theory ↔ LLM section's figure (``metrics["theory_llm"]``): predicted against
    measured growth per pair (plain and preconditioned step), the linearised run's relative gap
    per step, and the recency predictor against the measured forgetting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not tl["pairs"]:
        return
    archs = sorted({r["arch"] for r in tl["pairs"]})
    colors = {a: f"C{i}" for i, a in enumerate(archs)}
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for ax, key, title in (
        (axes[0], "predicted_log_growth", "growth: lr·G"),
        (axes[1], "predicted_log_growth_preconditioned", "growth: lr·D·G (AdamW)"),
    ):
        for a in archs:
            pts = [
                (r.get(key), r["measured_log_growth"])
                for r in tl["pairs"]
                if r["arch"] == a and None not in (r.get(key), r["measured_log_growth"])
            ]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.scatter(x, y, s=14, color=colors[a], label=a)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("predicted 2 ln(1 + ρ̂) per step", fontsize=8)
        ax.set_ylabel("measured d ln d / step", fontsize=8)
        ax.legend(fontsize=7)
    ax = axes[2]
    for r in tl["paths"]:
        # Both runs take the same first step (the same gradient at θ0): the gap is 0 up to step
        # 1 by construction, so the curves start at step 2.
        gaps = [g if g > 0 else np.nan for g in r["linear_relative_gap"][2:]]  # log axis
        ax.plot(range(2, 2 + len(gaps)), gaps, color=colors[r["arch"]], alpha=0.5, lw=1)
    ax.axhline(0.1, color="gray", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_title("linearised vs real GA (0 up to step 1)", fontsize=9)
    ax.set_xlabel("GA step", fontsize=8)
    ax.set_ylabel("‖θ_lin − θ_real‖ / ‖θ_real − θ0‖", fontsize=8)
    ax = axes[3]
    for a in archs:
        pts = [
            (r["gradient_in_span"], r["label_drop"])
            for r in tl["paths"]
            if r["arch"] == a and r["label_drop"] is not None
        ]
        if pts:
            x, y = zip(*pts, strict=True)
            ax.scatter(x, y, s=14, color=colors[a], label=a)
    ax.set_title("recency", fontsize=9)
    ax.set_xlabel("‖Vᵀ∇L‖ at the checkpoint", fontsize=8)
    ax.set_ylabel("label log-prob drop under GA", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_save_figure(fig, path, dpi=80)
    plt.close(fig)
