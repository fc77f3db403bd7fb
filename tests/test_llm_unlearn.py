"""Local unlearning: objectives on a fixed batch equal hand-computed values, the adapter-disabled
reference equals a separately loaded model, metrics, NaN guard and resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llm import objectives as obj
from llm.batches import collate_to
from llm.config import FinetuneConfig, MethodConfig, UnlearnConfig
from llm.loop import NonFiniteError
from llm.train import attach_lora
from llm.unlearn import UnlearnMicro, UnlearnObjective, reference_logprobs, unlearn

pytestmark = pytest.mark.usefixtures("one_thread")


def load(tiny_models_dir: Path, dtype=torch.float64):
    from llm.models import load_model

    model, tok = load_model(tiny_models_dir / "llama")
    return model.to(dtype), tok


def forget_set(tok, n=4):
    from llm.synthetic import safety_refusals
    from llm.tokenization import encode_examples

    return encode_examples(tok, safety_refusals(n, 0), 128).examples


def retain_set(tok, n=4):
    from llm.synthetic import instruction_following
    from llm.tokenization import encode_examples

    return encode_examples(tok, instruction_following(n, 0), 128).examples


@torch.no_grad()
def hand_logp(model, example) -> tuple[float, int]:
    """Sum over labelled positions t of log softmax(logits[t-1])[label[t]], by a Python loop."""
    ids = torch.tensor([example.input_ids])
    logits = model(input_ids=ids).logits[0]
    total, count = 0.0, 0
    for t in range(1, len(example.labels)):
        if example.labels[t] != obj.IGNORE_INDEX:
            total += float(torch.log_softmax(logits[t - 1], -1)[example.labels[t]])
            count += 1
    return total, count


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > -30 else x


def loss_over_micros(objective, model, micros):
    import numpy as np

    totals = torch.tensor(np.sum([objective.counts(m) for m in micros], axis=0))
    return sum(float(objective.loss(model, m, totals)[0].detach()) for m in micros)


@pytest.mark.parametrize("split", [1, 2])
def test_objectives_equal_hand_values_on_a_fixed_batch(tiny_models_dir, split):
    model, tok = load(tiny_models_dir)
    forget, retain = forget_set(tok, 4), retain_set(tok, 4)
    f = [hand_logp(model, e) for e in forget]
    r = [hand_logp(model, e) for e in retain]
    lp = [x for x, _ in f]
    n = [c for _, c in f]
    ref = [x + d for x, d in zip(lp, [0.5, -1.0, 2.0, 0.0], strict=True)]
    micros = (
        [UnlearnMicro([0, 1, 2, 3], [0, 1, 2, 3])]
        if split == 1
        else [UnlearnMicro([0, 1], [0]), UnlearnMicro([2, 3], [1, 2, 3])]
    )
    pad = tok.pad_token_id
    expected = {
        "ga": sum(lp) / sum(n),
        "npo": sum(-(2 / 0.5) * logsig(-0.5 * (a - b)) for a, b in zip(lp, ref, strict=True)) / 4,
        "simnpo_paper": sum(-(2 / 0.5) * logsig(-0.5 * a) for a in lp) / 4,
        "simnpo_authors": sum(
            -(2 / 2.5) * logsig(-2.5 * a / c - 0.3) for a, c in zip(lp, n, strict=True)
        )
        / 4,
        "graddiff": sum(lp) / sum(n) + 0.7 * (-sum(x for x, _ in r) / sum(c for _, c in r)),
    }
    methods = {
        "ga": MethodConfig(objective="ga"),
        "npo": MethodConfig(objective="npo", beta=0.5, reference="precomputed"),
        "simnpo_paper": MethodConfig(objective="simnpo", beta=0.5, length_normalize=False),
        "simnpo_authors": MethodConfig(objective="simnpo", beta=2.5, margin=0.3),
        "graddiff": MethodConfig(objective="ga", retain_weight=0.7, retain_stage="inst"),
    }
    for name, method in methods.items():
        objective = UnlearnObjective(
            forget, retain if method.retain_weight else [], method, pad,
            torch.tensor(ref, dtype=torch.float64),
        )  # fmt: skip
        ms = micros if method.retain_weight else [UnlearnMicro(m.forget, []) for m in micros]
        got = loss_over_micros(objective, model, ms)
        assert got == pytest.approx(expected[name], rel=1e-9, abs=1e-9), name


def test_adapter_disabled_reference_equals_a_separately_loaded_copy(tiny_models_dir):
    model, tok = load(tiny_models_dir)
    forget = forget_set(tok, 4)
    cfg = UnlearnConfig(epochs=2, lr=5e-2, batch_size=2, schedule="constant")
    adapted, _ = unlearn(
        model, forget, MethodConfig(objective="ga"), cfg, FinetuneConfig(),
        pad_token_id=tok.pad_token_id, seed=0, lora=(4, 8), progress=False,
    )  # fmt: skip
    copy, _ = load(tiny_models_dir)
    batch = collate_to(forget, tok.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        fresh = obj.sequence_logprobs(
            copy(**{k: batch[k] for k in ("input_ids",)}).logits, batch["labels"]
        )[0]
        now = obj.sequence_logprobs(adapted(input_ids=batch["input_ids"]).logits, batch["labels"])[
            0
        ]
    via_disable = reference_logprobs(adapted, forget, tok.pad_token_id)
    assert torch.allclose(via_disable, fresh, atol=1e-9)
    assert not torch.allclose(now, fresh, atol=1e-3)  # the adapter did move the model


def test_npo_adapter_reference_matches_precomputed_reference(tiny_models_dir):
    losses = {}
    for reference in ("adapter", "precomputed"):
        model, tok = load(tiny_models_dir)
        _, records = unlearn(
            model, forget_set(tok, 4), MethodConfig(objective="npo", reference=reference),
            UnlearnConfig(epochs=2, lr=5e-2, batch_size=2), FinetuneConfig(),
            pad_token_id=tok.pad_token_id, seed=0, lora=(4, 8), progress=False,
        )  # fmt: skip
        losses[reference] = [r["loss"] for r in records]
    assert losses["adapter"][0] == pytest.approx(4 * math.log(2))  # pi = pi_ref at step 1
    assert losses["adapter"] == pytest.approx(losses["precomputed"], rel=1e-9)
    assert losses["adapter"][-1] < losses["adapter"][0]


def _run(tiny_models_dir, tmp, method, evaluator=None, ckpt=None, cfg=None, tb=None):
    model, tok = load(tiny_models_dir, torch.float32)
    cfg = cfg or UnlearnConfig(epochs=3, lr=2e-2, batch_size=2, eval_every=2)
    return unlearn(
        model, forget_set(tok, 4), method, cfg, FinetuneConfig(checkpoint_every=2),
        pad_token_id=tok.pad_token_id, seed=1, lora=(4, 8), retain=retain_set(tok, 3),
        ckpt_dir=ckpt, metrics_path=tmp / "metrics.jsonl", evaluator=evaluator, progress=False,
        tensorboard=tb,
    )  # fmt: skip


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _label_eval(model, step, final):

    return {"probe": float(next(model.parameters()).double().sum()), "final": final}


def test_metrics_jsonl_has_every_step_and_the_method_form(tiny_models_dir, tmp_path):
    method = MethodConfig(name="sim", objective="simnpo", beta=2.5, length_normalize=True)
    _, records = _run(tiny_models_dir, tmp_path, method, _label_eval)
    lines = _lines(tmp_path / "metrics.jsonl")
    assert [x["step"] for x in lines] == list(range(7))
    assert [x["step"] for x in lines if "probe" in x] == [0, 2, 4, 6]
    assert lines[-1]["final"] is True
    assert all(x["length_normalize"] is True and x["objective"] == "simnpo" for x in lines)
    assert all(math.isfinite(x["grad_norm"]) for x in lines[1:])
    assert lines[1]["world_size"] == 1 and lines[1]["micro_batch"] == 2


@pytest.mark.parametrize("normalize", [True, False])
def test_simnpo_records_its_gradient_factor_at_step_zero(tiny_models_dir, tmp_path, normalize):
    """sigmoid(beta r + margin) over the forget set, computed independently from the model
    before unlearning: the factor that saturates the paper's form (r = log pi of a response)."""
    method = MethodConfig(objective="simnpo", beta=1.5, margin=0.2, length_normalize=normalize)
    model, tok = load(tiny_models_dir, torch.float32)
    expected = []
    for ex in forget_set(tok, 4):
        logp, n = hand_logp(model, ex)
        r = logp / n if normalize else logp
        expected.append(1 / (1 + math.exp(-(1.5 * r + 0.2))))
    _run(tiny_models_dir, tmp_path, method, _label_eval)
    step0 = _lines(tmp_path / "metrics.jsonl")[0]
    assert step0["simnpo_weight"] == pytest.approx(sum(expected) / 4, rel=1e-4, abs=1e-12)
    assert all("simnpo_weight" not in x for x in _lines(tmp_path / "metrics.jsonl")[1:])


