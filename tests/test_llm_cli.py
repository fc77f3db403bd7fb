"""The CLI: one-line errors with exit status 2, report and build-default subcommands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llm.cli import main


def test_bad_config_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\npaht = 'x'\n")
    assert main(["protocol", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown key 'model.paht'" in err
    assert not (tmp_path / "o").exists()
    dup = tmp_path / "dup.toml"
    dup.write_text("seed = 1\nseed = 2\n")
    assert main(["finetune", "--config", str(dup), "--out", str(tmp_path / "o")]) == 2
    assert main(["finetune", "--config", str(tmp_path / "none.toml"), "--out", "x"]) == 2


def test_missing_model_folder_exits_2(tmp_path, capsys):
    cfg = "llm/configs/llama3.2-1b.toml"
    code = main(["finetune", "--config", cfg, "--out", str(tmp_path), "--set", "model.path=/nope"])
    assert code == 2
    assert "model folder not found" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_report_subcommand(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path)]) == 2
    folder = tmp_path / "runs" / "p1" / "ga"
    folder.mkdir(parents=True)
    lines = [{"step": 0, "label": -1.0, "phrases": -1.0}, {"step": 3, "label": -2, "phrases": -4}]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert main(["report", "--out", str(tmp_path)]) == 0
    assert "| p1 | 3.000 (running) |" in (tmp_path / "report" / "table1.md").read_text()


def test_build_default_and_module_entry_point(tmp_path):
    out = tmp_path / "models"
    proc = subprocess.run(
        [sys.executable, "-m", "llm", "build-default", "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "llama" / "config.json").exists() and (out / "qwen2" / "config.json").exists()


@pytest.mark.parametrize("argv", [["protocol"], ["nope"]])
def test_argparse_errors_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_finetune_unlearn_evaluate_subcommands(tiny_models_dir, tmp_path, capsys, one_thread):
    sizes = "{ inst = 4, tofu_authors = 1, math = 4, unlearn = 4, math_test = 2, rcu = 2 }"
    common = [
        "--config", "llm/configs/tiny.toml", "--out", str(tmp_path / "run"), "--no-progress",
        "--set", f"model.path={json.dumps(str(tiny_models_dir / 'llama'))}",
        "--set", f"data.sizes={sizes}", "--set", "paths.positions=[4]",
        "--set", "unlearn.max_steps=1", "--set", "unlearn.batch_size=4",
        "--set", "eval.n_math=1", "--set", "eval.math_samples=1", "--set", "eval.max_new_tokens=4",
        "--set", "finetune.max_length=128",
    ]  # fmt: skip
    assert main(["finetune", *common]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "p4 (inst-tofu-math-unlearn)" in printed and "retrain (inst-tofu-math)" in printed
    # --no-progress silences every bar, transformers' "Loading weights" included
    assert "Loading weights" not in captured.err and "it/s" not in captured.err
    assert main(["unlearn", *common, "--method", "ga"]) == 0
    assert "p4/ga: done" in capsys.readouterr().out
    lines = (tmp_path / "run" / "runs" / "p4" / "ga" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1]
    model_dir = printed.split("retrain (inst-tofu-math): ")[1].split()[0]
    assert main(["evaluate", *common, "--model", model_dir, "--no-math"]) == 0
    summary = json.loads(capsys.readouterr().out)["summary"]
    assert {"label", "phrases", "tofu"} <= set(summary) and "math_strict" not in summary
    assert main(["unlearn", *common, "--path", "p9"]) == 2
