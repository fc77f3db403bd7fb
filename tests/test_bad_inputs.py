"""The table of bad inputs: over the four command lines and the Python API, each is refused with
the right exit code and one line naming the problem, and leaves the folder exactly as it was.

Exit codes: 2 for bad input (every config value finite and in range, the model folder and its
weights, the template tokenizer, every data file, the output location), 1 for a failing
environment (a folder that is not writable: mocked, as tests run as root).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import theory as T
from llm.cli import main as llm_main
from sim.cli import main as sim_main
from study.cli import main as study_main
from theory.cli import main as theory_main

HUGE = str(10**12)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(root.rglob("*"))
    }


def _call(fn: Callable[[list[str]], int], argv: list[str]) -> int:
    if fn is study_main:
        argv = [*argv, "--no-progress"]  # the phase lines are progress, not errors
    try:
        return fn(argv)
    except SystemExit as exc:  # argparse
        return int(exc.code)


@pytest.fixture
def world(tmp_path: Path, tiny_models_dir: Path) -> dict[str, Path]:
    """Inputs the cases point at: broken model folders, data files, a theory instance, a binary
    file, a plain file standing where a folder goes (the llm cases run llm/configs/tiny.toml on
    the tiny Llama)."""
    llama = tiny_models_dir / "llama"
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for f in llama.iterdir():
        (truncated / f.name).write_bytes(f.read_bytes())
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (pickled / name).write_bytes((llama / name).read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"messages": [\n')
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00\x01binary")
    (tmp_path / "a_file").write_text("not a folder")
    inst = T.random_instance(4, d=10, nA=4, nB=5, k=3, m=4, eta=0.1)
    names = T.instance.ARRAY_NAMES + T.instance.SCALAR_NAMES
    np.savez(tmp_path / "inst.npz", **{n: getattr(inst, n) for n in names})
    (tmp_path / "a_folder").mkdir()
    nan = tmp_path / "nan"  # loads fine, every product through it is NaN
    nan.mkdir()
    for f in llama.iterdir():
        (nan / f.name).write_bytes(f.read_bytes())
    weights = load_file(nan / "model.safetensors")
    weights = {k: v.fill_(float("nan")) if "mlp" in k else v for k, v in weights.items()}
    save_file(weights, nan / "model.safetensors", metadata={"format": "pt"})
    return {"root": tmp_path, "llama": llama, "qwen2": tiny_models_dir / "qwen2"}


def _llm(sub: str, *extra: str, model: str = "{llama}") -> tuple[Callable, list[str]]:
    argv = [sub, "--config", "llm/configs/tiny.toml", "--out", "{out}", "--no-progress"]
    argv += ["--set", f"model.path={json.dumps(model)}", *extra]
    return llm_main, argv


def _curv(*extra: str, model: str = "{llama}") -> tuple[Callable, list[str]]:
    argv = ["curvature", "--config", "llm/configs/tiny.toml", "--model", model, "--no-progress"]
    argv += ["--set", f"model.path={json.dumps(model)}", "--json", "{out}/c.json", *extra]
    return llm_main, argv


# id -> (command line, argv with {out}/{root}/{llama}/{qwen2} placeholders, exit code, needle)
CLI_CASES: dict[str, tuple[Callable, list[str], int, str]] = {
    # llm: the config
    "llm/unknown-key": (*_llm("protocol", "--set", "model.paht=1"), 2, "unknown key 'model.paht'"),
    "llm/lr-inf": (*_llm("protocol", "--set", "unlearn.lr=inf"), 2, "finite"),
    "llm/warmup-nan": (*_llm("finetune", "--set", "finetune.warmup_frac=nan"), 2, "finite"),
    "llm/epochs-inf": (*_llm("protocol", "--set", "unlearn.epochs=inf"), 2, "finite"),
    "llm/epochs-huge": (*_llm("protocol", "--set", "unlearn.epochs=1e12"), 2, "examples seen"),
    "llm/n-forget-prompts": (
        *_llm("protocol", "--set", "eval.n_forget_prompts=-1"),
        2,
        "eval.n_forget_prompts must be >= 1",
    ),
    "llm/temperature-0": (*_llm("protocol", "--set", "eval.temperature=0"), 2, "temperature"),
    "llm/top-p": (*_llm("protocol", "--set", "eval.top_p=1.5"), 2, "top_p"),
    "llm/lora-dropout": (*_llm("protocol", "--set", "finetune.lora_dropout=1"), 2, "lora_dropout"),
    "llm/betas": (*_llm("protocol", "--set", "finetune.betas=[0.9, 1.5]"), 2, "betas"),
    "llm/sizes-negative": (*_llm("protocol", "--set", "data.sizes.inst=-5"), 2, "data.sizes.inst"),
    "llm/sizes-unknown": (*_llm("protocol", "--set", "data.sizes.books=3"), 2, "books"),
    "llm/threads": (*_llm("protocol", "--threads", "-1"), 2, "--threads"),
    "llm/config-missing": (
        llm_main,
        ["protocol", "--config", "{root}/none.toml", "--out", "{out}"],
        2,
        "not found",
    ),
    "llm/config-binary": (
        llm_main,
        ["protocol", "--config", "{root}/binary.toml", "--out", "{out}"],
        2,
        "UTF-8",
    ),
    # llm: the model, the tokenizer, the data, the output
    "llm/model-missing": (*_llm("protocol", model="{root}/nope"), 2, "model folder not found"),
    "llm/model-truncated": (*_llm("protocol", model="{root}/truncated"), 2, "truncated"),
    "llm/model-pickled": (*_llm("protocol", model="{root}/pickled"), 2, "safetensors only"),
    "llm/template-mismatch": (
        *_llm("protocol", "--set", 'model.template_path="{qwen2}"'),
        2,
        "does not match",
    ),
    "llm/data-empty": (
        *_llm("protocol", "--set", 'data.files.inst="{root}/empty.jsonl"'),
        2,
        "no records",
    ),
    "llm/data-later-stage": (
        *_llm("protocol", "--set", 'data.files.unlearn="{root}/broken.jsonl"'),
        2,
        "invalid JSON",
    ),
    "llm/data-missing": (
        *_llm("protocol", "--set", 'data.files.math="{root}/none.jsonl"'),
        2,
        "file not found",
    ),
    "llm/out-is-a-file": (
        llm_main,
        ["protocol", "--config", "llm/configs/tiny.toml", "--out", "{root}/a_file"],
        2,
        "is a file",
    ),
    "llm/out-under-a-file": (
        llm_main,
        ["protocol", "--config", "llm/configs/tiny.toml", "--out", "{root}/a_file/x"],
        2,
        "is a file",
    ),
    "llm/evaluate-model-missing": (
        *_llm("evaluate", "--model", "{root}/nope"),
        2,
        "model folder not found",
    ),
    "llm/report-no-folder": (llm_main, ["report", "--out", "{root}/nope"], 2, "no protocol"),
    "llm/argparse-command": (llm_main, ["retrain"], 2, "invalid choice"),
    "llm/argparse-missing": (llm_main, ["protocol", "--out", "{out}"], 2, "--config"),
    # sim
    "sim/train-lr-inf": (sim_main, ["paths", "--train-lr", "inf", "--out", "{out}"], 2, "finite"),
    "sim/unlearn-lr-nan": (
        sim_main,
        ["paths", "--unlearn-lr", "nan", "--out", "{out}"],
        2,
        "finite",
    ),
    "sim/unlearn-steps-huge": (
        sim_main,
        ["paths", "--unlearn-steps", HUGE, "--out", "{out}"],
        2,
        "GiB",
    ),
    "sim/theorem-steps-huge": (
        sim_main,
        ["theorem", "--n-steps", HUGE, "--out", "{out}"],
        2,
        "GiB",
    ),
    "sim/bench-steps-huge": (
        sim_main,
        ["bench", "--n-steps", HUGE, "--out", "{out}"],
        2,
        "GiB",
    ),
    "sim/overlap": (sim_main, ["paths", "--overlap", "2", "--out", "{out}"], 2, "overlap"),
    "sim/objective": (sim_main, ["paths", "--objective", "kl", "--out", "{out}"], 2, "kl"),
    "sim/workers": (sim_main, ["theorem", "--workers", "0", "--out", "{out}"], 2, "--workers"),
    "sim/config-binary": (
        sim_main,
        ["paths", "--config", "{root}/binary.toml", "--out", "{out}"],
        2,
        "UTF-8",
    ),
    "sim/out-is-a-file": (sim_main, ["paths", "--out", "{root}/a_file"], 2, "is a file"),
    # theory
    "theory/steps-huge": (
        theory_main,
        ["check", "--instance", "{root}/inst.npz", "--steps", HUGE],
        2,
        "GiB",
    ),
    "theory/json-onto-folder": (
        theory_main,
        ["check", "--instance", "{root}/inst.npz", "--steps", "3", "--json", "{root}/a_folder"],
        2,
        "is a folder",
    ),
    "theory/epsilon-inf": (
        theory_main,
        ["check", "--instance", "{root}/inst.npz", "--steps", "3", "--epsilon", "inf"],
        2,
        "epsilon",
    ),
    "theory/demo-out-file": (theory_main, ["demo", "--out", "{root}/a_file"], 2, "is a file"),
    "theory/demo-steps": (theory_main, ["demo", "--out", "{out}", "--steps", "0"], 2, "--steps"),
    # the main job
    "study/seeds": (study_main, ["--out", "{out}", "--quick", "--seeds", "0"], 2, "seeds"),
    "study/archs": (study_main, ["--out", "{out}", "--quick", "--archs", "gpt2"], 2, "gpt2"),
    "study/threads": (study_main, ["--out", "{out}", "--quick", "--threads", "-1"], 2, "threads"),
    "study/workers": (study_main, ["--out", "{out}", "--quick", "--workers", "0"], 2, "--workers"),
    "study/threshold-inf": (
        study_main,
        ["--out", "{out}", "--quick", "--set", "thresholds.deep_ratio=inf"],
        2,
        "finite",
    ),
    "study/models-missing": (
        study_main,
        ["--out", "{out}", "--quick", "--models", "{root}/nope"],
        2,
        "nope",
    ),
    # llm curvature: the forget data, r, the products, the output
    "curvature/forget-missing": (
        *_curv("--set", 'data.files.unlearn="{root}/none.jsonl"'),
        2,
        "not found",
    ),
    "curvature/no-dataset": (*_curv("--set", "data.synthetic=false"), 2, "no dataset"),
    "curvature/top-huge": (*_curv("--top", HUGE), 2, "need 1 <= top"),
    "curvature/top-0": (*_curv("--top", "0"), 2, "need 1 <= top"),
    "curvature/n-forget-0": (*_curv("--n-forget", "0"), 2, "n_forget must be >= 1"),
    "curvature/trace-samples-1": (*_curv("--trace-samples", "1"), 2, "trace_samples"),
    "curvature/model-missing": (*_curv(model="{root}/nope"), 2, "model folder not found"),
    "curvature/nan-weights": (*_curv(model="{root}/nan"), 2, "not finite"),
    "curvature/json-is-a-folder": (
        llm_main,
        _curv()[1][:-2] + ["--json", "{root}/a_folder"],
        2,
        "is a folder",
    ),
    # llm protocol --jobs (llm.jobs)
    "protocol/jobs-workers-0": (
        *_llm("protocol", "--jobs", "local", "--workers", "0"),
        2,
        "--workers and --threads must be >= 1",
    ),
    "protocol/slurm-without-jobs": (
        *_llm("protocol", "--slurm", "slurm_partition=gpu"),
        2,
        "it needs --jobs slurm",
    ),
    "protocol/slurm-not-key-value": (
        *_llm("protocol", "--jobs", "slurm", "--slurm", "gpu"),
        2,
        "expected KEY=VALUE",
    ),
    "study/out-is-a-file": (study_main, ["--out", "{root}/a_file", "--quick"], 2, "is a file"),
    "study/argparse": (study_main, ["--quick"], 2, "--out"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_bad_input_is_one_line_the_right_code_and_writes_nothing(case, world, capsys, one_thread):
    fn, argv, code, needle = CLI_CASES[case]
    values = {k: str(v) for k, v in world.items()} | {"out": str(world["root"] / "out")}
    argv = [a.format(**values) for a in argv]
    before = _snapshot(world["root"])
    assert _call(fn, argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert needle in err[0], err[0]
    assert _snapshot(world["root"]) == before  # nothing written, nothing created


def test_unwritable_output_folder_exits_1_naming_it(world, capsys, monkeypatch):
    """A read-only location (mocked: root may write anywhere) is an environment failure."""
    real = os.access
    target = world["root"] / "ro"
    target.mkdir()
    monkeypatch.setattr(
        "pathdep.io.os.access", lambda p, mode: False if Path(p) == target else real(p, mode)
    )
    assert sim_main(["paths", "--out", str(target / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(target) in err[0] and "not writable" in err[0]
    assert list(target.iterdir()) == []


def _api_cases(world: dict[str, Path]) -> dict[str, Callable[[], object]]:
    from llm.config import config_from_dict, load_config
    from sim.unlearning import UnlearnConfig
    from study.config import StudyConfig

    inst = T.load_instance(world["root"] / "inst.npz")
    return {
        "llm.load_config(binary)": lambda: load_config(world["root"] / "binary.toml"),
        "llm.config_from_dict(top_p=0)": lambda: config_from_dict({"eval": {"top_p": 0.0}}),
        "sim.UnlearnConfig(lr=inf)": lambda: UnlearnConfig(lr=float("inf")),
        "theory.check_instance(huge)": lambda: T.check_instance(inst, 10**12),
        "study.StudyConfig(seeds=0)": lambda: StudyConfig(seeds=0),
    }


def test_python_api_refuses_the_same_inputs(world):
    from pathdep.errors import BadInput

    for name, call in _api_cases(world).items():
        before = _snapshot(world["root"])
        with pytest.raises(ValueError) as info:
            call()
        assert len(str(info.value).splitlines()) == 1, name
        if not name.startswith("sim."):  # sim's dataclasses raise plain ValueErrors
            assert isinstance(info.value, BadInput), name
        assert _snapshot(world["root"]) == before, name
