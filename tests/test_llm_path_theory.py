"""The theory's quantities on LLM checkpoints (llm.path_theory) against the linear theory
(theory.bound / theory.unlearning) where the network is the theory's linear model, and the
``python -m llm curvature`` command on the tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from llm.curvature import ForgetLoss, top_eigenpairs
from llm.loop import LoopSettings
from llm.path_theory import linearised_run, log_slope, pair_quantities


def _linear_forget_loss(XU: np.ndarray, yU: np.ndarray, theta: np.ndarray) -> ForgetLoss:
    """The theory's forget loss (1/k)‖X_U θ − y_U‖² as a one-layer network at ``theta``."""
    lin = torch.nn.Linear(XU.shape[1], 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(theta)[None, :])
    return ForgetLoss(lin, [{"x": torch.tensor(XU), "y": torch.tensor(yU)}], loss="squared")


def test_pair_quantities_equal_theorem_3_1_on_the_linear_model():
    """On a linear "LM" the GGN is M_U / η, so with all k eigenpairs the pair quantities are
    Theorem 3.1's: ‖P_U Δθ0‖, ‖(I − P_U) Δθ0‖ and ρ* (theory.bound.theorem_3_1)."""
    from theory.bound import theorem_3_1
    from theory.instance import random_instance
    from theory.linear import history_difference

    inst = random_instance(3, d=12, nA=4, nB=5, k=3, m=4, eta=0.2)
    delta0 = np.asarray(history_difference(inst.XA, inst.yA, inst.muA, inst.XB, inst.yB, inst.muB))
    expected = theorem_3_1(delta0, inst.XU, inst.eta, inst.Xtest)
    fl = _linear_forget_loss(inst.XU, inst.yU, np.zeros(inst.d))
    eig = top_eigenpairs(fl.operator("ggn"), inst.k)
    q = pair_quantities(eig, torch.tensor(delta0), inst.eta)
    assert q["proj_norm"] == pytest.approx(float(expected.proj_norm), rel=1e-9)
    assert q["off_norm"] == pytest.approx(float(expected.off_norm), rel=1e-9)
    assert q["delta0_norm"] == pytest.approx(float(expected.delta0_norm), rel=1e-12)
    assert q["rho_hat"] == pytest.approx(float(expected.rho_star), rel=1e-9)
    assert q["predicted_log_growth"] == pytest.approx(2 * math.log1p(float(expected.rho_star)))
    # D = 1 is the plain step; D = 2 doubles the step
    ones = pair_quantities(eig, torch.tensor(delta0), inst.eta, torch.ones(inst.d))
    twos = pair_quantities(eig, torch.tensor(delta0), inst.eta, 2 * torch.ones(inst.d))
    assert ones["rho_hat_preconditioned"] == pytest.approx(q["rho_hat"], rel=1e-12)
    assert twos["rho_hat_preconditioned"] == pytest.approx(2 * q["rho_hat"], rel=1e-12)


def test_measured_growth_equals_the_prediction_along_an_eigenvector():
    """GA on the linear model, two models whose difference is the top forget eigenvector: the
    RE distance grows by exactly (1 + ρ*)² per step, and log_slope recovers 2 ln(1 + ρ*)."""
    rng = np.random.default_rng(0)
    k, d, m, eta = 3, 8, 5, 0.3
    XU, yU, Xtest = rng.normal(size=(k, d)), rng.normal(size=k), rng.normal(size=(m, d))
    theta_a = rng.normal(size=d)
    fl = _linear_forget_loss(XU, yU, theta_a)
    eig = top_eigenpairs(fl.operator("ggn"), 2)
    delta0 = 0.1 * eig.vectors[:, 0]
    q = pair_quantities(eig, torch.tensor(delta0), eta)
    assert q["off_norm"] < 1e-12 and q["rho_hat"] == pytest.approx(eta * eig.values[0])
    a, b = theta_a.copy(), theta_a - delta0
    distances = []
    for _ in range(6):  # GA: θ ← θ + η ∇L(θ), ∇L = (2/k) X_Uᵀ (X_U θ − y_U)
        distances.append(float(np.mean((Xtest @ (a - b)) ** 2)))
        a = a + eta * 2 / k * XU.T @ (XU @ a - yU)
        b = b + eta * 2 / k * XU.T @ (XU @ b - yU)
    slope = log_slope(list(range(6)), distances, first=5)
    assert slope == pytest.approx(q["predicted_log_growth"], rel=1e-9)
    assert log_slope([0, 1], [0.0, 1.0]) is None  # fewer than two positive values


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_linearised_run_is_exact_on_a_linear_model(optimizer):
    rng = np.random.default_rng(1)
    XU, yU = rng.normal(size=(4, 6)), rng.normal(size=4)
    fl = _linear_forget_loss(XU, yU, rng.normal(size=6))
    run = linearised_run(fl, 5, LoopSettings(lr=0.05, optimizer=optimizer))
    assert run["linear_regime_steps"] == 5
    assert all(r["gap"] < 1e-12 for r in run["steps"])
    losses = [r["loss_real"] for r in run["steps"]]
    assert all(b > a for a, b in zip(losses, losses[1:], strict=False))  # ascent


