"""k-nearest-neighbour baseline on CLS vectors (docs/original.md §4.2), one classifier per binary label.

scikit-learn ``KNeighborsClassifier`` with distance weights and cosine or euclidean distance; k is
chosen on the validation split by AUROC from a candidate list (capped at the training size).
"""

from __future__ import annotations

import numpy as np

from voxelfm.core.errors import DataError
from voxelfm.metrics.classification import (
    auroc,
    choose_threshold,
    metrics_at_thresholds,
)
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import ProbeData
from voxelfm.probes.tasks.common import (
    TaskOutput,
    base_predictions,
    binary_column,
    require_both_classes,
)


def knn_scores(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Probability of class 1 for every query row."""
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=k, weights="distance", metric=metric, algorithm="brute")
    clf.fit(train_x, train_y)
    proba = clf.predict_proba(query_x)
    return proba[:, list(clf.classes_).index(1)]


def fit(data: ProbeData, targets: list[str], config: ProbeConfig) -> TaskOutput:
    """Choose k on validation per label, then score the test split."""
    if not targets:
        raise DataError("kNN needs at least one --target label column")
    source = data.labels.attrs.get("source", "labels")
    x = data.features.cls if config.feature == "cls" else data.features.mean_patch()
    tr, va, te = data.rows("train"), data.rows("val"), data.rows("test")
    rows = np.r_[va, te]
    preds = base_predictions(data, rows)
    chosen, thresholds, history, probs, ys = {}, {}, [], {}, {}
    for t in targets:
        y = binary_column(data, t)
        require_both_classes(y, tr, "train", t, source)
        ks = sorted({min(k, len(tr)) for k in config.knn_k})
        best_k, best = ks[0], -np.inf
        for k in ks:
            s = knn_scores(x[tr], y[tr], x[va], k, config.knn_metric)
            try:
                score = auroc(y[va], s)
            except ValueError:
                score = float("nan")
            history.append({"probe": t, "k": k, "val_auroc": score})
            if np.isfinite(score) and score > best:
                best_k, best = k, score
        p = knn_scores(x[tr], y[tr], x[rows], best_k, config.knn_metric)
        chosen[t] = best_k
        thresholds[t] = choose_threshold(y[va], p[: len(va)], config.threshold)
        preds[t] = y[rows]
        preds[f"{t}_prob"] = p
        probs[t], ys[t] = p[len(va):], y[te]
    y_test = np.stack([ys[t] for t in targets], 1)
    p_test = np.stack([probs[t] for t in targets], 1)
    metric_fn = metrics_at_thresholds(targets, thresholds)
    return TaskOutput(
        predictions=preds, metric_fn=metric_fn, eval_ids=[data.ids[r] for r in te], eval_arrays=(y_test, p_test),
        history=history, extras={"k": chosen, "thresholds": thresholds,
                                 "roc": {t: (y_test[:, j], p_test[:, j]) for j, t in enumerate(targets)}},
    )


__all__ = ["fit", "knn_scores"]
