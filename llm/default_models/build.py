"""Building the default models: one folder per architecture, deterministic, atomic, cached.

:func:`build_default` builds each architecture in a temporary sibling folder (seeded, with
deterministic algorithms and a fixed thread count), makes it group-readable and renames it into
place, optionally in parallel processes; :func:`ensure_default_models` does so once per config
under :func:`default_cache_dir`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from llm.chat_template import template_hash
from llm.default_models.arch import ARCH_SPECS, ARCHS
from llm.default_models.config import DefaultModelConfig
from llm.default_models.pretraining import model_config, pretrain, pretraining_blocks
from llm.default_models.tokenizer import train_tokenizer
from llm.models import transformers_progress
from pathdep.io import atomic_write_text, make_group_readable
from pathdep.resources import usable_cores
from pathdep.workers import spawn_pool

METADATA_FILE = "pathdep_default.json"


def default_cache_dir() -> Path:
    """``$PATHDEP_CACHE`` if set, else ``~/.cache/pathdep``."""
    env = os.environ.get("PATHDEP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pathdep"


def ensure_default_models(
    cache_dir: str | os.PathLike | None = None,
    config: DefaultModelConfig | None = None,
    archs: Sequence[str] = ARCHS,
    progress: bool = True,
    workers: int | str = 1,
) -> dict[str, Path]:
    """The default model folders for ``config``, built on first use (idempotent; ``workers`` as
    in :func:`build_default`).

    Folders live in ``<cache_dir>/default-models/<config_hash>/<arch>``, so different configs
    never collide; a folder counts as built once its :data:`METADATA_FILE` exists (written last,
    and each folder appears by an atomic rename).
    """
    config = config or DefaultModelConfig()
    root = Path(cache_dir or default_cache_dir()).expanduser() / "default-models"
    out_dir = root / config.config_hash()
    missing = [a for a in archs if not (out_dir / a / METADATA_FILE).is_file()]
    if missing:
        build_default(
            out_dir, config, archs=missing, progress=progress, overwrite=False, workers=workers
        )
    return {arch: out_dir / arch for arch in archs}


def build_default(
    out_dir: str | os.PathLike,
    config: DefaultModelConfig | None = None,
    archs: Sequence[str] = ARCHS,
    progress: bool = True,
    overwrite: bool = True,
    workers: int | str = 1,
) -> dict[str, Path]:
    """Build the default base models into ``out_dir/<arch>`` (ordinary HF folders).

    Each folder is built in a temporary sibling and renamed into place, so a crash leaves no
    half-written model. With ``overwrite=False`` an existing folder (e.g. finished by a concurrent
    build) is kept. ``workers`` > 1 builds architectures side by side in that many processes
    (``"auto"``: one per architecture, up to the usable cores); every build runs on
    ``config.build_threads`` threads, so the files are the same either way. The processes are
    spawned, so a script that asks for them needs the usual ``if __name__ == "__main__":``
    guard. Returns arch -> folder.
    """
    config = config or DefaultModelConfig()
    unknown = [a for a in archs if a not in ARCH_SPECS]
    if unknown or not archs:
        raise ValueError(f"unknown architectures {unknown}; expected a subset of {ARCHS}")
    if workers == "auto":
        workers = min(len(archs), usable_cores())
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1 or 'auto', got {workers!r}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(arch, config, out, progress, overwrite, i) for i, arch in enumerate(archs)]
    if workers == 1 or len(archs) == 1:
        for job in jobs:
            _build_and_install(*job)
    else:
        # spawn, not fork: a forked child would inherit this process's torch thread pool.
        with spawn_pool(min(workers, len(archs))) as pool:
            for future in [pool.submit(_build_and_install, *job) for job in jobs]:
                future.result()
    return {arch: out / arch for arch in archs}


def _build_and_install(
    arch: str, config: DefaultModelConfig, out: Path, progress: bool, overwrite: bool, position: int
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{arch}-building-", dir=out))
    try:
        _build_one(arch, config, tmp, progress, position)
        # mkdtemp makes the folder 0700 and safetensors the weights 0600: give them the umask's
        # usual permissions, like every other output, before the folder appears.
        make_group_readable(tmp)
        _install(tmp, out / arch, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seeded, deterministic-algorithm, fixed-thread-count section; restores the old settings."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    py_state = random.getstate()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
        torch.set_num_threads(previous_threads)
        torch.random.set_rng_state(state)
        random.setstate(py_state)


def _build_one(
    arch: str, config: DefaultModelConfig, folder: Path, progress: bool, position: int = 0
) -> None:
    from transformers import AutoModelForCausalLM, GenerationConfig

    from llm.models import load_tokenizer

    started, started_cpu = time.perf_counter(), time.process_time()
    with _deterministic(config.seed, config.build_threads):
        # Save, then use the tokenizer as loaded back: its transformers class (e.g.
        # Qwen2Tokenizer) may rebuild the pipeline, and the model must see the ids users get.
        train_tokenizer(config, arch).save_pretrained(folder)
        tokenizer = load_tokenizer(folder)
        hf_config = model_config(config, arch, tokenizer)
        model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
        blocks, labels = pretraining_blocks(tokenizer, config, arch)
        losses = pretrain(model, blocks, labels, config, progress, f"pre-training {arch}", position)
    spec = ARCH_SPECS[arch]
    stop_ids = [tokenizer.convert_tokens_to_ids(spec.end_of_turn), hf_config.eos_token_id]
    model.generation_config = GenerationConfig(
        bos_token_id=hf_config.bos_token_id,
        eos_token_id=stop_ids,
        pad_token_id=hf_config.pad_token_id,
    )
    with transformers_progress(progress):
        model.save_pretrained(folder)
    metadata = {
        "arch": arch,
        "model_class": type(model).__name__,
        "config": asdict(config),
        "config_hash": config.config_hash(),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "pretraining_blocks": int(blocks.shape[0]),
        "pretraining_tokens": config.pretrain_steps * config.batch_size * config.seq_len,
        # Padding fills the rest of a block after its last whole document; it carries no label.
        "pretraining_labelled_share": round(float((labels != -100).float().mean()), 4),
        "pretrain_loss_first": losses[0] if losses else None,
        "pretrain_loss_last": losses[-1] if losses else None,
        "pretrain_losses": losses,
        "template_hash": template_hash(tokenizer),
        "end_of_turn_token": spec.end_of_turn,
        "build_seconds": round(time.perf_counter() - started, 2),
        # CPU seconds of this process: on a shared machine (and with one build thread) this is
        # closer to what the build takes on an idle one than the wall time is.
        "build_cpu_seconds": round(time.process_time() - started_cpu, 2),
        "torch_threads": config.build_threads,
        "torch_version": torch.__version__,
    }
    atomic_write_text(folder / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")


def _install(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` folder to ``target`` (replacing it when ``overwrite``)."""
    if target.exists():
        if not overwrite:
            return  # a concurrent build finished first; keep its folder
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-", dir=target.parent))
        os.replace(target, trash / target.name)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, target)
