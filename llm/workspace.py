"""A protocol's workspace: the config, the output layout, the tokenizers and the datasets, loaded
once and shared by training, unlearning and evaluation.

Check, then write. :func:`prepare_workspace` resolves and checks everything a run needs (the
output location, the model folder and its weights, the template tokenizer against the model, every
dataset fully parsed and tokenised, the evaluation items, the length of every stage) and writes
nothing; :func:`protocol_session` then takes the output folder's lock and writes the resolved
config and the datasets. A failed check leaves ``--out`` exactly as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm import distributed as D
from llm.config import RunConfig, config_hash, path_sequences, retrain_sequence, save_resolved
from llm.layout import ProtocolLayout
from pathdep.configs import saved_hash
from pathdep.errors import BadInput
from pathdep.io import atomic_write_text, check_output_folder, file_digest
from pathdep.lock import LockedError, hold

# A stage or an unlearning run longer than this many examples seen (epochs x examples) is a
# config error, not a run: its batch plan alone would not fit in memory.
MAX_EXAMPLES_SEEN = 10**8


class ProtocolError(BadInput):
    """Bad input to the protocol (missing dataset, model folder, mismatched config)."""


@dataclass
class Workspace:
    cfg: RunConfig
    layout: ProtocolLayout
    cache: Path
    base_path: Path
    base_id: str
    tokenizer: Any
    template_tokenizer: Any
    device: torch.device
    files: dict[str, Path]
    digests: dict[str, str]
    raw: dict[str, list] = field(default_factory=dict)
    encoded: dict[str, list] = field(default_factory=dict)
    trained: list[tuple[str, ...]] = field(default_factory=list)
    replay: list | None = None  # the tokenised finetune.replay_docs, built on first use
    progress: bool = True
    tensorboard: bool = False  # also write TensorBoard events of every stage and run
    pending: dict[Path, str] = field(default_factory=dict)  # files to write: path -> text
    suite: Any = None  # the evaluation items (llm.evaluate.EvalSuite), built by the checks
    vocab_rows: int = 0  # rows of the model's output layer: uniform output scores -log(rows)

    @property
    def out(self) -> Path:
        return self.layout.root

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _text(self, name: str) -> str | None:
        return self.pending.get(self.files[name])

    def examples(self, name: str) -> list:
        if name not in self.raw:
            from llm.data import load_examples

            if name not in self.files:
                raise ProtocolError(
                    f"no dataset named {name!r} (known: {', '.join(sorted(self.files))}); "
                    f"set data.files.{name}"
                )
            self.raw[name] = load_examples(self.files[name], text=self._text(name))
        return self.raw[name]

    def rcu_items(self, name: str) -> list:
        """The R/C/U items of dataset ``name`` (prompt, refusal, compliance_c, compliance_u)."""
        if name not in self.raw:
            from llm.data import load_rcu_items

            if name not in self.files:
                raise ProtocolError(f"eval.rcu_stage {name!r} is not a dataset")
            self.raw[name] = load_rcu_items(self.files[name], text=self._text(name))
        return self.raw[name]

    def tokenized(self, name: str) -> list:
        if name not in self.encoded:
            from llm.tokenization import encode_examples

            enc = encode_examples(
                self.tokenizer,
                self.examples(name),
                self.cfg.finetune.max_length,
                self.template_tokenizer,
            )
            if not enc.examples:
                raise ProtocolError(f"dataset {name!r} has no example with a labelled token")
            self.encoded[name] = enc.examples
        return self.encoded[name]

    def stage_examples(self, name: str) -> list:
        """What stage ``name`` trains on: its dataset plus ``finetune.replay_docs`` replayed
        pre-training-style documents (identical for every stage and path, so the paths still
        differ only in the order of the stage datasets)."""
        if self.replay is None:
            from llm.synthetic import generic_text
            from llm.tokenization import encode_text

            n, max_length = self.cfg.finetune.replay_docs, self.cfg.finetune.max_length
            docs = generic_text(n, seed=self.cfg.data.seed) if n else []
            self.replay = [encode_text(self.tokenizer, d, max_length) for d in docs]
        return [*self.tokenized(name), *self.replay]


def resolve_model_path(path: str) -> Path:
    """``default:llama`` / ``default:qwen2`` -> the built-in default model (built on first use,
    :func:`llm.default_models.ensure_default_models`); ``default-tiny:ARCH`` -> the tiny test
    configuration; anything else is a local folder."""
    for prefix in ("default:", "default-tiny:"):
        if path.startswith(prefix):
            from llm.default_models import ARCHS, DefaultModelConfig, ensure_default_models

            arch = path.split(":", 1)[1]
            if arch not in ARCHS:
                raise ProtocolError(f"unknown default model {path!r} (have {', '.join(ARCHS)})")
            config = DefaultModelConfig.tiny() if prefix == "default-tiny:" else None
            return Path(ensure_default_models(config=config, archs=(arch,))[arch])
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ProtocolError(f"model folder not found: {p} (set model.path)")
    return p


def load_model(ws_or_cfg: Workspace | RunConfig, path: Path, on_cpu: bool = False):
    """Load a model folder with the run's dtype onto the run's device (the CPU with ``on_cpu``:
    FSDP moves the shards to the GPU itself), in eval mode."""
    from llm.models import load_model as load_folder

    cfg = ws_or_cfg.cfg if isinstance(ws_or_cfg, Workspace) else ws_or_cfg
    device = ws_or_cfg.device if isinstance(ws_or_cfg, Workspace) else torch.device("cpu")
    if on_cpu:
        device = torch.device("cpu")
    dtype = "fp32" if cfg.model.dtype == "fp64" else cfg.model.dtype
    if cfg.model.device == "spread":
        if D.current().world_size > 1:
            raise ProtocolError("model.device = 'spread' runs in one process; drop torchrun")
        device = "auto"  # accelerate device map over the visible GPUs
    model, _ = load_folder(
        str(path), dtype=dtype, device=str(device), trust_remote_code=cfg.model.trust_remote_code
    )
    if cfg.model.dtype == "fp64":
        model = model.double()
    model.eval()
    return model


def dataset_files(cfg: RunConfig, layout: ProtocolLayout) -> tuple[dict[str, Path], dict]:
    """(name -> path, path -> text still to write): the synthetic datasets (computed, not yet
    written, under ``data/``) with the files of ``data.files`` merged in."""
    files: dict[str, Path] = {}
    pending: dict[Path, str] = {}
    if cfg.data.synthetic:
        from llm.synthetic import default_dataset_files

        try:
            texts = default_dataset_files(dict(cfg.data.sizes) or None, cfg.data.seed)
        except (TypeError, ValueError) as err:
            raise ProtocolError(str(err)) from None
        for name, text in texts.items():
            pending[layout.data / name] = text
            if name.endswith(".jsonl"):
                files[name.removesuffix(".jsonl")] = layout.data / name
    for name, p in cfg.data.files.items():
        path = Path(p).expanduser()
        if not path.is_file():
            raise ProtocolError(f"data.files.{name}: file not found: {path}")
        files[name] = path
    return files, pending


def _used_datasets(cfg: RunConfig) -> set[str]:
    """Every dataset the run trains, unlearns or evaluates on."""
    used = {s for seq in path_sequences(cfg.paths).values() for s in seq}
    used |= set(retrain_sequence(cfg.paths)) | {cfg.paths.forget_stage}
    used |= {m.retain_stage for m in cfg.unlearn.methods if m.retain_weight > 0}
    ev = cfg.eval
    used |= {ev.tofu_stage, ev.math_stage, ev.rcu_stage, *ev.re_stages} - {""}
    return used


def _check_lengths(ws: Workspace) -> None:
    cfg = ws.cfg
    runs = [(f"stages.{s.name}", s.epochs, s.name) for s in cfg.stages if s.name in ws.files]
    runs.append(("unlearn", cfg.unlearn.epochs, cfg.paths.forget_stage))
    for where, epochs, name in runs:
        seen = epochs * len(ws.examples(name))
        if not math.isfinite(seen) or seen > MAX_EXAMPLES_SEEN:
            raise ProtocolError(
                f"{where}.epochs = {epochs:g} on {len(ws.examples(name))} examples is "
                f"{seen:.3g} examples seen (the limit is {MAX_EXAMPLES_SEEN:.0e})"
            )


def _check_model(cfg: RunConfig, base_path: Path) -> tuple[Any, Any, int]:
    """(tokenizer, template tokenizer or None, output rows) of a checked model folder."""
    import json

    from llm.models import check_model_folder, check_same_vocab, load_tokenizer

    check_model_folder(base_path)
    tokenizer = load_tokenizer(str(base_path), cfg.model.trust_remote_code)
    template = None
    if cfg.model.template_path:
        folder = Path(cfg.model.template_path).expanduser()
        template = load_tokenizer(folder, cfg.model.trust_remote_code)
        check_same_vocab(tokenizer, template, base_path, folder)
    rows = int(json.loads((base_path / "config.json").read_text()).get("vocab_size", 0) or 0)
    if rows and len(tokenizer) > rows:
        raise ProtocolError(
            f"{base_path}: tokenizer has {len(tokenizer)} tokens but the model only {rows} "
            "output rows (the tokenizer does not belong to this model)"
        )
    return tokenizer, template, rows


def prepare_workspace(
    cfg: RunConfig, out: str | Path, progress: bool = True, tensorboard: bool = False
) -> Workspace:
    """Resolve and check everything the run needs; writes nothing under ``out``."""
    from llm.protocol import build_eval_suite
    from llm.stage_cache import model_identity

    if tensorboard:
        from llm.tracking import check_available

        check_available()
    layout = ProtocolLayout(Path(out))
    info = D.init_from_env(cfg.model.device)
    check_output_folder(layout.root)
    old = saved_hash(layout.root)
    if old is not None and old != config_hash(cfg):
        raise ProtocolError(
            f"{layout.root} holds a run of a different config (hash {old} != "
            f"{config_hash(cfg)}); use a new --out"
        )
    base_path = resolve_model_path(cfg.model.path)
    tokenizer, template, rows = _check_model(cfg, base_path)
    files, pending = dataset_files(cfg, layout)
    missing = sorted(_used_datasets(cfg) - set(files))
    if missing:
        raise ProtocolError(
            f"no dataset for {', '.join(map(repr, missing))}; set data.files.{missing[0]}"
        )
    digests = {
        name: (
            hashlib.sha256(pending[path].encode("utf-8")).hexdigest()
            if path in pending
            else file_digest(path)
        )[:16]
        for name, path in files.items()
    }
    ws = Workspace(
        cfg=cfg,
        layout=layout,
        cache=Path(cfg.cache_dir).expanduser() if cfg.cache_dir else layout.cache,
        base_path=base_path,
        base_id=model_identity(base_path),
        tokenizer=tokenizer,
        template_tokenizer=template,
        device=D.resolve_device(cfg.model.device, info),
        files=files,
        digests=digests,
        progress=progress,
        tensorboard=tensorboard,
        pending=pending,
        vocab_rows=rows,
    )
    # Every dataset fully parsed (R/C/U items: the eval.rcu_stage file, and the synthetic "rcu"
    # unless data.files replaces it), the used ones tokenised.
    items = {cfg.eval.rcu_stage} | ({"rcu"} if files.get("rcu") in pending else set())
    for name in sorted(files):
        if name in items:
            ws.rcu_items(name)
        else:
            ws.examples(name)
    for name in sorted(_used_datasets(cfg) - {cfg.eval.rcu_stage}):
        ws.tokenized(name)
    _check_lengths(ws)
    try:
        ws.suite = build_eval_suite(ws)
    except ValueError as err:
        if isinstance(err, BadInput):
            raise
        raise ProtocolError(f"evaluation: {err}") from None
    return ws


def write_workspace(ws: Workspace) -> None:
    """Write the resolved config and the datasets (main process), once the checks passed."""
    if D.current().is_main:
        ws.layout.root.mkdir(parents=True, exist_ok=True)
        save_resolved(ws.cfg, ws.layout.root)
        for path, text in ws.pending.items():
            atomic_write_text(path, text)
    D.barrier()


@contextlib.contextmanager
def protocol_session(
    cfg: RunConfig, out: str | Path, progress: bool = True, tensorboard: bool = False
) -> Iterator[Workspace]:
    """Check everything, take ``out``'s lock (main process), write, and yield the workspace;
    the lock is held until the block ends. A second run into ``out`` is refused at once."""
    ws = prepare_workspace(cfg, out, progress, tensorboard)
    with contextlib.ExitStack() as stack:
        refused = None
        if D.current().is_main:
            try:
                stack.enter_context(hold(ws.layout.root))
            except LockedError as err:
                refused = str(err)
        refusals = [r for r in D.gather_objects(refused) if r]
        if refusals:  # every process stops, not only the one that tried the lock
            raise LockedError(refusals[0])
        write_workspace(ws)
        yield ws


def open_workspace(cfg: RunConfig, out: str | Path, progress: bool = True) -> Workspace:
    """Check everything, then write config and datasets (no lock: for a caller that holds it
    or runs alone, such as a notebook looking at one stage)."""
    ws = prepare_workspace(cfg, out, progress)
    write_workspace(ws)
    return ws
