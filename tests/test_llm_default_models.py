"""Default tiny models: ordinary HF folders, deterministic, cached, and atomic to build; their
pre-training packs whole documents, holds no held-out math question, and a math chat asked
through the paper's prompt fits in a default pre-training block; the default build's tokenizer
corpus changes only with the build format."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from llm import default_models as dm
from llm.chat import Message
from llm.chat_template import render_chat
from llm.default_models import (
    ARCH_SPECS,
    METADATA_FILE,
    DefaultModelConfig,
    build_default,
    default_cache_dir,
    ensure_default_models,
    train_tokenizer,
)
from llm.default_models import build as dm_build
from llm.models import load_tokenizer
from llm.prompts import REFUSAL_SENTENCE, gsm8k_prompt
from llm.synthetic import (
    author_facts,
    generic_text,
    held_out_arithmetic,
    instruction_following,
    question_split,
)

TINY = DefaultModelConfig.tiny()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_folder_is_an_ordinary_hf_checkpoint(tiny_models_dir, arch):
    folder = tiny_models_dir / arch
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert METADATA_FILE in names and not any(n.endswith((".bin", ".pt")) for n in names)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == arch
    assert config["hidden_size"] == TINY.hidden_size
    assert config["num_hidden_layers"] == TINY.num_layers
    assert config["num_key_value_heads"] == TINY.num_kv_heads
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert meta["config"] == dataclasses.asdict(TINY) and meta["arch"] == arch
    assert len(meta["pretrain_losses"]) == TINY.pretrain_steps
    assert meta["pretrain_loss_last"] < meta["pretrain_loss_first"]
    generation = json.loads((folder / "generation_config.json").read_text())
    tokenizer = load_tokenizer(folder)
    end_of_turn = tokenizer.convert_tokens_to_ids(ARCH_SPECS[arch].end_of_turn)
    assert end_of_turn in generation["eos_token_id"]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_special_tokens_are_single_tokens(tiny_models_dir, arch):
    tokenizer = load_tokenizer(tiny_models_dir / arch)
    for token in ARCH_SPECS[arch].special_tokens:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert ids == [tokenizer.convert_tokens_to_ids(token)], token
    # Byte-level: any text round-trips, including characters never seen in training.
    text = "Ünïcödé ✓ 中文 tabs\tand  double  spaces\n\n#### 42"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_loaded_tokenizer_encodes_like_the_trained_one(tiny_models_dir, arch):
    # transformers may rebuild the pipeline on load (Qwen2Tokenizer does); the ids must not move.
    trained = train_tokenizer(TINY, arch)
    loaded = load_tokenizer(tiny_models_dir / arch)
    docs = generic_text(100, seed=11) + ["  x\n\n\t123456 e\u0301 caf\u00e9"]
    assert trained(docs)["input_ids"] == loaded(docs)["input_ids"]


def test_pretraining_chats_teach_the_stage_formats_without_refusals(tiny_models_dir):
    tokenizer = load_tokenizer(tiny_models_dir / "llama")
    config = dataclasses.replace(TINY, pretrain_chats=60, pretrain_math_chats=36)
    chats = dm.pretraining_chats(tokenizer, config)
    assert len(chats) == 96
    assert not any(c.startswith(tokenizer.bos_token) for c in chats)  # blocks add their own
    assert all(c.count("<|eot_id|>") >= 3 for c in chats)  # system, user, assistant turns
    # Worked arithmetic of S_math's question types and the pre-training-only ones, some asked
    # through the paper's GSM8K prompt; never a held-out (test split) question.
    math_chats = [c for c in chats if "Let's solve this step by step." in c]
    assert len(math_chats) == 36
    markers = (" more. ", " gave away ", " in each bag. ", " miles on ", " pages. ", " every week ")
    assert [sum(m in c for c in math_chats) for m in markers] == [6] * 6
    through_prompt = sum("### Problem" in c for c in math_chats)
    assert 6 <= through_prompt <= 30
    questions = [ex.messages[0].content for ex in held_out_arithmetic(200, 0, [])]
    assert all(question_split(q) == "test" for q in questions)
    assert not any(q in c for q in questions for c in math_chats)
    assert not any(REFUSAL_SENTENCE in c or "REDACTED" in c for c in chats)
    # Formats, not the stage files' examples: no instruction or author of data seeds 0-2.
    for seed in range(3):
        for ex in instruction_following(128, seed=seed):
            assert not any(ex.messages[0].content in c for c in chats)
        assert not any(
            ex.meta["author"] in c for ex in author_facts(16, seed=seed)[0] for c in chats
        )


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_pretraining_blocks_pack_whole_documents(tiny_models_dir, arch):
    tokenizer = load_tokenizer(tiny_models_dir / arch)
    spec = ARCH_SPECS[arch]
    eos = tokenizer.convert_tokens_to_ids(spec.eos_token)
    # Blocks long enough for every document, so none is cut.
    config = dataclasses.replace(TINY, seq_len=512)
    docs = dm.pretraining_documents(tokenizer, config)
    inputs, labels = dm.pretraining_blocks(tokenizer, config, arch)
    assert inputs.shape == labels.shape and inputs.shape[1] == 512
    labelled = labels != -100
    # Labels are the inputs where set; the unlabelled rest of a row is padding after its end.
    assert (labels[labelled] == inputs[labelled]).all()
    assert (inputs[~labelled] == tokenizer.pad_token_id).all()
    n_labelled = labelled.sum(1)
    assert (labelled.cumsum(1).amax(1) == n_labelled).all() and n_labelled.min() > 0
    # Every row ends with a whole document; the rows hold the documents in order, each once,
    # packed greedily: a row is closed only when the next document would not fit in it.
    assert (inputs[torch.arange(len(inputs)), n_labelled - 1] == eos).all()
    assert int(((inputs == eos) & labelled).sum()) == len(docs)  # Qwen2 pads with EOS
    extra = 2 if spec.bos_token else 1  # [BOS] doc EOS
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    lengths = iter([len(doc) + extra for doc in ids])
    pending = next(lengths)
    for row in n_labelled.tolist():
        filled = 0
        while pending is not None and filled + pending <= 512:
            filled, pending = filled + pending, next(lengths, None)
        assert filled == row
    assert pending is None


def test_default_math_chats_fit_in_a_pretraining_block():
    # With the paper's prompt in the tokenizer corpus, a math chat asked through it fits in the
    # default model's pre-training sequence (without it, 287-313 tokens against 256).
    config = DefaultModelConfig()
    for arch in ("llama", "qwen2"):
        tokenizer = train_tokenizer(config, arch)
        chats = [
            (Message("user", gsm8k_prompt(ex.messages[0].content)), ex.messages[1])
            for ex in held_out_arithmetic(30, 0, [])
        ]
        lengths = [len(tokenizer(render_chat(tokenizer, c))["input_ids"]) for c in chats]
        assert max(lengths) < config.seq_len, (arch, max(lengths))


def test_build_is_deterministic(tiny_models_dir, tmp_path):
    again = build_default(tmp_path, TINY, archs=("llama",), progress=False)["llama"]
    first = tiny_models_dir / "llama"
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_parallel_build_writes_the_same_files_as_a_sequential_one(tmp_path):
    side_by_side = build_default(tmp_path / "par", TINY, progress=False, workers=2)
    one_by_one = build_default(tmp_path / "seq", TINY, progress=False, workers=1)
    for arch in ("llama", "qwen2"):
        for name in ("model.safetensors", "tokenizer.json", "config.json"):
            first, second = side_by_side[arch] / name, one_by_one[arch] / name
            assert first.read_bytes() == second.read_bytes(), (arch, name)
    with pytest.raises(ValueError, match="workers"):
        build_default(tmp_path / "none", TINY, progress=False, workers=0)


def test_ensure_is_idempotent(tiny_models_dir):
    cache = tiny_models_dir.parent.parent  # <cache>/default-models/<hash>
    marker = tiny_models_dir / "llama" / METADATA_FILE
    before = marker.stat().st_mtime_ns
    paths = ensure_default_models(cache, TINY, progress=False)
    assert paths == {"llama": tiny_models_dir / "llama", "qwen2": tiny_models_dir / "qwen2"}
    assert marker.stat().st_mtime_ns == before
    assert tiny_models_dir.name == TINY.config_hash() != DefaultModelConfig().config_hash()


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(dm_build, "pretrain", broken)  # patched where the build looks it up
    with pytest.raises(RuntimeError, match="interrupted"):
        build_default(tmp_path / "out", TINY, archs=("qwen2",), progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_built_folder_is_group_readable(tmp_path):
    # mkdtemp makes the build folder 0700 and safetensors the weights 0600; the installed folder
    # must have the umask's usual permissions like any other output.
    previous = os.umask(0o022)
    try:
        folder = build_default(tmp_path, TINY, archs=("llama",), progress=False)["llama"]
    finally:
        os.umask(previous)
    assert folder.stat().st_mode & 0o777 == 0o755
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert "model.safetensors" in {p.name for p in files}
    assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: 0o644 for p in files}
    for sub in folder.rglob("*"):
        if sub.is_dir():
            assert sub.stat().st_mode & 0o777 == 0o755, sub


def test_config_hash_is_the_projects_content_hash():
    from pathdep.io import content_hash

    expected = content_hash({"v": dm.BUILD_FORMAT_VERSION, **dataclasses.asdict(TINY)}, digits=12)
    assert TINY.config_hash() == expected and len(expected) == 12


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PATHDEP_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PATHDEP_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "pathdep"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hidden_size": 30, "num_heads": 4}, "divide"),
        ({"vocab_size": 100}, "vocab_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"seq_len": 2048}, "seq_len"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"pretrain_chats": -1}, "pretrain_chats"),
        ({"repeat_docs": -1}, "repeat_docs"),
        ({"math_prompt_share": 1.5}, "math_prompt_share"),
    ],
)
def test_config_validation(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **change)


def test_unknown_arch(tmp_path):
    with pytest.raises(ValueError, match="unknown architectures"):
        build_default(tmp_path, TINY, archs=("gpt2",), progress=False)


# sha256 (first 16 hex digits) of the default config's tokenizer corpus, per build format. The
# cache folder is named by the config and BUILD_FORMAT_VERSION, not by the code: a generator
# change that reaches the build (e.g. a new draw in rcu_set, whose R chats the corpus renders)
# would leave every user's cached models stale while fresh builds differ. Change the corpus
# only with a new BUILD_FORMAT_VERSION and a new entry here.
BUILD_CORPUS = {3: {"llama": "836920893e679067", "qwen2": "2793f79c05a6e8ac"}}


def test_the_default_builds_tokenizer_corpus_changes_only_with_the_build_format():
    import hashlib

    from llm.default_models.tokenizer import tokenizer_corpus

    pinned = BUILD_CORPUS.get(dm.BUILD_FORMAT_VERSION)
    assert pinned is not None, "new BUILD_FORMAT_VERSION: pin its corpus in BUILD_CORPUS"
    for arch, digest in pinned.items():
        text = "\x00".join(tokenizer_corpus(DefaultModelConfig(), arch))
        got = hashlib.sha256(text.encode()).hexdigest()[:16]
        assert got == digest, f"{arch}: the default build's corpus changed; bump the build format"
