"""The linear theory's quantities measured on a protocol's LLM checkpoints, and its predictions
tested against what the protocol measured.

Theorem 3.1 (paper Sec. 3) reads, for two models θ_i, θ_j trained on the same stages in other
orders and unlearned by gradient ascent: Δθ_t = (I + A)^t Δθ_0 with A = η M_U the effective step
on the forget set's curvature, so the part of Δθ_0 in the forget span grows like (1 + ρ*)^t and
the rest never moves; the RE distance grows like (1 + ρ*)^{2t}. On an LLM protocol folder
(:func:`analyse_protocol`), per architecture and seed:

- the forget curvature G: the GGN of the forget loss (:mod:`llm.curvature`) at the centroid of
  the path models, its top-r eigenpairs (V, λ);
- per pair of paths: Δθ_0 = θ_i − θ_j, its component V Vᵀ Δθ_0 in the top-r forget span and the
  rest, ρ̂ = uᵀ A u / uᵀ u along u = V Vᵀ Δθ_0 for the unlearning step A = η D G, where D is the
  optimizer's preconditioning: 1 for SGD; for AdamW (the demo's unlearning) its step divides by
  the square root of the second moment, ~|g| at the first steps, so D = diag(1 / (|g| + ε)) with
  g the forget gradient at the centroid; the predicted growth of ln d per step, 2 ln(1 + ρ̂);
  and the measured growth, the least-squares slope of ln d(t) between the two paths under GA over
  the first evaluated steps (``re_distance.json``);
- per path: the forget loss and gradient at its checkpoint, the gradient's norm inside the top-r
  span (the recency explanation: the stage learned last leaves the smallest forget residual),
  against the path's measured forgetting (the drop of the label log-prob under GA);
- per path: a linearised run: GA with the protocol's optimizer on the first-order Taylor model of
  the network around its checkpoint, beside the same GA on the network itself; the regime of the
  linear theory holds while the two stay within 10% of how far the real run has moved.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm.curvature import (
    CurvatureError,
    ForgetLoss,
    forget_batches,
    hutchinson_trace,
    top_eigenpairs,
    with_eager_attention,
)

GROWTH_STEPS = 4  # evaluated GA steps of the measured log-slope (the theory's early regime)
# ARPACK's relative tolerance for the pair quantities' eigenpairs, which it computes in the
# model's precision (float32; float64 for other models): on the default models this is 53
# products instead of 64 at 1e-9 in float64, 1.7x faster, and leaves the eigenvalues within 1e-6
# (relative) and the span within 1e-6 (smallest principal cosine) of float64's
# (benchmarks/curvature.py, docs/theory_llm.md "Cost").
SPAN_TOL = 1e-4
LINEAR_TOLERANCE = 0.1  # linearised and real runs agree while within 10% of the real movement
ADAM_EPS = 1e-8
LOSS_NORMALISATION = (
    "mean token NLL: the summed NLL of the labelled (response) tokens of the forget examples "
    "divided by their number, so eigenvalues and trace are per labelled token"
)


def _ga_method(cfg) -> Any:
    """The config's plain gradient ascent method (None if it has none)."""
    for m in cfg.unlearn.methods:
        if m.objective == "ga" and m.retain_weight == 0:
            return m
    return None


def log_slope(steps: list[int], values: list[float], first: int = GROWTH_STEPS) -> float | None:
    """Least-squares slope of ln(value) against step over the first ``first`` + 1 evaluated
    steps (None when fewer than two positive values)."""
    pts = [(s, math.log(v)) for s, v in zip(steps, values, strict=True) if v > 0][: first + 1]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


