"""Localisation metrics: Euclidean error in normalised grid units and in millimetres, hit rate.

The original reported the mean Euclidean distance in normalised crop coordinates only (docs/original.md §4.6);
millimetres are what a reader can interpret, so both are reported.
"""

from __future__ import annotations

import numpy as np

from voxelfm.core.errors import InputValidationError


def euclidean_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-sample Euclidean distance between ``(N, 3)`` predicted and true points."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 2 or p.shape[1] != 3:
        raise InputValidationError(f"points must both be (N, 3); got {p.shape} and {t.shape}")
    return np.linalg.norm(p - t, axis=1)


def localisation_metrics(
    pred_norm: np.ndarray, true_norm: np.ndarray, pred_mm: np.ndarray, true_mm: np.ndarray,
    radius_mm: float = 10.0,
) -> dict[str, float]:
    """Mean error (normalised and mm), median error (mm) and hit rate within ``radius_mm``."""
    e_norm = euclidean_errors(pred_norm, true_norm)
    e_mm = euclidean_errors(pred_mm, true_mm)
    return {
        "mean_error_norm": float(e_norm.mean()),
        "mean_error_mm": float(e_mm.mean()),
        "median_error_mm": float(np.median(e_mm)),
        f"hit_rate@{radius_mm:g}mm": float(np.mean(e_mm <= radius_mm)),
    }


__all__ = ["euclidean_errors", "localisation_metrics"]
