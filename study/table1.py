"""Table 1 beside the paper's: the toy's forget score, TOFU utility and math utility per path and
method, next to the paper's column for the model each default architecture stands in for, and
for every column whether the toy shows the paper's pattern.

The paper's numbers are copied from Yu et al. 2025, Table 1 (after one epoch of unlearning, ~35
steps): Llama-3.2-1B ("Llama1B") for the default ``llama``, Qwen2.5-1.5B ("Qwen1B") for the
default ``qwen2``. Units agree: the paper's code (princeton-pli/impossibility-unlearning,
``src/unlearn_trainer.py``, ``get_batch_log_probs(..., return_average_logprobs=True)``) averages
log-probabilities per token for both the refusal phrases and the TOFU answers, as pathdep does.
The math utility is the change of GSM8K accuracy; the toy's is lm-eval's flexible extraction.

Patterns judged per column (the paper states the first two in Sec. 4.2 and Table 1's caption,
the third is Finding 3's criterion):

- forget score: the least forgetting at p4 (the forget stage learned last: the recency effect);
- TOFU utility: the most utility kept at p4 (slower unlearning keeps more utility);
- math utility: the change differs by more than 20% across paths ((max - min) / max of |change|),
  not measurable when every path's change is 0. Given Finding 3's math verdicts, the toy's
  column is judged as Finding 3 judges it: only under a method whose largest drop exceeds the
  sampling noise, and only a spread beyond the noise shows the pattern.

Beside each pattern: Spearman's rank correlation of the toy's path means with the paper's column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from study.text import ci_text
from study.verdicts import t_interval

SOURCE = "Yu et al. 2025, Table 1, after one epoch of unlearning"
PATHS = ("p1", "p2", "p3", "p4")
# toy method -> (title, the paper's column it stands beside); the paper ran SimNPO in its
# simplified form (r = log pi of a response), the toy also in the SimNPO authors' form
METHODS = {
    "ga": ("GA", "ga"),
    "npo": ("NPO", "npo"),
    "simnpo": ("SimNPO", "simnpo"),
    "simnpo_authors": ("SimNPO (authors' form)", "simnpo"),
}
# toy column of llm.report.table1 -> (title, the paper's pattern)
SCORES = {
    "forget_score": ("Forget score ↑", "least forgetting at p4"),
    "tofu_utility": ("Utility score (TOFU) ↑", "most utility kept at p4"),
    "math_utility_flexible": ("Utility score (Math) ↑", "differs by > 20% across paths"),
}
SPREAD = 0.2
# paper model -> score -> method -> values at p1..p4
PAPER: dict[str, dict[str, dict[str, tuple[float, ...]]]] = {
    "Llama1B": {
        "forget_score": {
            "ga": (7.893, 5.341, 6.346, 0.178),
            "npo": (1.934, 0.66, 1.215, 0.046),
            "simnpo": (1.05, 1.471, 1.465, 0.293),
        },
        "tofu_utility": {
            "ga": (-0.705, -0.27, -1.916, 0.622),
            "npo": (0.567, 0.499, 0.18, 0.742),
            "simnpo": (0.562, 0.326, 0.201, 0.651),
        },
        "math_utility_flexible": {
            "ga": (0.387, -0.079, 0.0, 0.001),
            "npo": (0.394, -0.198, 0.0, -0.053),
            "simnpo": (-0.07, -0.221, 0.041, -0.035),
        },
    },
    "Qwen1B": {
        "forget_score": {
            "ga": (5.33, 10.082, 8.143, 0.547),
            "npo": (1.761, 3.997, 3.066, 0.644),
            "simnpo": (0.738, 3.559, 2.943, 1.893),
        },
        "tofu_utility": {
            "ga": (-0.559, -1.924, -2.366, -0.566),
            "npo": (0.408, -0.301, 0.148, 0.405),
            "simnpo": (0.827, -0.22, 0.31, -0.629),
        },
        "math_utility_flexible": {
            "ga": (0.018, -0.006, -0.181, -0.554),
            "npo": (-0.161, -0.326, 0.292, -0.54),
            "simnpo": (-0.32, -0.39, -0.113, -0.084),
        },
    },
}
PAPER_MODEL = {"llama": "Llama1B", "qwen2": "Qwen1B"}


def shows_pattern(score: str, values: dict[str, float]) -> bool | None:
    """Does one column (path -> value) show the paper's pattern for ``score``? None: not
    measurable (the math change is 0 on every path)."""
    x = np.array([values[p] for p in PATHS])
    if score == "forget_score":
        return bool(x[-1] < x[:-1].min())
    if score == "tofu_utility":
        return bool(x[-1] > x[:-1].max())
    loss = np.abs(x)
    if loss.max() == 0:
        return None
    return bool((loss.max() - loss.min()) / loss.max() > SPREAD)


def rank_correlation(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho of two columns (None when either is constant)."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def beside_paper(
    arch: str,
    folders: list[Path],
    inert: list[str] | tuple[str, ...] = (),
    math_verdict: dict[str, Any] | None = None,
    math_by_seed: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The side-by-side numbers of one architecture over its seeds' protocol folders (None for
    an architecture the paper has no column for); ``inert``: the methods that did not forget
    (the findings' ``inert_methods``), marked so. ``math_verdict``: Finding 3's math entry over
    every seed (``findings(...)["utility"]["math"]``), and ``math_by_seed`` the same for each
    seed alone: the toy's math column is then judged as Finding 3 judges it (not at all when
    accuracy before unlearning is below its floor or the method's drops are within the sampling
    noise); without them, by the relative spread alone."""
    from llm.report import table1

    model = PAPER_MODEL.get(arch)
    if model is None:
        return None
    per_seed = [{(r["path"], r["method"]): r for r in table1(f)} for f in folders]
    methods = [m for m in METHODS if any((p, m) in rows for rows in per_seed for p in PATHS)]
    scores: dict[str, Any] = {}
    for score in SCORES:
        columns = {}
        for method in methods:
            paper = dict(zip(PATHS, PAPER[model][score][METHODS[method][1]], strict=True))
            seeds = [
                {p: rows[(p, method)][score] for p in PATHS if score in rows.get((p, method), {})}
                for rows in per_seed
            ]
            complete = [s for s in seeds if len(s) == len(PATHS)]
            column: dict[str, Any] = {"paper": paper, "paper_shows": shows_pattern(score, paper)}
            if complete:
                toy = {p: t_interval([s[p] for s in complete]) for p in PATHS}
                means = {p: toy[p]["mean"] for p in PATHS}
                shows = shows_pattern(score, means)
                per = [shows_pattern(score, s) for s in complete]
                if score == "math_utility_flexible" and math_verdict is not None:
                    why, shows, per = _math_as_finding_3(method, math_verdict, math_by_seed)
                    column["not_judged"] = why
                column |= {
                    "toy": toy,
                    "toy_shows": shows,
                    "toy_seeds_showing": sum(v is True for v in per),
                    "toy_seeds": len(complete),
                    "rank_correlation": rank_correlation(
                        [means[p] for p in PATHS], [paper[p] for p in PATHS]
                    ),
                }
            columns[method] = column
        scores[score] = columns
    return {
        "paper_model": model,
        "methods": methods,
        "source": SOURCE,
        "scores": scores,
        "inert": sorted(inert),
    }


