"""Staged fine-tuning: the loss falls, LoRA trains and merges, splits of a batch agree, resume and
two processes reproduce one uninterrupted process, bf16 mixed precision keeps fp32 master weights
and resumes exactly."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from _distributed import free_port, init_gloo_worker

from llm import distributed as D
from llm.batches import batch_plan, collate_to, micro_batches
from llm.config import FinetuneConfig, StageConfig
from llm.loop import LoopSettings, NonFiniteError, lr_multiplier, run_loop
from llm.objectives import sequence_logprobs
from llm.train import NLLObjective, mean_nll, train_stage


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded (and a busy 2-core machine makes threads spin)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


FULL_SGD = FinetuneConfig(method="full", optimizer="sgd", max_grad_norm=0.0, schedule="constant")


def tokenized(tokenizer, n: int = 8, seed: int = 0):
    from llm.synthetic import instruction_following
    from llm.tokenization import encode_examples

    return encode_examples(tokenizer, instruction_following(n, seed), 128).examples


def load(tiny_models_dir: Path, dtype=torch.float32):
    from llm.models import load_model

    model, tok = load_model(tiny_models_dir / "llama")
    return model.to(dtype), tok


def params_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lr_schedules_by_hand():
    # 100 steps, 2% warm-up (2 steps), 2% decay (2 steps).
    wsd = [lr_multiplier(s, 100, "wsd", 0.02, 0.02) for s in range(100)]
    assert wsd[:3] == [0.5, 1.0, 1.0] and wsd[97] == 1.0
    assert wsd[98] == pytest.approx(2 / 3) and wsd[99] == pytest.approx(1 / 3)
    cos = [lr_multiplier(s, 10, "cosine", 0.1, 0.0) for s in range(10)]
    assert cos[0] == 1.0 and cos[1] == 1.0
    assert cos[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 9)))
    assert lr_multiplier(7, 10, "constant", 0.5, 0.5) == 1.0


def test_batch_plan_is_seeded_and_covers_each_epoch():
    plan = batch_plan(10, 4, 2, seed=3)
    assert [len(b) for b in plan] == [4, 4, 4, 4, 4]
    flat = [i for b in plan for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert plan == batch_plan(10, 4, 2, seed=3) and plan != batch_plan(10, 4, 2, seed=4)
    assert sum(len(b) for b in batch_plan(10, 4, 0.5, seed=0)) == 5
    shards = [micro_batches(list(range(7)), D.DistInfo(r, 2), 2) for r in range(2)]
    assert shards[0] == [[0, 2], [4, 6]] and shards[1] == [[1, 3], [5]]


def test_stage_lowers_its_loss_and_lora_trains_then_merges(tiny_models_dir):
    model, tok = load(tiny_models_dir)
    examples = tokenized(tok, 8)
    base = params_of(model)
    before = mean_nll(model, examples, tok.pad_token_id)
    # 16 steps at 1e-2: on the tiny model of the whole-document build, 8 steps at 2e-2 level off
    # at a 0.045 nat/token drop (1e-2 for 16 steps: 0.09).
    stage = StageConfig(name="inst", epochs=8, lr=1e-2, batch_size=4)
    ft = FinetuneConfig(schedule="constant")
    peft_model, records = train_stage(
        model, examples, stage, ft, pad_token_id=tok.pad_token_id, seed=0, lora=(8, 16), merge=False
    )
    assert len(records) == 16 and all(r["grad_norm"] > 0 for r in records)
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero
    after = mean_nll(peft_model, examples, tok.pad_token_id)
    assert after < before - 0.05
    merged = peft_model.merge_and_unload()
    assert mean_nll(merged, examples, tok.pad_token_id) == pytest.approx(after, abs=1e-4)
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, base[k])]
    assert any("q_proj" in k for k in changed)
    assert not any("lora" in k for k in merged.state_dict())


def test_full_finetuning_lowers_its_loss(tiny_models_dir):
    model, tok = load(tiny_models_dir)
    examples = tokenized(tok, 8, seed=1)
    before = mean_nll(model, examples, tok.pad_token_id)
    stage = StageConfig(name="inst", epochs=3, lr=3e-3, batch_size=4)
    model, _ = train_stage(
        model, examples, stage, FinetuneConfig(method="full"), pad_token_id=tok.pad_token_id, seed=0
    )
    assert mean_nll(model, examples, tok.pad_token_id) < before - 0.05


def _one_sgd_step(tiny_models_dir, batch_size: int, grad_accum: int):
    model, tok = load(tiny_models_dir, torch.float64)
    examples = tokenized(tok, 4)
    stage = StageConfig(name="s", epochs=1, lr=0.5, batch_size=batch_size, grad_accum=grad_accum)
    model, _ = train_stage(
        model, examples, stage, FULL_SGD, pad_token_id=tok.pad_token_id, seed=0, progress=False
    )
    return params_of(model)


def test_batch_times_accumulation_invariance_and_global_token_normalisation(tiny_models_dir):
    one_batch = _one_sgd_step(tiny_models_dir, 4, 1)
    accumulated = _one_sgd_step(tiny_models_dir, 4, 4)  # micro-batch 1 x 4
    for k in one_batch:
        assert torch.allclose(one_batch[k], accumulated[k], rtol=0, atol=1e-12), k
    # Independent check: SGD moved the weights by lr * grad of the token-mean NLL of all 4.
    model, tok = load(tiny_models_dir, torch.float64)
    examples = tokenized(tok, 4)
    assert len({e.n_labelled for e in examples}) > 1  # unequal lengths: the normaliser matters
    batch = collate_to(examples, tok.pad_token_id, torch.device("cpu"))
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logp, n = sequence_logprobs(out.logits, batch["labels"])
    (-logp.sum() / n.sum()).backward()
    for name, p in model.named_parameters():
        expected = p.detach() - 0.5 * p.grad
        assert torch.allclose(one_batch[name], expected, atol=1e-10), name


@pytest.mark.parametrize("lora", [None, (4, 8)], ids=["full", "lora"])
def test_gradient_checkpointing_gives_the_same_stage(tiny_models_dir, lora):
    """finetune.gradient_checkpointing recomputes activations in backward: the same parameters
    after a stage (fp64, AdamW, two steps with accumulation), full and LoRA; and it is on."""
    results = []
    for on in (False, True):
        model, tok = load(tiny_models_dir, torch.float64)
        examples = tokenized(tok, 8)
        stage = StageConfig(name="s", epochs=1, lr=1e-2, batch_size=4, grad_accum=2)
        ft = FinetuneConfig(method="lora" if lora else "full", gradient_checkpointing=on)
        model, records = train_stage(
            model,
            examples,
            stage,
            ft,
            pad_token_id=tok.pad_token_id,
            seed=0,
            lora=lora,
            progress=False,
        )
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        assert any(getattr(m, "gradient_checkpointing", False) for m in base.modules()) == on
        results.append((params_of(model), [r["loss"] for r in records]))
    (plain, plain_loss), (ckpt, ckpt_loss) = results
    assert plain_loss == pytest.approx(ckpt_loss, rel=1e-12, abs=0)
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_bf16_mixed_precision_keeps_fp32_master_weights(tiny_models_dir, method):
    """Under bf16 autocast the weights (and adapters) stay fp32 and train; the run differs from
    the fp32 one by bfloat16's rounding (8 bits of mantissa), not more."""
    stage = StageConfig(name="s", epochs=2, lr=1e-3, batch_size=4)
    runs = {}
    for precision in ("no", "bf16"):
        model, tok = load(tiny_models_dir)
        ft = FinetuneConfig(method=method, schedule="constant", mixed_precision=precision)
        model, records = train_stage(
            model,
            tokenized(tok, 8),
            stage,
            ft,
            pad_token_id=tok.pad_token_id,
            seed=0,
            lora=(4, 8) if method == "lora" else None,
            progress=False,
        )
        assert all(p.dtype == torch.float32 for p in model.parameters())
        runs[precision] = (params_of(model), [r["loss"] for r in records])
    (fp32, loss32), (bf16, loss16) = runs["no"], runs["bf16"]
    assert loss16 != loss32  # autocast was on
    assert loss16 == pytest.approx(loss32, rel=0.02)
    base, _ = load(tiny_models_dir)
    start = params_of(base)
    for k in fp32:  # both moved the same weights the same way, up to bf16's rounding
        moved32, moved16 = fp32[k] - start[k], bf16[k] - start[k]
        if moved32.abs().max() > 0:
            cosine = torch.nn.functional.cosine_similarity(
                moved32.flatten(), moved16.flatten(), dim=0
            )
            assert cosine > 0.9, k


