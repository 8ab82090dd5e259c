"""Binary and multi-label classification metrics of many bootstrap resamples at once.

``bootstrap_metrics`` used to call :func:`voxelfm.metrics.classification.binary_metrics` once per
label per resample: 15 findings x 1,000 resamples was ~6 CPU-s per probe and twice that per paired
comparison, nearly all of it numpy call overhead on 60-row arrays. Here every resample is a row of
an ``(R, n)`` array and each metric is one array expression over all rows, with the same
arithmetic as the per-call functions: rank sums, counts and ratios of integers are exact, and the
sums that are not (average precision, the macro means) are taken row by row with the same numpy
reduction, so every resample's value is bit-identical to the per-call one (tests/metrics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Metric names of :func:`voxelfm.metrics.classification.binary_metrics`, in its order.
BINARY_KEYS = ("auroc", "auprc", "f1@0.5", "f1@val", "balanced_accuracy@0.5", "balanced_accuracy@val")
#: Resample rows processed together (bounds the memory of large test sets).
_ELEMENTS_PER_BLOCK = 1_000_000


def _auroc_rows(y: np.ndarray, s: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC with mid-ranks per row (the mid-rank sums of half-integers are exact)."""
    n = s.shape[1]
    order = np.argsort(s, axis=1, kind="mergesort")
    ordered = np.take_along_axis(s, order, axis=1)
    y_sorted = np.take_along_axis(y, order, axis=1)
    pos = np.arange(n)
    starts = np.ones_like(ordered, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)  # start of each tie group
    ends = np.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    last = np.minimum.accumulate(np.where(ends, pos, n)[:, ::-1], axis=1)[:, ::-1]
    mean_rank = (first + (last + 1) + 1) / 2.0
    rank_sum = np.where(y_sorted, mean_rank, 0.0).sum(1)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _average_precision_rows(y: np.ndarray, s: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """Step-sum average precision per row, evaluated at the last position of each tied score."""
    n = s.shape[1]
    order = np.argsort(-s, axis=1, kind="mergesort")
    s_sorted = np.take_along_axis(s, order, axis=1)
    tp = np.cumsum(np.take_along_axis(y, order, axis=1), axis=1).astype(np.float64)
    pos = np.arange(n)
    is_last = np.ones_like(s_sorted, dtype=bool)
    is_last[:, :-1] = s_sorted[:, 1:] != s_sorted[:, :-1]
    fp = (pos + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos[:, None]
    # recall at the previous group's last position (0 before the first group)
    starts = np.ones_like(is_last)
    starts[:, 1:] = is_last[:, :-1]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    prev = np.where(first > 0, np.take_along_axis(recall, np.maximum(first - 1, 0), axis=1), 0.0)
    terms = (recall - prev) * precision
    return np.array([np.sum(terms[r][is_last[r]]) for r in range(len(terms))])


def _binary_rows(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    n = y.shape[1]
    n_pos = y.sum(1)
    n_neg = n - n_pos
    defined = (n_pos > 0) & (n_neg > 0)
    out = {k: np.full(len(y), np.nan) for k in BINARY_KEYS}
    if not defined.any():
        return out
    y, s, n_pos, n_neg = y[defined], s[defined], n_pos[defined], n_neg[defined]
    values = {"auroc": _auroc_rows(y, s, n_pos, n_neg), "auprc": _average_precision_rows(y, s, n_pos)}
    for name, thr in (("0.5", 0.5), ("val", threshold)):
        pred = s >= thr
        tp = (pred & y).sum(1)
        denom = pred.sum(1) + n_pos
        with np.errstate(invalid="ignore", divide="ignore"):
            values[f"f1@{name}"] = np.where(denom == 0, 0.0, 2.0 * tp.astype(np.float64) / denom)
        sens = tp / n_pos
        spec = (~pred & ~y).sum(1) / n_neg
        values[f"balanced_accuracy@{name}"] = 0.5 * (sens + spec)
    for k, v in values.items():
        out[k][defined] = v
    return out


def _blocks(n_resamples: int, n: int) -> list[slice]:
    size = max(1, _ELEMENTS_PER_BLOCK // max(n, 1))
    return [slice(a, min(a + size, n_resamples)) for a in range(0, n_resamples, size)]


def binary_over_resamples(y_true: np.ndarray, score: np.ndarray, indices: np.ndarray,
                          threshold: float = 0.5) -> dict[str, np.ndarray]:
    """``binary_metrics(y[idx], score[idx], threshold)`` for every row ``idx`` of ``indices``
    ``(R, n)``; a resample with one class only is NaN in every metric (where the call raises)."""
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    out = {k: np.empty(len(indices)) for k in BINARY_KEYS}
    for block in _blocks(len(indices), len(y)):
        idx = indices[block]
        for k, v in _binary_rows(y[idx], s[idx], threshold).items():
            out[k][block] = v
    return out


def multilabel_over_resamples(y_true: np.ndarray, score: np.ndarray, indices: np.ndarray,
                              thresholds: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``multilabel_metrics`` for every row of ``indices``: per-label metrics (NaN where a label has
    one class in the resample) and their macro means over the labels defined in that resample,
    taken with ``np.mean`` per row as the per-call function does; NaN everywhere when none is."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    per_label = [binary_over_resamples(y[:, j], s[:, j], indices, float(thresholds[j])) for j in range(len(names))]
    for name, metrics in zip(names, per_label, strict=True):
        for k in BINARY_KEYS:
            out[f"{name}/{k}"] = metrics[k]
    defined = np.stack([np.isfinite(m["auroc"]) for m in per_label], axis=1)  # (R, L)
    none = ~defined.any(1)
    for k in BINARY_KEYS:
        values = np.stack([m[k] for m in per_label], axis=1)
        out[f"macro/{k}"] = np.array([np.mean(values[r][defined[r]]) if not none[r] else np.nan
                                      for r in range(len(values))])
    if none.any():  # the per-call function raises for such a resample: every metric is missing
        for v in out.values():
            v[none] = np.nan
    return out


__all__ = ["BINARY_KEYS", "binary_over_resamples", "multilabel_over_resamples"]
