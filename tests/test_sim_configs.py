"""Every sim config is a value: frozen, hashable, equal to its copies, and saved/loaded unchanged
through pathdep.configs (dict, TOML)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import sim  # noqa: F401
from pathdep.configs import config_hash, from_dict, load_toml, save_config, to_dict
from sim.bench import BenchConfig
from sim.instances import InstanceDistribution, InstanceShape
from sim.models import ModelConfig
from sim.paths import PathsConfig, StageDataConfig, all_orders
from sim.sweeps import SweepConfig
from sim.theorem import TheoremConfig
from sim.training import OptimizerConfig
from sim.unlearning import UnlearnConfig

SHAPE = dict(d=6, n_a=4, n_b=5, k=2, m=3)

# (class, constructor arguments, a field and a valid new value for it)
CASES = [
    (UnlearnConfig, {}, "beta", 2.0),
    (OptimizerConfig, {}, "lr", 0.5),
    (ModelConfig, {}, "width", 7),
    (StageDataConfig, {}, "overlap", 0.25),
    (PathsConfig, {}, "unlearn", UnlearnConfig(objective="npo", retain_weight=0.5)),
    (SweepConfig, {}, "values", (0.1, 0.9)),
    (TheoremConfig, {}, "shapes", (InstanceShape(**SHAPE),)),
    (BenchConfig, {}, "workers", 3),
    (InstanceDistribution, {}, "mu_range", (1.0, 2.0)),
    (InstanceShape, SHAPE, "k", 1),
]
IDS = [c[0].__name__ for c in CASES]

# Configs away from the defaults: None and set optionals, nested tables, arrays of tables.
NON_DEFAULT = [
    PathsConfig(
        data=StageDataConfig(d=9, n_stages=3),
        model=ModelConfig("mlp", width=5),
        trainer="optimizer",
        optimizer=OptimizerConfig(name="sgd", batch_size=4, warmup_frac=0.1, decay_frac=0.05),
        mu=0.0,
        unlearn=UnlearnConfig(
            objective="simnpo",
            length_normalize=False,
            margin=0.5,
            retain_weight=0.25,
            forget_weight=2.0,
            tokens_per_sequence=2,
        ),
        orders=all_orders(3),
        seed=7,
    ),
    SweepConfig(parameter="mu", values=(0.5, 2.0), base=PathsConfig(seed=2), n_seeds=3),
    TheoremConfig(
        n_instances=10,
        shapes=(InstanceShape(**SHAPE), InstanceShape(d=7, n_a=1, n_b=2, k=3, m=4)),
        distribution=InstanceDistribution(corr_range=(0.1, 0.2), n_factors=2),
        n_steps=9,
    ),
    BenchConfig(
        n_instances=5,
        shape=InstanceShape(**SHAPE),
        chunk_size=5,
        numpy_direct_subset=2,
        numpy_spectral_subset=3,
        workers=1,
    ),
]


@pytest.mark.parametrize("cls,kwargs,field,value", CASES, ids=IDS)
def test_configs_are_frozen_hashable_values(cls, kwargs, field, value):
    assert cls.__dataclass_params__.frozen
    a, b = cls(**kwargs), cls(**kwargs)
    assert a == b and hash(a) == hash(b) and a is not b
    assert config_hash(a) == config_hash(b)
    for f in dataclasses.fields(cls):  # no mutable value anywhere (every field hashes)
        hash(getattr(a, f.name))
    changed = dataclasses.replace(a, **{field: value})
    assert getattr(changed, field) == value and getattr(a, field) != value
    assert a == b and hash(a) == hash(b)  # replacing made a new value; a and b are untouched
    assert changed != a and config_hash(changed) != config_hash(a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(a, field, value)


def _instances():
    return [cls(**kwargs) for cls, kwargs, *_ in CASES] + NON_DEFAULT


@pytest.mark.parametrize(
    "cfg", _instances(), ids=IDS + [f"custom_{type(c).__name__}" for c in NON_DEFAULT]
)
def test_dict_and_toml_round_trips(cfg, tmp_path):
    cls = type(cfg)
    assert from_dict(cls, to_dict(cfg)) == cfg
    digest = save_config(cfg, tmp_path)
    loaded = load_toml(cls, tmp_path / "config.toml")
    assert loaded == cfg and hash(loaded) == hash(cfg)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["hash"] == digest == config_hash(loaded)
    assert saved["type"] == cls.__name__ and saved["config"] == to_dict(cfg)


def test_sequences_are_stored_as_tuples():
    """Lists given for tuple fields are stored as tuples, so the config stays hashable."""
    p = PathsConfig(data=StageDataConfig(n_stages=3), orders=[[0, 1, 2], [2, 1, 0]])
    assert p.orders == ((0, 1, 2), (2, 1, 0)) and hash(p) == hash(dataclasses.replace(p))
    assert SweepConfig(values=[0.0, 1.0]).values == (0.0, 1.0)
    assert TheoremConfig(shapes=[InstanceShape(**SHAPE)]).shapes == (InstanceShape(**SHAPE),)
    assert InstanceDistribution(mu_range=[1.0, 2.0]).mu_range == (1.0, 2.0)


def test_defaults_follow_llm():
    """UnlearnConfig and OptimizerConfig use llm's names and unlearning defaults."""
    names = {f.name for f in dataclasses.fields(UnlearnConfig)}
    assert {"objective", "lr", "beta", "margin", "length_normalize"} <= names
    assert {"forget_weight", "retain_weight", "steps", "tokens_per_sequence"} <= names
    u = UnlearnConfig()
    assert (u.objective, u.beta, u.margin, u.length_normalize) == ("ga", 0.5, 0.0, True)
    assert (u.forget_weight, u.retain_weight) == (1.0, 0.0)
    o = OptimizerConfig()
    assert (o.lr, o.warmup_frac, o.decay_frac) == (1e-2, 0.02, 0.02)
