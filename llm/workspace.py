"""A protocol's workspace: the config, the output layout, the tokenizers and the datasets, loaded
once and shared by training, unlearning and evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm import distributed as D
from llm.config import RunConfig, config_hash, save_resolved
from llm.layout import ProtocolLayout
from pathdep.configs import saved_hash
from pathdep.io import file_digest


class ProtocolError(ValueError):
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

    @property
    def out(self) -> Path:
        return self.layout.root

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def examples(self, name: str) -> list:
        if name not in self.raw:
            from llm.data import load_examples

            if name not in self.files:
                raise ProtocolError(
                    f"no dataset named {name!r} (known: {', '.join(sorted(self.files))}); "
                    f"set data.files.{name}"
                )
            self.raw[name] = load_examples(self.files[name])
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


def prepare_data(cfg: RunConfig, layout: ProtocolLayout) -> dict[str, Path]:
    """Write the synthetic datasets (if asked) and merge in ``data.files``."""
    files: dict[str, Path] = {}
    if cfg.data.synthetic:
        from llm.synthetic import write_default_datasets

        if D.current().is_main:
            write_default_datasets(layout.data, dict(cfg.data.sizes) or None, cfg.data.seed)
        D.barrier()
        manifest = json.loads(layout.manifest.read_text())
        files = {k: layout.data / v for k, v in manifest["files"].items()}
    for name, p in cfg.data.files.items():
        path = Path(p).expanduser()
        if not path.is_file():
            raise ProtocolError(f"data.files.{name}: file not found: {path}")
        files[name] = path
    return files


def open_workspace(cfg: RunConfig, out: str | Path, progress: bool = True) -> Workspace:
    """Check the output folder against the config, prepare data, load the tokenizer."""
    from llm.models import load_tokenizer
    from llm.stage_cache import model_identity

    layout = ProtocolLayout(Path(out))
    info = D.init_from_env(cfg.model.device)
    base_path = resolve_model_path(cfg.model.path)  # fail before writing anything
    for name, p in cfg.data.files.items():
        if not Path(p).expanduser().is_file():
            raise ProtocolError(f"data.files.{name}: file not found: {p}")
    old = saved_hash(layout.root)
    if old is not None and old != config_hash(cfg):
        raise ProtocolError(
            f"{layout.root} holds a run of a different config (hash {old} != "
            f"{config_hash(cfg)}); use a new --out"
        )
    if info.is_main:
        layout.root.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, layout.root)
    D.barrier()
    files = prepare_data(cfg, layout)
    tokenizer = load_tokenizer(str(base_path))
    template = load_tokenizer(cfg.model.template_path) if cfg.model.template_path else None
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else layout.cache
    return Workspace(
        cfg=cfg,
        layout=layout,
        cache=cache,
        base_path=base_path,
        base_id=model_identity(base_path),
        tokenizer=tokenizer,
        template_tokenizer=template,
        device=D.resolve_device(cfg.model.device, info),
        files=files,
        digests={k: file_digest(p)[:16] for k, p in files.items()},
        progress=progress,
    )
