"""Model folders laid out like the real downloads of the five paper models, at a reduced size.

The paper's checkpoints cannot be fetched here, yet what breaks a first full-scale run is mostly
the folder, not the weights: sharded safetensors with an index, bf16/fp16 storage, the real
special tokens and chat templates (the Llama 3.x system header with its dates, Llama 2's
``[INST]``/``<<SYS>>``, Qwen2.5's ChatML with its default system prompt), eos lists in
``generation_config.json``, embedding rows padded past the tokenizer (Qwen2.5), base tokenizers
without a template (Llama). :func:`build_real_pair` writes a base and an instruct folder with all
of that, so a paper config can be dry-run end to end on a CPU before anything is downloaded
(docs/full_scale.md, "Real-layout fixture folders").

What is NOT real: the weights are random, the widths and depth are small (the architecture
card's structure is kept: GQA ratio, ties, q/k/v biases, RoPE base and scaling), and the
vocabulary is a small BPE trained locally (:mod:`llm.default_models.tokenizer`) plus the real
special tokens, so token ids differ from the real ones.

(Just over 400 lines: the three tokenizer families' special tokens and files are written here
side by side; the chat templates themselves are data in :mod:`llm.real_templates`.)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from llm.arch_cards import ArchCard, card_for, card_to_hf_config, reduced
from llm.real_templates import (
    LLAMA2_CHAT_TEMPLATE,
    LLAMA31_TEMPLATE,
    LLAMA32_TEMPLATE,
    QWEN25_TEMPLATE,
)
from pathdep.io import atomic_dir, make_group_readable

__all__ = ["FOLDER_NAMES", "build_real_layout", "build_real_pair", "layout_card"]

# name -> (base folder, instruct folder), as the checkpoints are named on their model pages.
FOLDER_NAMES: dict[str, tuple[str, str]] = {
    "llama3.2-1b": ("Llama-3.2-1B", "Llama-3.2-1B-Instruct"),
    "llama3.1-8b": ("Llama-3.1-8B", "Llama-3.1-8B-Instruct"),
    "llama2-13b": ("Llama-2-13b-hf", "Llama-2-13b-chat-hf"),
    "qwen2.5-1.5b": ("Qwen2.5-1.5B", "Qwen2.5-1.5B-Instruct"),
    "qwen2.5-14b": ("Qwen2.5-14B", "Qwen2.5-14B-Instruct"),
}
_FAMILY = {
    "llama3.2-1b": "llama3",
    "llama3.1-8b": "llama3",
    "llama2-13b": "llama2",
    "qwen2.5-1.5b": "qwen2",
    "qwen2.5-14b": "qwen2",
}
# Tokenizer length of the real downloads (Qwen2.5 pads its embedding past it).
_REAL_TOKENIZER_LEN = {"llama3": 128256, "llama2": 32000, "qwen2": 151665}
_LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
    "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
    *(f"<|reserved_special_token_{i}|>" for i in range(3, 248)),
]  # fmt: skip
_QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
_QWEN_PLAIN = ["<tool_call>", "</tool_call>"]  # added, not special, as in the real file
_QWEN_FIM = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>"]
_QWEN_TAIL = ["<|repo_name|>", "<|file_sep|>"]
_ROPE_SCALING = {"llama3.2-1b": 32.0, "llama3.1-8b": 8.0}  # Llama 3.x "llama3" RoPE factor
DEFAULT_BPE_VOCAB = 512


def layout_card(
    name: str,
    hidden: int = 64,
    layers: int = 2,
    intermediate: int | None = 128,
    rows: int | None = None,
    full_size: bool = False,
) -> ArchCard:
    """The card a layout folder is built from: :func:`llm.arch_cards.reduced` at ``hidden`` x
    ``layers`` (the real card with ``full_size``), ``rows`` embedding rows, the real context."""
    card = card_for(name)
    if not full_size:
        card = reduced(card, hidden, layers, rows or card.vocab_size)
        if intermediate is not None:
            card = dataclasses.replace(card, intermediate_size=intermediate)
    return dataclasses.replace(
        card,
        vocab_size=rows or card.vocab_size,
        max_position_embeddings=card_for(name).max_position_embeddings,
    )


def build_real_pair(name: str, root: str | os.PathLike, **kwargs: Any) -> tuple[Path, Path]:
    """``(base, instruct)`` folders under ``root``, named like the downloads (e.g.
    ``Llama-3.2-1B`` and ``Llama-3.2-1B-Instruct``); ``kwargs`` go to :func:`build_real_layout`.
    Both share tokenizer and weights, so the instruct folder can serve as ``template_path``."""
    base_name, instruct_name = FOLDER_NAMES[_key(name)]
    root = Path(root)
    base = build_real_layout(name, root / base_name, **kwargs)
    instruct = build_real_layout(name, root / instruct_name, instruct=True, **kwargs)
    return base, instruct


def build_real_layout(
    name: str,
    out_dir: str | os.PathLike,
    *,
    instruct: bool = False,
    hidden: int = 64,
    layers: int = 2,
    intermediate: int | None = 128,
    vocab: int | None = None,
    seed: int = 0,
    shard_bytes: int | None = None,
    full_size: bool = False,
) -> Path:
    """Write one folder laid out like the real base (or ``instruct``) download of ``name``.

    Args:
        name: a paper model (``llama3.2-1b``, ``llama3.1-8b``, ``llama2-13b``, ``qwen2.5-1.5b``,
            ``qwen2.5-14b``).
        out_dir: the folder to write (replaced atomically).
        hidden, layers, intermediate: the reduced size (``intermediate=None``: the card's MLP
            ratio); ignored with ``full_size``.
        vocab: size of the locally trained BPE before the real special tokens are added
            (default 512). Embedding rows = tokenizer length, padded for Qwen2.5 by as many
            rows as the real checkpoint pads (or the real card's rows with ``full_size``).
        seed: seeds the tokenizer corpus and the random weights (same seed: same folder).
        shard_bytes: ``max_shard_size`` of the safetensors shards; default a third of the
            weights, so there are always at least two shards.
        full_size: the real card's widths, depth and rows (Llama-3.2-1B: 1.24B parameters).
    """
    from llm.models import load_tokenizer

    key = _key(name)
    family = _FAMILY[key]
    with atomic_dir(Path(out_dir).expanduser()) as folder:
        _write_tokenizer(
            _tokenizer(family, vocab or DEFAULT_BPE_VOCAB, seed), family, key, folder, instruct
        )
        # Ids and rows from the tokenizer as transformers loads it back (its class, e.g.
        # Qwen2Tokenizer, rebuilds the pipeline from the files): what users of the folder get.
        tokenizer = load_tokenizer(folder)
        rows = len(tokenizer)
        if family == "qwen2":  # the real checkpoints pad their rows past the tokenizer
            rows += card_for(key).vocab_size - _REAL_TOKENIZER_LEN[family]
        card = layout_card(
            key, hidden, layers, intermediate, None if full_size else rows, full_size
        )
        dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[card.torch_dtype]
        _write_weights(card, folder, dtype, seed, shard_bytes)
        ids = _special_ids(tokenizer, family, instruct)
        _write_json(folder / "config.json", _config_json(key, card, ids, instruct))
        _write_json(folder / "generation_config.json", _generation_json(family, ids, instruct))
        make_group_readable(folder)
    return Path(out_dir).expanduser()


def _key(name: str) -> str:
    key = name.lower()
    if key not in FOLDER_NAMES:
        card_for(key)  # raises CardError naming the known models
        raise ValueError(f"no real layout for {name!r}")
    return key


def _write_weights(
    card: ArchCard, folder: Path, dtype: torch.dtype, seed: int, shard_bytes: int | None
) -> None:
    """Random weights in the checkpoint's dtype, as sharded safetensors with an index."""
    from transformers import AutoModelForCausalLM

    from llm.models import transformers_progress

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(card_to_hf_config(card), dtype=dtype)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    with transformers_progress(False):
        model.save_pretrained(folder, max_shard_size=shard_bytes or max(total // 3, 1))
    del model


def _special_ids(tokenizer: Any, family: str, instruct: bool) -> dict[str, Any]:
    tid = tokenizer.convert_tokens_to_ids
    if family == "llama3":
        eos = [tid("<|end_of_text|>"), tid("<|eom_id|>"), tid("<|eot_id|>")]
        return {"bos": tid("<|begin_of_text|>"), "eos": eos if instruct else eos[0], "pad": None}
    if family == "llama2":
        return {"bos": tid("<s>"), "eos": tid("</s>"), "pad": tid("<unk>")}
    end, im_end = tid("<|endoftext|>"), tid("<|im_end|>")
    return {"bos": end, "eos": [im_end, end] if instruct else end, "pad": end, "im_end": im_end}


def _config_json(key: str, card: ArchCard, ids: dict[str, Any], instruct: bool) -> dict:
    """config.json in the schema the real downloads use (transformers 4.x keys: ``torch_dtype``,
    ``rope_scaling``), so loading it goes through the same conversions a download does."""
    kind = card.model_type
    raw: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM" if kind == "llama" else "Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos"] if kind == "llama" or not instruct else ids["im_end"],
        "head_dim": card.head_size,
        "hidden_act": "silu",
        "hidden_size": card.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": card.intermediate_size,
        "max_position_embeddings": card.max_position_embeddings,
        "model_type": kind,
        "num_attention_heads": card.num_attention_heads,
        "num_hidden_layers": card.num_hidden_layers,
        "num_key_value_heads": card.num_key_value_heads,
        "rms_norm_eps": 1e-5 if kind == "llama" else 1e-6,
        "rope_theta": card.rope_theta,
        "tie_word_embeddings": card.tie_word_embeddings,
        "torch_dtype": card.torch_dtype,
        "use_cache": True,
        "vocab_size": card.vocab_size,
    }
    if kind == "llama":
        raw |= {"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1}
        raw["rope_scaling"] = None
        if key in _ROPE_SCALING:
            raw["rope_scaling"] = {
                "factor": _ROPE_SCALING[key],
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
                "rope_type": "llama3",
            }
    else:
        raw |= {
            "max_window_layers": card.num_hidden_layers,
            "sliding_window": card.max_position_embeddings,
            "use_sliding_window": False,
        }
        if instruct:
            raw["max_position_embeddings"] = raw["sliding_window"] = 32768
    return dict(sorted(raw.items()))


def _generation_json(family: str, ids: dict[str, Any], instruct: bool) -> dict:
    if family == "llama3":
        return {"bos_token_id": ids["bos"], "do_sample": True, "eos_token_id": ids["eos"],
                "temperature": 0.6, "top_p": 0.9}  # fmt: skip
    if family == "llama2":
        return {"bos_token_id": ids["bos"], "do_sample": True, "eos_token_id": ids["eos"],
                "max_length": 4096, "pad_token_id": 0, "temperature": 0.6,
                "top_p": 0.9}  # fmt: skip
    if not instruct:
        return {"bos_token_id": ids["bos"], "do_sample": False, "eos_token_id": ids["eos"],
                "max_new_tokens": 2048}  # fmt: skip
    return {"bos_token_id": ids["bos"], "do_sample": True, "eos_token_id": ids["eos"],
            "pad_token_id": ids["pad"], "repetition_penalty": 1.1, "temperature": 0.7,
            "top_k": 20, "top_p": 0.8}  # fmt: skip


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Tokenizers


@lru_cache(maxsize=8)
def _tokenizer(family: str, vocab: int, seed: int) -> Any:
    """The family's tokenizer: the default models' byte-level BPE (Llama 3, Qwen2) or a
    SentencePiece-style BPE with byte fallback (Llama 2), plus the real special tokens."""
    from tokenizers import AddedToken
    from tokenizers.processors import ByteLevel, Sequence, TemplateProcessing

    from llm.default_models import DefaultModelConfig, train_tokenizer

    if family == "llama2":
        return _llama2_tokenizer(vocab, seed)
    config = dataclasses.replace(DefaultModelConfig.tiny(), vocab_size=vocab, seed=seed)
    tok = train_tokenizer(config, "llama" if family == "llama3" else "qwen2")
    if family == "llama3":
        tok.add_special_tokens({"additional_special_tokens": _LLAMA3_SPECIALS})
        bos = "<|begin_of_text|>"
        tok.backend_tokenizer.post_processor = Sequence([
            ByteLevel(trim_offsets=False),
            TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1",
                               special_tokens=[(bos, tok.convert_tokens_to_ids(bos))]),
        ])  # fmt: skip  # the real file: BOS added by the tokenizer
    else:
        tok.add_special_tokens({"additional_special_tokens": _QWEN_SPECIALS})
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in _QWEN_PLAIN])
        tok.add_special_tokens(
            {"additional_special_tokens": _QWEN_SPECIALS + _QWEN_FIM + _QWEN_TAIL}
        )
    return tok


