"""Speed and memory of a paper architecture on this machine's accelerator (or the CPU).

    python benchmarks/gpu.py [--model llama3.2-1b] [--rows 8] [--tokens 512] [--json OUT]
    python benchmarks/gpu.py --smoke --json OUT   # toy size on the CPU (the test suite runs it)

Builds a random-weight model of the architecture card (:mod:`llm.arch_cards`: full size, or
reduced to ``--hidden`` x ``--layers`` with the card's structure and vocabulary; ``--smoke``: 64
x 2 with a small vocabulary) and measures, each in this one run:

1. fine-tuning, full and LoRA (rank ``--lora-rank`` on the seven projections), in fp32 and in
   bf16 mixed precision (``finetune.mixed_precision = "bf16"``: ``torch.autocast``; weights,
   gradients and AdamW state stay fp32):
   tokens/s, seconds per optimizer step, and the model FLOPs utilisation (MFU) against the
   device's peak for that precision;
2. one unlearning step, GA and NPO (NPO scores its reference with a no-grad forward each step:
   the LoRA adapter disabled, or the same weights before the step under full fine-tuning);
3. the peak memory of a steady-state fine-tuning step beside the planner's prediction
   (:func:`llm.plan.train_memory`; bf16 mixed precision is planned as fp32, an upper bound), read
   from ``torch.cuda.max_memory_allocated`` on a GPU and counted with
   :class:`llm.live_bytes.LiveBytes` on the CPU;
4. sampling for the math metric (:func:`llm.evaluate.generate_samples`: KV cache, left padding,
   ``--samples`` per prompt) with ``--prompts`` prompts batched ``--gen-batch`` at a time against
   one prompt at a time: new-token positions per second (rows x ``--new-tokens``; a row that
   stops early is still carried to the end of its batch) and the ratio.

Model FLOPs per token (PaLM's accounting, appendix B, attention scores included): a forward is
``2 N + 4 L T q`` with N the weights in matmuls (decoder layers' projections + LM head), L layers, T
the sequence length and q = heads x head_dim; full fine-tuning costs 3 forwards, LoRA 2 (the frozen
weights need no weight gradient). Peak TFLOP/s per device and precision are the vendor's dense
figures (``PEAK_TFLOPS``; fp32 without TF32, torch's default for matmuls) or ``--peak-tflops-*``;
the CPU has none, so its MFU is null. Prints JSON (and writes it with ``--json``, rewritten after
each phase with ``"complete": false`` until the last, so a run stopped by a time limit keeps what
it measured); progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Dense peak TFLOP/s (vendor datasheets, SXM parts): bf16 tensor cores; fp32 without TF32.
PEAK_TFLOPS = {
    "H200": {"bf16": 989.4, "fp32": 66.9},
    "H100": {"bf16": 989.4, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Mean seconds of ``fn()`` over ``steps`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def forward_flops_per_token(card, tokens: int) -> float:
    """``2 N + 4 L T q``; N = the matmul weights (q, k, v, o, gate, up, down and the LM head;
    norms and biases are not matmuls)."""
    h, q, kv, i = card.hidden_size, card.q_size, card.kv_size, card.intermediate_size
    layers = card.num_hidden_layers
    n = layers * (h * (q + 2 * kv) + q * h + 3 * h * i) + card.vocab_size * h
    return 2.0 * n + 4.0 * layers * tokens * q


def peak_tflops(device: torch.device, overrides: dict[str, float | None]) -> dict[str, Any]:
    """{precision: TFLOP/s or None} for this device (``overrides`` win)."""
    found: dict[str, float | None] = {"bf16": None, "fp32": None}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in PEAK_TFLOPS.items():
            if key in name:
                found = dict(peaks)
    return {k: overrides.get(k) or v for k, v in found.items()}


def _batch(card, rows: int, tokens: int, device: torch.device, seed: int = 0) -> dict:
    """Random ids, one row half padded (the 4-D padding mask is built), prompt tokens unlabelled."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, card.vocab_size, (rows, tokens), generator=g)  # (B, T)
    mask = torch.ones_like(ids)
    mask[-1, tokens // 2 :] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, : tokens // 8] = -100
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def _train_step(model, opt, params, batch, device, precision):
    from llm.batches import forward_logprobs
    from llm.loop import autocast
    from llm.objectives import SequenceScores, nll_loss

    opt.zero_grad(set_to_none=True)
    # what finetune.mixed_precision = "bf16" runs (llm.loop.run_loop)
    with autocast(device, "bf16" if precision == "bf16" else "no"):
        logp, n = forward_logprobs(model, batch)
    nll_loss(SequenceScores(logp.float(), n)).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def _unlearn_step(model, opt, params, batch, objective: str, lora: bool) -> None:
    from llm.batches import forward_logprobs
    from llm.objectives import ObjectiveParams, SequenceScores, forget_loss

    ref = None
    if objective == "npo":
        with torch.no_grad(), model.disable_adapter() if lora else contextlib.nullcontext():
            ref, _ = forward_logprobs(model, batch)  # (B,)
    opt.zero_grad(set_to_none=True)
    logp, n = forward_logprobs(model, batch)  # (B,), (B,)
    forget_loss(objective, SequenceScores(logp, n, ref_logp=ref), ObjectiveParams()).backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def _peak_bytes(model, opt, step, device: torch.device) -> int:
    """Peak bytes of one steady-state step: the allocator's peak on a GPU; on the CPU the
    weights and optimizer state plus the peak of the storages the step creates."""
    from llm.live_bytes import LiveBytes

    step()  # the optimizer state exists from here
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _sync(device)
        return int(torch.cuda.max_memory_allocated(device))
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    held += sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values())
    with LiveBytes() as live:
        step()
    return held + live.peak


