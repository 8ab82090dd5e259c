"""Regression metrics in the target's own units and in training-SD units.

The original code z-scored targets over the whole labelled set before splitting and reported MAE
only in SD units (docs/original.md §4.3, §9). Here the caller passes predictions back in the target's
units and the *training* standard deviation, so both are reported without test leakage.
"""

from __future__ import annotations

import numpy as np

from voxelfm.core.errors import InputValidationError


def _inputs(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise InputValidationError(f"targets ({y.size}) and predictions ({p.size}) differ in length")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        raise InputValidationError("targets or predictions contain NaN or inf")
    if y.size == 0:
        raise InputValidationError("no samples")
    return y, p


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    y, p = _inputs(y_true, y_pred)
    return float(np.mean(np.abs(y - p)))


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error."""
    y, p = _inputs(y_true, y_pred)
    return float(np.mean((y - p) ** 2))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination (sklearn's ``r2_score``); undefined for constant targets."""
    y, p = _inputs(y_true, y_pred)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot == 0.0:
        raise ValueError("R² is undefined for constant targets")
    return 1.0 - float(np.sum((y - p) ** 2)) / ss_tot


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, train_sd: float) -> dict[str, float]:
    """MAE (units and training-SD units), RMSE, MSE, R² and Pearson r."""
    y, p = _inputs(y_true, y_pred)
    if not train_sd > 0:
        raise InputValidationError(f"training standard deviation must be > 0, got {train_sd}")
    err = mae(y, p)
    out = {
        "mae": err,
        "mae_sd": err / float(train_sd),
        "mse": mse(y, p),
        "rmse": float(np.sqrt(mse(y, p))),
        "r2": r2(y, p),
    }
    if np.std(p) > 0 and np.std(y) > 0:
        out["pearson_r"] = float(np.corrcoef(y, p)[0, 1])
    return out


__all__ = ["mae", "mse", "r2", "regression_metrics"]
