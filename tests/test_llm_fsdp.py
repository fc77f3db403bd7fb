"""FSDP (FSDP2 ``fully_shard``) over two gloo processes: one stage gives the parameters of one
process and of the two-process DDP run, a killed FSDP stage resumes to the same parameters, and
the gathered checkpoint is an ordinary HF folder that ``llm.models.load_model`` reads. Under bf16
autocast (fp32 shards) a stage and an unlearning run agree with one process and DDP to bf16's
precision, a killed stage (plain SGD: no optimizer state) resumes bit for bit, and the bf16
weight copies autocast holds are the planner's ``autocast_copies``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from _distributed import free_port, init_gloo_worker

from llm import config as C
from llm import distributed as D
from llm.config import FinetuneConfig, StageConfig
from llm.train import train_stage

# AdamW with clipping: the optimizer sees only its shards, the norm is a DTensor.
FULL_ADAMW = FinetuneConfig(
    method="full", optimizer="adamw", max_grad_norm=0.5, schedule="constant", checkpoint_every=1
)
# 9 examples in batches of 4, 4, 1: the last step leaves rank 1 without an example.
STAGE = StageConfig(name="s", epochs=1.8, lr=1e-2, batch_size=4, grad_accum=1)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _Killed(Exception):
    pass


def protocol_config(model_dir: Path, strategy: str) -> C.RunConfig:
    """One full fine-tuning stage of the protocol (fp64, CPU)."""
    sizes = {"inst": 5, "tofu_authors": 1, "math": 2, "unlearn": 2, "math_test": 1, "rcu": 1}
    return C.config_from_dict(
        {
            "model": {"path": str(model_dir / "llama"), "device": "cpu", "dtype": "fp64"},
            "finetune": {"method": "full", "max_length": 128, "schedule": "constant"},
            "data": {"sizes": sizes},
            "stages": [
                {"name": n, "epochs": 1, "lr": 1e-2, "batch_size": 4} for n in ("inst", "unlearn")
            ],
            "paths": {"order": ["inst", "unlearn"], "forget_stage": "unlearn", "positions": [2]},
            "distributed": {"strategy": strategy},
        }
    )


def protocol_stage(model_dir: Path, strategy: str, out: Path) -> Path:
    """The cached model folder of the prefix ("inst",), trained by :func:`ensure_prefix`."""
    from llm.stage_cache import ensure_prefix
    from llm.workspace import open_workspace

    ws = open_workspace(protocol_config(model_dir, strategy), out, progress=False)
    return ensure_prefix(ws, ("inst",))


def _load(model_dir: Path, dtype: torch.dtype = torch.float64):
    from llm.models import load_model
    from llm.synthetic import instruction_following
    from llm.tokenization import encode_examples

    model, tok = load_model(model_dir / "llama")
    examples = encode_examples(tok, instruction_following(5, 0), 128).examples
    return model.to(dtype), tok, examples


def _train(
    model_dir: Path, strategy: str, grad_accum=1, ckpt=None, kill_at=None, ft=FULL_ADAMW, lr=1e-2
):
    # fp64, except under bf16 autocast, which needs fp32 weights (it leaves fp64 alone)
    dtype = torch.float64 if ft.mixed_precision == "no" else torch.float32
    model, tok, examples = _load(model_dir, dtype)

    def on_step(step, record):
        if step == kill_at:
            raise _Killed

    stage = dataclasses.replace(STAGE, grad_accum=grad_accum, lr=lr)
    model, records = train_stage(
        model,
        examples,
        stage,
        ft,
        pad_token_id=tok.pad_token_id,
        seed=0,
        ckpt_dir=ckpt,
        on_step=on_step,
        progress=False,
        strategy=strategy,
    )
    return model, tok, records


def _worker(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
    init_gloo_worker(rank, world, port)
    model_dir, out = Path(model_dir), Path(out)
    result = {}
    model, _, _ = _train(model_dir, "ddp")
    result["ddp"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model, tok, records = _train(model_dir, "fsdp")
    # Really sharded: this process holds about half of every sharded weight.
    full_rows = model.model.layers[0].mlp.up_proj.weight.shape[0]
    local_rows = model.model.layers[0].mlp.up_proj.weight.to_local().shape[0]
    result["sharded"] = (D.is_fsdp(model), full_rows, local_rows)
    state = D.full_state_dict(model)  # collective
    result["fsdp"] = state
    result["fsdp_losses"] = [r["loss"] for r in records]
    if rank == 0:
        model.save_pretrained(out / "fsdp_model", state_dict=state)  # as ensure_prefix does
        tok.save_pretrained(out / "fsdp_model")
    with pytest.raises(_Killed):
        _train(model_dir, "fsdp", ckpt=out / "ckpt", kill_at=3)  # checkpoint of step 2 kept
    result["ckpt_step"] = json.loads((out / "ckpt" / "step.json").read_text())["step"]
    model, _, records = _train(model_dir, "fsdp", ckpt=out / "ckpt")
    result["resumed"] = D.full_state_dict(model)
    result["resumed_steps"] = [r["step"] for r in records]
    result["protocol"] = str(protocol_stage(model_dir, "fsdp", out / "protocol"))
    if rank == 0:
        torch.save(result, out / "two.pt")
    torch.distributed.barrier()  # both ranks done before either tears its group down
    torch.distributed.destroy_process_group()


def test_fsdp_two_processes_equal_one_process_and_ddp(tiny_models_dir, tmp_path):
    import torch.multiprocessing as mp

    from llm.models import load_model

    mp.start_processes(
        _worker,
        args=(2, free_port(), str(tiny_models_dir), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    is_fsdp, full_rows, local_rows = two["sharded"]
    assert is_fsdp and local_rows == full_rows // 2
    one_model, one_tok, one_records = _train(tiny_models_dir, "ddp", grad_accum=2)
    one = {k: v.detach() for k, v in one_model.state_dict().items()}
    base, _, _ = _load(tiny_models_dir)
    for k, v in base.state_dict().items():  # training moved the weights the tests compare
        if "weight" in k:
            assert not torch.allclose(v, one[k]), k
    assert two["fsdp_losses"] == pytest.approx([r["loss"] for r in one_records], abs=1e-12)
    assert set(two["fsdp"]) == set(one) == set(two["ddp"]) == set(two["resumed"])
    for k in one:
        assert torch.allclose(two["fsdp"][k], one[k], rtol=0, atol=1e-10), k
        assert torch.allclose(two["fsdp"][k], two["ddp"][k], rtol=0, atol=1e-10), k
        assert torch.allclose(two["resumed"][k], two["fsdp"][k], rtol=0, atol=1e-10), k
    assert two["ckpt_step"] == 2 and two["resumed_steps"] == [1, 2, 3]
    with pytest.raises(ValueError, match="written under fsdp"):  # no silent strategy mix-up
        _train(tiny_models_dir, "ddp", ckpt=tmp_path / "ckpt")
    # The gathered checkpoint: the same files and tensors as a one-process save, and loadable.
    one_model.save_pretrained(tmp_path / "one_model")
    one_tok.save_pretrained(tmp_path / "one_model")
    names = {p.name for p in (tmp_path / "one_model").iterdir()}
    assert names == {p.name for p in (tmp_path / "fsdp_model").iterdir()}
    assert json.loads((tmp_path / "fsdp_model" / "config.json").read_text()) == json.loads(
        (tmp_path / "one_model" / "config.json").read_text()
    )
    loaded, _ = load_model(tmp_path / "fsdp_model", dtype="fp32")
    for k, v in loaded.double().state_dict().items():
        assert torch.allclose(v, one[k], rtol=0, atol=1e-6), k  # fp32 round trip
    # The protocol's stage cache under FSDP: same weights as one process, world size recorded.
    fsdp_dir = Path(two["protocol"])
    one_dir = protocol_stage(tiny_models_dir, "ddp", tmp_path / "protocol_one")
    meta = json.loads((fsdp_dir.parent / "stage.json").read_text())
    assert meta["world_size"] == 2 and meta["strategy"] == "fsdp"
    a, _ = load_model(fsdp_dir, dtype="fp32")
    b, _ = load_model(one_dir, dtype="fp32")
    base, _ = load_model(tiny_models_dir / "llama", dtype="fp32")
    sa, sb, s0 = a.state_dict(), b.state_dict(), base.state_dict()
    assert set(sa) == set(sb)
    assert not torch.allclose(
        sb["model.layers.0.mlp.up_proj.weight"], s0["model.layers.0.mlp.up_proj.weight"]
    )
    for k in sa:
        assert torch.allclose(sa[k], sb[k], rtol=0, atol=1e-6), k


def test_fsdp_config_checks(tiny_models_dir):
    raw = {"model": {"path": str(tiny_models_dir / "llama")}, "stages": [], "paths": {}}
    raw["paths"] = {"order": ["a"], "forget_stage": "a", "positions": [1]}
    raw["stages"] = [{"name": "a"}]
    assert C.config_from_dict(raw).distributed.strategy == "ddp"
    full = {**raw, "finetune": {"method": "full"}, "distributed": {"strategy": "fsdp"}}
    assert C.config_from_dict(full).distributed.strategy == "fsdp"
    with pytest.raises(C.ConfigError, match="finetune.method = 'full'"):
        C.config_from_dict({**raw, "distributed": {"strategy": "fsdp"}})  # LoRA by default
    with pytest.raises(C.ConfigError, match="distributed.strategy must be one of"):
        C.config_from_dict({**raw, "distributed": {"strategy": "zero3"}})
    with pytest.raises(C.ConfigError, match="spread"):
        C.config_from_dict({**full, "model": {**raw["model"], "device": "spread"}})
    model, tok, examples = _load(tiny_models_dir)
    with pytest.raises(ValueError, match="full fine-tuning only"):
        train_stage(
            model, examples, STAGE, FULL_ADAMW, pad_token_id=0, seed=0, lora=(2, 4),
            strategy="fsdp",
        )  # fmt: skip


# ------------------------------------------------------------------------------------------
# bf16 mixed precision: autocast over FSDP2's fp32 shards (docs/fsdp.md)

# Plain SGD at a large rate, as tests/test_llm_train.py's DDP bf16 test (AdamW's per-element
# scaling would blow bf16's rounding up in weights whose gradients are tiny), with clipping.
BF16 = dataclasses.replace(FULL_ADAMW, optimizer="sgd", mixed_precision="bf16")
BF16_LR = 0.5
TIMEOUT_S = 120  # a rank left waiting in a collective fails the test instead of hanging it


def _autocast_copies(model_dir: Path) -> int:
    """Bytes of the bf16 weight copies that one autocast forward of the sharded model saves for
    backward and still holds when the forward ends (FSDP frees its own gathered weights)."""
    from llm.batches import collate_to, forward_logprobs
    from llm.loop import autocast

    model, tok, examples = _load(model_dir, torch.float32)
    model = D.shard_model(model, D.current())
    shapes = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}
    shapes |= {s[::-1] for s in shapes}  # a linear saves its weight transposed
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        with autocast(torch.device("cpu"), "bf16"):
            batch = collate_to(examples[:2], tok.pad_token_id, torch.device("cpu"))
            logp, _ = forward_logprobs(model, batch)
    held = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for t in saved
        if t.dtype == torch.bfloat16 and tuple(t.shape) in shapes
    }
    logp.sum().backward()
    return sum(held.values())


def _bf16_stage(model_dir: Path, strategy: str, grad_accum=1, ckpt=None, kill_at=None):
    model, _, records = _train(model_dir, strategy, grad_accum, ckpt, kill_at, BF16, BF16_LR)
    return D.full_state_dict(model), [r["loss"] for r in records]


def _bf16_unlearn(model_dir: Path, strategy: str, out: Path):
    """GradDiff (GA + retain) under bf16 autocast; the last step leaves rank 1 without data."""
    from llm.config import MethodConfig, UnlearnConfig
    from llm.synthetic import instruction_following, safety_refusals
    from llm.tokenization import encode_examples
    from llm.unlearn import unlearn

    model, tok, _ = _load(model_dir, torch.float32)
    forget = encode_examples(tok, safety_refusals(5, 0), 128).examples
    retain = encode_examples(tok, instruction_following(4, 0), 128).examples
    method = MethodConfig(name="gd", objective="ga", retain_weight=1.0, retain_stage="inst")
    cfg = UnlearnConfig(epochs=1.4, lr=BF16_LR, batch_size=3, grad_accum=2, eval_every=10)
    model, records = unlearn(
        model, forget, method, cfg, BF16, pad_token_id=tok.pad_token_id, seed=3, lora=None,
        retain=retain, metrics_path=out / f"gd-{strategy}.jsonl", progress=False,
        strategy=strategy,
    )  # fmt: skip
    return D.full_state_dict(model), [r["loss"] for r in records]


def _bf16_worker(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
    init_gloo_worker(rank, world, port, TIMEOUT_S)
    model_dir, out = Path(model_dir), Path(out)
    result = {"copies": _autocast_copies(model_dir)}
    model, _, records = _train(model_dir, "fsdp", ft=BF16, lr=BF16_LR)
    result["shard_dtypes"] = {p.to_local().dtype for p in model.parameters()}
    result["fsdp"] = D.full_state_dict(model), [r["loss"] for r in records]
    result["ddp"] = _bf16_stage(model_dir, "ddp")
    with pytest.raises(_Killed):
        _bf16_stage(model_dir, "fsdp", ckpt=out / "ckpt", kill_at=3)  # step 2's checkpoint kept
    result["ckpt_step"] = json.loads((out / "ckpt" / "step.json").read_text())["step"]
    result["resumed"] = _bf16_stage(model_dir, "fsdp", ckpt=out / "ckpt")
    result["unlearn"] = _bf16_unlearn(model_dir, "fsdp", out)
    result["unlearn_ddp"] = _bf16_unlearn(model_dir, "ddp", out)
    if rank == 0:
        torch.save(result, out / "bf16.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def _assert_close_to_movement(start: dict, one: dict, two: dict, frac: float) -> None:
    """Per tensor, ``two`` differs from ``one`` by at most ``frac`` of how far ``one`` moved
    from ``start`` (the measure of tests/test_llm_train.py's DDP bf16 test); fp32 weights."""
    assert set(one) == set(two) == set(start)
    for k in one:
        assert one[k].dtype == two[k].dtype == torch.float32, k
        moved = float((one[k] - start[k]).norm())
        assert moved > 0, k
        assert float((one[k] - two[k]).norm()) <= frac * moved, (k, moved)


def test_fsdp_bf16_autocast_equals_one_process_and_resumes(tiny_models_dir, tmp_path):
    """bf16 autocast under FSDP keeps fp32 shards (master weights) and gives the bf16 stage and
    GradDiff run of one process and of two DDP processes up to bf16's rounding (the ranks'
    micro-batches pad to other shapes than one process's, which bf16 rounds differently); a
    killed FSDP bf16 stage resumes to the uninterrupted one bit for bit; the bf16 copies that
    autocast keeps for backward are unsharded, as the planner's ``autocast_copies`` says."""
    import torch.multiprocessing as mp

    from llm.arch_cards import layer_param_count, read_card
    from llm.plan import Setting, train_memory

    mp.start_processes(
        _bf16_worker,
        args=(2, free_port(), str(tiny_models_dir), str(tmp_path)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    two = torch.load(tmp_path / "bf16.pt", weights_only=False)
    assert two["shard_dtypes"] == {torch.float32}
    start = _load(tiny_models_dir, torch.float32)[0].state_dict()
    one, one_losses = _bf16_stage(tiny_models_dir, "ddp", grad_accum=2)  # same micro-batches
    plain = _train(tiny_models_dir, "ddp", 2, ft=dataclasses.replace(BF16, mixed_precision="no"))
    plain_loss = plain[2][0]["loss"]  # fp64, before any update
    for state, losses in (two["fsdp"], two["ddp"]):
        assert abs(losses[0] / plain_loss - 1) > 1e-6  # autocast was on
        assert len(losses) == 3 and losses == pytest.approx(one_losses, rel=1e-4)
        _assert_close_to_movement(start, one, state, 0.02)
    assert two["ckpt_step"] == 2 and two["resumed"][1] == two["fsdp"][1]  # exact losses
    for k, v in two["fsdp"][0].items():
        assert torch.equal(two["resumed"][0][k], v), k
    one, one_losses = _bf16_unlearn(tiny_models_dir, "ddp", tmp_path)
    for state, losses in (two["unlearn"], two["unlearn_ddp"]):
        assert len(losses) == 3 and losses == pytest.approx(one_losses, rel=1e-3)
        _assert_close_to_movement(start, one, state, 0.02)
    # Every layer's linear weights and the LM head, 2 bytes each, held on each rank (unsharded).
    card = read_card(tiny_models_dir / "llama")
    linear = card.num_hidden_layers * (layer_param_count(card) - 2 * card.hidden_size)
    assert two["copies"] == 2 * (linear + card.vocab_size * card.hidden_size)
    kw = dict(tokens=128, b=4, gpus=2, rank=0, targets=(), mixed_precision=True)
    planned = train_memory(card, Setting(4, fsdp=True, lora=False), **kw)
    assert planned["autocast_copies"] == two["copies"]