def test_mixed_precision_config_is_checked():
    from llm.config import ConfigError, RunConfig, validate

    cfg = RunConfig()
    bad = dataclasses.replace(cfg.finetune, mixed_precision="fp8")
    with pytest.raises(ConfigError, match="mixed_precision must be one of"):
        validate(dataclasses.replace(cfg, finetune=bad))
    bf16 = dataclasses.replace(cfg.finetune, mixed_precision="bf16")
    bf16_model = dataclasses.replace(cfg.model, dtype="bf16")
    with pytest.raises(ConfigError, match="needs model.dtype = 'fp32'"):
        validate(dataclasses.replace(cfg, finetune=bf16, model=bf16_model))


def test_non_finite_loss_stops_before_the_step(tiny_models_dir):
    model, tok = load(tiny_models_dir)
    examples = tokenized(tok, 4)
    for p in model.parameters():
        p.requires_grad_(True)
    before = params_of(model)

    class Broken(NLLObjective):
        def loss(self, model, micro, totals):
            loss, stats = super().loss(model, micro, totals)
            return loss * float("nan"), stats

    with pytest.raises(NonFiniteError, match="non-finite"):
        run_loop(model, [[[0, 1]]], Broken(examples, tok.pad_token_id), LoopSettings(lr=0.1))
    after = params_of(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_loop_flushes_subnormals_and_restores_the_default(tiny_models_dir):
    """Subnormal floats are zero while the loop runs (a saturated objective's gradients run
    5-10x slower in them) and behave as usual again after it, even after an error."""
    model, tok = load(tiny_models_dir)
    examples = tokenized(tok, 4)
    for p in model.parameters():
        p.requires_grad_(True)
    tiny = torch.tensor([1e-39])  # float32 subnormal
    seen = []

    class Watching(NLLObjective):
        def loss(self, model, micro, totals):
            seen.append(float(tiny * 1.0))
            return super().loss(model, micro, totals)

    run_loop(model, [[[0, 1]]], Watching(examples, tok.pad_token_id), LoopSettings(lr=0.1))
    assert seen and all(v == 0.0 for v in seen)
    assert float(tiny * 1.0) == pytest.approx(1e-39, rel=1e-3)
    with pytest.raises(NonFiniteError):

        class Broken(Watching):
            def loss(self, model, micro, totals):
                loss, stats = super().loss(model, micro, totals)
                return loss * float("nan"), stats

        run_loop(model, [[[0, 1]]], Broken(examples, tok.pad_token_id), LoopSettings(lr=0.1))
    assert float(tiny * 1.0) == pytest.approx(1e-39, rel=1e-3)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_resume_equals_uninterrupted(tiny_models_dir, tmp_path, mixed_precision):
    stage = StageConfig(name="s", epochs=3, lr=1e-2, batch_size=4)
    ft = FinetuneConfig(
        schedule="wsd",
        warmup_frac=0.2,
        decay_frac=0.2,
        checkpoint_every=2,
        mixed_precision=mixed_precision,
    )

    def run(ckpt, kill_at=None):
        model, tok = load(tiny_models_dir)
        examples = tokenized(tok, 8)

        def on_step(step, record):
            if step == kill_at:
                raise _Killed

        model, records = train_stage(
            model,
            examples,
            stage,
            ft,
            pad_token_id=tok.pad_token_id,
            seed=5,
            lora=(4, 8),
            ckpt_dir=ckpt,
            on_step=on_step,
            progress=False,
        )
        return params_of(model), records

    reference, ref_records = run(None)
    with pytest.raises(_Killed):
        run(tmp_path / "ckpt", kill_at=5)  # checkpoint at step 4; step 5 is lost
    # safetensors + JSON, nothing pickled
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "state.json",
        "step.json",
        "tensors.safetensors",
    ]
    resumed, records = run(tmp_path / "ckpt")
    assert [r["step"] for r in records] == [r["step"] for r in ref_records]
    assert [r["loss"] for r in records] == [r["loss"] for r in ref_records]  # exact
    for k in reference:
        assert torch.equal(reference[k], resumed[k]), k


