"""FSDP (FSDP2 ``fully_shard``) for unlearning and evaluation over two gloo processes, fp64: GA with
a retain term, NPO with its precomputed reference and SimNPO give the per-step losses, evaluations
and weights of one process; an FSDP unlearning run killed after a checkpoint resumes to the
uninterrupted run; scoring and sampling of a sharded model equal one process when a rank is short
of a batch (3 items on 2 ranks) and when one rank's prompts stop early; the protocol's unlearning
runs and retrain evaluation under FSDP write the metrics of one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _distributed import free_port, init_gloo_worker

from llm import distributed as D
from llm import evaluate as E
from llm.batches import batch_plan, micro_batches
from llm.config import FinetuneConfig, MethodConfig, UnlearnConfig
from llm.unlearn import unlearn

pytestmark = pytest.mark.usefixtures("one_thread")

# A rank left waiting in a collective (a forward the other rank did not run) fails the test
# after this many seconds instead of hanging it.
TIMEOUT_S = 120
FULL = FinetuneConfig(method="full", optimizer="adamw", max_grad_norm=0.5, checkpoint_every=2)
N_FORGET = 5
# Each method's batches leave rank 1 without forget data in the last step (5 forget examples,
# batches 3/3/1 or 4/4/1; checked by test_the_configs_leave_a_rank_without_data):
# - GradDiff (GA + retain), batch 3 over 2 ranks x 2 micro-batches: rank 0 holds 2 retain rows
#   and rank 1 one, so in the last step rank 1's first micro-batch is retain only and its second
#   is empty while rank 0's second holds retain data (both parts' forwards padded);
# - NPO (precomputed reference), batch 4, one micro-batch: rank 1's last one is empty;
# - SimNPO, batch 4, two micro-batches: rank 1 has none in the last step, rank 0 one.
METHODS = {
    "graddiff": (
        MethodConfig(name="graddiff", objective="ga", retain_weight=1.0, retain_stage="inst"),
        UnlearnConfig(epochs=1.4, lr=2e-2, batch_size=3, grad_accum=2, eval_every=1),
    ),
    "npo": (
        MethodConfig(name="npo", objective="npo", beta=0.5, reference="precomputed"),
        UnlearnConfig(epochs=1.8, lr=2e-2, batch_size=4, grad_accum=1, eval_every=2),
    ),
    "simnpo": (
        MethodConfig(name="simnpo", objective="simnpo", beta=2.0, length_normalize=True),
        UnlearnConfig(epochs=1.8, lr=2e-2, batch_size=4, grad_accum=2, eval_every=1),
    ),
}


def _spawn(worker, *args) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(
        worker, args=(2, free_port(), *map(str, args)), nprocs=2, join=True, start_method="spawn"
    )


def _load(model_dir: Path):
    from llm.models import load_model

    model, tok = load_model(model_dir / "llama")
    return model.double(), tok


def _data(tok):
    from llm.synthetic import instruction_following, safety_refusals
    from llm.tokenization import encode_examples

    forget = encode_examples(tok, safety_refusals(N_FORGET, 0), 128).examples
    retain = encode_examples(tok, instruction_following(4, 0), 128).examples
    return forget, retain


def _unlearn(model_dir: Path, name: str, strategy: str, out: Path, kill_at=None, ckpt=None):
    """One unlearning run; its evaluation scores 3 forget examples one per batch (on 2 ranks:
    2 batches and 1, so one rank pads) at every evaluated step."""
    method, cfg = METHODS[name]
    model, tok = _load(model_dir)
    forget, retain = _data(tok)

    def evaluator(model, step, final):
        if step == kill_at:
            raise _Killed
        scores = E.score_examples(model, forget[:3], tok.pad_token_id, batch_size=1)
        return {"forget_lp": float(np.mean(E.mean_per_token(scores)))}

    model, records = unlearn(
        model, forget, method, cfg, FULL, pad_token_id=tok.pad_token_id, seed=3, lora=None,
        retain=retain if method.retain_weight else (), ckpt_dir=ckpt,
        metrics_path=out / f"{name}.jsonl", evaluator=evaluator, progress=False,
        strategy=strategy,
    )  # fmt: skip
    return model, records


class _Killed(Exception):
    pass


def _finish(rank: int, result: dict, out: Path) -> None:
    if rank == 0:
        torch.save(result, out / "two.pt")
    torch.distributed.barrier()  # both ranks done before either tears its group down
    torch.distributed.destroy_process_group()


def _lines(path: Path) -> list[dict]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for x in lines:  # what differs between one and two processes by construction
        for k in ("time", "world_size", "micro_batch"):
            x.pop(k, None)
    return lines


def _assert_lines_close(one: list[dict], two: list[dict], tol: float) -> None:
    assert [x["step"] for x in one] == [x["step"] for x in two]
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys(), (a.keys(), b.keys())
        for k, v in a.items():
            if isinstance(v, float) or (isinstance(v, list) and v and isinstance(v[0], float)):
                assert b[k] == pytest.approx(v, rel=0, abs=tol), (a["step"], k)
            else:
                assert b[k] == v, (a["step"], k)


def _sharded_rows(model) -> tuple[bool, int, int]:
    w = model.model.layers[0].mlp.up_proj.weight
    return D.is_fsdp(model), w.shape[0], w.to_local().shape[0]


# ------------------------------------------------------------------------------------------
# Unlearning


def test_the_configs_leave_a_rank_without_data():
    """The premise of the padding paths: in the last step some micro-batch of rank 1 lacks a part
    (or everything) that the same micro-batch of rank 0 has."""
    from llm.distributed import DistInfo

    def parts(n, cfg, seed, rank):
        last = batch_plan(n, cfg.batch_size, cfg.epochs, seed)[-1]
        return micro_batches(last, DistInfo(rank=rank, world_size=2), cfg.grad_accum)

    for name, (method, cfg) in METHODS.items():
        f0, f1 = parts(N_FORGET, cfg, 3, 0), parts(N_FORGET, cfg, 3, 1)
        assert any(a and not b for a, b in zip(f0, f1, strict=True)), name
        if method.retain_weight:
            # retain batches are full: 2 rows for rank 0, 1 for rank 1, so rank 1's second
            # micro-batch is empty while rank 0's has retain data
            r0, r1 = (micro_batches(list(range(3)), DistInfo(r, 2), 2) for r in (0, 1))
            assert [len(x) for x in r0] == [1, 1] and [len(x) for x in r1] == [1, 0]
            assert f0[1] == [] and f1 == [[], []]


def _unlearn_worker(rank: int, world: int, port: str, model_dir: str, out: str) -> None:
    init_gloo_worker(rank, world, int(port), TIMEOUT_S)
    model_dir, out = Path(model_dir), Path(out)
    result = {}
    for name in METHODS:
        model, records = _unlearn(model_dir, name, "fsdp", out)
        result[name] = {
            "sharded": _sharded_rows(model),
            "losses": [r["loss"] for r in records],
            "state": D.full_state_dict(model),  # collective; rank 0 gets the tensors
        }
    _finish(rank, result, out)


def test_fsdp_unlearning_equals_one_process(tiny_models_dir, tmp_path):
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    _spawn(_unlearn_worker, tiny_models_dir, tmp_path / "two")
    two = torch.load(tmp_path / "two" / "two.pt", weights_only=False)
    base, _ = _load(tiny_models_dir)
    base_state = base.state_dict()
    for name in METHODS:
        model, records = _unlearn(tiny_models_dir, name, "ddp", tmp_path / "one")
        got = two[name]
        is_fsdp, rows, local = got["sharded"]
        assert is_fsdp and local == rows // 2, name
        assert len(records) == 3
        assert got["losses"] == pytest.approx([r["loss"] for r in records], rel=0, abs=1e-12)
        one = model.state_dict()
        assert set(got["state"]) == set(one), name
        for k, v in one.items():
            assert torch.allclose(got["state"][k], v, rtol=0, atol=1e-10), (name, k)
        moved = [k for k, v in one.items() if not torch.allclose(v, base_state[k], atol=1e-6)]
        assert "model.layers.0.mlp.up_proj.weight" in moved, name  # unlearning did change it
        # The metrics lines: losses, forget / retain parts, gradient norms and the evaluation
        # (scored sharded, one rank padding) of every step, step 0 (SimNPO's weight) included.
        one_lines = _lines(tmp_path / "one" / f"{name}.jsonl")
        two_lines = _lines(tmp_path / "two" / f"{name}.jsonl")
        assert len(one_lines) == 4 and "forget_lp" in one_lines[0]
        _assert_lines_close(one_lines, two_lines, 1e-10)
    assert "simnpo_weight" in _lines(tmp_path / "one" / "simnpo.jsonl")[0]
    assert "retain_loss" in _lines(tmp_path / "one" / "graddiff.jsonl")[-1]


RESUMED = ("graddiff", "npo")  # retain data padded; NPO's reference scored again on resume


def _resume_worker(rank: int, world: int, port: str, model_dir: str, out: str) -> None:
    init_gloo_worker(rank, world, int(port), TIMEOUT_S)
    model_dir, out = Path(model_dir), Path(out)
    (out / "a").mkdir(exist_ok=True)
    (out / "b").mkdir(exist_ok=True)
    result = {}
    for name in RESUMED:
        model, records = _unlearn(model_dir, name, "fsdp", out / "a")
        got = {"a": D.full_state_dict(model), "a_losses": [r["loss"] for r in records]}
        ckpt = out / "b" / f"{name}.ckpt"
        with pytest.raises(_Killed):  # killed in step 3's evaluation: step 2's checkpoint stays
            _unlearn(model_dir, name, "fsdp", out / "b", kill_at=3, ckpt=ckpt)
        got["ckpt"] = json.loads((ckpt / "step.json").read_text())
        model, records = _unlearn(model_dir, name, "fsdp", out / "b", ckpt=ckpt)
        got["b"] = D.full_state_dict(model)
        got["b_losses"] = [r["loss"] for r in records]
        got["b_steps"] = [r["step"] for r in records]
        result[name] = got
    _finish(rank, result, out)


def test_fsdp_unlearning_resumes_to_the_uninterrupted_run(tiny_models_dir, tmp_path):
    _spawn(_resume_worker, tiny_models_dir, tmp_path)
    result = torch.load(tmp_path / "two.pt", weights_only=False)
    assert set(result) == set(RESUMED)
    for name, two in result.items():
        assert two["ckpt"] == {"step": 2, "strategy": "fsdp"}, name
        assert two["b_steps"] == [1, 2, 3]  # the records of steps 1-2 come from the checkpoint
        assert two["b_losses"] == two["a_losses"]  # exact
        assert set(two["a"]) == set(two["b"]) and two["a"]
        for k, v in two["a"].items():
            assert torch.equal(two["b"][k], v), (name, k)
        a, b = (_lines(tmp_path / x / f"{name}.jsonl") for x in ("a", "b"))
        assert [x["step"] for x in b] == [0, 1, 2, 3]
        assert a == b  # exact: the metrics, the evaluations included, as if never stopped


def test_fsdp_unlearning_refuses_lora(tiny_models_dir):
    model, tok = _load(tiny_models_dir)
    forget, _ = _data(tok)
    method, cfg = METHODS["npo"]
    with pytest.raises(ValueError, match="full fine-tuning only"):
        unlearn(
            model, forget, method, cfg, FULL, pad_token_id=tok.pad_token_id, seed=0,
            lora=(2, 4), progress=False, strategy="fsdp",
        )  # fmt: skip


# ------------------------------------------------------------------------------------------
# Evaluation: scoring and sampling of a sharded model


def _random_model(model_dir: Path):
    """The tiny Llama's shape with random weights, scaled up (seeded, the same in every process):
    the trained tiny model answers "    " to every prompt, which would hide a stop that differs
    between prompts."""
    from transformers import AutoModelForCausalLM

    trained, tok = _load(model_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(trained.config).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(8.0)
    return model.eval(), tok


def _prompts(tok) -> list[str]:
    from llm.synthetic import held_out_arithmetic

    return E.build_suite(tok, math=held_out_arithmetic(3, 3, [])).math_prompts


def _sample(model, tok, stop: list[int] | None) -> list[list[str]]:
    # Temperature 1e-6: sampling picks the argmax. One prompt per batch: on 2 ranks, rank 0
    # generates for prompts 0 and 2, rank 1 for prompt 1 and then for a stand-in.
    return E.generate_samples(
        model, tok, _prompts(tok), 2, max_new_tokens=8, temperature=1e-6, seed=5, batch_size=1,
        stop_token_ids=stop,
    )  # fmt: skip


def _score(model, tok) -> dict[int, list[np.ndarray]]:
    forget, _ = _data(tok)
    # 3 items on 2 ranks: 2 and 1 at batch size 1 (rank 1 pads), 1 batch each at batch size 2
    pad = tok.pad_token_id
    return {bs: E.score_examples(model, forget[:3], pad, batch_size=bs) for bs in (1, 2)}


def _eval_worker(rank: int, world: int, port: str, model_dir: str, out: str, stop: str) -> None:
    from torch.distributed.tensor import DTensor

    init_gloo_worker(rank, world, int(port), TIMEOUT_S)
    model, tok = _random_model(Path(model_dir))
    model = D.shard_model(model, D.current())
    result = {"sharded": _sharded_rows(model), "scores": _score(model, tok)}
    # After a no-grad pass the root's weights are shards again, not the gathered copies FSDP2
    # keeps after a forward (an optimizer built now must see the shards).
    result["resharded"] = all(isinstance(p, DTensor) for p in model.parameters())
    result["samples"] = _sample(model, tok, json.loads(stop))
    result["plain"] = _sample(model, tok, None)
    _finish(rank, result, Path(out))


def _greedy_tokens(model, tok) -> list[list[int]]:
    out = []
    for p in _prompts(tok):
        ids = torch.tensor([tok(p, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                max_new_tokens=8, pad_token_id=tok.pad_token_id, eos_token_id=None,
            )  # fmt: skip
        out.append(gen[0, ids.shape[1] :].tolist())
    return out


def test_fsdp_scoring_and_sampling_equal_one_process(tiny_models_dir, tmp_path):
    model, tok = _random_model(tiny_models_dir)
    # A stop token that ends prompt 0's generation early (rank 0) while prompt 1's runs to
    # max_new_tokens (rank 1): the ranks stop at different steps within one generate call.
    greedy = _greedy_tokens(model, tok)
    stop = next(t for t in greedy[0] if t not in greedy[1])
    assert greedy[0].index(stop) < len(greedy[0]) - 1
    one_scores = _score(model, tok)
    one_samples, one_plain = _sample(model, tok, [stop]), _sample(model, tok, None)
    assert one_samples[1] == one_plain[1]  # prompt 1 never meets the stop token
    assert len(one_samples[0][0]) < len(one_plain[0][0])  # prompt 0 stops early
    _spawn(_eval_worker, tiny_models_dir, tmp_path, json.dumps([stop]))
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    is_fsdp, rows, local = two["sharded"]
    assert is_fsdp and local == rows // 2 and two["resharded"]
    for bs, vectors in one_scores.items():
        assert len(two["scores"][bs]) == len(vectors) == 3
        for a, b in zip(vectors, two["scores"][bs], strict=True):
            assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-10), bs
    assert two["samples"] == one_samples
    assert two["plain"] == one_plain


# ------------------------------------------------------------------------------------------
# The protocol: unlearning runs and the retrain evaluation under FSDP


def _protocol_config(model_dir: Path, strategy: str):
    from llm import config as C

    sizes = {"inst": 4, "tofu_authors": 1, "math": 2, "unlearn": 3, "math_test": 3, "rcu": 1}
    methods = [
        {"name": "npo", "objective": "npo", "reference": "precomputed"},
        {"name": "gd", "objective": "ga", "retain_weight": 1.0, "retain_stage": "inst"},
    ]
    ev = {"n_forget_prompts": 3, "n_tofu": 3, "n_math": 3, "math_samples": 2, "n_re": 3}
    raw = {
        "model": {"path": str(model_dir / "llama"), "device": "cpu", "dtype": "fp64"},
        "finetune": {"method": "full", "max_length": 128, "checkpoint_every": 2},
        "data": {"sizes": sizes},
        "stages": [{"name": n, "epochs": 1, "lr": 1e-2, "batch_size": 4} for n in sizes],
        "paths": {"order": ["inst", "unlearn"], "forget_stage": "unlearn", "positions": [2]},
        # 3 forget examples in batches of 2: rank 1 has no forget data in the last step
        "unlearn": {"epochs": 1, "lr": 2e-2, "batch_size": 2, "eval_every": 1, "methods": methods},
        "eval": {**ev, "math_batch_size": 2, "max_new_tokens": 4, "rcu_stage": ""},
        "distributed": {"strategy": strategy},
    }
    return C.config_from_dict(raw)


def _protocol(model_dir: Path, strategy: str, out: Path) -> list[dict]:
    """Both methods' unlearning runs of the base model, and the retrain evaluation of it."""
    from llm.protocol import evaluate_retrain, run_unlearning
    from llm.workspace import open_workspace

    ws = open_workspace(_protocol_config(model_dir, strategy), out, progress=False)
    statuses = [run_unlearning(ws, ws.suite, "p", ws.base_path, m) for m in ws.cfg.unlearn.methods]
    evaluate_retrain(ws, ws.suite, ws.base_path)
    return statuses


