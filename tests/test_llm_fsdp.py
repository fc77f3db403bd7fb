"""FSDP (FSDP2 ``fully_shard``) over two gloo processes: one stage gives the parameters of one
process and of the two-process DDP run, a killed FSDP stage resumes to the same parameters, and
the gathered checkpoint is an ordinary HF folder that ``llm.models.load_model`` reads."""

from __future__ import annotations

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


def _load(model_dir: Path):
    from llm.models import load_model
    from llm.synthetic import instruction_following
    from llm.tokenization import encode_examples

    model, tok = load_model(model_dir / "llama")
    examples = encode_examples(tok, instruction_following(5, 0), 128).examples
    return model.double(), tok, examples


def _train(model_dir: Path, strategy: str, grad_accum: int = 1, ckpt=None, kill_at=None):
    import dataclasses

    model, tok, examples = _load(model_dir)

    def on_step(step, record):
        if step == kill_at:
            raise _Killed

    stage = dataclasses.replace(STAGE, grad_accum=grad_accum)
    model, records = train_stage(
        model,
        examples,
        stage,
        FULL_ADAMW,
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
