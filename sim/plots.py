"""Figures (matplotlib, Agg) for theorem, paths and sweep results; each returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sim.paths import PathsResult  # noqa: E402
from sim.theorem import TheoremResult  # noqa: E402


def theorem_figure(res: TheoremResult):
    """Tightness and t0 distributions, and a few exact-vs-bound curves."""
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    c = res.checked
    ax[0].hist(res.log10_tightness_final[c], bins=40, color="C0")
    ax[0].set(
        xlabel="log10(exact d(T) / bound(T))",
        ylabel="instances",
        title=f"tightness at T={res.config.n_steps} ({c.sum()} checked)",
    )
    t0 = res.t0[np.isfinite(res.t0)]
    ax[1].hist(np.clip(t0, -5, 3 * res.config.n_steps), bins=40, color="C1")
    ax[1].axvline(res.config.n_steps, color="k", ls="--", lw=1, label="T")
    ax[1].set(xlabel="t0", title=f"t0 (bound holds on {100 * res.holds[c].mean():.1f}%)")
    ax[1].legend()
    ts = np.arange(res.example_log10_distance.shape[1])
    for i in range(len(res.example_t0)):
        line = ax[2].plot(ts, res.example_log10_distance[i], lw=1.2)[0]
        ax[2].plot(ts, res.example_log10_bound[i], ls="--", color=line.get_color(), lw=1)
        if 0 <= res.example_t0[i] <= ts[-1]:
            ax[2].plot(
                res.example_t0[i],
                res.example_log10_bound[i][int(res.example_t0[i])],
                "o",
                color=line.get_color(),
                ms=4,
            )
    ax[2].set(
        xlabel="GA step t",
        ylabel="log10 RE distance",
        title="exact (solid) vs bound (dashed), dot = t0",
    )
    fig.tight_layout()
    return fig


def paths_figure(res: PathsResult, title: str = ""):
    """Forget log-likelihood per path, max pairwise RE distance, distance to retrain."""
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    ts = np.arange(res.loss.shape[1])
    for i in range(len(res.orders)):
        label = f"S_U at p={res.forget_position[i]}" if len(res.orders) <= 8 else None
        ax[0].plot(ts, _symlog(res.forget_logp[i]), label=label)
        ax[2].plot(ts, np.log10(res.re_to_retrain[i] + 1e-300), label=label)
    P = len(res.orders)
    if P > 1:
        iu = np.triu_indices(P, 1)
        pair = res.re_pairwise[:, iu[0], iu[1]]
        ax[1].plot(ts, np.log10(pair.max(axis=1) + 1e-300), label="max over pairs")
        ax[1].plot(ts, np.log10(pair.min(axis=1) + 1e-300), label="min over pairs")
        ax[1].legend(fontsize=7)
    ax[0].set(
        xlabel="unlearning step",
        ylabel="sign(x)·log10(1+|x|) of forget log-lik",
        title="forgetting per path",
    )
    ax[1].set(xlabel="unlearning step", ylabel="log10 RE distance", title="between paths")
    ax[2].set(xlabel="unlearning step", ylabel="log10 RE distance", title="to retrain baseline")
    if len(res.orders) <= 8:
        ax[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _symlog(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log10(1.0 + np.abs(x))


def sweep_figure(rows: list[dict]):
    """Pairwise divergence and distance to retrain against the swept value."""
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    x = [r["value"] for r in rows]
    name = rows[0]["parameter"]
    lg = lambda key: [np.log10(max(float(r[key]), 1e-300)) for r in rows]  # noqa: E731
    ax[0].plot(x, lg("pairwise_re_initial_max"), "o-", label="before unlearning")
    ax[0].plot(x, lg("pairwise_re_final_max"), "s-", label="after unlearning")
    ax[0].set(
        xlabel=name, ylabel="log10 max pairwise RE distance", title="divergence between paths"
    )
    ax[0].legend(fontsize=8)
    ax[1].plot(x, lg("re_to_retrain_final_min"), "o-", label="closest path")
    ax[1].plot(x, lg("re_to_retrain_final_max"), "s-", label="farthest path")
    ax[1].set(xlabel=name, ylabel="log10 RE distance", title="to retrain baseline (after)")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    return fig