def _protocol_worker(rank: int, world: int, port: str, model_dir: str, out: str) -> None:
    init_gloo_worker(rank, world, int(port), TIMEOUT_S)
    sharded, real = [], D.shard_model

    def recording(model, info):  # which models the protocol sharded
        model = real(model, info)
        sharded.append(D.is_fsdp(model))
        return model

    D.shard_model = recording
    statuses = _protocol(Path(model_dir), "fsdp", Path(out) / "two")
    _finish(rank, {"statuses": statuses, "sharded": sharded}, Path(out))


def test_fsdp_protocol_unlearning_and_retrain_equal_one_process(tiny_models_dir, tmp_path):
    from llm.layout import ProtocolLayout

    _spawn(_protocol_worker, tiny_models_dir, tmp_path)
    one_statuses = _protocol(tiny_models_dir, "ddp", tmp_path / "one")
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert two["sharded"] == [True, True, True]  # both unlearning runs and the retrain model
    two_statuses = two["statuses"]
    assert [s["status"] for s in two_statuses] == [s["status"] for s in one_statuses]
    assert {s["status"] for s in one_statuses} <= {"done", "collapsed"}
    one, two = ProtocolLayout(tmp_path / "one"), ProtocolLayout(tmp_path / "two")
    for name in ("npo", "gd"):
        a, b = one.run("p", name), two.run("p", name)
        lines = _lines(a.metrics)
        assert [x["step"] for x in lines] == [0, 1, 2] and "math_strict" in lines[-1]
        _assert_lines_close(lines, _lines(b.metrics), 1e-9)
        _assert_lines_close(_lines(a.per_example), _lines(b.per_example), 1e-9)
        for step in (0, 1, 2):
            pa, pb = np.load(a.pred(step)), np.load(b.pred(step))
            assert pa.shape == pb.shape and np.allclose(pa, pb, rtol=0, atol=1e-9)
        assert not b.ckpt.exists()  # removed by rank 0 once the run finished
    ra, rb = (json.loads(x.retrain_metrics.read_text()) for x in (one, two))
    assert ra["summary"].keys() == rb["summary"].keys() and "math_strict" in ra["summary"]
    for k, v in ra["summary"].items():
        assert rb["summary"][k] == pytest.approx(v, rel=0, abs=1e-9), k
    assert ra["per_example"].keys() == rb["per_example"].keys()
    for k, v in ra["per_example"].items():
        assert rb["per_example"][k] == pytest.approx(v, rel=0, abs=1e-9), k
    assert np.allclose(np.load(one.retrain_pred), np.load(two.retrain_pred), rtol=0, atol=1e-9)
