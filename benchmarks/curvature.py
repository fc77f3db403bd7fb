"""Benchmark of the forget-set curvature (``llm.curvature``) on the default model, one thread.

    python benchmarks/curvature.py [--arch llama] [--top 20] [--threads 1] [--reps 5] [--tiny]

Everything is measured in this one run, on the main job's forget set (the first 16 examples of
the demo config's S_U, batch 16) and printed:

1. one product each: the forget gradient, the GGN-vector product with the forward at θ0 kept
   and J v traced between products (what Lanczos uses), the same with both recomputed per
   product, and the Hessian-vector product (double backward); the mean of ``--reps`` after one
   warm-up, each as a multiple of the gradient's time; and the first product at θ0 (the one that
   keeps the forward and traces J v);
2. the top-``--top`` GGN eigenpairs by Lanczos (``scipy.sparse.linalg.eigsh``), twice: in
   float64 at tolerance 1e-9 (the ``curvature`` command's call) and in float32 at
   ``llm.path_theory.SPAN_TOL`` (the main job's): the wall time, the number of products, the time
   inside the products and the rest (ARPACK's reorthogonalisation and restarts), and how far the
   second's eigenvalues and span are from the first's;
3. Hutchinson's trace with 32 samples.

The issue's bar: top-20 GGN eigenpairs of the default model in <= 60 s on one core.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _forget_loss(arch: str, tiny: bool):
    from llm.curvature import ForgetLoss, forget_batches, with_eager_attention
    from llm.default_models import DefaultModelConfig, ensure_default_models
    from llm.models import transformers_progress
    from llm.path_theory import forget_set, unlearned_parameters
    from llm.workspace import load_model, prepare_workspace
    from study.config import protocol_config

    config = DefaultModelConfig.tiny() if tiny else DefaultModelConfig()
    model_dir = Path(ensure_default_models(config=config, progress=False)[arch])
    cfg = protocol_config(arch, 0, tiny, model_dir)
    with tempfile.TemporaryDirectory() as unused:
        ws = prepare_workspace(cfg, Path(unused) / "out", progress=False)
    examples = forget_set(ws, 16)
    with transformers_progress(False):
        model = with_eager_attention(load_model(ws, model_dir))
    model, names = unlearned_parameters(cfg, model)
    batches = forget_batches(examples, ws.pad_id, torch.device("cpu"))
    return ForgetLoss(model, batches, names=names)


def _mean_seconds(fn, reps: int) -> float:
    fn()  # warm-up (and, for the kept forward, the forward at θ0)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.mean(times)


def main(argv: list[str] | None = None) -> None:
    from scipy.sparse.linalg import LinearOperator

    from llm.curvature import hutchinson_trace, top_eigenpairs
    from llm.path_theory import SPAN_TOL

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="llama", choices=("llama", "qwen2"))
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tiny", action="store_true", help="the tiny test model (a smoke run)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    fl = _forget_loss(args.arch, args.tiny)
    print(
        f"{args.arch}{' (tiny)' if args.tiny else ''}: {fl.dim} parameters, "
        f"{len(fl.batches)} batch(es), {int(fl.normaliser)} labelled tokens, "
        f"{torch.get_num_threads()} thread(s)"
    )

    v = torch.randn(fl.dim, dtype=fl.dtype, generator=torch.Generator().manual_seed(0))
    recomputed = type(fl)(fl.model, fl.batches, names=fl.names, keep_graph=False)
    seconds = {
        "gradient": _mean_seconds(fl.gradient, args.reps),
        "GGN product (kept at θ0)": _mean_seconds(lambda: fl.ggn_vp(v), args.reps),
        "GGN product (recomputed)": _mean_seconds(lambda: recomputed.ggn_vp(v), args.reps),
        "Hessian product": _mean_seconds(lambda: fl.hvp(v), args.reps),
    }
    print("\none product (mean of", args.reps, "after a warm-up):")
    for name, s in seconds.items():
        print(f"  {name:28s} {s:7.3f} s   {s / seconds['gradient']:5.2f} x gradient")
    kept, again = seconds["GGN product (kept at θ0)"], seconds["GGN product (recomputed)"]
    print(f"  kept forward and traced J v: {again / kept:.2f} x faster than recomputing both")

    fresh = type(fl)(fl.model, fl.batches, names=fl.names)
    t0 = time.perf_counter()
    fresh.ggn_vp(v)
    first = time.perf_counter() - t0
    print(f"  first product at θ0 (keeps the forward, traces J v): {first:.2f} s")

    eigs = {}
    for label, dtype, tol in (
        ("float64, tol 1e-9", "float64", 1e-9),
        ("float32, tol", "float32", SPAN_TOL),
    ):
        op = fl.operator("ggn", dtype=dtype)
        inside = [0.0]

        def timed(x, op=op, inside=inside):
            t0 = time.perf_counter()
            out = op.matvec(x)
            inside[0] += time.perf_counter() - t0
            return out

        t0 = time.perf_counter()
        eig = top_eigenpairs(
            LinearOperator(op.shape, matvec=timed, dtype=op.dtype), args.top, tol=tol
        )
        wall = time.perf_counter() - t0
        eigs[dtype] = (eig, wall)
        label = label if dtype == "float64" else f"float32, tol {tol:g} (the main job's)"
        print(f"\ntop-{args.top} GGN eigenpairs, {label}: {wall:.1f} s, {eig.products} products")
        print(f"  inside the products {inside[0]:.1f} s ({inside[0] / eig.products:.3f} s each)")
        print(f"  ARPACK and the rest  {wall - inside[0]:.1f} s ({(wall - inside[0]) / wall:.0%})")
        print(f"  largest {eig.values[0]:.4g}, smallest of the top {eig.values[-1]:.4g}")
        print(f"  issue bar (<= 60 s on one core): {'met' if wall <= 60 else 'NOT met'}")
    (e64, w64), (e32, w32) = eigs["float64"], eigs["float32"]
    rel = np.max(np.abs(e32.values - e64.values) / np.abs(e64.values))
    cosines = np.linalg.svd(e64.vectors.T @ e32.vectors.astype(np.float64), compute_uv=False)
    print(f"\nfloat32 at tol {SPAN_TOL:g} against float64 at 1e-9: {w64 / w32:.2f} x faster,")
    print(
        f"  eigenvalues within {rel:.1e} (relative), "
        f"span: smallest cosine 1 - {1 - cosines.min():.1e}"
    )

    t0 = time.perf_counter()
    trace, se = hutchinson_trace(fl.operator("ggn"), 32)
    took = time.perf_counter() - t0
    print(f"\nHutchinson trace, 32 samples: {trace:.4g} ± {se:.2g} in {took:.1f} s")


if __name__ == "__main__":
    main()
