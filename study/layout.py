"""The one definition of the main job's output folder (``--out``)::

OUT/
  config.toml, config.json    the StudyConfig (+ hash); rerun with --config OUT/config.toml
  metrics.json                every number the report states, with the thresholds
  report.md                   rendered from metrics.json alone
  fig_label_curves.png        label log-prob per unlearning step, all paths
  fig_theory_llm.png          the theory's predictions against the LLM protocols' measurements
  theory/                     Theorem 3.1 instance, check.json, bound_vs_exact.png
  sim/                        the sim path study: paths_summary.json, paths.png
  llm/<arch>/seed<k>/         one protocol folder per architecture and seed (llm.layout)
  llm/<arch>/rcu_seed<k>/     the R/C/U study of that seed
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StudyLayout:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def label_curves(self) -> Path:
        return self.root / "fig_label_curves.png"

    @property
    def theory_llm_figure(self) -> Path:
        return self.root / "fig_theory_llm.png"

    @property
    def theory(self) -> Path:
        return self.root / "theory"

    @property
    def sim(self) -> Path:
        return self.root / "sim"

    def protocol(self, arch: str, seed: int, rcu: bool = False) -> str:
        """A protocol folder, relative to the root (as metrics.json records it)."""
        return f"llm/{arch}/{'rcu_seed' if rcu else 'seed'}{seed}"
