"""Loading causal LMs from local folders: the default models and downloaded checkpoints alike.

A model folder is an ordinary Hugging Face folder: ``config.json``, safetensors weights
(``model.safetensors`` or ``model.safetensors.index.json`` + shards) and tokenizer files. Nothing
is fetched from a hub (``local_files_only=True``), only safetensors are read (pickled
``pytorch_model.bin`` is refused), and remote code runs only when asked. Problems with a folder
raise :class:`ModelLoadError` with a one-line message.

The paper formats base models with the matching instruct model's chat template: pass the instruct
model's folder (or any folder with its tokenizer files) as ``tokenizer_path``. It must tokenise
exactly like the base model's tokenizer (same vocabulary), which is checked.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pathdep.errors import BadInput

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class ModelLoadError(BadInput):
    """A model or tokenizer folder is missing, incomplete or inconsistent (one-line message)."""


def check_model_folder(path: str | os.PathLike) -> Path:
    """Check that ``path`` holds a config and complete safetensors weights; return it as Path.

    Raises:
        ModelLoadError: folder missing, no ``config.json``, no weights, only ``.bin`` weights,
            or a shard named in the safetensors index is absent.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: no config.json (not a Hugging Face model folder)")
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        check_safetensors(folder / "model.safetensors")
        return folder
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{index}: unreadable safetensors index ({exc})") from None
        missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
        if missing:
            raise ModelLoadError(
                f"{folder}: incomplete download, {len(missing)} weight shard(s) missing "
                f"(first: {missing[0]})"
            )
        for shard in sorted(set(weight_map.values())):
            check_safetensors(folder / shard)
        return folder
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise ModelLoadError(
            f"{folder}: only pickled (.bin/.pt) weights found; pathdep loads safetensors only "
            "(download the .safetensors files)"
        )
    raise ModelLoadError(f"{folder}: no model weights (model.safetensors or index) found")


@contextlib.contextmanager
def transformers_progress(enabled: bool) -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", "Writing model shards") on or off for
    the block (off when a run was asked for no progress output); restores the setting after."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def check_safetensors(path: str | os.PathLike) -> None:
    """Check a safetensors file's header and that its size matches it (a truncated or corrupt
    download is found here, before anything is loaded or written). Reads the header only.

    Raises:
        ModelLoadError: unreadable header, or a file shorter or longer than the header says.
    """
    path = Path(path)
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than the 8-byte header length")
            n = int.from_bytes(head, "little")
            if n > size - 8:
                raise ValueError(f"header of {n} bytes in a file of {size}")
            header = json.loads(f.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({exc})") from None
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        raise ModelLoadError(
            f"{path}: {size} bytes where its header describes {expected} (truncated or corrupt "
            "download)"
        )


def load_tokenizer(path: str | os.PathLike, trust_remote_code: bool = False) -> Any:
    """Load a (fast) tokenizer from a local folder; give it a pad token if it has none.

    A tokenizer without a pad token (Llama 3) gets ``pad_token = eos_token``: padding is masked
    out of attention and labels (:func:`llm.tokenization.collate`), so the choice is inert.
    """
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"tokenizer folder not found: {folder}")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(f"{folder}: no tokenizer files (tokenizer.json, tokenizer.model, ...)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as exc:  # transformers raises many types; the caller wants one line
        raise ModelLoadError(f"{folder}: cannot load tokenizer ({_one_line(exc)})") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"{folder}: only a slow tokenizer could be built; pathdep needs a fast tokenizer "
            "(tokenizer.json) for character offsets"
        )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"{folder}: tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    path: str | os.PathLike,
    dtype: str = "fp32",
    device: str = "cpu",
    tokenizer_path: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local folder, as for any downloaded checkpoint.

    Args:
        path: model folder (config.json + safetensors + usually tokenizer files).
        dtype: ``"fp32"`` (the paper's choice), ``"bf16"`` or ``"fp16"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (spread over the visible
            GPUs with accelerate's device map, for models larger than one GPU).
        tokenizer_path: folder whose tokenizer (and chat template) to use instead of the model's,
            e.g. the instruct model of a base checkpoint. Must have the same vocabulary.
        trust_remote_code: allow custom modelling code shipped in the folder.

    Raises:
        ModelLoadError: see :func:`check_model_folder`; also an unknown dtype, a tokenizer with
            more tokens than the model's embedding rows, a vocabulary mismatch between the model's
            tokenizer and ``tokenizer_path``, or any failure inside ``from_pretrained``.
    """
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    folder = check_model_folder(path)
    tokenizer_folder = Path(tokenizer_path).expanduser() if tokenizer_path else folder
    tokenizer = load_tokenizer(tokenizer_folder, trust_remote_code)
    if tokenizer_path is not None and any((folder / name).is_file() for name in _TOKENIZER_FILES):
        check_same_vocab(
            load_tokenizer(folder, trust_remote_code), tokenizer, folder, tokenizer_folder
        )
    kwargs: dict[str, Any] = {
        "dtype": DTYPES[dtype],
        "local_files_only": True,
        "use_safetensors": True,
        "trust_remote_code": trust_remote_code,
    }
    if device == "auto":
        kwargs["device_map"] = "auto"
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"{folder}: cannot load model ({_one_line(exc)})") from exc
    if device != "auto":
        try:
            model = model.to(torch.device(device))
        except (RuntimeError, AssertionError) as exc:
            raise ModelLoadError(f"cannot move model to {device!r} ({_one_line(exc)})") from exc
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ModelLoadError(
            f"{tokenizer_folder}: tokenizer has {len(tokenizer)} tokens but the model at {folder} "
            f"has only {rows} embedding rows (tokenizer does not belong to this model)"
        )
    return model, tokenizer


def check_same_vocab(base: Any, other: Any, base_folder: Path, other_folder: Path) -> None:
    base_vocab, other_vocab = base.get_vocab(), other.get_vocab()
    if base_vocab != other_vocab:
        differing = len(set(base_vocab.items()) ^ set(other_vocab.items()))
        raise ModelLoadError(
            f"tokenizer at {other_folder} does not match the model's tokenizer at {base_folder} "
            f"({differing} vocabulary entries differ)"
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first if len(first) <= 300 else first[:297] + "..."
