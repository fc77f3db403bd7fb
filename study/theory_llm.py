"""Theory ↔ LLM: the linear theory's predictions against the LLM protocols, pooled over pairs of
paths, seeds and architectures, and the report section that shows them.

Each protocol folder holds ``theory_llm.json`` (:func:`llm.path_theory.analyse_protocol`). Three
predictions are tested, each as a rank correlation (Spearman) with a 95% bootstrap interval:

(a) growth: the predicted growth of ln d per GA step between two paths, 2 ln(1 + ρ̂), against the
    measured log-slope of their RE distance; for the theory's plain step (lr·G) and for the
    protocol's AdamW read as a diagonal preconditioner (lr·D·G);
(b) the linearised run: for how many GA steps the network stays within 10% of its first-order
    Taylor model (the regime where the linear theory can hold at all);
(c) recency: the forget gradient's norm inside the top-r forget span at each path's checkpoint
    against the path's measured forgetting (drop of the label log-prob under GA).

A prediction that fails is reported as failing, with its numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

BOOTSTRAP = 2000


def spearman_interval(x: list[float], y: list[float], seed: int = 0) -> dict[str, Any]:
    """Spearman's rho of (x, y) and its 95% percentile bootstrap interval over the points."""
    from scipy.stats import spearmanr

    pts = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
    out: dict[str, Any] = {"n": len(pts), "rho": None, "low": None, "high": None}
    if len(pts) < 3 or len({a for a, _ in pts}) < 2 or len({b for _, b in pts}) < 2:
        return out
    xs, ys = np.array(pts).T
    out["rho"] = float(spearmanr(xs, ys).statistic)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(xs), len(xs))
        if len(set(xs[i])) > 1 and len(set(ys[i])) > 1:
            draws.append(spearmanr(xs[i], ys[i]).statistic)
    if draws:
        out["low"], out["high"] = (float(v) for v in np.percentile(draws, [2.5, 97.5]))
    return out


def collect(root: Path, runs: dict[str, dict[str, str]]) -> dict[str, Any] | None:
    """The pooled numbers of every protocol's ``theory_llm.json`` (``runs``: {arch: {seed:
    folder relative to root}}); None when no protocol was measured."""
    from llm.layout import ProtocolLayout

    per_arch: dict[str, dict[int, dict[str, Any]]] = {}
    errors = []
    for arch, by_seed in runs.items():
        for seed, rel in sorted(by_seed.items(), key=lambda kv: int(kv[0])):
            path = ProtocolLayout(Path(root) / rel).theory_llm
            if not path.is_file():
                continue
            res = json.loads(path.read_text())
            if "error" in res:
                errors.append(f"{arch}/seed{seed}: {res['error']}")
            else:
                per_arch.setdefault(arch, {})[int(seed)] = res
    if not per_arch and not errors:
        return None
    out = aggregate(per_arch) if per_arch else {"pairs": [], "paths": []}
    out["errors"] = errors
    return out


def aggregate(per_arch: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Pooled numbers of every architecture's seeds (``{arch: {seed: theory_llm.json}}``)."""
    rows: dict[str, list] = {"pairs": [], "paths": []}
    for arch, seeds in per_arch.items():
        for s, res in sorted(seeds.items()):
            for pair, q in res["pairs"].items():
                rows["pairs"].append({"arch": arch, "seed": s, "pair": pair, **q})
            for path, q in res["paths"].items():
                lin = q["linearised"]
                rows["paths"].append(
                    {
                        "arch": arch,
                        "seed": s,
                        "path": path,
                        **{k: v for k, v in q.items() if k != "linearised"},
                        "linear_regime_steps": lin["linear_regime_steps"],
                        "linear_relative_gap": [r["relative_gap"] for r in lin["steps"]],
                    }
                )
    pairs, paths = rows["pairs"], rows["paths"]
    measured = [r["measured_log_growth"] for r in pairs]
    ratios = [
        r["predicted_log_growth"] / m
        for r, m in zip(pairs, measured, strict=True)
        if m not in (None, 0) and r["predicted_log_growth"] is not None
    ]
    lasts = {}
    for (arch, s), group in _groups(paths).items():
        drops = {r["path"]: r["label_drop"] for r in group if r["label_drop"] is not None}
        grads = {r["path"]: r["gradient_in_span"] for r in group}
        if drops:
            lasts[f"{arch}/seed{s}"] = {
                "smallest_gradient": min(grads, key=grads.get),
                "slowest_forgetting": min(drops, key=drops.get),
            }
    first = next(iter(next(iter(per_arch.values())).values()))
    pred, pred_d = "predicted_log_growth", "predicted_log_growth_preconditioned"
    return {
        "pairs": pairs,
        "paths": paths,
        "growth": _correlations(pairs, pred, "measured_log_growth"),
        "growth_preconditioned": _correlations(pairs, pred_d, "measured_log_growth"),
        "growth_ratio_median": float(np.median(ratios)) if ratios else None,
        "recency": _correlations(paths, "gradient_in_span", "label_drop"),
        "recency_cases": lasts,
        "linear_regime_steps": [r["linear_regime_steps"] for r in paths],
        "settings": {
            k: first[k]
            for k in ("top", "n_forget", "loss", "reference", "optimizer", "lr", "preconditioner")
        },
    }


def _correlations(rows: list[dict[str, Any]], x: str, y: str) -> dict[str, Any]:
    """Spearman of ``x`` against ``y`` pooled over the rows, and within (architecture, seed):
    the values replaced by their ranks inside their group, so that an offset between
    architectures or seeds does not count as agreement."""
    within: dict[str, list] = {x: [], y: []}
    for group in _groups(rows).values():
        for key in (x, y):
            within[key] += _ranks([r.get(key) for r in group])
    return {
        "pooled": spearman_interval([r.get(x) for r in rows], [r.get(y) for r in rows]),
        "within": spearman_interval(within[x], within[y]),
    }


def _ranks(values: list[float | None]) -> list[float | None]:
    from scipy.stats import rankdata

    known = [v for v in values if v is not None]
    ranks = iter(rankdata(known).tolist()) if known else iter(())
    return [next(ranks) if v is not None else None for v in values]


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["arch"], r["seed"]), []).append(r)
    return out


