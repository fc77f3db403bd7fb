"""Built-in default base models: tiny Llama and Qwen2, built offline, loaded like real checkpoints.

No hub is reachable from CI or a laptop, so pathdep builds its own stand-ins for the paper's base
models. For each architecture (``LlamaForCausalLM``, ``Qwen2ForCausalLM``):

1. a byte-level BPE tokenizer is trained with the ``tokenizers`` library on synthetic text (the
   pre-training corpus plus rendered chats of every synthetic stage and the GSM8K prompt, so the
   template markers, stage vocabulary and prompt get merges), with the architecture's special
   tokens and chat template: a Llama-3.1-style template (header tokens, ``<|eot_id|>``, a
   system header printing the date) or Qwen2's ChatML;
2. a randomly initialised model of :class:`DefaultModelConfig`'s size is pre-trained on
   :func:`pretraining_documents`: generic text, arithmetic facts, repeated phrases, and chats in
   the stages' formats (:func:`pretraining_chats`; worked arithmetic half of it asked through the
   paper's GSM8K prompt), whole documents packed into blocks, AdamW, warm-up + cosine. It is a
   "base model" that, like Llama 3.2-1B, already writes chats, QA and worked arithmetic, and can
   read a problem inside the GSM8K prompt: fine-tuning stages then teach content rather than
   format, and S_math's accuracy is measurable (docs/choosing_the_toy.md, rounds four and
   eight);
3. the folder is written with ``save_pretrained`` (config.json, model.safetensors,
   generation_config.json, tokenizer.json, tokenizer_config.json, chat template) plus
   ``pathdep_default.json`` (the config, parameter count, pre-training losses, build seconds,
   template hash), made group-readable like every other output, and read back through
   :func:`llm.models.load_model` exactly as a downloaded checkpoint.

Same config and seed give byte-identical files on the same kind of CPU: the build is seeded, runs
with ``torch.use_deterministic_algorithms`` and a fixed thread count (``build_threads``).

Modules, one job each:

- :mod:`~llm.default_models.arch`: the architectures' special tokens, chat templates and
  pre-tokenisation (:data:`ARCH_SPECS`);
- :mod:`~llm.default_models.config`: :class:`DefaultModelConfig` and its cache hash;
- :mod:`~llm.default_models.tokenizer`: the BPE's corpus and training;
- :mod:`~llm.default_models.pretraining`: the transformers config, pre-training data and loop;
- :mod:`~llm.default_models.build`: building, installing and caching the folders.
"""

from __future__ import annotations

from llm.default_models.arch import (
    ARCH_SPECS,
    ARCHS,
    LLAMA3_PRETOKENIZE_REGEX,
    LLAMA_CHAT_TEMPLATE,
    QWEN2_CHAT_TEMPLATE,
    QWEN2_PRETOKENIZE_REGEX,
    ArchSpec,
)
from llm.default_models.build import (
    METADATA_FILE,
    build_default,
    default_cache_dir,
    ensure_default_models,
)
from llm.default_models.config import BUILD_FORMAT_VERSION, DefaultModelConfig
from llm.default_models.pretraining import (
    model_config,
    pretrain,
    pretraining_blocks,
    pretraining_chats,
    pretraining_documents,
)
from llm.default_models.tokenizer import tokenizer_corpus, train_tokenizer

__all__ = [
    "ARCHS",
    "ARCH_SPECS",
    "ArchSpec",
    "BUILD_FORMAT_VERSION",
    "DefaultModelConfig",
    "LLAMA3_PRETOKENIZE_REGEX",
    "LLAMA_CHAT_TEMPLATE",
    "METADATA_FILE",
    "QWEN2_CHAT_TEMPLATE",
    "QWEN2_PRETOKENIZE_REGEX",
    "build_default",
    "default_cache_dir",
    "ensure_default_models",
    "model_config",
    "pretrain",
    "pretraining_blocks",
    "pretraining_chats",
    "pretraining_documents",
    "tokenizer_corpus",
    "train_tokenizer",
]
