"""The main job: the paper's claims checked by theory, simulation and LLMs, in one report.

It stands above :mod:`theory`, :mod:`sim` and :mod:`llm` and ties them together (``make demo``,
``python -m study --out DIR``): the default models are built (or taken from the cache), Theorem 3.1
is checked on a linear instance, the sim path study runs, the paper's Section 4 protocol runs on
each default architecture and seed, and ``report.md`` says, finding by finding, what reproduced.

Modules, one job each: :mod:`study.config` (what to run, the verdicts' thresholds),
:mod:`study.layout` (the output folder), :mod:`study.phases` (running theory, sim, llm),
:mod:`study.results` (reading a protocol folder's numbers), :mod:`study.verdicts` (statistics and
verdicts), :mod:`study.render` (the Markdown report), :mod:`study.figures`, :mod:`study.job`
(:func:`run_study`, the orchestration) and :mod:`study.cli`.
"""

from study.config import StudyConfig, StudyError, Thresholds
from study.job import run_study
from study.render import render_report

__all__ = ["StudyConfig", "StudyError", "Thresholds", "render_report", "run_study"]
