"""Classification probes: binary, multi-label (per-label probes or one shared head), multi-class.

Recipe (docs/original.md §4.1): BCE (CE for multi-class), class-balanced batches, embedding noise σ 0.1, AdamW at a
constant lr 1e-3, fixed epochs, best validation AUROC. Test metrics: AUROC, AUPRC, F1 and balanced
accuracy at 0.5 and at the threshold that maximised F1 (or Youden's J) on validation.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from voxelfm.core.errors import DataError, located
from voxelfm.metrics.classification import (
    auroc,
    choose_threshold,
    metrics_at_thresholds,
    multiclass_metrics,
    multilabel_metrics,
)
from voxelfm.probes.batching import balanced_batches, shuffled_batches
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import ProbeData
from voxelfm.probes.tasks.common import (
    Inputs,
    TaskOutput,
    base_predictions,
    binary_column,
    forward,
    make_head,
    predict,
    require_both_classes,
)
from voxelfm.probes.trainer import train

log = logging.getLogger(__name__)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _is_multiclass(data: ProbeData, targets: list[str]) -> bool:
    if len(targets) != 1:
        return False
    values = data.labels[targets[0]].dropna().unique()
    try:
        return not set(pd.to_numeric(pd.Series(values))).issubset({0, 1})
    except (ValueError, TypeError):
        return True


def _train_binary(data: ProbeData, inputs: Inputs, y: np.ndarray, config: ProbeConfig, name: str
                  ) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    """Train one binary probe; returns (model, head spec, history)."""
    source = data.labels.attrs.get("source", "labels")
    tr, va = data.rows("train"), data.rows("val")
    require_both_classes(y, tr, "train", name, source)
    model, spec = make_head(config.head, data.features.dim, 1, config.head_params, seed=config.train.seed)
    y_t = torch.as_tensor(y, dtype=torch.float32)
    bs = config.train.batch_size
    val_has_both = 0 < y[va].sum() < len(va)
    if not val_has_both:
        log.warning("%s: %r has one class in the validation split; selecting on validation loss", source, name)

    def batches(rng: np.random.Generator):
        sampler = balanced_batches(tr, y[tr], bs, rng, config.balance) if config.balanced else shuffled_batches(tr, bs, rng)
        for rows in sampler:
            yield {**inputs.batch(rows), "y": y_t[rows]}

    def loss_fn(m, batch):
        return F.binary_cross_entropy_with_logits(forward(m, batch).squeeze(-1), batch["y"])

    def validate(m):
        logits = predict(m, inputs, va).reshape(-1)
        out = {"loss": float(F.binary_cross_entropy_with_logits(torch.from_numpy(logits), y_t[va]))}
        if val_has_both:
            out["auroc"] = auroc(y[va], logits)
        return out

    result = train(model, batches=batches, loss_fn=loss_fn, validate=validate,
                   monitor="auroc" if val_has_both else "loss", mode="max" if val_has_both else "min",
                   config=config.train)
    history = [{"probe": name, **h} for h in result.history]
    return result.model, spec, history


def _fit_binary_labels(data: ProbeData, targets: list[str], config: ProbeConfig) -> TaskOutput:
    inputs = Inputs(data.features, config.head)
    va, te = data.rows("val"), data.rows("test")
    rows = np.r_[va, te]
    preds = base_predictions(data, rows)
    ys = {t: binary_column(data, t) for t in targets}
    probs, thresholds, states, specs, history = {}, {}, {}, {}, []
    if config.multilabel == "shared" and len(targets) > 1:
        probs, states, specs, history = _train_shared(data, inputs, ys, config)
    else:
        for t in targets:
            model, spec, hist = _train_binary(data, inputs, ys[t], config, t)
            probs[t] = _sigmoid(predict(model, inputs, rows).reshape(-1))
            states[t], specs[t] = model.state_dict(), spec
            history += hist
    n_val = len(va)
    for t in targets:
        thresholds[t] = choose_threshold(ys[t][va], probs[t][:n_val], config.threshold)
        preds[f"{t}"] = ys[t][rows]
        preds[f"{t}_prob"] = probs[t]
    y_test = np.stack([ys[t][te] for t in targets], axis=1)
    p_test = np.stack([probs[t][n_val:] for t in targets], axis=1)
    metric_fn = metrics_at_thresholds(targets, thresholds)
    return TaskOutput(
        predictions=preds, metric_fn=metric_fn, eval_ids=[data.ids[r] for r in te], eval_arrays=(y_test, p_test),
        history=history, states=states, head_specs=specs,
        extras={"thresholds": thresholds, "roc": {t: (y_test[:, j], p_test[:, j]) for j, t in enumerate(targets)}},
    )


def _train_shared(data: ProbeData, inputs: Inputs, ys: dict[str, np.ndarray], config: ProbeConfig):
    names = list(ys)
    tr, va, te = data.rows("train"), data.rows("val"), data.rows("test")
    source = data.labels.attrs.get("source", "labels")
    for t in names:
        require_both_classes(ys[t], tr, "train", t, source)
    Y = torch.as_tensor(np.stack([ys[t] for t in names], 1), dtype=torch.float32)
    model, spec = make_head(config.head, data.features.dim, len(names), config.head_params, seed=config.train.seed)

    def batches(rng):
        for rows in shuffled_batches(tr, config.train.batch_size, rng):
            yield {**inputs.batch(rows), "y": Y[rows]}

    def loss_fn(m, batch):
        return F.binary_cross_entropy_with_logits(forward(m, batch), batch["y"])

    def validate(m):
        logits = predict(m, inputs, va)
        out = {"loss": float(F.binary_cross_entropy_with_logits(torch.from_numpy(logits), Y[va]))}
        with contextlib.suppress(ValueError):
            out["auroc"] = multilabel_metrics(Y[va].numpy(), logits, names=names)["macro/auroc"]
        return out

    has_auc = "auroc" in validate(model)
    result = train(model, batches=batches, loss_fn=loss_fn, validate=validate, monitor="auroc" if has_auc else "loss",
                   mode="max" if has_auc else "min", config=config.train)
    logits = predict(result.model, inputs, np.r_[va, te])
    probs = {t: _sigmoid(logits[:, j]) for j, t in enumerate(names)}
    history = [{"probe": "shared", **h} for h in result.history]
    return probs, {"shared": result.model.state_dict()}, {"shared": spec}, history


def _fit_multiclass(data: ProbeData, target: str, config: ProbeConfig) -> TaskOutput:
    source = data.labels.attrs.get("source", "labels")
    raw = data.labels[target].astype(str).to_numpy()
    classes = sorted(set(raw))
    if len(classes) < 2:
        raise DataError(located(source, f"column {target!r} has a single class"))
    y = np.array([classes.index(v) for v in raw])
    tr, va, te = data.rows("train"), data.rows("val"), data.rows("test")
    missing = sorted(set(range(len(classes))) - set(y[tr].tolist()))
    if missing:
        raise DataError(located(source, f"classes {[classes[i] for i in missing]} of {target!r} never occur in the train split"))
    inputs = Inputs(data.features, config.head)
    model, spec = make_head(config.head, data.features.dim, len(classes), config.head_params, seed=config.train.seed)
    y_t = torch.as_tensor(y)

    def batches(rng):
        sampler = balanced_batches(tr, y[tr], config.train.batch_size, rng, config.balance) if config.balanced else \
            shuffled_batches(tr, config.train.batch_size, rng)
        for rows in sampler:
            yield {**inputs.batch(rows), "y": y_t[rows]}

    def loss_fn(m, batch):
        return F.cross_entropy(forward(m, batch), batch["y"])

    def validate(m):
        logits = predict(m, inputs, va)
        out = {"loss": float(F.cross_entropy(torch.from_numpy(logits), y_t[va]))}
        with contextlib.suppress(ValueError):
            out["auroc"] = multiclass_metrics(y[va], torch.softmax(torch.from_numpy(logits), 1).numpy())["auroc"]
        return out

    has_auc = "auroc" in validate(model)
    result = train(model, batches=batches, loss_fn=loss_fn, validate=validate, monitor="auroc" if has_auc else "loss",
                   mode="max" if has_auc else "min", config=config.train)
    rows = np.r_[va, te]
    proba = torch.softmax(torch.from_numpy(predict(result.model, inputs, rows)), 1).numpy()
    preds = base_predictions(data, rows)
    preds[target] = raw[rows]
    preds[f"{target}_pred"] = [classes[i] for i in proba.argmax(1)]
    for j, c in enumerate(classes):
        preds[f"prob_{c}"] = proba[:, j]
    return TaskOutput(
        predictions=preds, metric_fn=multiclass_metrics, eval_ids=[data.ids[r] for r in te],
        eval_arrays=(y[te], proba[len(va):]), history=[{"probe": target, **h} for h in result.history],
        states={target: result.model.state_dict()}, head_specs={target: spec}, extras={"classes": classes},
    )


def fit(data: ProbeData, targets: list[str], config: ProbeConfig) -> TaskOutput:
    """Train and evaluate classification probe(s) for ``targets`` (label columns)."""
    if not targets:
        raise DataError("classification needs at least one --target label column")
    if _is_multiclass(data, targets):
        return _fit_multiclass(data, targets[0], config)
    return _fit_binary_labels(data, targets, config)


__all__ = ["fit"]
