"""The paper's Section 4 as one function: paths x methods, retrain baseline, evaluation, report.

Layout of an output folder ``OUT``::

    config.json                 resolved config + hash (a rerun must match it: resume)
    data/                       the datasets (synthetic ones written here)
    cache/<key>/model/          merged model after a stage prefix (content-addressed, shared)
    cache/<key>/stage.json      the prefix, its spec, per-step losses, world size, batch layout
    runs/<path>/<method>/       metrics.jsonl, per_example.jsonl, pred/step_XXXXX.npy, status.json
    runs/retrain/               the retrain baseline: metrics.json, pred.npy
    re_distance.json            RE distances between paths and to the retrain baseline, per step
    report/                     table1.md, table1.csv, figures (llm.report)

A stage checkpoint's key is the sha256 of (base model identity, seed, shared fine-tuning
settings, and for every stage of the prefix its spec and its data file's hash), so two paths that
share a prefix train it once, and the retrain baseline (the fixed order without the forget
stage) comes from the same cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from llm import distributed as D
from llm.checkpoint import atomic_dir, atomic_write_json, atomic_write_text
from llm.config import (
    ConfigError,
    RunConfig,
    config_hash,
    lora_shape,
    path_sequences,
    retrain_sequence,
    save_resolved,
    to_dict,
)


class ProtocolError(ValueError):
    """Bad input to the protocol (missing dataset, model folder, mismatched config)."""


# ------------------------------------------------------------------------------------------
# Identities and keys


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def model_identity(path: str | Path) -> str:
    """Identity of a model folder: sha256 over every file's name and size, the full content of
    files up to 4 MiB (config, tokenizer) and the first and last MiB of larger ones (weights)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise ProtocolError(f"model folder {path} is empty or missing")
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.relative_to(path)}:{size}\n".encode())
        with p.open("rb") as f:
            if size <= 4 << 20:
                h.update(f.read())
            else:
                h.update(f.read(1 << 20))
                f.seek(size - (1 << 20))
                h.update(f.read())
    return h.hexdigest()[:16]


def prefix_key(
    cfg: RunConfig, base_id: str, prefix: Sequence[str], data_digests: dict[str, str]
) -> str:
    """Content address of the model after training ``prefix`` (a tuple of stage names)."""
    ft = to_dict(cfg.finetune)
    ft.pop("checkpoint_every")  # how often we save does not change the result
    spec = {
        "base": base_id,
        "seed": cfg.seed,
        "dtype": cfg.model.dtype,
        "template": cfg.model.template_path,
        "finetune": ft,
        "lora": list(lora_shape(cfg)) if cfg.finetune.method == "lora" else None,
        "stages": [{**to_dict(cfg.stage(s)), "data": data_digests[s]} for s in prefix],
    }
    text = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------
# Workspace: everything loaded once


@dataclass
class Workspace:
    cfg: RunConfig
    out: Path
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
    from llm.models import load_model as f_load

    cfg = ws_or_cfg.cfg if isinstance(ws_or_cfg, Workspace) else ws_or_cfg
    device = ws_or_cfg.device if isinstance(ws_or_cfg, Workspace) else torch.device("cpu")
    if on_cpu:
        device = torch.device("cpu")
    dtype = "fp32" if cfg.model.dtype == "fp64" else cfg.model.dtype
    if cfg.model.device == "spread":
        if D.current().world_size > 1:
            raise ProtocolError("model.device = 'spread' runs in one process; drop torchrun")
        device = "auto"  # F's load_model: accelerate device map over the visible GPUs
    model, _ = f_load(
        str(path), dtype=dtype, device=str(device), trust_remote_code=cfg.model.trust_remote_code
    )
    if cfg.model.dtype == "fp64":
        model = model.double()
    model.eval()
    return model


def prepare_data(cfg: RunConfig, out: Path) -> dict[str, Path]:
    """Write the synthetic datasets (if asked) and merge in ``data.files``."""
    files: dict[str, Path] = {}
    if cfg.data.synthetic:
        from llm.synthetic import write_default_datasets

        if D.current().is_main:
            write_default_datasets(out / "data", dict(cfg.data.sizes) or None, cfg.data.seed)
        D.barrier()
        manifest = json.loads((out / "data" / "manifest.json").read_text())
        files = {k: out / "data" / v for k, v in manifest["files"].items()}
    for name, p in cfg.data.files.items():
        path = Path(p).expanduser()
        if not path.is_file():
            raise ProtocolError(f"data.files.{name}: file not found: {path}")
        files[name] = path
    return files