def measure_training(model, card, args, device, peaks) -> tuple[dict, dict]:
    """({"full/fp32": ..., "lora/bf16": ...}, {"full/ga": s, ...}) on ``model``, full first,
    then with a LoRA adapter attached."""
    from llm.plan import Setting, train_memory
    from llm.train import attach_lora

    train, unlearn = {}, {}
    batch = _batch(card, args.rows, args.tokens, device)
    flops = forward_flops_per_token(card, args.tokens)
    for mode in ("full", "lora"):
        if mode == "lora":
            model = attach_lora(model, args.lora_rank, 2 * args.lora_rank, targets=TARGETS)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        for precision in ("fp32", "bf16"):
            opt = torch.optim.AdamW(params, lr=1e-6, foreach=True)

            def step(model=model, opt=opt, params=params, precision=precision):
                _train_step(model, opt, params, batch, device, precision)

            seconds = _timed(step, args.steps, args.warmup, device)
            tokens_per_s = args.rows * args.tokens / seconds
            model_tflops = tokens_per_s * flops * (2 if mode == "lora" else 3) / 1e12
            peak = _peak_bytes(model, opt, step, device)
            # bf16 mixed precision is planned as fp32 (an upper bound: llm.plan)
            setting = Setting(args.rows, lora=mode == "lora")
            rank = args.lora_rank if mode == "lora" else 0
            planned = train_memory(
                card, setting, tokens=args.tokens, b=4, gpus=1, rank=rank, targets=TARGETS
            )["total"]
            train[f"{mode}/{precision}"] = {
                "step_s": seconds,
                "tokens_per_s": tokens_per_s,
                "model_tflops": model_tflops,
                "mfu": model_tflops / peaks[precision] if peaks[precision] else None,
                "peak_bytes": peak,
                "planned_bytes": planned,
                "planned_over_measured": planned / peak,
            }
        opt = torch.optim.AdamW(params, lr=1e-6, foreach=True)
        for objective in ("ga", "npo"):

            def ustep(model=model, opt=opt, params=params, objective=objective, mode=mode):
                _unlearn_step(model, opt, params, batch, objective, mode == "lora")

            unlearn[f"{mode}/{objective}"] = _timed(ustep, args.steps, args.warmup, device)
    return train, unlearn


def measure_generation(model, tokenizer, args, device) -> dict[str, Any]:
    """Batched against one-prompt-at-a-time sampling through generate_samples."""
    from llm.evaluate import generate_samples

    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Question {i}: what is {i} plus {2 * i}?"}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for i in range(args.prompts)
    ]
    model.eval()
    out: dict[str, Any] = {"prompts": args.prompts, "samples": args.samples}
    for label, batch_size in (("batched", args.gen_batch), ("one_at_a_time", 1)):
        kwargs = dict(max_new_tokens=args.new_tokens, batch_size=batch_size, seed=0)
        generate_samples(model, tokenizer, prompts[:batch_size], args.samples, **kwargs)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        texts = generate_samples(model, tokenizer, prompts, args.samples, **kwargs)
        _sync(device)
        seconds = time.perf_counter() - t0
        assert len(texts) == args.prompts and all(len(t) == args.samples for t in texts)
        positions = args.prompts * args.samples * args.new_tokens
        out[label] = {
            "batch_size": batch_size,
            "seconds": seconds,
            "positions_per_s": positions / seconds,
        }
    out["speedup"] = out["batched"]["positions_per_s"] / out["one_at_a_time"]["positions_per_s"]
    return out