def test_a_methods_own_learning_rate_overrides_unlearn_lr(tiny_models_dir, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _run(tiny_models_dir, tmp_path / "a", MethodConfig(objective="ga", lr=3e-3))
    _run(tiny_models_dir, tmp_path / "b", MethodConfig(objective="ga"))  # unlearn.lr = 2e-2
    assert {x["lr"] for x in _lines(tmp_path / "a" / "metrics.jsonl")[1:]} == {3e-3}
    assert {x["lr"] for x in _lines(tmp_path / "b" / "metrics.jsonl")[1:]} == {2e-2}


def test_resume_of_unlearning_equals_uninterrupted(tiny_models_dir, tmp_path):
    method = MethodConfig(objective="ga", retain_weight=1.0, retain_stage="inst")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    model_a, _ = _run(tiny_models_dir, tmp_path / "a", method, _label_eval)

    def killer(model, step, final):
        if step == 4:  # the checkpoint of step 2 survives
            raise KeyboardInterrupt
        return _label_eval(model, step, final)

    with pytest.raises(KeyboardInterrupt):
        _run(tiny_models_dir, tmp_path / "b", method, killer, ckpt=tmp_path / "b" / "ckpt")
    model_b, _ = _run(tiny_models_dir, tmp_path / "b", method, _label_eval, tmp_path / "b" / "ckpt")
    a = _lines(tmp_path / "a" / "metrics.jsonl")
    b = _lines(tmp_path / "b" / "metrics.jsonl")
    assert [x["step"] for x in b] == list(range(7))
    for x, y in zip(a, b, strict=True):
        x.pop("time", None), y.pop("time", None)
        assert x.keys() == y.keys()
        assert x == y  # exact: resuming changes nothing
    for (n, p), (_, q) in zip(model_a.named_parameters(), model_b.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_unlearn_optimizer_overrides_the_finetune_optimizer(tiny_models_dir):
    """The demo fine-tunes with SGD and unlearns with AdamW (the paper's): unlearn.optimizer
    decides, and left empty the finetune optimizer is used."""
    method = MethodConfig(objective="ga")

    def params(ft_optimizer, unlearn_optimizer):
        cfg = UnlearnConfig(epochs=1, lr=2e-2, batch_size=2, optimizer=unlearn_optimizer)
        model, tok = load(tiny_models_dir, torch.float32)
        model, _ = unlearn(
            model, forget_set(tok, 4), method, cfg, FinetuneConfig(optimizer=ft_optimizer),
            pad_token_id=tok.pad_token_id, seed=1, lora=(4, 8), progress=False,
        )  # fmt: skip
        return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])

    adamw = params("adamw", "")
    assert torch.equal(params("sgd", "adamw"), adamw)
    sgd = params("sgd", "")
    assert torch.equal(params("adamw", "sgd"), sgd)
    assert not torch.allclose(adamw, sgd)


