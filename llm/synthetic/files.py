"""Writing the default synthetic stages as JSONL files plus a ``manifest.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from llm.data import examples_jsonl, rcu_items_jsonl
from llm.synthetic.authors import author_facts
from llm.synthetic.instructions import instruction_following
from llm.synthetic.math_problems import arithmetic, held_out_arithmetic
from llm.synthetic.refusals import rcu_set, rcu_stage, safety_refusals
from pathdep.io import atomic_write_text

__all__ = ["DatasetSizes", "write_default_datasets"]


@dataclass(frozen=True)
class DatasetSizes:
    """Sizes of the default synthetic stages (the paper's are ~4k, ~4k, 8k, 4.5k examples).

    Attributes:
        inst: instruction-following examples (S_inst).
        tofu_authors: invented authors; 8 training QA pairs each (S_tofu).
        math: arithmetic problems (S_math).
        unlearn: refusal examples (S_U).
        math_test: held-out arithmetic problems for the accuracy metric.
        rcu: prompts of the R/C/U set (the paper uses 40).
    """

    inst: int = 400
    tofu_authors: int = 50
    math: int = 400
    unlearn: int = 300
    math_test: int = 50
    rcu: int = 40

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"data.sizes.{name} must be an integer >= 0, got {value!r}")

    @classmethod
    def from_mapping(cls, sizes: Mapping[str, int] | None) -> DatasetSizes:
        """Sizes from a (possibly partial) mapping; an unknown name is an error naming it."""
        sizes = dict(sizes or {})
        unknown = sorted(set(sizes) - set(asdict(cls())))
        if unknown:
            raise ValueError(
                f"data.sizes has unknown dataset(s) {unknown} (known: {', '.join(asdict(cls()))})"
            )
        return cls(**sizes)

    @classmethod
    def tiny(cls) -> DatasetSizes:
        """A few examples per stage, for tests."""
        return cls(inst=16, tofu_authors=2, math=10, unlearn=8, math_test=5, rcu=4)


def default_dataset_files(
    sizes: DatasetSizes | Mapping[str, int] | None = None, seed: int = 0
) -> dict[str, str]:
    """The synthetic stages as file name -> JSONL text, plus ``manifest.json`` (what
    :func:`write_default_datasets` writes, computed without writing anything).

    Stages: ``inst``, ``tofu``, ``math``, ``unlearn`` (the four of Sec. 4.1),
    ``tofu_paraphrased``, ``math_test`` (held out; ``meta.answer``), ``rcu`` (items
    ``{prompt, refusal, compliance_c, compliance_u}``, read with :func:`llm.data.load_rcu_items`)
    and ``rcu_R``, ``rcu_C``, ``rcu_U`` (the three stages of Eq. 6). The manifest records sizes,
    seed and the stage -> file name map.
    """
    if not isinstance(sizes, DatasetSizes):
        sizes = DatasetSizes.from_mapping(sizes)
    tofu, tofu_para = author_facts(sizes.tofu_authors, seed)
    rcu = rcu_set(sizes.rcu, seed)
    math = arithmetic(sizes.math, seed)
    stages = {
        "inst": instruction_following(sizes.inst, seed),
        "tofu": tofu,
        "math": math,
        "unlearn": safety_refusals(sizes.unlearn, seed),
        "tofu_paraphrased": tofu_para,
        "math_test": held_out_arithmetic(sizes.math_test, seed, math),
        "rcu_R": rcu_stage(rcu, "R"),
        "rcu_C": rcu_stage(rcu, "C"),
        "rcu_U": rcu_stage(rcu, "U"),
    }
    files = {f"{name}.jsonl": examples_jsonl(examples) for name, examples in stages.items()}
    files["rcu.jsonl"] = rcu_items_jsonl(rcu)
    manifest = {
        "seed": seed,
        "sizes": asdict(sizes),
        "files": {name.removesuffix(".jsonl"): name for name in files},
    }
    files["manifest.json"] = json.dumps(manifest, indent=2) + "\n"
    return files


def write_default_datasets(
    out_dir: str | Path,
    sizes: DatasetSizes | Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write :func:`default_dataset_files` under ``out_dir`` (each file atomically); returns
    stage name -> path."""
    out = Path(out_dir)
    files = default_dataset_files(sizes, seed)
    for name, text in files.items():
        atomic_write_text(out / name, text)
    return {name.removesuffix(".jsonl"): out / name for name in files if name != "manifest.json"}
