"""The content-addressed stage cache: a model after each stage prefix, trained once, shared.

A cache entry's key is a hash of (base model identity, seed, shared fine-tuning settings, and for
every stage of the prefix its spec and its data file's hash), so two paths that share a prefix
train it once, and the retrain baseline (the fixed order without the forget stage) comes from the
same cache. The entry is written to a temporary folder and renamed into place; its
``stage.json`` marks it complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from llm import distributed as D
from llm.config import RunConfig, lora_shape, to_dict
from llm.layout import CacheEntry
from llm.workspace import ProtocolError, Workspace, load_model
from pathdep.io import atomic_dir, content_hash
from pathdep.lock import hold_waiting


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
    ft.pop("gradient_checkpointing")  # recomputing activations neither (tests/test_llm_train.py)
    if ft["mixed_precision"] == "no":  # the only behaviour before the option: keys unchanged
        ft.pop("mixed_precision")
    if ft["method"] == "full" or ft["lora_merge"] == "per_stage":
        # No adapter to merge, or the only behaviour before the option: keys stay as they were.
        ft.pop("lora_merge")
    spec = {
        "base": base_id,
        "seed": cfg.seed,
        "dtype": cfg.model.dtype,
        "template": cfg.model.template_path,
        "finetune": ft,
        "lora": list(lora_shape(cfg)) if cfg.finetune.method == "lora" else None,
        "stages": [{**to_dict(cfg.stage(s)), "data": data_digests[s]} for s in prefix],
    }
    return content_hash(spec, digits=20)


def ensure_prefix(ws: Workspace, prefix: tuple[str, ...]) -> Path:
    """Model folder after training ``prefix``; trains only the stages not yet in the cache.

    Each entry is trained under its own lock (``<cache>/<key>.lock``), so runs sharing a cache
    never train the same prefix twice: a second run waits for the first, then finds the entry.
    """
    if not prefix:
        return ws.base_path
    entry = CacheEntry(ws.cache, prefix_key(ws.cfg, ws.base_id, prefix, ws.digests))
    if entry.stage_json.exists():
        return entry.model
    parent = ensure_prefix(ws, prefix[:-1])  # before taking this entry's lock: never nested
    with contextlib.ExitStack() as stack:
        if D.current().is_main:
            stack.enter_context(hold_waiting(entry.lock, f"stage cache entry {entry.root}"))
        D.barrier()
        if not entry.stage_json.exists():  # another run may have finished it while we waited
            _train_entry(ws, prefix, entry, parent)
        D.barrier()
    return entry.model


def _train_entry(ws: Workspace, prefix: tuple[str, ...], entry: CacheEntry, parent: Path) -> None:
    from llm.batches import stable_seed
    from llm.train import train_stage

    cfg, info = ws.cfg, D.current()
    stage = cfg.stage(prefix[-1])
    fsdp = cfg.distributed.strategy == "fsdp" and info.world_size > 1
    lora = lora_shape(cfg) if cfg.finetune.method == "lora" else None
    # lora_merge = "end" (the paper's code): one adapter on the base weights through every
    # stage; an entry keeps it beside the merged model the protocol reads.
    one_adapter = lora is not None and cfg.finetune.lora_merge == "end"
    adapter = CacheEntry.of(parent).adapter if one_adapter and len(prefix) > 1 else None
    model = load_model(ws, ws.base_path if one_adapter else parent, on_cpu=fsdp)
    examples = ws.stage_examples(stage.name)
    events = None
    if ws.tensorboard and info.is_main:
        from llm.tracking import ScalarLog
        from llm.unlearn import checkpoint_step

        events = ScalarLog(entry.tensorboard, checkpoint_step(entry.ckpt))
    try:
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
            merge=not one_adapter,
            adapter=adapter,
            ckpt_dir=entry.ckpt,
            progress=ws.progress,
            strategy=cfg.distributed.strategy,
            on_step=None if events is None else lambda _, record: events.write(record),
        )
    finally:
        if events is not None:
            events.close()
    state = D.full_state_dict(model) if fsdp else None  # collective: every process gathers
    if info.is_main:
        with atomic_dir(entry.root) as tmp:
            if one_adapter:
                model.save_pretrained(tmp / "adapter")  # a peft model saves its adapter only
                model = model.merge_and_unload()
            model.save_pretrained(tmp / "model", state_dict=state)
            ws.tokenizer.save_pretrained(tmp / "model")
            meta = {
                "prefix": list(prefix),
                "key": entry.key,
                "parent": str(parent),
                "stage": to_dict(stage),
                "world_size": info.world_size,
                "strategy": cfg.distributed.strategy,
                "lora_merge": cfg.finetune.lora_merge if lora is not None else None,
                "micro_batch": stage.batch_size // (stage.grad_accum * info.world_size),
                "grad_accum": stage.grad_accum,
                "n_examples": len(examples),
                "records": records,
            }
            (tmp / "stage.json").write_text(json.dumps(meta, indent=1) + "\n")
        shutil.rmtree(entry.ckpt, ignore_errors=True)
    ws.trained.append(prefix)
    del model