def _worker(rank: int, world: int, port: int, model_dir: str, out: str, mixed: str) -> None:
    init_gloo_worker(rank, world, port)
    params = _distributed_run(Path(model_dir), grad_accum=1, mixed=mixed)
    if rank == 0:
        torch.save(params, out)
    torch.distributed.barrier()  # both ranks done before either tears its group down
    torch.distributed.destroy_process_group()


def _distributed_run(tiny_models_dir: Path, grad_accum: int, mixed: str = "no"):
    # fp64 for the plain path; bf16 autocast needs fp32 weights (it leaves fp64 alone)
    model, tok = load(tiny_models_dir, torch.float64 if mixed == "no" else torch.float32)
    examples = tokenized(tok, 5)  # batches of 4 then 1: the last leaves one process empty
    stage = StageConfig(name="s", epochs=1, lr=0.5, batch_size=4, grad_accum=grad_accum)
    ft = dataclasses.replace(FULL_SGD, mixed_precision=mixed)
    model, _ = train_stage(
        model, examples, stage, ft, pad_token_id=tok.pad_token_id, seed=0, progress=False
    )
    return params_of(model)


@pytest.mark.parametrize("mixed", ["no", "bf16"])
def test_two_processes_equal_one(tiny_models_dir, tmp_path, mixed):
    """Plain (fp64) and bf16 mixed precision (fp32 master weights): two gloo processes give
    the parameters of one process with the same micro-batches."""
    import torch.multiprocessing as mp

    out = tmp_path / "two.pt"
    mp.start_processes(
        _worker,
        args=(2, free_port(), str(tiny_models_dir), str(out), mixed),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    two = torch.load(out)
    # same micro-batch count, 1 process
    one = _distributed_run(tiny_models_dir, grad_accum=2, mixed=mixed)
    start, _ = load(tiny_models_dir, torch.float64 if mixed == "no" else torch.float32)
    start = params_of(start)
    for k in one:
        assert one[k].dtype == (torch.float64 if mixed == "no" else torch.float32)
        if mixed == "no":
            assert torch.allclose(one[k], two[k], rtol=0, atol=1e-10), k
        else:
            # The ranks' micro-batches are other rows than one process's (round robin), so their
            # padded shapes differ, and bf16 rounds each shape's matmuls differently: the two
            # updates agree to bf16's precision, not bit for bit.
            moved = float((one[k] - start[k]).norm())
            assert float((one[k] - two[k]).norm()) <= 0.02 * moved, k
