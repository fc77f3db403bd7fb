"""Pred files and RE distances (Def. 2.1) of a protocol folder.

Pred of a model is the list of per-token log-prob vectors of the held-out RE set
(:func:`llm.evaluate.evaluate_model`); it is stored flattened as one float64 ``.npy`` per
evaluated step and split back by the examples' token counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llm import distributed as D
from llm.layout import ProtocolLayout
from pathdep.io import atomic_path


def save_pred(path: Path, pred: Sequence[np.ndarray]) -> None:
    """Write Pred vectors flattened (main process only), atomically."""
    if D.current().is_main:
        flat = np.concatenate(pred) if len(pred) else np.zeros(0)
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, flat)


def load_pred(path: Path, lengths: Sequence[int]) -> list[np.ndarray]:
    """Pred vectors of a file written by :func:`save_pred`, split by ``lengths``."""
    flat = np.load(path, allow_pickle=False)
    return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []


def re_distance(pred_a: Sequence[np.ndarray], pred_b: Sequence[np.ndarray]) -> float:
    """Def. 2.1: ``(1/m) sum_i ||Pred_a(x_i) - Pred_b(x_i)||^2`` over m prompts."""
    if len(pred_a) != len(pred_b) or not len(pred_a):
        raise ValueError(f"need two equally long non-empty lists, got {len(pred_a)}, {len(pred_b)}")
    total = 0.0
    for a, b in zip(pred_a, pred_b, strict=True):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"prediction shapes differ: {np.shape(a)} vs {np.shape(b)}")
        total += float(np.sum((np.asarray(a) - np.asarray(b)) ** 2))
    return total / len(pred_a)


def re_distances(layout: ProtocolLayout, lengths: Sequence[int]) -> dict[str, Any]:
    """RE distances per method and evaluated step: between every pair of paths, and from each
    path to the retrain baseline (none when the baseline could not be trained)."""
    retrain = load_pred(layout.retrain_pred, lengths) if layout.retrain_pred.exists() else None
    runs = layout.unlearning_runs()
    methods = sorted({m for by_method in runs.values() for m in by_method})
    result: dict[str, Any] = {}
    for method in methods:
        preds = {
            p: steps
            for p, by_method in runs.items()
            if method in by_method and (steps := by_method[method].pred_steps())
        }
        common = sorted(set.intersection(*(set(v) for v in preds.values()))) if preds else []
        entry: dict[str, Any] = {"steps": common, "to_retrain": {}, "between": {}}
        for p in preds if retrain is not None else ():
            entry["to_retrain"][p] = [
                re_distance(load_pred(preds[p][t], lengths), retrain) for t in common
            ]
        names = sorted(preds)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                entry["between"][f"{a}|{b}"] = [
                    re_distance(load_pred(preds[a][t], lengths), load_pred(preds[b][t], lengths))
                    for t in common
                ]
        result[method] = entry
    return result
