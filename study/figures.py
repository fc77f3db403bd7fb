"""The main job's figure, drawn from ``metrics.json`` alone."""

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