def _llama2_tokenizer(vocab: int, seed: int) -> Any:
    """Llama 2's tokenizer.json pipeline: BPE with byte fallback (``<0x00>`` .. ``<0xFF>`` at
    ids 3..258 after ``<unk>``, ``<s>``, ``</s>``), ``▁`` prepended and replacing spaces, BOS
    added by the post-processor; merges learnt on the default models' corpus."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    from llm.default_models import DefaultModelConfig, tokenizer_corpus

    config = dataclasses.replace(DefaultModelConfig.tiny(), vocab_size=vocab, seed=seed)
    corpus = [re.sub(r"<\|[a-z_]+\|>", "", t) for t in tokenizer_corpus(config, "llama")]
    specials = ["<unk>", "<s>", "</s>"]
    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    learner = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    learner.normalizer = normalizer
    learner.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab - 256, 64),
        min_frequency=2,
        special_tokens=specials,
        show_progress=False,
    )
    learner.train_from_iterator(corpus, trainer=trainer)
    learnt = json.loads(learner.to_str())["model"]
    order = sorted(learnt["vocab"], key=learnt["vocab"].get)
    pieces = specials + [f"<0x{i:02X}>" for i in range(256)]
    pieces += [p for p in order if p not in specials]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learnt["merges"]]
    bpe = models.BPE(
        {p: i for i, p in enumerate(pieces)},
        merges,
        unk_token="<unk>",
        byte_fallback=True,
        fuse_unk=True,
    )
    tok = Tokenizer(bpe)
    tok.normalizer = normalizer
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
        decoders.Strip(" ", 1, 0),
    ])  # fmt: skip
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


def _write_tokenizer(tokenizer: Any, family: str, key: str, folder: Path, instruct: bool) -> None:
    """tokenizer.json as trained; tokenizer_config.json and special_tokens_map.json with the
    real files' keys and tokens; the chat template inline, as the downloads carry it."""
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    raw = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    added = {
        str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                 "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
        for i, t in sorted(tokenizer.added_tokens_decoder.items())
    }  # fmt: skip
    keep = {"added_tokens_decoder": raw.get("added_tokens_decoder") or added}
    template = None
    if family == "llama3":
        eos = "<|eot_id|>" if instruct else "<|end_of_text|>"
        keep |= {"bos_token": "<|begin_of_text|>", "eos_token": eos, "model_max_length": 131072,
                 "model_input_names": ["input_ids", "attention_mask"],
                 "clean_up_tokenization_spaces": True,
                 "tokenizer_class": "PreTrainedTokenizerFast"}  # fmt: skip
        special = {"bos_token": "<|begin_of_text|>", "eos_token": eos}
        if instruct:
            template = LLAMA32_TEMPLATE if key == "llama3.2-1b" else LLAMA31_TEMPLATE
    elif family == "llama2":
        keep |= {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                 "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None, "legacy": False,
                 "clean_up_tokenization_spaces": False, "padding_side": "right",
                 "model_max_length": 1000000000000000019884624838656,
                 "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer"}  # fmt: skip
        special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
        template = LLAMA2_CHAT_TEMPLATE if instruct else None
    else:
        eos = "<|im_end|>" if instruct else "<|endoftext|>"
        extra = ["<|im_start|>", "<|im_end|>", *_QWEN_SPECIALS[3:], *_QWEN_FIM, *_QWEN_TAIL]
        keep |= {"additional_special_tokens": extra, "bos_token": None, "eos_token": eos,
                 "pad_token": "<|endoftext|>", "errors": "replace", "split_special_tokens": False,
                 "model_max_length": 131072, "clean_up_tokenization_spaces": False,
                 "tokenizer_class": "Qwen2Tokenizer"}  # fmt: skip
        special = {"additional_special_tokens": extra, "eos_token": eos,
                   "pad_token": "<|endoftext|>"}  # fmt: skip
        template = (
            QWEN25_TEMPLATE
            if instruct
            else QWEN25_TEMPLATE.replace(
                "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                "You are a helpful assistant.",
            )
        )
    if template is not None:
        keep["chat_template"] = template
    _write_json(folder / "tokenizer_config.json", keep)
    _write_json(folder / "special_tokens_map.json", special)