@pytest.mark.parametrize("objective", ["ga", "npo"])
def test_gradient_checkpointing_gives_the_same_unlearning(tiny_models_dir, objective):
    """finetune.gradient_checkpointing also covers unlearning (both forward passes of NPO, its
    reference from the adapter-disabled model): the same losses and adapter, fp64."""
    method = MethodConfig(objective=objective, beta=0.5)
    cfg = UnlearnConfig(epochs=1, lr=2e-2, batch_size=2, grad_accum=2)
    out = []
    for on in (False, True):
        model, tok = load(tiny_models_dir)
        model, records = unlearn(
            model, forget_set(tok, 4), method, cfg, FinetuneConfig(gradient_checkpointing=on),
            pad_token_id=tok.pad_token_id, seed=1, lora=(4, 8), progress=False,
        )  # fmt: skip
        flat = torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])
        out.append(([r["loss"] for r in records], flat))
    assert out[1][0] == pytest.approx(out[0][0], rel=1e-12, abs=0)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=0, atol=1e-12)


def test_non_finite_loss_stops_and_keeps_the_measured_steps(tiny_models_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = obj.gradient_ascent_loss

    def flaky(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setitem(obj.FORGET_OBJECTIVES, "ga", flaky)  # the loop dispatches through it
    with pytest.raises(NonFiniteError, match="step 3"):
        _run(tiny_models_dir, tmp_path, MethodConfig(objective="ga"), _label_eval)
    assert [x["step"] for x in _lines(tmp_path / "metrics.jsonl")] == [0, 1, 2]


def test_full_finetuning_npo_needs_a_precomputed_reference(tiny_models_dir):
    model, tok = load(tiny_models_dir)
    with pytest.raises(ValueError, match="precomputed"):
        unlearn(
            model, forget_set(tok, 2), MethodConfig(objective="npo", reference="adapter"),
            UnlearnConfig(batch_size=2), FinetuneConfig(method="full"),
            pad_token_id=tok.pad_token_id, seed=0, lora=None, progress=False,
        )  # fmt: skip


def test_attach_lora_is_seeded(tiny_models_dir):
    a, _ = load(tiny_models_dir)
    b, _ = load(tiny_models_dir)
    pa = dict(attach_lora(a, 4, 8, seed=3).named_parameters())
    pb = dict(attach_lora(b, 4, 8, seed=3).named_parameters())
    assert all(torch.equal(pa[k], pb[k]) for k in pa if "lora_A" in k)
