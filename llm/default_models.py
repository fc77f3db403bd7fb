"""Built-in default base models: tiny Llama and Qwen2, built offline, loaded like real checkpoints.

No hub is reachable from CI or a laptop, so pathdep builds its own stand-ins for the paper's base
models. For each architecture (``LlamaForCausalLM``, ``Qwen2ForCausalLM``):

1. a byte-level BPE tokenizer is trained with the ``tokenizers`` library on synthetic text (the
   pre-training corpus plus rendered chats of every synthetic stage, so the template markers and
   stage vocabulary get merges), with the architecture's special tokens and chat template: a
   Llama-3.1-style template (header tokens, ``<|eot_id|>``, a system header printing the
   date) or Qwen2's ChatML;
2. a randomly initialised model of :class:`DefaultModelConfig`'s size is pre-trained briefly on
   :func:`llm.synthetic.generic_text` plus chats in the stages' formats (:func:`pretraining_chats`;
   packed next-token prediction, AdamW, warm-up + cosine), so it is a "base model" that, like
   Llama 3.2-1B, already writes chats, QA and worked arithmetic: fine-tuning stages then teach
   content rather than format, and a later stage no longer rewrites the format an earlier one
   relied on (README, "Choosing the toy");
3. the folder is written with ``save_pretrained`` (config.json, model.safetensors,
   generation_config.json, tokenizer.json, tokenizer_config.json, chat template) plus
   ``pathdep_default.json`` (the config, parameter count, pre-training losses, build seconds,
   template hash), and read back through :func:`llm.models.load_model` exactly as a downloaded
   checkpoint.

Same config and seed give byte-identical files on the same kind of CPU: the build is seeded, runs
with ``torch.use_deterministic_algorithms`` and a fixed thread count (``build_threads``).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llm import synthetic
from llm.checkpoint import atomic_write_text
from llm.tokenization import render_chat, template_hash

ARCHS = ("llama", "qwen2")
BUILD_FORMAT_VERSION = 2  # bump when the build changes, so cached folders are rebuilt
METADATA_FILE = "pathdep_default.json"

# Llama-3.1-style template: BOS, a system header with the (pinned) date, header tokens per turn,
# <|eot_id|> ends a turn; the generation prompt opens an assistant header.
LLAMA_CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- if not date_string is defined %}\n"
    "    {%- if strftime_now is defined %}\n"
    '        {%- set date_string = strftime_now("%d %b %Y") %}\n'
    "    {%- else %}\n"
    '        {%- set date_string = "26 Jul 2024" %}\n'
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] | trim %}\n"
    "    {%- set messages = messages[1:] %}\n"
    "{%- else %}\n"
    '    {%- set system_message = "" %}\n'
    "{%- endif %}\n"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}\n"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}\n"
    "{{- system_message }}\n"
    "{{- '<|eot_id|>' }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)

# Qwen2 ChatML template (default system prompt when none is given).
QWEN2_CHAT_TEMPLATE = (
    "{%- for message in messages %}\n"
    "    {%- if loop.first and messages[0]['role'] != 'system' %}\n"
    "        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)


@dataclass(frozen=True)
class ArchSpec:
    """Special tokens and template of one architecture's tokenizer."""

    model_type: str
    special_tokens: tuple[str, ...]
    bos_token: str | None
    eos_token: str
    pad_token: str
    end_of_turn: str
    chat_template: str
    pretokenize_regex: str  # the family's own split, which its transformers tokenizer applies
    nfc: bool  # NFC-normalise text first (Qwen2Tokenizer does)


# Pre-tokenisation regexes of Llama 3 (digits in groups of up to 3) and Qwen2 (single digits).
LLAMA3_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


ARCH_SPECS = {
    "llama": ArchSpec(
        model_type="llama",
        special_tokens=(
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|finetune_right_pad_id|>",
        ),
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|finetune_right_pad_id|>",
        end_of_turn="<|eot_id|>",
        chat_template=LLAMA_CHAT_TEMPLATE,
        pretokenize_regex=LLAMA3_PRETOKENIZE_REGEX,
        nfc=False,
    ),
    "qwen2": ArchSpec(
        model_type="qwen2",
        special_tokens=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        bos_token=None,  # Qwen2 uses no BOS
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        end_of_turn="<|im_end|>",
        chat_template=QWEN2_CHAT_TEMPLATE,
        pretokenize_regex=QWEN2_PRETOKENIZE_REGEX,
        nfc=True,
    ),
}


