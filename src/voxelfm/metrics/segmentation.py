"""Dice per class, macro and micro, as the original segmentation evaluation (docs/original.md §4.7).

Per scan and class: ``(2|P∩T| + eps) / (|P| + |T| + eps)`` on argmax label maps, background (0)
ignored, NaN when the class is absent from both prediction and truth (skipped in means).
Macro = mean over classes of each class's mean over scans; micro = mean of all (scan, class) Dice
values weighted by the class's ground-truth voxel count in that scan.
"""

from __future__ import annotations

import numpy as np

from voxelfm.core.errors import InputValidationError

EPS = 1e-6


def dice_per_class(pred: np.ndarray, target: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Dice of classes ``1..num_classes-1`` for one scan, and their ground-truth voxel counts."""
    p = np.asarray(pred).ravel().astype(np.int64)
    t = np.asarray(target).ravel().astype(np.int64)
    if p.shape != t.shape:
        raise InputValidationError(f"prediction {np.shape(pred)} and target {np.shape(target)} differ in shape")
    k = int(num_classes)
    # One joint histogram gives every intersection and size at once.
    joint = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    inter = np.diag(joint)[1:].astype(np.float64)
    size_t = joint.sum(1)[1:].astype(np.float64)
    size_p = joint.sum(0)[1:].astype(np.float64)
    dice = (2.0 * inter + EPS) / (size_p + size_t + EPS)
    dice[(size_p + size_t) == 0] = np.nan
    return dice, size_t


def aggregate_dice(dice: np.ndarray, gt_counts: np.ndarray, names: list[str] | None = None) -> dict[str, float]:
    """Macro, micro and per-class Dice from per-scan ``(S, K)`` Dice values and GT counts."""
    d = np.asarray(dice, dtype=np.float64)
    w = np.asarray(gt_counts, dtype=np.float64)
    if d.ndim != 2 or d.shape != w.shape:
        raise InputValidationError(f"Dice and counts must both be (scans, classes); got {d.shape}, {w.shape}")
    valid = np.isfinite(d)
    if not valid.any():
        raise ValueError("no class is present in any scan")
    n_valid = valid.sum(0)
    sums = np.where(valid, d, 0.0).sum(0)
    per_class = np.where(n_valid > 0, sums / np.maximum(n_valid, 1), np.nan)
    out: dict[str, float] = {"dice_macro": float(np.nanmean(per_class))}
    weights = np.where(valid, w, 0.0)
    out["dice_micro"] = float(np.sum(np.where(valid, d, 0.0) * weights) / weights.sum()) if weights.sum() > 0 else float("nan")
    names = names or [f"class{i + 1}" for i in range(d.shape[1])]
    for name, value in zip(names, per_class, strict=True):
        if np.isfinite(value):
            out[f"dice/{name}"] = float(value)
    return out


__all__ = ["aggregate_dice", "dice_per_class"]