def _interval(c: dict[str, Any]) -> str:
    if c["rho"] is None:
        return f"n/a ({c['n']} points)"
    if c["low"] is None:
        return f"{c['rho']:.2f} ({c['n']} points)"
    return f"{c['rho']:.2f} [{c['low']:.2f}, {c['high']:.2f}] ({c['n']} points)"


def _holds(c: dict[str, Any]) -> str:
    if c["rho"] is None or c["low"] is None:
        return "not measurable"
    if c["low"] > 0:
        return "**holds**"
    return "**fails** (the interval reaches 0)"


def _both(c: dict[str, Any]) -> str:
    """A prediction's two correlations, each with its interval and verdict."""
    return (
        f"within (architecture, seed) {_interval(c['within'])}: {_holds(c['within'])}; "
        f"pooled {_interval(c['pooled'])}: {_holds(c['pooled'])}"
    )


def _g(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def render_section(tl: dict[str, Any]) -> list[str]:
    """The report's "theory ↔ LLM" section (Markdown lines), from ``metrics["theory_llm"]``."""
    L = ["## 4. Theory ↔ LLM: the linear theory's quantities on the LLM checkpoints", ""]
    for line in tl["errors"]:
        L.append(f"- not measured: {line}")
    if not tl["pairs"]:
        return [*L, ""]
    s = tl["settings"]
    L += [
        f"Forget curvature: the {s['reference']}, its top {s['top']} eigenpairs (Lanczos); loss: "
        f"{s['loss']} (n_forget = {s['n_forget']}). Unlearning step: {s['optimizer']} at lr "
        f"{s['lr']:g}; preconditioner: {s['preconditioner']}. Each prediction is a Spearman rank "
        "correlation with its 95% bootstrap interval; it holds when the interval is above 0.",
        "",
        "**(a) Growth of the RE distance between two paths under GA**: the theorem's 2 ln(1 + ρ̂) "
        "per step, with ρ̂ the Rayleigh quotient of the step along Δθ0's part in the top-r "
        "forget span, against the measured slope of ln d over the first evaluated GA steps.",
        "",
        "| arch | seed | pair | ‖PΔθ0‖/‖Δθ0‖ | ρ̂ (lr·G) | predicted | ρ̂ (lr·D·G) | predicted "
        "| measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in tl["pairs"]:
        L.append(
            f"| {r['arch']} | {r['seed']} | {r['pair'].replace('|', '–')} | "
            f"{_g(r['proj_fraction'])} | {_g(r['rho_hat'])} | {_g(r['predicted_log_growth'])} | "
            f"{_g(r.get('rho_hat_preconditioned'))} | "
            f"{_g(r.get('predicted_log_growth_preconditioned'))} | "
            f"{_g(r['measured_log_growth'])} |"
        )
    L += [
        "",
        f"- plain step lr·G (the theory's GA): {_both(tl['growth'])}.",
        f"- with the optimizer's preconditioning lr·D·G: {_both(tl['growth_preconditioned'])}.",
        f"- size: median predicted / measured (lr·G) = {_g(tl['growth_ratio_median'])}.",
        "",
        "**(b) Linearised GA**: the same optimizer on the network's first-order Taylor model "
        "around each checkpoint; the steps for which it stays within 10% of the real run's "
        "movement, per path: "
        f"{', '.join(str(n) for n in tl['linear_regime_steps'])}.",
        "",
        "**(c) Recency**: the forget gradient's norm inside the top-r span at each checkpoint "
        "(the theory: the stage learned last leaves the smallest residual) against the measured "
        "forgetting (drop of the label log-prob under GA).",
        "",
        "| arch | seed | path | forget loss | ‖∇L‖ | ‖Vᵀ∇L‖ | label drop | linear regime |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in tl["paths"]:
        L.append(
            f"| {r['arch']} | {r['seed']} | {r['path']} | {_g(r['forget_loss'])} | "
            f"{_g(r['gradient_norm'])} | {_g(r['gradient_in_span'])} | {_g(r['label_drop'])} | "
            f"{r['linear_regime_steps']} |"
        )
    cases = tl["recency_cases"]
    agree = sum(c["smallest_gradient"] == c["slowest_forgetting"] for c in cases.values())
    L += [
        "",
        f"- ‖Vᵀ∇L‖ against label drop: {_both(tl['recency'])}.",
        f"- the path with the smallest ‖Vᵀ∇L‖ is the slowest to forget in {agree} of "
        f"{len(cases)} (architecture, seed) cases.",
        "",
        "![theory ↔ LLM: predicted vs measured](fig_theory_llm.png)",
        "",
    ]
    return L