def _math_as_finding_3(
    method: str, pooled: dict[str, Any], by_seed: list[dict[str, Any]] | None
) -> tuple[str | None, bool | None, list[bool | None]]:
    """(why not judged, shows over the seed means, shows per seed) of the toy's math column,
    from Finding 3's verdicts (``study.verdicts.findings``)."""
    if not pooled.get("accurate_enough", pooled.get("measurable", False)):
        return "accuracy", None, []
    verdict = pooled["methods"].get(method, {})
    if not verdict.get("loses", False):
        return "noise", None, []
    per = [
        bool(v["methods"].get(method, {}).get("loses") and v["methods"][method]["path_dependent"])
        for v in by_seed or []
    ]
    return None, bool(verdict["path_dependent"]), per


def _cell(c: dict[str, Any] | None) -> str:
    return "–" if c is None else ci_text(c)


def _yes_no(v: bool | None) -> str:
    return "n/a" if v is None else ("yes" if v else "no")


def render_section(arch: str, t: dict[str, Any]) -> list[str]:
    """Markdown lines: the three blocks in the paper's layout, toy beside paper, and one line
    per column on the paper's pattern."""
    model = t["paper_model"]
    methods = t.get("methods", [m for m in METHODS if m in t["scores"]["forget_score"]])
    head = " | ".join(f"{METHODS[m][0]} toy | {METHODS[m][0]} {model}" for m in methods)
    L = [
        f"### Table 1 beside the paper ({model})",
        "",
        f"The toy's scores after its unlearning steps (mean ± 95% t-interval over seeds) beside "
        f"the paper's {model} column ({t['source']}); both per token.",
        "",
    ]
    for score, (title, pattern) in SCORES.items():
        cols = t["scores"][score]
        L += [f"**{title}**", "", f"| path | {head} |", "|---|" + "---|" * 2 * len(methods)]
        for p in PATHS:
            cells = []
            for m in methods:
                cells += [_cell(cols[m].get("toy", {}).get(p)), f"{cols[m]['paper'][p]:.3f}"]
            L.append(f"| {p} | " + " | ".join(cells) + " |")
        L += ["", f"Pattern: {pattern}."]
        for m in methods:
            name, c = METHODS[m][0], cols[m]
            if "toy" not in c:
                L.append(f"- {name}: paper {_yes_no(c['paper_shows'])}; toy: no complete seed.")
                continue
            if m in t["inert"]:
                L.append(f"- {name}: paper {_yes_no(c['paper_shows'])}; toy: did not forget.")
                continue
            if c["toy_shows"] is None and score == "math_utility_flexible":
                why = (
                    "no path's accuracy drop exceeds the sampling noise"
                    if c.get("not_judged") == "noise"
                    else "math accuracy before unlearning is below Finding 3's floor"
                )
                L.append(f"- {name}: paper {_yes_no(c['paper_shows'])}; toy: n/a ({why}).")
                continue
            rho = c["rank_correlation"]
            L.append(
                f"- {name}: paper {_yes_no(c['paper_shows'])}; toy {_yes_no(c['toy_shows'])} "
                f"({c['toy_seeds_showing']}/{c['toy_seeds']} seeds); path order vs the paper: "
                f"Spearman ρ = {'n/a' if rho is None else f'{rho:.2f}'}."
            )
        L.append("")
    return L
