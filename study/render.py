"""The Markdown report of the main job, rendered from ``metrics.json`` alone.

:func:`render_report` is a pure function of the metrics (thresholds included), so the report and
the numbers cannot disagree, and an old metrics file renders with the thresholds that judged it.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from study.table1 import render_section as table1_section
from study.text import ci_text, fmt
from study.theory_llm import render_section


def _verdict(ok: bool) -> str:
    return "**reproduced**" if ok else "**not reproduced**"


def _precondition_note(pre: dict[str, Any]) -> str:
    notes = []
    if not pre["all_paths_hold"]:
        notes.append(
            "some path lost S_U before unlearning, so it has nothing to forget and the "
            "recency and divergence findings do not test the paper's claims"
        )
    if not pre["utility_similar"]:
        notes.append(
            "every path holds S_U, but utility differs across paths before unlearning by "
            "more than the bound, so the utility findings partly reflect the starting points"
            if pre["all_paths_hold"]
            else "utility also differs across paths before unlearning"
        )
    return f" ({'; '.join(notes)})" if notes else ""


def forgetting_lines(fd: dict[str, Any], th: SimpleNamespace) -> list[str]:
    """Which paths each method forgets on, and why an inert one does not."""
    forgets = fd.get("forgetting", {})
    if not forgets:
        return []
    parts = []
    for m, f in forgets.items():
        text = f"{m} on {len(f['paths'])} of {f['of']} paths"
        if f["simnpo_weight"] is not None:
            text += f" (σ(β r + γ) at step 0: {f['simnpo_weight']:.2g})"
        parts.append(text)
    L = [
        f"Forgetting (the label log-prob falls by ≥ {th.min_forgetting:g} nat/token, seed "
        "mean): " + "; ".join(parts) + ".",
        "",
    ]
    inert = fd["inert_methods"]
    if inert:
        text = (
            "Methods that did not forget on any path, shown but left out of every verdict: "
            f"{', '.join(inert)}."
        )
        if any(forgets[m]["simnpo_weight"] is not None for m in inert):
            text += (
                " SimNPO scales GA's gradient of each sequence by 2σ(β r + γ); in the paper's "
                "form r = log π(y|x) of a whole response, far below 0 (tens to hundreds of "
                "nats) on a model that holds S_U, so the factor (above, the mean over paths) is "
                "~0, the gradient is below AdamW's ε and no step moves the model; the authors' "
                "form divides r by |y|."
            )
        L += [text, ""]
    return L


def _dash_rows(failed: dict[str, str], cells: int) -> list[str]:
    """Table rows of methods whose runs failed: every cell "–"."""
    return [f"| {m} | " + " | ".join(["–"] * cells) + " |" for m in failed]


def render_report(metrics: dict[str, Any]) -> str:
    """The Markdown report, a pure function of ``metrics.json`` (its thresholds included)."""
    L: list[str] = []
    job = metrics["job"]
    th = SimpleNamespace(**metrics["thresholds"])
    seeds_note = (
        "95% t-intervals over seeds: mean ± half-width"
        if job["seeds"] > 1
        else "one seed, no interval"
    )
    L += [
        "# pathdep main job: report",
        "",
        f"Seeds: {', '.join(map(str, job.get('seed_list', range(job['seeds']))))} ({seeds_note}); "
        f"quick mode: {fmt(job['quick'])}; architectures: {', '.join(job['archs'])}.",
        "",
        "## Time per phase (seconds)",
        "",
        "| phase | seconds |",
        "|---|---|",
    ]
    for k, v in metrics["timings"]:
        L.append(f"| {k} | {fmt(v, 1)} |")
    tm = metrics["theory"]
    L += [
        "",
        "## 1. Theorem 3.1 on a random linear instance (`theory`)",
        "",
        f"Instance seed {tm['seed']}, shape {tm['shape']}: ρ* = {fmt(tm['rho_star'], 4)}, "
        f"σ_U = {fmt(tm['sigma_U'], 4)}, t0 = {tm['t0']}, t* (ε = {tm['epsilon']:g}) = "
        f"{tm['t_star']}. Exact log10 d(t) goes from {fmt(tm['log10_d_first'])} at t = 0 to "
        f"{fmt(tm['log10_d_last'])} at t = {tm['steps']}; the bound there is "
        f"{fmt(tm['log10_bound_last'])}. Minimum of log10(exact / bound) where the theorem "
        f"applies: {fmt(tm['min_log10_tightness'], 4)}.",
        "",
        f"Bound holds for every t ≥ max(t0, 0): {_verdict(tm['bound_holds'])}.",
        "",
        f"![Theorem 3.1: exact divergence vs bound]({tm['figure']})",
        "",
        "Linear-model recency prediction (three retain stages, forget stage at position p, "
        f"increase of the forget loss after {tm['recency']['t']} GA steps, log10):",
        "",
        "| position p | "
        + " | ".join(str(i + 1) for i in range(len(tm["recency"]["log10_forget_loss_increase"])))
        + " |",
        "|---|" + "---|" * len(tm["recency"]["log10_forget_loss_increase"]),
        "| log10 increase | "
        + " | ".join(fmt(v) for v in tm["recency"]["log10_forget_loss_increase"])
        + " |",
        "",
        f"Slowest forgetting at p = {tm['recency']['slowest_position']}: the linear model "
        f"{'predicts' if tm['recency']['predicts_recency'] else 'does not predict'} the recency "
        "effect on this instance.",
        "",
        "## 2. Simulation: the path study of `sim` (forget stage at p = 1..4)",
        "",
    ]
    sm = metrics["sim"]
    sv = sm["summary"]
    L += [
        f"Configuration: {sm['config']}. Largest RE distance between two paths: "
        f"{fmt(sv['pairwise_re_initial_max'], 4)} before unlearning, "
        f"{fmt(sv['pairwise_re_final_max'], 4)} after {sv['steps']} steps "
        f"(log10 growth {fmt(sv['pairwise_growth_log10'])}).",
        "",
        "| position p | " + " | ".join(str(p) for p in sv["forget_position"]) + " |",
        "|---|" + "---|" * len(sv["forget_position"]),
        "| drop of forget log-lik | " + " | ".join(fmt(v) for v in sv["forget_logp_drop"]) + " |",
        "| RE distance to retrain (end) | "
        + " | ".join(fmt(v, 4) for v in sv["re_to_retrain_final"])
        + " |",
        "",
        f"Paths diverge during unlearning: {_verdict(sm['diverges'])}. Forgetting slowest when "
        f"S_U is last (recency): {_verdict(sm['recency'])}.",
        "",
        f"![sim path study]({sm['figure']})",
        "",
    ]
    for arch in job["archs"]:
        a = metrics["llm"][arch]
        if "incomplete" in a:
            L += [
                f"## 3. LLM protocol: default {arch}",
                "",
                f"**Not measurable**: {a['incomplete']}. Every verdict of {arch} is n/a.",
                "",
            ]
            continue
        pre = a["precondition"]
        L += [
            f"## 3. LLM protocol: default {arch}",
            "",
            f"Protocol folders: {', '.join(a['folders'])}. Paths: "
            + "; ".join(f"{p} = {' → '.join(seq)}" for p, seq in a["sequences"].items())
            + f"; retrain = {' → '.join(a['retrain_sequence'])}.",
            "",
            "### Precondition: every path still holds S_U when unlearning starts",
            "",
            f"Uniform chance log(1/V) = {fmt(pre['chance'])} (V = {pre['vocab_size']}); the "
            f"retrain baseline (never saw S_U) scores the label at "
            f"{ci_text(pre['retrain_label'])}. A path holds S_U when its label log-prob per "
            f"token is > chance + {th.chance_margin:g} and > retrain + {th.retrain_margin:g} "
            f"(every seed); utility is similar when the spread across paths of the TOFU and of "
            f"the math log-lik is ≤ {th.utility_spread_max:g} each.",
            "",
            "| path | label log-prob | over chance | over retrain | TOFU log-lik | math log-lik "
            "| math acc | holds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for p, r in pre["paths"].items():
            L.append(
                f"| {p} | {ci_text(r['label'])} | {ci_text(r['over_chance'])} | "
                f"{ci_text(r['over_retrain'])} | "
                f"{ci_text(r['tofu']) if 'tofu' in r else 'n/a'} | "
                f"{ci_text(r['math_loglik']) if 'math_loglik' in r else 'n/a'} | "
                f"{ci_text(r['math']) if 'math' in r else 'n/a'} | {fmt(r['holds'])} |"
            )
        L += [
            "",
            "Log-lik spread across paths (max over seeds): "
            + ", ".join(f"{k} {fmt(v)}" for k, v in pre["utility_spread_max"].items())
            + ". "
            + f"Precondition: {'**holds**' if pre['holds'] else '**fails**'}"
            + _precondition_note(pre)
            + ".",
            "",
        ]
        fd = a["findings"]
        failed = fd.get("failed_methods", {})
        if failed:
            L += [
                "Methods with a run that did not finish cleanly, shown as – and left out of "
                "every verdict (a non-finite or collapsed run's numbers are no result): "
                + "; ".join(f"{m} ({why})" for m, why in failed.items())
                + ".",
                "",
            ]
        L += forgetting_lines(fd, th)
        L += [
            "### Finding 1: divergence between paths during unlearning",
            "",
            "| method | mean pairwise RE distance, step 0 | last step | grows |",
            "|---|---|---|---|",
        ]
        for m, v in fd["divergence"]["methods"].items():
            L.append(
                f"| {m} | {ci_text(v['first'], 4)} | {ci_text(v['last'], 4)} | {fmt(v['grows'])} |"
            )
        L += _dash_rows(failed, 3)
        L += [
            "",
            f"Criterion: {fd['divergence']['criterion']}. "
            f"{_verdict(fd['divergence']['reproduced'])}.",
            "",
        ]
        rec = fd["recency"]
        L += [
            "### Finding 2: recency effect",
            "",
            "Drop of the label log-prob per token over unlearning (larger = faster forgetting):",
            "",
            "| method | " + " | ".join(a["paths"]) + " | slowest |",
            "|---|" + "---|" * (len(a["paths"]) + 1),
        ]
        for m, v in rec["methods"].items():
            L.append(
                f"| {m} | "
                + " | ".join(ci_text(v["drop"][p]) for p in a["paths"])
                + f" | {v['slowest']} |"
            )
        L += _dash_rows(failed, len(a["paths"]) + 1)
        L += [
            "",
            f"Criterion: {rec['criterion']}. Cells with recency: {rec['cells']} of "
            f"{rec['judged_cells']} judged. {_verdict(rec['reproduced'])}.",
            "",
        ]
        ut = fd["utility"]
        L += ["### Finding 3: path-dependent loss of utility", ""]
        for name, title in (
            ("tofu", "TOFU: |Δ log-lik| of true answers (1 − TOFU utility)"),
            ("math_loglik", "math: |Δ log-lik| of the gold solutions (teacher-forced)"),
            ("math", "math: drop of accuracy (flexible extraction)"),
        ):
            u = ut[name]
            L += [
                f"{title}:",
                "",
                "| method | " + " | ".join(a["paths"]) + " | relative spread |",
                "|---|" + "---|" * (len(a["paths"]) + 1),
            ]
            for m, v in u["methods"].items():
                # A spread of losses that are all noise (accuracy ~0, or no path losing
                # utility) would read as a finding.
                if not u.get("accurate_enough", u["measurable"]):
                    spread = "n/a"
                elif not v.get("loses", True) and name == "math":
                    spread = f"n/a (no drop > {th.accuracy_z:g} SE)"
                elif not v.get("loses", True):
                    spread = f"n/a (every loss < {th.min_utility_loss:g})"
                else:
                    spread = fmt(v["relative_spread"])
                    if v.get("noise"):
                        spread += f" ({v['noise']['z']:.1f} SE)"
                L.append(
                    f"| {m} | "
                    + " | ".join(ci_text(v["values"][p]) for p in a["paths"])
                    + f" | {spread} |"
                )
            L += _dash_rows(failed, len(a["paths"]) + 1)
            if u["measurable"]:
                extra = ""
            elif name == "math" and not u.get("accurate_enough", u["measurable"]):
                extra = (
                    f" Not measurable: mean accuracy before unlearning "
                    f"< {th.min_math_accuracy:g} at this size."
                )
            elif name == "math":
                extra = (
                    f" Not measurable: no method that forgets lowers the accuracy of any path "
                    f"by more than {th.accuracy_z:g} standard errors."
                )
            else:
                extra = (
                    f" Not measurable: no path loses >= {th.min_utility_loss:g} nat/token under "
                    "a method that forgets."
                )
            L += ["", f"{name}: {_verdict(u['reproduced'])}.{extra}", ""]
        L += [f"Criterion: {ut['criterion']}.", ""]
        if "rcu" in a and a["rcu"].get("failed"):
            L += [
                "### Finding 4: superficial vs deep forgetting (R/C/U, Sec. 4.3)",
                "",
                f"Not measurable: {a['rcu']['failed']}.",
                "",
            ]
        elif "rcu" in a:
            r = a["rcu"]
            L += [
                "### Finding 4: superficial vs deep forgetting (R/C/U, Sec. 4.3)",
                "",
                f"GA ({r['method']}) on U after each order; drops of the log-prob per token:",
                "",
                "| order | R drop | C drop | U drop | C's position | kind |",
                "|---|---|---|---|---|---|",
            ]
            for p, v in r["orders"].items():
                L.append(
                    f"| {p} | {ci_text(v['drops']['R'])} | {ci_text(v['drops']['C'])} | "
                    f"{ci_text(v['drops']['U'])} | {fmt(v['c_position'])} | {v['kind']} |"
                )
            L += ["", f"Criterion: {r['criterion']}. {_verdict(r['reproduced'])}.", ""]
        rd = fd["retrain_distance"]
        L += [
            "### Finding 5: distance of each unlearned model to the retrained baseline",
            "",
            "RE distance d (Def. 2.1; Pred = per-token log-probs of held-out paraphrased TOFU "
            "answers), before → after unlearning:",
            "",
            "| method | " + " | ".join(a["paths"]) + " | far/near | ε guaranteed |",
            "|---|" + "---|" * (len(a["paths"]) + 2),
        ]
        for m, v in rd["methods"].items():
            cells = [
                f"{ci_text(v['paths'][p]['first'], 4)} → {ci_text(v['paths'][p]['last'], 4)}"
                for p in a["paths"]
            ]
            L.append(
                f"| {m} | " + " | ".join(cells) + f" | {fmt(v['ratio'])} | "
                f"{fmt(v['epsilon_guaranteed'], 4)} |"
            )
        L += _dash_rows(failed, len(a["paths"]) + 2)
        L += [
            "",
            f"Criterion: {rd['criterion']}. {_verdict(rd['reproduced'])}.",
            "",
            f"Figures: label log-prob per step ({a['folders'][0]}/report/fig1_label_logprob.png),"
            f" RE distance ({a['folders'][0]}/report/fig_re_distance.png), Table 1 "
            f"({a['folders'][0]}/report/table1.md).",
            "",
        ]
        if a.get("table1"):
            L += table1_section(arch, a["table1"])
    if metrics.get("theory_llm"):
        L += render_section(metrics["theory_llm"])
    L += [
        "## Summary",
        "",
        "| finding | " + " | ".join(job["archs"]) + " |",
        "|---|" + "---|" * len(job["archs"]),
    ]
    for key, title in metrics["summary_rows"]:
        L.append(
            f"| {title} | "
            + " | ".join(fmt(metrics["summary"][arch].get(key)) for arch in job["archs"])
            + " |"
        )
    L += ["", "![label log-prob during unlearning, all paths](fig_label_curves.png)", ""]
    return "\n".join(L)
