"""Run configs: strict TOML parsing, overrides, validation, hashing, path construction."""

from pathlib import Path

import pytest

from llm import config as C

CONFIGS = sorted((Path(__file__).parents[1] / "llm" / "configs").glob("*.toml"))


def test_configs_are_shipped():
    names = {p.stem for p in CONFIGS}
    assert {"tiny", "demo_rcu", "llama3.2-1b", "llama3.1-8b", "llama2-13b"} <= names
    assert {"qwen2.5-1.5b", "qwen2.5-14b"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    cfg = C.load_config(path)
    assert cfg.stages
    assert C.path_sequences(cfg.paths)
    if cfg.finetune.method == "lora":
        rank, alpha = C.lora_shape(cfg)
        assert rank > 0 and alpha > 0


def test_paper_hyperparameters_in_full_scale_configs():
    presets = {"llama3.2-1b": (64, 128), "qwen2.5-1.5b": (32, 64), "llama3.1-8b": (8, 16)}
    presets |= {"llama2-13b": (8, 16), "qwen2.5-14b": (8, 16)}
    for name, shape in presets.items():
        cfg = C.load_config(Path(C.__file__).parent / "configs" / f"{name}.toml")
        assert C.lora_shape(cfg) == shape
        assert [cfg.stage(s).epochs for s in ("inst", "tofu", "math", "unlearn")] == [10, 4, 2, 2]
        big = name in ("llama2-13b", "qwen2.5-14b")
        assert cfg.stage("inst").batch_size == (256 if big else 128)
        assert cfg.unlearn.lr == (5e-6 if big else 1e-5)
        assert cfg.unlearn.batch_size == 128
        assert cfg.finetune.betas == (0.9, 0.999) and cfg.finetune.weight_decay == 0.0
        npo = [m for m in cfg.unlearn.methods if m.objective == "npo"][0]
        assert npo.beta == 0.5


def _write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_unknown_key_is_an_error_naming_it(tmp_path):
    with pytest.raises(C.ConfigError, match="unknown key 'unlearn.lr_typo'"):
        C.load_config(_write(tmp_path, "[unlearn]\nlr_typo = 1.0\n"))
    with pytest.raises(C.ConfigError, match="unknown key 'bogus'"):
        C.load_config(_write(tmp_path, "bogus = 1\n"))
    with pytest.raises(C.ConfigError, match=r"unknown key 'unlearn\.methods\[0\]\.gamma'"):
        C.load_config(_write(tmp_path, "[[unlearn.methods]]\nname='x'\ngamma=1.0\n"))


def test_duplicated_key_is_an_error(tmp_path):
    with pytest.raises(C.ConfigError, match="c.toml"):
        C.load_config(_write(tmp_path, "[model]\npath = 'a'\npath = 'b'\n"))


def test_wrong_type_and_bad_values(tmp_path):
    with pytest.raises(C.ConfigError, match="model.dtype"):
        C.load_config(_write(tmp_path, "[model]\ndtype = 'fp8'\n"))
    with pytest.raises(C.ConfigError, match="unlearn.optimizer must be adamw, sgd or empty"):
        C.load_config(_write(tmp_path, "[unlearn]\noptimizer = 'adam'\n"))
    with pytest.raises(C.ConfigError, match="expected an integer"):
        C.load_config(_write(tmp_path, "seed = 'zero'\n"))
    text = "[[stages]]\nname='inst'\nbatch_size=6\ngrad_accum=4\n"
    with pytest.raises(C.ConfigError, match="not a multiple"):
        C.load_config(_write(tmp_path, text))
    with pytest.raises(C.ConfigError, match="no \\[\\[stages\\]\\] entry named 'unlearn'"):
        C.load_config(_write(tmp_path, "[paths]\norder=['inst','unlearn']\npositions=[1, 2]\n"))
    with pytest.raises(C.ConfigError, match="not found"):
        C.load_config(tmp_path / "missing.toml")


def test_overrides_and_hash(tmp_path):
    base = CONFIGS[[p.stem for p in CONFIGS].index("tiny")]
    cfg = C.load_config(base)
    same = C.load_config(base)
    assert C.config_hash(cfg) == C.config_hash(same)
    other = C.load_config(base, ["model.path=/models/x", "unlearn.lr=5e-6", "seed=3"])
    assert other.model.path == "/models/x" and other.unlearn.lr == 5e-6 and other.seed == 3
    assert C.config_hash(other) != C.config_hash(cfg)
    with pytest.raises(C.ConfigError, match="unknown key"):
        C.load_config(base, ["model.pth=/x"])
    assert C.save_resolved(cfg, tmp_path) == C.config_hash(cfg)
    assert C.config_hash(cfg) in (tmp_path / "config.json").read_text()
    assert C.load_config(tmp_path / "config.toml") == cfg


def test_path_sequences_positions_and_permutations():
    paths = C.PathsConfig(order=("a", "b", "c", "u"), forget_stage="u", positions=(1, 2, 3, 4))
    seqs = C.path_sequences(paths)
    assert seqs == {
        "p1": ("u", "a", "b", "c"),
        "p2": ("a", "u", "b", "c"),
        "p3": ("a", "b", "u", "c"),
        "p4": ("a", "b", "c", "u"),
    }
    assert C.retrain_sequence(paths) == ("a", "b", "c")
    perms = C.PathsConfig(forget_stage="U", permutations=(("R", "C", "U"), ("U", "C", "R")))
    assert C.path_sequences(perms) == {"R-C-U": ("R", "C", "U"), "U-C-R": ("U", "C", "R")}
    assert C.retrain_sequence(perms) == ("R", "C")
    with pytest.raises(C.ConfigError, match="outside"):
        C.path_sequences(C.PathsConfig(positions=(5,)))


def test_lora_preset_needs_a_known_model():
    cfg = C.RunConfig(model=C.ModelConfig(name="unknown-model"))
    with pytest.raises(C.ConfigError, match="preset"):
        C.lora_shape(cfg)
    assert C.lora_shape(C.RunConfig(model=C.ModelConfig(name="Qwen2.5-1.5B"))) == (32, 64)