def build(args, device: torch.device, folder: Path):
    """(card, model, tokenizer): the tokenizer of a small instruct layout folder of the family
    (real special tokens and chat template), the model at the card's size (or reduced)."""
    from transformers import AutoModelForCausalLM

    from llm.arch_cards import card_to_hf_config
    from llm.models import load_tokenizer
    from llm.real_layouts import build_real_layout, layout_card

    tokenizer = load_tokenizer(build_real_layout(args.model, folder / "tok", instruct=True))
    if args.smoke:  # 64 x 2, MLP 128, the tokenizer's few hundred rows
        card = layout_card(args.model, rows=len(tokenizer))
    elif args.hidden:  # the card's structure at a reduced width and depth, its real vocabulary
        card = layout_card(args.model, args.hidden, args.layers, intermediate=None)
    else:
        card = layout_card(args.model, full_size=True)
    torch.manual_seed(0)
    config = card_to_hf_config(card, attn_implementation="sdpa")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(device)
    return card, model, tokenizer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="llama3.2-1b", help="a paper architecture card")
    p.add_argument("--smoke", action="store_true", help="toy size on the CPU (the test suite)")
    p.add_argument("--hidden", type=int, default=None, help="reduced width (default: full size)")
    p.add_argument("--layers", type=int, default=2, help="reduced depth, with --hidden")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--rows", type=int, default=8, help="rows per optimizer step")
    p.add_argument("--tokens", type=int, default=512, help="tokens per row")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--prompts", type=int, default=32, help="math prompts to sample")
    p.add_argument("--samples", type=int, default=5, help="samples per prompt (the paper's 5)")
    p.add_argument("--gen-batch", type=int, default=16, help="prompts per generate call")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--peak-tflops-bf16", type=float, default=None)
    p.add_argument("--peak-tflops-fp32", type=float, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.smoke:
        args.hidden, args.layers = 64, 2
        args.rows, args.tokens, args.steps, args.warmup = 2, 32, 2, 1
        args.prompts, args.samples, args.gen_batch, args.new_tokens = 4, 2, 4, 8
    names = ("rows", "tokens", "steps", "prompts", "samples", "gen_batch", "new_tokens", "layers")
    for name in names + (("hidden",) if args.hidden is not None else ()):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    peaks = peak_tflops(device, {"bf16": args.peak_tflops_bf16, "fp32": args.peak_tflops_fp32})
    t0 = time.perf_counter()
    # Progress on stderr and the JSON rewritten after each phase ("complete": false until the
    # end): a run cut short by a job's time limit still leaves the phases it finished.
    _progress(t0, f"building {args.model} on {device}")
    with tempfile.TemporaryDirectory() as tmp:
        card, model, tokenizer = build(args, device, Path(tmp))
    result: dict[str, Any] = {
        "model": args.model,
        "size": "smoke (64 wide, 2 layers, small vocabulary)"
        if args.smoke
        else (f"reduced ({args.hidden} wide, {args.layers} layers)" if args.hidden else "full"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
        "rows": args.rows,
        "tokens": args.tokens,
        "lora_rank": args.lora_rank,
        "peak_tflops": peaks,
        "forward_flops_per_token": forward_flops_per_token(card, args.tokens),
    }
    result["complete"] = False
    _save(args.json, result)
    _progress(t0, f"built ({result['params']:,} parameters); sampling")
    result["generate"] = measure_generation(model, tokenizer, args, device)
    _save(args.json, result)
    _progress(t0, "sampled; fine-tuning and unlearning steps")
    result["train"], result["unlearn_step_s"] = measure_training(model, card, args, device, peaks)
    result["complete"] = True
    _save(args.json, result)
    _progress(t0, "done")
    print(json.dumps(result, indent=2))
    return result


def _progress(t0: float, message: str) -> None:
    print(f"[gpu.py {time.perf_counter() - t0:6.1f} s] {message}", file=sys.stderr, flush=True)


def _save(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        from pathdep.io import atomic_write_text

        atomic_write_text(path, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
