"""What one main job runs: :class:`StudyConfig` (saved beside its outputs) and its thresholds.

Every verdict of the report compares a number with a threshold of :class:`Thresholds`. The
thresholds are part of the config, saved (with the config's hash) in ``config.toml`` /
``config.json`` and copied into ``metrics.json``, so a report is always rendered with the
thresholds that produced its verdicts, not with today's defaults.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathdep.configs import ConfigError, apply_overrides
from pathdep.configs import option as _o
from pathdep.errors import BadInput

ARCHS = ("llama", "qwen2")

# --quick: the tiny models and a few examples per stage (seconds per stage, for tests/notebooks).
QUICK_OVERRIDES = (
    "data.sizes={inst=8, tofu_authors=1, math=8, unlearn=8, math_test=2, rcu=4}",
    "unlearn.max_steps=2",
    "eval.n_forget_prompts=4",
    "eval.n_tofu=4",
    "eval.n_math=2",
    "eval.math_samples=1",
    "eval.max_new_tokens=8",
    "eval.n_re=4",
)
QUICK_RCU_OVERRIDES = (
    "data.sizes={inst=2, tofu_authors=1, math=2, unlearn=2, math_test=2, rcu=4}",
    "unlearn.max_steps=2",
    "eval.n_forget_prompts=2",
    "eval.n_rcu=4",
    "eval.n_re=4",
)

# --quick: every stage trained for this many epochs (stages are an array, not a dotted key).
QUICK_EPOCHS = 1.0
# --quick: at most this many forget-GGN eigenpairs (the tiny model's check of the wiring).
QUICK_THEORY_TOP = 6


class StudyError(BadInput):
    """Bad input to the main job (seeds, folders, architectures)."""


@dataclass(frozen=True)
class Thresholds:
    """The numbers the verdicts compare against (nats per token unless stated)."""

    chance_margin: float = _o(
        1.0,
        "a path holds S_U when its label log-prob is > uniform chance log(1/V) + this: 1 nat = "
        "the label tokens are e = 2.7 times likelier than by chance (the base models score far "
        "below chance, as they confidently predict other text)",
    )
    retrain_margin: float = _o(
        1.0, "... and > the retrain baseline's (the stages without S_U) + this"
    )
    utility_spread_max: float = _o(
        0.5,
        "similar utility across paths before unlearning: spread (max - min) of the TOFU and of "
        "the math log-lik per token <= this (0.5 nat = a factor 1.65 in likelihood)",
    )
    relative_spread_min: float = _o(
        0.2,
        "a utility loss is path dependent when (max - min) / max over paths > this (the paper's "
        "Table 1: GSM8K degradation differs by > 20% across paths)",
    )
    deep_ratio: float = _o(
        0.5,
        "R/C/U: forgetting is deep on an order when C's fall lies at least this far from R's fall "
        "(0) towards U's fall (1); classifies the six panels of the paper's Figure 4 as the paper "
        "does",
    )
    min_math_accuracy: float = _o(
        0.1,
        "math accuracy is judged only when the mean accuracy before unlearning is >= this (with "
        "few questions x samples a drop from a lucky sample to 0 is noise)",
    )
    accuracy_z: float = _o(
        2.0,
        "math accuracy: a method is judged when its largest drop over paths exceeds this many "
        "standard errors (per question, paired), and path dependent when the spread of drops "
        "between the paths that lose the most and the least does too; 24 questions x 5 samples "
        "resolve about 0.1",
    )
    min_forgetting: float = _o(
        0.05,
        "a method forgets when some path's label log-prob falls by >= this; a method that does "
        "not is shown but left out of every verdict",
    )
    min_utility_loss: float = _o(
        0.05,
        "a log-lik utility loss is judged only under a method where some path loses >= this "
        "((max - min) / max of losses that are all ~0 is a ratio of noise)",
    )
    re_ratio_min: float = _o(
        1.25, "distance to retrain is path dependent when farthest / nearest path >= this"
    )


@dataclass(frozen=True)
class StudyConfig:
    """What one main job computes (where it writes and how it shows progress are run options)."""

    seed: int = _o(0, "first protocol seed (data order, data draw, sampling)")
    seeds: int = _o(1, "number of seeds: the job runs seed .. seed + seeds - 1; >= 3: intervals")
    quick: bool = _o(False, "tiny models and a few examples per stage (tests, notebooks)")
    archs: tuple[str, ...] = _o(ARCHS, "default architectures to run (llama, qwen2)")
    models_dir: str = _o(
        "", "folder holding llama/ and qwen2/; empty = the built-in defaults (built if not cached)"
    )
    rcu: bool = _o(True, "also run the Section 4.3 R/C/U study")
    torch_threads: int = _o(
        1,
        "torch CPU threads of each protocol; fixed, because the numbers depend on it (the order "
        "of float reductions) and must not depend on how many protocols run side by side",
    )
    theory_top: int = _o(
        20,
        "eigenpairs of the forget loss's GGN per protocol for the theory ↔ LLM section "
        f"(llm.path_theory); 0 = no section; --quick: at most {QUICK_THEORY_TOP}",
    )
    thresholds: Thresholds = _o(Thresholds(), "the verdicts' thresholds")

    @property
    def seed_list(self) -> list[int]:
        """The protocol seeds this job runs."""
        return list(range(self.seed, self.seed + self.seeds))

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise StudyError(f"seed must be >= 0, got {self.seed}")
        if self.torch_threads < 1:
            raise StudyError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if self.theory_top < 0:
            raise StudyError(f"theory_top must be >= 0, got {self.theory_top}")
        if self.seeds < 1:
            raise StudyError(f"seeds must be >= 1, got {self.seeds}")
        if not self.archs:
            raise StudyError("archs is empty")
        for arch in self.archs:
            if arch not in ARCHS:
                raise StudyError(f"unknown architecture {arch!r} (have {', '.join(ARCHS)})")


def protocol_config(arch: str, seed: int, quick: bool, model_dir: Path, rcu: bool = False):
    """The :class:`llm.config.RunConfig` of one protocol run of the main job: the shipped
    ``demo_<arch>.toml`` (or ``demo_rcu.toml``) with the seed and the model folder set."""
    from llm.config import CONFIG_DIR, config_from_dict

    path = CONFIG_DIR / ("demo_rcu.toml" if rcu else f"demo_{arch}.toml")
    raw: dict[str, Any] = tomllib.loads(path.read_text())
    overrides = [f"seed={seed}", f"data.seed={seed}", f"model.path={json.dumps(str(model_dir))}"]
    if quick:
        overrides += QUICK_RCU_OVERRIDES if rcu else QUICK_OVERRIDES
        for stage in raw.get("stages", []):
            stage["epochs"] = QUICK_EPOCHS
    try:
        return config_from_dict(apply_overrides(raw, overrides))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
