"""The one definition of a protocol output folder's layout: every path under ``--out``.

::

    OUT/
      config.toml, config.json   resolved config (+ hash); a rerun must match it: resume
      data/                      the synthetic datasets (manifest.json + one JSONL per stage)
      eval_suite.json            sizes of the evaluation groups, items skipped as too long
      cache/<key>/model/         merged model after a stage prefix (content-addressed, shared)
      cache/<key>/adapter/       finetune.lora_merge = "end": the one adapter so far (unmerged)
      cache/<key>/stage.json     the prefix, its spec, per-step losses, world size, batch layout
      cache/<key>.ckpt/          step checkpoint of a prefix being trained (resume)
      cache/<key>.lock           held by the run training that prefix
      cache/<key>.tensorboard/   --tensorboard: the stage's per-step events
      .lock                      held by the run writing into OUT (one run per folder)
      runs/<path>/<method>/      one unlearning run (:class:`RunFolder`)
      runs/retrain/              the retrain baseline: metrics.json, pred.npy
      re_distance.json           RE distances between paths and to the retrain baseline, per step
      paths.json                 stage sequence of every path and of the retrain baseline
      theory_llm.json            the linear theory's quantities on the paths (llm.path_theory)
      report/                    table1.md, table1.csv, summary.json, figures (llm.report)
      jobs/                      --jobs local|slurm: submitit's job files and logs (llm.jobs)

The protocol writes through these objects, and the report and the main job read through them, so
a file is named in one place only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RETRAIN = "retrain"  # the name under runs/ of the retrain baseline (never a path's name)


@dataclass(frozen=True)
class RunFolder:
    """``runs/<path>/<method>/``: one unlearning run."""

    root: Path

    @property
    def metrics(self) -> Path:
        """One JSON line per optimizer step (and the step-0 evaluation)."""
        return self.root / "metrics.jsonl"

    @property
    def per_example(self) -> Path:
        """One JSON line per evaluated step with every per-example value."""
        return self.root / "per_example.jsonl"

    @property
    def status(self) -> Path:
        """Written last: done / non-finite, with the run's seconds."""
        return self.root / "status.json"

    @property
    def ckpt(self) -> Path:
        """Step checkpoint while the run is under way (removed when it ends)."""
        return self.root / "ckpt"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard events of the run's records (``--tensorboard``)."""
        return self.root / "tensorboard"

    @property
    def pred_dir(self) -> Path:
        return self.root / "pred"

    def pred(self, step: int) -> Path:
        """Pred vectors (flattened, float64) of the evaluation at ``step``."""
        return self.pred_dir / f"step_{step:05d}.npy"

    def pred_steps(self) -> dict[int, Path]:
        """Evaluated step -> its Pred file."""
        if not self.pred_dir.is_dir():
            return {}
        return {int(f.stem.split("_")[1]): f for f in self.pred_dir.glob("step_*.npy")}


@dataclass(frozen=True)
class ProtocolLayout:
    """Every path of one protocol output folder (see the module docstring)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def manifest(self) -> Path:
        return self.data / "manifest.json"

    @property
    def eval_suite(self) -> Path:
        return self.root / "eval_suite.json"

    @property
    def cache(self) -> Path:
        """The default stage cache (``cache_dir`` in the config may put it elsewhere)."""
        return self.root / "cache"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, path: str, method: str) -> RunFolder:
        return RunFolder(self.runs / path / method)

    @property
    def retrain(self) -> Path:
        return self.runs / RETRAIN

    @property
    def retrain_metrics(self) -> Path:
        return self.retrain / "metrics.json"

    @property
    def retrain_pred(self) -> Path:
        return self.retrain / "pred.npy"

    @property
    def re_distance(self) -> Path:
        return self.root / "re_distance.json"

    @property
    def paths_json(self) -> Path:
        return self.root / "paths.json"

    @property
    def jobs(self) -> Path:
        """submitit's folder under ``--jobs``: each job's pickled call, stdout and stderr."""
        return self.root / "jobs"

    @property
    def theory_llm(self) -> Path:
        """The theory's quantities measured on the paths (:func:`llm.path_theory.analyse_protocol`,
        written by the main job)."""
        return self.root / "theory_llm.json"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def unlearning_runs(self) -> dict[str, dict[str, RunFolder]]:
        """``{path: {method: RunFolder}}`` of every run folder under ``runs/`` (sorted)."""
        if not self.runs.is_dir():
            return {}
        out: dict[str, dict[str, RunFolder]] = {}
        for path_dir in sorted(p for p in self.runs.iterdir() if p.is_dir() and p.name != RETRAIN):
            methods = sorted(m for m in path_dir.iterdir() if m.is_dir())
            if methods:
                out[path_dir.name] = {m.name: RunFolder(m) for m in methods}
        return out


@dataclass(frozen=True)
class CacheEntry:
    """``<cache>/<key>``: the model after one stage prefix."""

    cache: Path
    key: str

    @classmethod
    def of(cls, model: Path) -> CacheEntry:
        """The entry whose ``model`` folder this is."""
        return cls(model.parent.parent, model.parent.name)

    @property
    def root(self) -> Path:
        return self.cache / self.key

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def adapter(self) -> Path:
        """finetune.lora_merge = "end": the path's one adapter so far, on the base weights."""
        return self.root / "adapter"

    @property
    def stage_json(self) -> Path:
        """Written last: the entry is complete once it exists."""
        return self.root / "stage.json"

    @property
    def ckpt(self) -> Path:
        return self.cache / f"{self.key}.ckpt"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard events of the stage's steps (``--tensorboard``), beside the entry: it is
        written while the entry is trained, before the entry exists."""
        return self.cache / f"{self.key}.tensorboard"

    @property
    def lock(self) -> Path:
        """Held while the entry is trained (one trainer per entry, however many runs share it)."""
        return self.cache / f"{self.key}.lock"
