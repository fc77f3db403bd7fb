"""TensorBoard events (llm.tracking, --tensorboard): every number of the records at its step, a
killed and resumed run shows the curve of one uninterrupted run, stages log too, and a missing
tensorboard package is a one-line error before anything is written."""

from __future__ import annotations

import json

import pytest
from test_llm_protocol import tiny_config
from test_llm_unlearn import _label_eval, _run

from llm import stage_cache as S
from llm import workspace as W
from llm.cli import main as llm_main
from llm.config import MethodConfig
from llm.layout import CacheEntry
from llm.tracking import read_scalars

pytestmark = pytest.mark.usefixtures("one_thread")


def test_events_equal_the_metrics_and_survive_a_resume(tiny_models_dir, tmp_path):
    method = MethodConfig(objective="ga", retain_weight=1.0, retain_stage="inst")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    _run(tiny_models_dir, tmp_path / "a", method, _label_eval, tb=tmp_path / "a" / "tb")

    def killer(model, step, final):
        if step == 4:  # the checkpoint of step 2 survives; step 3's events must go
            raise KeyboardInterrupt
        return _label_eval(model, step, final)

    ckpt, tb = tmp_path / "b" / "ckpt", tmp_path / "b" / "tb"
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_models_dir, tmp_path / "b", method, killer, ckpt=ckpt, tb=tb)
    _run(tiny_models_dir, tmp_path / "b", method, _label_eval, ckpt, tb=tb)
    a, b = read_scalars(tmp_path / "a" / "tb"), read_scalars(tb)
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "grad_norm", "lr", "probe"} <= set(a)
    assert not {"beta", "batch_size", "world_size"} & set(a)  # constants are not curves
    for tag in ("loss", "grad_norm", "probe"):
        expected = [(r["step"], r[tag]) for r in lines if tag in r]
        assert [s for s, _ in a[tag]] == [s for s, _ in expected], tag
        assert [v for _, v in a[tag]] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert set(a) == set(b)
    for tag in a:
        assert [s for s, _ in b[tag]] == [s for s, _ in a[tag]], tag  # one curve, no repeats
        # the resumed run continues from the checkpoint: the same values (float32 events)
        assert [v for _, v in b[tag]] == pytest.approx([v for _, v in a[tag]], rel=1e-6), tag


def test_stage_events_beside_the_cache_entry(tiny_models_dir, tmp_path):
    cfg = tiny_config(tiny_models_dir / "llama")
    ws = W.prepare_workspace(cfg, tmp_path / "run", progress=False, tensorboard=True)
    W.write_workspace(ws)
    done = S.ensure_prefix(ws, ("inst",))
    entry = CacheEntry.of(done)
    events = read_scalars(entry.tensorboard)
    records = json.loads(entry.stage_json.read_text())["records"]
    assert [s for s, _ in events["loss"]] == [r["step"] for r in records] != []
    assert [v for _, v in events["loss"]] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    assert not any(entry.root.glob("**/events.out.*"))  # the entry holds the model only


def test_without_tensorboard_installed_the_flag_is_refused(
    tiny_models_dir, tmp_path, monkeypatch, capsys
):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    out = tmp_path / "out"
    argv = ["protocol", "--config", "llm/configs/tiny.toml", "--out", str(out), "--no-progress"]
    argv += ["--set", f"model.path={json.dumps(str(tiny_models_dir / 'llama'))}", "--tensorboard"]
    assert llm_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tensorboard" in err[0] and "pip install" in err[0]
    assert not out.exists()