@dataclass(frozen=True)
class DefaultModelConfig:
    """Size and pre-training of the default base models (both architectures share it).

    Attributes:
        vocab_size: BPE vocabulary size, special tokens and the 256 byte symbols included.
        hidden_size: model width.
        intermediate_size: MLP width (SwiGLU).
        num_layers: transformer blocks.
        num_heads: attention heads (``hidden_size`` must divide by it).
        num_kv_heads: key/value heads (grouped-query attention, as Llama 3 and Qwen2 use).
        max_position_embeddings: longest sequence the model accepts.
        tie_word_embeddings: share input and output embeddings (Llama 3.2-1B, Qwen2.5-1.5B do).
        tokenizer_docs: generic documents in the tokenizer's training corpus (plus rendered
            chats of every synthetic stage, ``tokenizer_docs // 4`` per stage).
        pretrain_docs: generic documents packed into the pre-training stream.
        pretrain_steps: optimizer steps of pre-training (0 = random init).
        pretrain_chats: chat-rendered conversations in the formats of the instruction, author
            QA and arithmetic stages (:func:`pretraining_chats`) shuffled into the pre-training
            documents, as a real base model has seen chats, QA and worked arithmetic. No
            refusals: the base model must not already hold S_U.
        batch_size: sequences per pre-training step.
        seq_len: tokens per pre-training sequence.
        learning_rate: peak AdamW learning rate (10% linear warm-up, cosine to 10% of peak).
        seed: seeds tokenizer corpus, initialisation and data order.
        build_threads: torch CPU threads during the build. A fixed count makes the build
            reproducible across machines with different core counts (the float reduction order
            depends on it); 1 is also the fastest choice on a shared machine, where extra
            threads mostly spin.
    """

    vocab_size: int = 2560
    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = True
    tokenizer_docs: int = 2000
    pretrain_docs: int = 3000
    pretrain_steps: int = 360
    pretrain_chats: int = 3000
    batch_size: int = 8
    seq_len: int = 128
    learning_rate: float = 3e-3
    seed: int = 0
    build_threads: int = 1

    def __post_init__(self) -> None:
        positive = [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "max_position_embeddings",
            "tokenizer_docs",
            "pretrain_docs",
            "batch_size",
            "seq_len",
            "build_threads",
        ]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(
                    f"DefaultModelConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        if self.vocab_size < 300:
            raise ValueError(
                f"vocab_size must be >= 300 (256 bytes + specials), got {self.vocab_size}"
            )
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                "hidden_size must divide by num_heads and num_heads by num_kv_heads; got "
                f"{self.hidden_size}, {self.num_heads}, {self.num_kv_heads}"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("head dimension hidden_size/num_heads must be even (rotary embedding)")
        if self.pretrain_chats < 0:
            raise ValueError(f"pretrain_chats must be >= 0, got {self.pretrain_chats}")
        if self.pretrain_steps < 0 or self.learning_rate <= 0:
            raise ValueError("pretrain_steps must be >= 0 and learning_rate > 0")
        if self.seq_len > self.max_position_embeddings:
            raise ValueError("seq_len must not exceed max_position_embeddings")

    @classmethod
    def tiny(cls) -> DefaultModelConfig:
        """A model of a few ten thousand parameters that builds in seconds (tests)."""
        return cls(
            vocab_size=384,
            hidden_size=32,
            intermediate_size=64,
            num_layers=2,
            num_heads=2,
            num_kv_heads=1,
            max_position_embeddings=512,
            tokenizer_docs=200,
            pretrain_docs=100,
            pretrain_steps=4,
            pretrain_chats=30,
            batch_size=4,
            seq_len=64,
            learning_rate=3e-3,
        )

    def config_hash(self) -> str:
        """First 12 hex digits of sha256 over the config and :data:`BUILD_FORMAT_VERSION`."""
        payload = json.dumps({"v": BUILD_FORMAT_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


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
        workers = min(len(archs), _usable_cores())
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
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(archs)), mp_context=context) as pool:
            for future in [pool.submit(_build_and_install, *job) for job in jobs]:
                future.result()
    return {arch: out / arch for arch in archs}


def _usable_cores() -> int:
    """CPU cores this process may run on (respects taskset and container CPU sets). The same as
    ``sim.parallel.usable_cores``, kept here because importing ``sim`` starts JAX, which a
    model build (and each process it spawns) does not need."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _build_and_install(
    arch: str, config: DefaultModelConfig, out: Path, progress: bool, overwrite: bool, position: int
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{arch}-building-", dir=out))
    try:
        _build_one(arch, config, tmp, progress, position)
        _install(tmp, out / arch, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Tokenizer


def tokenizer_corpus(config: DefaultModelConfig, arch: str) -> list[str]:
    """Texts the BPE is trained on: generic documents plus rendered chats of every stage.

    The chats come from seeds the dataset files do not use by default (``10_000 + seed``), so
    the tokenizer learns the stages' vocabulary, not their particular examples.
    """
    spec = ARCH_SPECS[arch]
    docs = synthetic.generic_text(config.tokenizer_docs, seed=config.seed)
    per_stage = max(1, config.tokenizer_docs // 4)
    chat_seed = 10_000 + config.seed
    tofu, tofu_para = synthetic.author_facts(max(1, per_stage // 8), seed=chat_seed)
    chats = (
        synthetic.instruction_following(per_stage, seed=chat_seed)
        + tofu
        + tofu_para
        + synthetic.arithmetic(per_stage, seed=chat_seed)
        + synthetic.safety_refusals(per_stage, seed=chat_seed)
        + synthetic.rcu_stage(synthetic.rcu_set(min(per_stage, 40), seed=chat_seed), "R")
    )
    marker = _TemplateOnly(spec)
    rendered = [render_chat(marker, ex.messages) for ex in chats]
    phrases = [
        synthetic.UNLEARN_LABEL,
        synthetic.REFUSAL_SENTENCE,
        *synthetic.unlearn_paraphrases(),
    ]
    return docs + rendered + phrases


class _TemplateOnly:
    """Just enough of a tokenizer for :func:`render_chat` before the real one exists."""

    def __init__(self, spec: ArchSpec):
        from transformers.utils.chat_template_utils import render_jinja_template

        self._render = render_jinja_template
        self.chat_template = spec.chat_template
        self.special_tokens_map = {
            k: v
            for k, v in (("bos_token", spec.bos_token), ("eos_token", spec.eos_token))
            if v is not None
        }

    def apply_chat_template(
        self, conversation, chat_template, tokenize, add_generation_prompt, **kw
    ):
        rendered, _ = self._render(
            conversations=[conversation],
            chat_template=chat_template,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens_map, **kw},
        )
        return rendered[0]


def train_tokenizer(config: DefaultModelConfig, arch: str) -> Any:
    """Train the byte-level BPE of ``arch`` and wrap it as a transformers fast tokenizer."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    spec = ARCH_SPECS[arch]
    bpe = Tokenizer(models.BPE())
    if spec.nfc:
        bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(spec.pretokenize_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    # Untrimmed offsets: the assistant mask needs each token's true first character.
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=2,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tokenizer_corpus(config, arch), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=spec.bos_token,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = spec.chat_template
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Model


def model_config(config: DefaultModelConfig, arch: str, tokenizer: Any) -> Any:
    """The transformers config of ``arch`` at ``config``'s size, ids from ``tokenizer``."""
    from transformers import LlamaConfig, Qwen2Config

    spec = ARCH_SPECS[arch]
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids(spec.bos_token) if spec.bos_token else None,
        eos_token_id=tokenizer.convert_tokens_to_ids(spec.eos_token),
        pad_token_id=tokenizer.convert_tokens_to_ids(spec.pad_token),
    )
    if arch == "llama":
        return LlamaConfig(rms_norm_eps=1e-5, **common)
    return Qwen2Config(rms_norm_eps=1e-6, **common)


def pretraining_chats(tokenizer: Any, config: DefaultModelConfig) -> list[str]:
    """``config.pretrain_chats`` rendered chats, a third each instruction following, author QA
    and worked arithmetic, from seed ``20_000 + seed`` (the tokenizer uses ``10_000 + seed``, the
    stage files small seeds). They share the stages' formats, not their examples: other authors
    and instructions, and arithmetic of other question types
    (:data:`llm.synthetic.PRETRAINING_MATH_TASKS`) in S_math's solution format, so S_math still
    has problems to teach."""
    n = config.pretrain_chats
    if n == 0:
        return []
    chat_seed = 20_000 + config.seed
    per_kind = max(1, n // 3)
    tofu, _ = synthetic.author_facts(-(-per_kind // 8), seed=chat_seed)  # 8 QA per author
    chats = (
        synthetic.instruction_following(per_kind, seed=chat_seed)
        + tofu[:per_kind]
        + synthetic.arithmetic(
            n - 2 * per_kind, seed=chat_seed, tasks=synthetic.PRETRAINING_MATH_TASKS
        )
    )
    # The template may open with BOS; pretraining_blocks adds its own around every document.
    bos = tokenizer.bos_token or ""
    return [render_chat(tokenizer, ex.messages).removeprefix(bos) for ex in chats]


def pretraining_blocks(tokenizer: Any, config: DefaultModelConfig, arch: str) -> torch.Tensor:
    """(N, seq_len) token blocks: generic documents (and :func:`pretraining_chats`, shuffled
    in) as ``[BOS] doc EOS``, concatenated, cut."""
    spec = ARCH_SPECS[arch]
    bos = [tokenizer.convert_tokens_to_ids(spec.bos_token)] if spec.bos_token else []
    eos = [tokenizer.convert_tokens_to_ids(spec.eos_token)]
    stream: list[int] = []
    docs = synthetic.generic_text(config.pretrain_docs, seed=config.seed + 1)
    chats = pretraining_chats(tokenizer, config)
    if chats:
        docs = docs + chats
        random.Random(config.seed).shuffle(docs)
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        stream.extend(bos + list(ids) + eos)
    n_blocks = len(stream) // config.seq_len
    if n_blocks == 0:
        raise ValueError("pretrain_docs too small to fill one sequence of seq_len tokens")
    return torch.tensor(stream[: n_blocks * config.seq_len]).view(n_blocks, config.seq_len)


def pretrain(
    model: Any,
    blocks: torch.Tensor,
    config: DefaultModelConfig,
    progress: bool,
    desc: str = "pre-training",
    position: int = 0,
) -> list[float]:
    """Next-token pre-training on ``blocks``; returns the loss of every step.

    AdamW (betas 0.9/0.95, no weight decay), 10% linear warm-up then cosine to 10% of the peak
    rate; batches drawn without replacement, reshuffled each pass, from a seeded generator.
    """
    steps = config.pretrain_steps
    if steps == 0:
        return []
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.0
    )
    warmup = max(1, steps // 10)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_frac = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_frac))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(config.seed)
    batches = _batch_stream(blocks.shape[0], config.batch_size, generator)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False, position=position)
    for _ in bar:
        batch = blocks[next(batches)]  # (B, T)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    return losses


def _batch_stream(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]
        if n < batch_size:  # fewer blocks than a batch: sample with replacement
            yield torch.randint(n, (batch_size,), generator=generator)


# ---------------------------------------------------------------------------------------------
# Build


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


@contextmanager
def _transformers_progress(enabled: bool) -> Iterator[None]:
    """Silence transformers' own progress bars (e.g. "Writing model shards") unless enabled."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


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
        blocks = pretraining_blocks(tokenizer, config, arch)
        losses = pretrain(model, blocks, config, progress, f"pre-training {arch}", position)
    spec = ARCH_SPECS[arch]
    stop_ids = [tokenizer.convert_tokens_to_ids(spec.end_of_turn), hf_config.eos_token_id]
    model.generation_config = GenerationConfig(
        bos_token_id=hf_config.bos_token_id,
        eos_token_id=stop_ids,
        pad_token_id=hf_config.pad_token_id,
    )
    with _transformers_progress(progress):
        model.save_pretrained(folder)
    metadata = {
        "arch": arch,
        "model_class": type(model).__name__,
        "config": asdict(config),
        "config_hash": config.config_hash(),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "pretraining_tokens": config.pretrain_steps * config.batch_size * config.seq_len,
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
