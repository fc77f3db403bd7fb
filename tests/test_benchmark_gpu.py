"""benchmarks/gpu.py: its smoke run (toy size, CPU) produces every figure, consistent with each
other; a run cut short keeps the phases it finished; its FLOPs per token equal torch's FLOP
counter; bad sizes stop before anything is built."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_reports_every_figure(bench, tmp_path, capsys):
    out = tmp_path / "gpu.json"
    peaks = ["--peak-tflops-bf16", "0.002", "--peak-tflops-fp32", "0.001"]
    result = bench.main(["--smoke", "--json", str(out), *peaks])
    captured = capsys.readouterr()
    assert json.loads(out.read_text()) == json.loads(captured.out)
    assert result["complete"] is True
    assert "done" in captured.err.splitlines()[-1]  # progress goes to stderr, not into the JSON
    assert result["device"] == "cpu" and result["size"].startswith("smoke")
    params, tokens = result["params"], result["rows"] * result["tokens"]
    assert set(result["train"]) == {"full/fp32", "full/bf16", "lora/fp32", "lora/bf16"}
    for key, row in result["train"].items():
        precision = key.split("/")[1]
        assert row["step_s"] > 0 and math.isfinite(row["step_s"])
        assert row["tokens_per_s"] == pytest.approx(tokens / row["step_s"])
        passes = 2 if key.startswith("lora") else 3
        flops = row["tokens_per_s"] * result["forward_flops_per_token"] * passes
        assert row["model_tflops"] == pytest.approx(flops / 1e12)
        assert row["mfu"] == pytest.approx(row["model_tflops"] / result["peak_tflops"][precision])
        assert row["planned_over_measured"] == pytest.approx(
            row["planned_bytes"] / row["peak_bytes"]
        )
    full, lora = result["train"]["full/fp32"], result["train"]["lora/fp32"]
    # full fine-tuning in fp32 holds weights, gradients and AdamW's two moments (16 B/param);
    # LoRA holds the weights and far less
    assert full["peak_bytes"] >= 16 * params
    assert 4 * params <= lora["peak_bytes"] < full["peak_bytes"]
    # bf16 mixed precision is planned as fp32: the same prediction
    assert result["train"]["full/bf16"]["planned_bytes"] == full["planned_bytes"]
    assert set(result["unlearn_step_s"]) == {"full/ga", "full/npo", "lora/ga", "lora/npo"}
    assert all(s > 0 for s in result["unlearn_step_s"].values())
    gen = result["generate"]
    assert gen["batched"]["batch_size"] > 1 == gen["one_at_a_time"]["batch_size"]
    positions = gen["prompts"] * gen["samples"] * 8  # the smoke run's --new-tokens
    for label in ("batched", "one_at_a_time"):
        assert gen[label]["positions_per_s"] == pytest.approx(positions / gen[label]["seconds"])
    assert gen["speedup"] == pytest.approx(
        gen["batched"]["positions_per_s"] / gen["one_at_a_time"]["positions_per_s"]
    )


def test_a_run_cut_short_keeps_the_phases_it_finished(bench, tmp_path, monkeypatch, capsys):
    """A job's time limit that strikes during training leaves the sampling figures on disk."""

    def out_of_time(*args, **kwargs):
        raise KeyboardInterrupt  # what a SIGINT from a scheduler's time limit raises

    monkeypatch.setattr(bench, "measure_training", out_of_time)
    out = tmp_path / "gpu.json"
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--smoke", "--json", str(out)])
    partial = json.loads(out.read_text())
    assert partial["complete"] is False
    assert partial["generate"]["one_at_a_time"]["seconds"] > 0
    assert "train" not in partial
    assert capsys.readouterr().out == ""  # the final JSON is printed only when complete


@pytest.mark.parametrize("name", ["llama3.2-1b", "qwen2.5-1.5b", "llama2-13b"])
def test_flops_per_token_equal_torchs_count(bench, name):
    """Eager attention, so torch's FlopCounterMode sees the attention matmuls too."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    from llm.arch_cards import card_to_hf_config
    from llm.real_layouts import layout_card

    card = layout_card(name, rows=300)
    model = AutoModelForCausalLM.from_config(card_to_hf_config(card, attn_implementation="eager"))
    rows, tokens = 2, 24
    ids = torch.randint(0, 300, (rows, tokens))  # (B, T)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    assert counter.get_total_flops() == rows * tokens * bench.forward_flops_per_token(card, tokens)


def test_bad_sizes_exit_2_before_building(bench, capsys):
    with pytest.raises(SystemExit) as err:
        bench.main(["--rows", "0"])  # full size: failing late would first build a 1B model
    assert err.value.code == 2
    assert "--rows must be >= 1" in capsys.readouterr().err