def pair_quantities(
    eig, delta0: torch.Tensor, lr: float, precond: torch.Tensor | None = None
) -> dict[str, float]:
    """Theorem 3.1's quantities of one pair (see the module docstring): ``rho_hat`` and
    ``predicted_log_growth`` for the step lr·G (plain gradient ascent, the theory's), and with
    ``precond`` also ``rho_hat_preconditioned`` / ``predicted_log_growth_preconditioned`` for
    lr·D·G."""
    V = torch.as_tensor(eig.vectors, dtype=torch.float64)  # (n, r)
    lam = torch.as_tensor(eig.values, dtype=torch.float64)  # (r,)
    d = delta0.double()
    coeff = V.T @ d  # (r,)
    proj = V @ coeff  # the component in the top-r forget span
    norm, proj_norm = float(d.norm()), float(proj.norm())
    g_proj = V @ (lam * coeff)  # G proj, exact within the span

    def rho(step: torch.Tensor) -> float:
        return lr * float(proj @ step) / float(proj @ proj) if proj_norm > 0 else 0.0

    out = {
        "delta0_norm": norm,
        "proj_norm": proj_norm,
        "off_norm": float((d - proj).norm()),
        "proj_fraction": proj_norm / norm if norm > 0 else 0.0,
        "rho_hat": rho(g_proj),
    }
    out["predicted_log_growth"] = _log_growth(out["rho_hat"])
    if precond is not None:
        out["rho_hat_preconditioned"] = rho(precond.double() * g_proj)
        out["predicted_log_growth_preconditioned"] = _log_growth(out["rho_hat_preconditioned"])
    return out


def _log_growth(rho: float) -> float | None:
    # ln d grows by 2 ln(1 + rho) per step; no growth rate when the step flips the direction.
    return 2.0 * math.log1p(rho) if rho > -1 else None


def linearised_run(fl: ForgetLoss, steps: int, settings) -> dict[str, Any]:
    """GA on the network and on its first-order Taylor model around ``fl.theta0``, with the
    unlearning's optimizer (``settings``: :class:`llm.loop.LoopSettings`, constant lr, no
    clipping) on the same data, full batch; per step the forget loss of each and their
    parameter distance."""
    from llm.loop import make_optimizer

    real = fl.theta0.clone().requires_grad_(True)
    lin = fl.theta0.clone().requires_grad_(True)
    opt_real, opt_lin = make_optimizer([real], settings), make_optimizer([lin], settings)
    rows = []
    for t in range(steps + 1):
        loss_real = sum(fl.loss_of_outputs(fl.outputs(real, b), b) for b in fl.batches)
        loss_lin = sum(fl.loss_of_outputs(fl.linearised_outputs(lin, b), b) for b in fl.batches)
        moved = float((real.detach() - fl.theta0).norm())
        gap = float((real.detach() - lin.detach()).norm())
        rows.append(
            {
                "step": t,
                "loss_real": float(loss_real.detach()),
                "loss_linear": float(loss_lin.detach()),
                "moved": moved,
                "gap": gap,
                "relative_gap": gap / moved if moved > 0 else 0.0,
            }
        )
        if t == steps:
            break
        for opt, loss in ((opt_real, loss_real), (opt_lin, loss_lin)):
            opt.zero_grad()
            (-loss).backward()  # gradient ascent on the forget loss
            opt.step()
    holds = 0
    for r in rows[1:]:
        if r["relative_gap"] > LINEAR_TOLERANCE:
            break
        holds = r["step"]
    return {"steps": rows, "linear_regime_steps": holds, "tolerance": LINEAR_TOLERANCE}


def unlearned_parameters(cfg, model: torch.nn.Module, seed: int = 0):
    """(model, names): the parameters the config's unlearning moves, in which the curvature is
    measured: every parameter under full fine-tuning, a fresh LoRA adapter (the config's rank,
    alpha and targets; B = 0 as at the start of unlearning) under ``finetune.method = "lora"``."""
    from llm.config import lora_shape
    from llm.train import attach_lora

    if cfg.finetune.method != "lora":
        for q in model.parameters():
            q.requires_grad_(True)
        return model, [n for n, _ in model.named_parameters()]
    rank, alpha = lora_shape(cfg)
    model = attach_lora(model, rank, alpha, 0.0, cfg.finetune.lora_targets, seed)
    return model, [n for n, q in model.named_parameters() if q.requires_grad]