def open_workspace(cfg: RunConfig, out: str | Path, progress: bool = True) -> Workspace:
    """Check the output folder against the config, prepare data, load the tokenizer."""
    from llm.models import load_tokenizer

    out = Path(out)
    info = D.init_from_env(cfg.model.device)
    base_path = resolve_model_path(cfg.model.path)  # fail before writing anything
    for name, p in cfg.data.files.items():
        if not Path(p).expanduser().is_file():
            raise ProtocolError(f"data.files.{name}: file not found: {p}")
    saved = out / "config.json"
    if saved.exists():
        old = json.loads(saved.read_text())["hash"]
        if old != config_hash(cfg):
            raise ProtocolError(
                f"{out} holds a run of a different config (hash {old} != {config_hash(cfg)}); "
                "use a new --out"
            )
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out)
    D.barrier()
    files = prepare_data(cfg, out)
    tokenizer = load_tokenizer(str(base_path))
    template = load_tokenizer(cfg.model.template_path) if cfg.model.template_path else None
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else out / "cache"
    return Workspace(
        cfg=cfg,
        out=out,
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


# ------------------------------------------------------------------------------------------
# Stage prefixes


def ensure_prefix(ws: Workspace, prefix: tuple[str, ...]) -> Path:
    """Model folder after training ``prefix``; trains only the stages not yet in the cache."""
    from llm.train import stable_seed, train_stage

    if not prefix:
        return ws.base_path
    key = prefix_key(ws.cfg, ws.base_id, prefix, ws.digests)
    done = ws.cache / key
    if (done / "stage.json").exists():
        return done / "model"
    parent = ensure_prefix(ws, prefix[:-1])
    cfg, info = ws.cfg, D.current()
    stage = cfg.stage(prefix[-1])
    fsdp = cfg.distributed.strategy == "fsdp" and info.world_size > 1
    model = load_model(ws, parent, on_cpu=fsdp)
    examples = ws.stage_examples(stage.name)
    ckpt = ws.cache / f"{key}.ckpt"
    lora = lora_shape(cfg) if cfg.finetune.method == "lora" else None
    model, records = train_stage(
        model,
        examples,
        stage,
        cfg.finetune,
        pad_token_id=ws.pad_id,
        # Seeded by the stage sequence, not by the cache key: the key also hashes the base
        # folder's metadata (build time) and every finetune field, and neither should change
        # the data order of a run.
        seed=stable_seed(cfg.seed, "stage", *prefix),
        lora=lora,
        ckpt_dir=ckpt,
        progress=ws.progress,
        strategy=cfg.distributed.strategy,
    )
    state = D.full_state_dict(model) if fsdp else None  # collective: every process gathers
    if info.is_main:
        with atomic_dir(done) as tmp:
            model.save_pretrained(tmp / "model", state_dict=state)
            ws.tokenizer.save_pretrained(tmp / "model")
            meta = {
                "prefix": list(prefix),
                "key": key,
                "parent": str(parent),
                "stage": to_dict(stage),
                "world_size": info.world_size,
                "strategy": cfg.distributed.strategy,
                "micro_batch": stage.batch_size // (stage.grad_accum * info.world_size),
                "grad_accum": stage.grad_accum,
                "n_examples": len(examples),
                "records": records,
            }
            (tmp / "stage.json").write_text(json.dumps(meta, indent=1) + "\n")
        shutil.rmtree(ckpt, ignore_errors=True)
    D.barrier()
    ws.trained.append(prefix)
    del model
    return done / "model"


# ------------------------------------------------------------------------------------------
# Evaluation hooks


def build_eval_suite(ws: Workspace):
    from llm.evaluate import build_suite
    from llm.synthetic import GSM8K_EVAL_PROMPT, UNLEARN_LABEL, unlearn_paraphrases

    ev, cfg = ws.cfg.eval, ws.cfg
    forget = ws.examples(cfg.paths.forget_stage)[: ev.n_forget_prompts]
    rcu = []
    if ev.rcu_stage:
        from llm.data import load_rcu_items

        if ev.rcu_stage not in ws.files:
            raise ProtocolError(f"eval.rcu_stage {ev.rcu_stage!r} is not a dataset")
        rcu = load_rcu_items(ws.files[ev.rcu_stage])[: ev.n_rcu]
    re_sets = []
    for name in ev.re_stages:
        re_sets.extend(ws.examples(name))
    return build_suite(
        ws.tokenizer,
        forget=forget,
        phrases=[UNLEARN_LABEL, *unlearn_paraphrases()],
        label=UNLEARN_LABEL,
        tofu=ws.examples(ev.tofu_stage)[: ev.n_tofu] if ev.tofu_stage else [],
        math=ws.examples(ev.math_stage)[: ev.n_math] if ev.math_stage else [],
        math_template=GSM8K_EVAL_PROMPT if ev.math_prompt == "paper" else "{question}",
        rcu=rcu,
        re_sets=re_sets[: ev.n_re],
        max_length=cfg.finetune.max_length,
        template_tokenizer=ws.template_tokenizer,
    )


def evaluate_with_config(ws: Workspace, suite, model, math: bool):
    """Score ``model`` on ``suite`` with the run's [eval] settings: (summary, per_example, pred)."""
    from llm.evaluate import evaluate_model
    from llm.train import stable_seed

    ev = ws.cfg.eval
    return evaluate_model(
        model,
        ws.tokenizer,
        suite,
        batch_size=ev.batch_size,
        math=math,
        math_samples=ev.math_samples,
        math_batch_size=ev.math_batch_size,
        max_new_tokens=ev.max_new_tokens,
        temperature=ev.temperature,
        top_p=ev.top_p,
        seed=stable_seed(ws.cfg.seed, "math-eval"),
        pad_token_id=ws.pad_id,
    )


def _save_pred(path: Path, pred: list[np.ndarray]) -> None:
    if D.current().is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npy")
        flat = np.concatenate(pred) if pred else np.zeros(0)
        np.save(tmp, flat)
        tmp.replace(path)


def load_pred(path: Path, lengths: Sequence[int]) -> list[np.ndarray]:
    flat = np.load(path)
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


# ------------------------------------------------------------------------------------------
# Unlearning runs


def run_unlearning(ws: Workspace, suite, path_name: str, model_dir: Path, method) -> dict:
    """Unlearn one path's model with one method; metrics go to runs/<path>/<method>/."""
    from llm.train import NonFiniteError, stable_seed
    from llm.unlearn import unlearn

    cfg, info = ws.cfg, D.current()
    run_dir = ws.out / "runs" / path_name / method.name
    status_file = run_dir / "status.json"
    if status_file.exists():
        return json.loads(status_file.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    math_every = cfg.unlearn.math_every
    per_example = run_dir / "per_example.jsonl"
    from llm.unlearn import MetricsLog, checkpoint_step

    resumed = checkpoint_step(run_dir / "ckpt")
    MetricsLog(per_example, keep_up_to=resumed if resumed is not None else -1)  # drop stale lines

    def evaluator(model, step: int, final: bool) -> dict:
        math = step == 0 or final or (math_every > 0 and step % math_every == 0)
        summary, values, pred = evaluate_with_config(ws, suite, model, math)
        _save_pred(run_dir / "pred" / f"step_{step:05d}.npy", pred)
        if info.is_main:
            with per_example.open("a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")
        return summary

    retain = []
    if method.retain_weight > 0:
        retain = ws.tokenized(method.retain_stage)
    model = load_model(ws, model_dir)
    started = time.time()
    status: dict[str, Any] = {"path": path_name, "method": method.name}
    try:
        unlearn(
            model,
            ws.tokenized(cfg.paths.forget_stage),
            method,
            cfg.unlearn,
            cfg.finetune,
            pad_token_id=ws.pad_id,
            seed=stable_seed(cfg.seed, "unlearn", path_name, method.name),
            lora=lora_shape(cfg) if cfg.finetune.method == "lora" else None,
            retain=retain,
            ckpt_dir=run_dir / "ckpt",
            metrics_path=run_dir / "metrics.jsonl",
            evaluator=evaluator,
            progress=ws.progress,
        )
        status["status"] = "done"
    except NonFiniteError as err:
        status.update(status="non-finite", message=str(err))
    status["seconds"] = time.time() - started
    if info.is_main:
        atomic_write_json(status_file, status)
        shutil.rmtree(run_dir / "ckpt", ignore_errors=True)
    D.barrier()
    return status


def evaluate_retrain(ws: Workspace, suite, model_dir: Path) -> dict:
    """Metrics and Pred of the retrain baseline (the stages without the forget stage)."""
    out = ws.out / "runs" / "retrain"
    if (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    model = load_model(ws, model_dir)
    summary, values, pred = evaluate_with_config(ws, suite, model, math=True)
    _save_pred(out / "pred.npy", pred)
    result = {"model": str(model_dir), "summary": summary, "per_example": values}
    if D.current().is_main:
        atomic_write_json(out / "metrics.json", result)
    D.barrier()
    return result


def re_distances(ws_out: Path, lengths: Sequence[int]) -> dict:
    """RE distances per method and evaluated step: between every pair of paths, and from each
    path to the retrain baseline (Def. 2.1 with the Pred of :mod:`llm.evaluate`)."""
    from llm.evaluate import re_distance

    runs = ws_out / "runs"
    retrain = load_pred(runs / "retrain" / "pred.npy", lengths)
    result: dict[str, Any] = {}
    paths = sorted(p.name for p in runs.iterdir() if p.is_dir() and p.name != "retrain")
    methods = sorted({m.name for p in paths for m in (runs / p).iterdir() if m.is_dir()})
    for method in methods:
        preds: dict[str, dict[int, Path]] = {}
        for p in paths:
            folder = runs / p / method / "pred"
            if folder.is_dir():
                preds[p] = {int(f.stem.split("_")[1]): f for f in folder.glob("step_*.npy")}
        common = sorted(set.intersection(*(set(v) for v in preds.values()))) if preds else []
        entry: dict[str, Any] = {"steps": common, "to_retrain": {}, "between": {}}
        for p in preds:
            entry["to_retrain"][p] = [
                re_distance(load_pred(preds[p][t], lengths), retrain) for t in common
            ]
        names = sorted(preds)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                entry["between"][f"{a}|{b}"] = [
                    re_distance(load_pred(preds[a][t], lengths), load_pred(preds[b][t], lengths))
                    for t in common
                ]
        result[method] = entry
    return result


@dataclass(frozen=True)
class ProtocolResult:
    out: Path
    paths: dict[str, tuple[str, ...]]
    trained_prefixes: list[tuple[str, ...]]
    statuses: list[dict]


def run_protocol(cfg: RunConfig, out: str | Path, progress: bool = True) -> ProtocolResult:
    """Train every path (sharing prefixes), unlearn each with each method, evaluate, report."""
    from llm.report import write_report

    ws = open_workspace(cfg, out, progress)
    sequences = path_sequences(cfg.paths)
    retrain = retrain_sequence(cfg.paths)
    for name in {s for seq in sequences.values() for s in seq} | {cfg.paths.forget_stage}:
        if name not in ws.files:
            raise ProtocolError(f"stage {name!r} has no dataset; set data.files.{name}")
    suite = build_eval_suite(ws)
    if D.current().is_main:
        sizes = {k: len(v) for k, v in suite.groups.items()}
        sizes |= {"re": len(suite.re_examples), "math": len(suite.math_prompts)}
        atomic_write_json(ws.out / "eval_suite.json", {"sizes": sizes, "skipped": suite.skipped})
    final_models = {name: ensure_prefix(ws, seq) for name, seq in sequences.items()}
    retrain_dir = ensure_prefix(ws, retrain)
    statuses = []
    runs = [(name, d, m) for name, d in final_models.items() for m in cfg.unlearn.methods]
    bar = tqdm(runs, desc="unlearning runs", disable=not (progress and D.current().is_main))
    for name, model_dir, method in bar:
        bar.set_postfix(path=name, method=method.name)
        statuses.append(run_unlearning(ws, suite, name, model_dir, method))
    evaluate_retrain(ws, suite, retrain_dir)
    if D.current().is_main:
        lengths = [sum(1 for t in ex.labels[1:] if t != -100) for ex in suite.re_examples]
        atomic_write_json(ws.out / "re_distance.json", re_distances(ws.out, lengths))
        atomic_write_json(
            ws.out / "paths.json",
            {"paths": {k: list(v) for k, v in sequences.items()}, "retrain": list(retrain)},
        )
        write_report(ws.out)
    D.barrier()
    return ProtocolResult(ws.out, sequences, list(ws.trained), statuses)


def check_config_paths(cfg: RunConfig) -> None:
    """Fail early (ConfigError) on a config that cannot run: e.g. an unset LoRA preset."""
    if cfg.finetune.method == "lora":
        lora_shape(cfg)


__all__ = [
    "ProtocolError",
    "ProtocolResult",
    "run_protocol",
    "ensure_prefix",
    "open_workspace",
    "prefix_key",
    "model_identity",
    "re_distances",
    "check_config_paths",
    "ConfigError",
    "atomic_write_text",
]