def test_the_linearised_run_leaves_a_network_after_its_first_step(tiny_llama, one_thread):
    """On a transformer both runs take the same first step (the same gradient at θ0), then
    part: the gap is 0 after step 1 and grows."""
    from llm.curvature import forget_batches, with_eager_attention
    from llm.synthetic import safety_refusals
    from llm.tokenization import encode_examples

    model, tok = tiny_llama
    examples = encode_examples(tok, safety_refusals(4, seed=0), 64).examples
    batches = forget_batches(examples, tok.pad_token_id, torch.device("cpu"))
    fl = ForgetLoss(with_eager_attention(model), batches)
    run = linearised_run(fl, 4, LoopSettings(lr=2.0, optimizer="sgd"))
    gaps = [r["gap"] for r in run["steps"]]
    assert gaps[0] == 0 and gaps[1] < 1e-6 * run["steps"][1]["moved"]
    assert gaps[4] > gaps[3] > gaps[2] > 1e-6 * run["steps"][2]["moved"]


def _curvature_argv(model_dir, *extra: str) -> list[str]:
    return [
        "curvature", "--config", "llm/configs/tiny.toml", "--model", str(model_dir),
        "--set", f"model.path={json.dumps(str(model_dir))}", "--no-progress", *extra,
    ]  # fmt: skip


def test_curvature_command_on_the_tiny_model(tiny_models_dir, tmp_path, capsys, one_thread):
    """The command's JSON: eigenvalues largest first, the GGN's >= 0 with their sum below the
    trace estimate (a PSD operator's top-r eigenvalues sum to at most its trace), the loss
    normalisation beside them, and the printed numbers equal the file's."""
    from llm.cli import main

    out = tmp_path / "c.json"
    argv = _curvature_argv(tiny_models_dir / "llama", "--top", "4", "--n-forget", "4")
    assert main([*argv, "--trace-samples", "16", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    ggn, hess = res["ggn_eigenvalues"], res["hessian_eigenvalues"]
    assert len(ggn) == len(hess) == 4 and res["n_forget"] == 4
    assert ggn == sorted(ggn, reverse=True) and hess == sorted(hess, reverse=True)
    assert ggn[-1] > 0 and sum(ggn) <= res["ggn_trace"] + 4 * res["ggn_trace_se"]
    assert "per labelled token" in res["loss_normalisation"]
    assert res["subspace"] == "all parameters"
    printed = capsys.readouterr().out
    assert f"ggn top 4: {' '.join(f'{v:.4g}' for v in ggn)}" in printed
    assert res["products"]["ggn_lanczos"] >= 4 and res["seconds"]["ggn_lanczos"] > 0


def test_curvature_on_the_lora_subspace(tiny_models_dir, tmp_path, one_thread):
    """Under finetune.method = "lora" the operator acts on a fresh adapter's parameters (B = 0:
    the GGN is zero along A, so at most the B-block's rank is nonzero)."""
    from llm.cli import main
    from llm.config import load_config
    from llm.models import load_model
    from llm.train import attach_lora

    out = tmp_path / "lora.json"
    lora = ["--set", 'finetune.method="lora"', "--set", "finetune.lora_rank=2"]
    lora += ["--set", "finetune.lora_alpha=4"]
    argv = _curvature_argv(tiny_models_dir / "llama", "--top", "3", "--n-forget", "2", *lora)
    assert main([*argv, "--no-hessian", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    model, _ = load_model(tiny_models_dir / "llama")
    targets = load_config("llm/configs/tiny.toml").finetune.lora_targets
    adapter = attach_lora(model, 2, 4, targets=targets)
    expected = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    assert res["subspace"] == "LoRA adapter (B = 0)" and res["parameters"] == expected
    assert "hessian_eigenvalues" not in res and len(res["ggn_eigenvalues"]) == 3