def forget_set(ws, n_forget: int) -> list:
    """The first ``n_forget`` tokenised examples of the config's forget stage."""
    if n_forget < 1:
        raise CurvatureError(f"n_forget must be >= 1, got {n_forget}")
    return ws.tokenized(ws.cfg.paths.forget_stage)[:n_forget]


def checkpoint_curvature(
    cfg,
    model_dir: str | Path,
    *,
    top: int = 20,
    n_forget: int = 16,
    trace_samples: int = 32,
    hessian: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """The forget loss's curvature at one checkpoint (``python -m llm curvature``): the top
    ``top`` eigenvalues of its GGN and (with ``hessian``) of its Hessian, largest first, and
    Hutchinson's estimate of the GGN's trace, in the parameters the config's unlearning moves
    (:func:`unlearned_parameters`), on the first ``n_forget`` examples of the config's forget set.
    Everything is checked before the first product; nothing is written."""
    import tempfile

    from llm.models import transformers_progress
    from llm.workspace import load_model, prepare_workspace

    if trace_samples < 2:
        raise CurvatureError(f"trace_samples must be >= 2, got {trace_samples}")
    with tempfile.TemporaryDirectory() as unused:  # prepare_workspace checks and writes nothing
        ws = prepare_workspace(cfg, Path(unused) / "out", progress=False)
    examples = forget_set(ws, n_forget)
    with transformers_progress(progress):
        model = with_eager_attention(load_model(ws, Path(model_dir)))
    model, names = unlearned_parameters(cfg, model)
    device = next(model.parameters()).device
    fl = ForgetLoss(model, forget_batches(examples, ws.pad_id, device), names=names)
    if not 1 <= top < fl.dim:
        raise CurvatureError(f"--top {top}: need 1 <= top < the {fl.dim} parameters")
    seconds: dict[str, float] = {}
    products: dict[str, int] = {}
    out: dict[str, Any] = {
        "model": str(model_dir),
        "forget_stage": cfg.paths.forget_stage,
        "n_forget": len(examples),
        "labelled_tokens": int(fl.normaliser),
        "parameters": fl.dim,
        "subspace": "LoRA adapter (B = 0)" if cfg.finetune.method == "lora" else "all parameters",
        "loss_normalisation": LOSS_NORMALISATION,
        "forget_loss": fl.value(),
        "top": top,
    }
    for kind in ("ggn", "hessian") if hessian else ("ggn",):
        t0 = time.perf_counter()
        eig = top_eigenpairs(fl.operator(kind), top, progress=progress)
        seconds[f"{kind}_lanczos"] = time.perf_counter() - t0
        products[f"{kind}_lanczos"] = eig.products
        out[f"{kind}_eigenvalues"] = eig.values.tolist()
    t0 = time.perf_counter()
    trace, se = hutchinson_trace(fl.operator("ggn"), trace_samples, progress=progress)
    seconds["ggn_trace"] = time.perf_counter() - t0
    products["ggn_trace"] = trace_samples
    out.update(ggn_trace=trace, ggn_trace_se=se, trace_samples=trace_samples)
    out.update(products=products, seconds=seconds)
    return out


def analyse_protocol(
    cfg,
    folder: str | Path,
    *,
    top: int = 20,
    n_forget: int = 16,
    linear_steps: int = 6,
    progress: bool = False,
) -> dict[str, Any]:
    """The theory's quantities on a finished protocol folder (read: paths.json, re_distance.json,
    the runs' metrics, the stage cache); returns the JSON-able numbers."""
    from llm.layout import ProtocolLayout
    from llm.report import load_runs
    from llm.stage_cache import ensure_prefix
    from llm.unlearn import unlearn_settings
    from llm.workspace import load_model, prepare_workspace

    started = time.perf_counter()
    layout = ProtocolLayout(Path(folder))
    method = _ga_method(cfg)
    if method is None:
        raise CurvatureError(
            "the theory's predictions are about gradient ascent: the config has no method with "
            "objective = 'ga' and retain_weight = 0"
        )
    if cfg.finetune.method == "lora":
        # Every path starts unlearning from a fresh adapter (B = 0): the paths differ in the
        # frozen base weights, not in the parameters GA moves, so the theorem's Δθ0 is 0 there.
        raise CurvatureError(
            "the pair quantities need full fine-tuning (finetune.method = 'full'); under LoRA the "
            "paths differ only in frozen weights"
        )
    if not layout.re_distance.is_file():
        raise CurvatureError(f"{layout.root}: no finished protocol (no re_distance.json)")
    ws = prepare_workspace(cfg, layout.root, progress=False)
    sequences = json.loads(layout.paths_json.read_text())["paths"]
    settings = unlearn_settings(method, cfg.unlearn, cfg.finetune)
    lr, optimizer = settings.lr, settings.optimizer
    examples = forget_set(ws, n_forget)
    models = {p: load_model(ws, ensure_prefix(ws, tuple(seq))) for p, seq in sequences.items()}
    names = [n for n, _ in next(iter(models.values())).named_parameters()]
    flat = {
        p: torch.cat([dict(m.named_parameters())[n].detach().reshape(-1) for n in names])
        for p, m in models.items()
    }
    centroid = torch.stack(list(flat.values())).mean(0)  # (n,)
    first = sorted(sequences)[0]
    ref = with_eager_attention(load_model(ws, ensure_prefix(ws, tuple(sequences[first]))))
    batches = forget_batches(examples, ws.pad_id, next(ref.parameters()).device)
    fl = ForgetLoss(ref, batches, names=names)
    fl.theta0 = centroid.to(fl.dtype)  # the curvature at the centroid of the paths
    t0 = time.perf_counter()
    # The span and ρ̂ need the eigenpairs, not 1e-9 eigenvalues: Lanczos runs in the model's own
    # precision at ARPACK's relative tolerance SPAN_TOL (see its definition for what that costs).
    op = fl.operator("ggn", dtype=np.float32 if fl.dtype == torch.float32 else np.float64)
    eig = top_eigenpairs(op, top, tol=SPAN_TOL, progress=progress)
    lanczos_seconds = time.perf_counter() - t0
    grad = fl.gradient()
    precond = None if optimizer == "sgd" else 1.0 / (grad.abs() + ADAM_EPS)

    runs = load_runs(layout.root)
    re = json.loads(layout.re_distance.read_text()).get(method.name, {})
    pairs = {}
    for a, b in itertools.combinations(sorted(sequences), 2):
        q = pair_quantities(eig, flat[a] - flat[b], lr, precond)
        curve = re.get("between", {}).get(f"{a}|{b}")
        q["measured_log_growth"] = log_slope(re.get("steps", []), curve) if curve else None
        pairs[f"{a}|{b}"] = q

    V = torch.as_tensor(eig.vectors, dtype=fl.dtype)
    paths = {}
    for p in sorted(sequences):
        path_fl = ForgetLoss(with_eager_attention(models[p]), batches, names=names)
        g = path_fl.gradient()
        recs = runs.get(p, {}).get(method.name)
        paths[p] = {
            "forget_loss": path_fl.value(),
            "gradient_norm": float(g.norm()),
            "gradient_in_span": float((V.T @ g).norm()),
            "label_drop": float(recs[0]["label"] - recs[-1]["label"]) if recs else None,
            "linearised": linearised_run(path_fl, linear_steps, settings),
        }
    return {
        "top": top,
        "n_forget": len(examples),
        "loss": "mean NLL over the labelled tokens of the first n_forget forget examples",
        "reference": "GGN at the centroid of the path models (the mean of their parameters)",
        "optimizer": optimizer,
        "lr": lr,
        "preconditioner": "none (SGD)"
        if precond is None
        else "AdamW: diag(1/(|g| + 1e-8)), g = forget gradient at the centroid",
        "ggn_eigenvalues": eig.values.tolist(),
        "lanczos_products": eig.products,
        "lanczos_seconds": lanczos_seconds,
        "pairs": pairs,
        "paths": paths,
        "seconds": time.perf_counter() - started,
    }
