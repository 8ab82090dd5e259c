"""Classification metrics: binary, multi-label (macro over labels) and multi-class.

AUROC and average precision are computed with vectorised numpy (rank statistics and a single sort)
because the bootstrap evaluates them thousands of times; the tests check them against
scikit-learn on the same inputs. F1 is reported at 0.5 and at a threshold chosen on the
validation split (never on test).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from voxelfm.core.errors import InputValidationError


def _binary_inputs(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise InputValidationError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise InputValidationError("binary labels must be 0 or 1")
    if not np.all(np.isfinite(s)):
        raise InputValidationError("scores contain NaN or inf")
    return y.astype(bool), s


def _midranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their mean rank (scipy's ``rankdata``, minus its per-call
    overhead, which dominated bootstraps of small test sets)."""
    order = np.argsort(s, kind="mergesort")
    ordered = s[order]
    bounds = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1], [True])))
    mean_rank = (bounds[:-1] + bounds[1:] + 1) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, np.diff(bounds))
    return ranks


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC is undefined with only one class present")
    ranks = _midranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties; = sklearn's value)."""
    return _auroc(*_binary_inputs(y_true, score))


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("average precision is undefined without positives")
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    tp = np.cumsum(y[order])
    # Evaluate only at the last position of each group of tied scores (one threshold per value).
    last = np.append(np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.size - 1)
    tp = tp[last].astype(np.float64)
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as step sum (sklearn's ``average_precision_score``)."""
    return _average_precision(*_binary_inputs(y_true, score))


def _f1_at(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    pred = s >= threshold
    tp = float(np.sum(pred & y))
    denom = float(pred.sum() + y.sum())
    return 0.0 if denom == 0 else 2.0 * tp / denom


def f1_at(y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of the positive class for predictions ``score >= threshold`` (0 when nothing is predicted)."""
    return _f1_at(*_binary_inputs(y_true, score), threshold)


def _balanced_accuracy_at(y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    if y.all() or not y.any():
        raise ValueError("balanced accuracy needs both classes")
    pred = s >= threshold
    sens = float(np.mean(pred[y]))
    spec = float(np.mean(~pred[~y]))
    return 0.5 * (sens + spec)


def balanced_accuracy_at(y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> float:
    """Mean of sensitivity and specificity for predictions ``score >= threshold``."""
    return _balanced_accuracy_at(*_binary_inputs(y_true, score), threshold)


def choose_threshold(y_val: np.ndarray, score_val: np.ndarray, criterion: str = "f1") -> float:
    """Threshold maximising F1 (``"f1"``) or Youden's J (``"youden"``) on validation data."""
    y, s = _binary_inputs(y_val, score_val)
    if y.all() or not y.any():
        return 0.5  # nothing to choose from; fall back to the conventional threshold
    candidates = np.unique(s)
    pred = s[None, :] >= candidates[:, None]
    tp = (pred & y[None, :]).sum(1).astype(np.float64)
    fp = (pred & ~y[None, :]).sum(1).astype(np.float64)
    if criterion == "f1":
        value = 2 * tp / (pred.sum(1) + y.sum())
    elif criterion == "youden":
        value = tp / y.sum() - fp / (~y).sum()
    else:
        raise InputValidationError(f"unknown threshold criterion {criterion!r} (use 'f1' or 'youden')")
    return float(candidates[int(np.argmax(value))])


def hanley_mcneil_ci(auc: float, n_pos: int, n_neg: int, z: float = 1.959964) -> tuple[float, float]:
    """Hanley-McNeil analytic CI of an AUROC (the original code's interval; for parity only)."""
    q1 = auc / (2.0 - auc)
    q2 = 2.0 * auc**2 / (1.0 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    se = math.sqrt(max(var, 0.0))
    return max(0.0, auc - z * se), min(1.0, auc + z * se)


def binary_metrics(y_true: np.ndarray, score: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUROC, AUPRC, F1 and balanced accuracy at 0.5 and at ``threshold`` (validation-chosen)."""
    y, s = _binary_inputs(y_true, score)  # validated once: the bootstrap calls this thousands of times
    return {
        "auroc": _auroc(y, s),
        "auprc": _average_precision(y, s),
        "f1@0.5": _f1_at(y, s, 0.5),
        "f1@val": _f1_at(y, s, threshold),
        "balanced_accuracy@0.5": _balanced_accuracy_at(y, s, 0.5),
        "balanced_accuracy@val": _balanced_accuracy_at(y, s, threshold),
    }


def multilabel_metrics(
    y_true: np.ndarray, score: np.ndarray, thresholds: np.ndarray | None = None,
    names: list[str] | None = None,
) -> dict[str, float]:
    """Per-label binary metrics (``<name>/<metric>``) and their macro mean (``macro/<metric>``).

    Labels whose metric is undefined on these rows (one class only) are left out of the macro mean.
    """
    y = np.asarray(y_true)
    s = np.asarray(score, dtype=np.float64)
    if y.ndim != 2 or y.shape != s.shape:
        raise InputValidationError(f"multi-label inputs must both be (N, L); got {y.shape} and {s.shape}")
    n_labels = y.shape[1]
    names = names or [f"label{i}" for i in range(n_labels)]
    thr = np.full(n_labels, 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    out: dict[str, float] = {}
    per_metric: dict[str, list[float]] = {}
    for j, name in enumerate(names):
        try:
            m = binary_metrics(y[:, j], s[:, j], float(thr[j]))
        except ValueError:
            continue
        for k, v in m.items():
            out[f"{name}/{k}"] = v
            per_metric.setdefault(k, []).append(v)
    if not per_metric:
        raise ValueError("no label has both classes present")
    for k, values in per_metric.items():
        out[f"macro/{k}"] = float(np.mean(values))
    return out


class ThresholdMetrics:
    """``(y (N, L), score (N, L)) -> metrics``: binary metrics for one target, multi-label metrics
    for several, each at its own (validation-chosen) threshold.

    ``over_resamples`` gives the same numbers for many bootstrap resamples at once
    (:mod:`voxelfm.metrics.resampled`); :func:`voxelfm.metrics.bootstrap.bootstrap_metrics` uses it.
    """

    def __init__(self, targets: Sequence[str], thresholds: Mapping[str, float]) -> None:
        self.names = list(targets)
        self.thresholds = np.array([thresholds[t] for t in self.names], dtype=np.float64)

    def __call__(self, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        if len(self.names) == 1:
            return binary_metrics(y[:, 0], p[:, 0], float(self.thresholds[0]))
        return multilabel_metrics(y, p, self.thresholds, self.names)

    def over_resamples(self, arrays: Sequence[np.ndarray], indices: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric on every row of ``indices`` ``(R, N)``; NaN where a resample's call would fail."""
        from voxelfm.metrics.resampled import binary_over_resamples, multilabel_over_resamples

        y, p = arrays
        if len(self.names) == 1:
            return binary_over_resamples(y[:, 0], p[:, 0], indices, float(self.thresholds[0]))
        return multilabel_over_resamples(y, p, indices, self.thresholds, self.names)


def metrics_at_thresholds(targets: Sequence[str], thresholds: Mapping[str, float]) -> ThresholdMetrics:
    """A ``(y (N, L), score (N, L)) -> metrics`` function: binary metrics for one target,
    multi-label metrics for several, each at its own (validation-chosen) threshold."""
    return ThresholdMetrics(targets, thresholds)


def multiclass_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Macro one-vs-rest AUROC and AUPRC, macro F1, balanced accuracy and accuracy (argmax)."""
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise InputValidationError(f"multi-class probabilities must be (N, K); got {p.shape} for {y.size} labels")
    k = p.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise InputValidationError(f"class indices must lie in [0, {k - 1}]")
    present = np.unique(y)
    if present.size < 2:
        raise ValueError("multi-class metrics need at least two classes present")
    pred = p.argmax(1)
    aurocs, auprcs, f1s, recalls = [], [], [], []
    for c in range(k):
        yc = y == c
        if yc.any() and not yc.all():
            aurocs.append(auroc(yc, p[:, c]))
            auprcs.append(average_precision(yc, p[:, c]))
        tp = np.sum((pred == c) & yc)
        denom = np.sum(pred == c) + yc.sum()
        if yc.any():
            recalls.append(tp / yc.sum())
        if denom > 0:
            f1s.append(2.0 * tp / denom)
        elif yc.any():
            f1s.append(0.0)
    return {
        "auroc": float(np.mean(aurocs)),
        "auprc": float(np.mean(auprcs)),
        "f1_macro": float(np.mean(f1s)),
        "balanced_accuracy": float(np.mean(recalls)),
        "accuracy": float(np.mean(pred == y)),
    }


def roc_curve_points(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) points of the ROC curve, for plotting."""
    from sklearn.metrics import roc_curve

    y, s = _binary_inputs(y_true, score)
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


__all__ = [
    "ThresholdMetrics",
    "auroc",
    "average_precision",
    "balanced_accuracy_at",
    "binary_metrics",
    "choose_threshold",
    "f1_at",
    "hanley_mcneil_ci",
    "multiclass_metrics",
    "multilabel_metrics",
    "roc_curve_points",
]
