"""Localisation probe: attention-pooled coordinate regression over patch tokens (docs/original.md §4.6).

Targets are world LPS (x, y, z) mm (default; e.g. ``nodule_x_mm, nodule_y_mm, nodule_z_mm``) or
normalised (z, y, x) positions in the preprocessed input grid. World targets are mapped into the
input grid of each scan through its ``input_geometry`` (normalised = (index + 0.5) / n); the head
predicts a softmax-weighted mean of the true patch-centre positions; predictions are mapped back
to world mm with the same geometry. Errors are reported in both spaces.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from voxelfm.core.errors import DataError, located
from voxelfm.core.geometry import Geometry
from voxelfm.metrics.localisation import euclidean_errors, localisation_metrics
from voxelfm.probes.batching import shuffled_batches
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import ProbeData
from voxelfm.probes.tasks.common import (
    Inputs,
    TaskOutput,
    base_predictions,
    forward,
    make_head,
    numeric_column,
    predict,
)
from voxelfm.probes.trainer import train


def _norm_to_world(norm_zyx: np.ndarray, geometry: Geometry) -> np.ndarray:
    idx = norm_zyx * np.asarray(geometry.shape, dtype=np.float64) - 0.5
    return geometry.index_to_world(idx)


def _world_to_norm(world_xyz: np.ndarray, geometry: Geometry) -> np.ndarray:
    return (geometry.world_to_index(world_xyz) + 0.5) / np.asarray(geometry.shape, dtype=np.float64)


def fit(data: ProbeData, targets: list[str], config: ProbeConfig) -> TaskOutput:
    """Train the attention localiser on train, select on validation error, evaluate on test."""
    source = data.labels.attrs.get("source", "labels")
    cols = list(targets) if len(targets) == 3 else list(config.coordinate_columns)
    if len(cols) != 3:
        raise DataError(located(source, f"localisation needs three coordinate columns, got {cols}"))
    coords = np.stack([numeric_column(data, c) for c in cols], 1)
    geoms = data.features.input_geometry
    n = len(data.ids)
    if config.coordinates == "world":
        missing = [data.ids[i] for i in range(n) if geoms[i] is None]
        if missing:
            raise DataError(located(data.features.name, f"{len(missing)} scans lack input geometry (e.g. {missing[:3]}); "
                                                        "world-mm targets need it"))
        true_norm = np.stack([_world_to_norm(coords[i], geoms[i]) for i in range(n)])
        true_mm = coords
    else:
        true_norm = coords
        true_mm = np.stack([_norm_to_world(coords[i], geoms[i]) if geoms[i] is not None else np.full(3, np.nan)
                            for i in range(n)])
    outside = np.flatnonzero(np.any((true_norm < 0) | (true_norm > 1), axis=1))
    if len(outside):
        raise DataError(located(source, f"{len(outside)} target(s) lie outside the scanned volume "
                                        f"(e.g. {data.ids[outside[0]]}: normalised {np.round(true_norm[outside[0]], 3).tolist()})"))
    has_mm = bool(np.all(np.isfinite(true_mm)))
    inputs = Inputs(data.features, "localiser")
    model, spec = make_head("localiser", data.features.dim, 3, config.head_params, seed=config.train.seed)
    y = torch.as_tensor(true_norm, dtype=torch.float32)
    tr, va, te = data.rows("train"), data.rows("val"), data.rows("test")

    def to_mm(rows: np.ndarray, norm: np.ndarray) -> np.ndarray:
        return np.stack([_norm_to_world(norm[j], geoms[r]) for j, r in enumerate(rows)])

    def batches(rng):
        for rows in shuffled_batches(tr, config.train.batch_size, rng):
            yield {**inputs.batch(rows), "y": y[rows]}

    def loss_fn(m, batch):
        return F.smooth_l1_loss(forward(m, batch), batch["y"])

    def validate(m):
        pred = predict(m, inputs, va, config.train.batch_size)
        out = {"error_norm": float(euclidean_errors(pred, true_norm[va]).mean())}
        if has_mm:
            out["error_mm"] = float(euclidean_errors(to_mm(va, pred), true_mm[va]).mean())
        return out

    result = train(model, batches=batches, loss_fn=loss_fn, validate=validate,
                   monitor="error_mm" if has_mm else "error_norm", mode="min", config=config.train)
    rows = np.r_[va, te]
    pred_norm = predict(result.model, inputs, rows, config.train.batch_size)
    pred_mm = to_mm(rows, pred_norm) if has_mm else np.full_like(pred_norm, np.nan)
    preds = base_predictions(data, rows)
    for k, axis in enumerate("zyx"):
        preds[f"true_{axis}_norm"] = true_norm[rows, k]
        preds[f"pred_{axis}_norm"] = pred_norm[:, k]
    for k, axis in enumerate("xyz"):
        preds[f"true_{axis}_mm"] = true_mm[rows, k]
        preds[f"pred_{axis}_mm"] = pred_mm[:, k]
    preds["error_mm"] = np.linalg.norm(pred_mm - true_mm[rows], axis=1)
    nv = len(va)
    radius = config.radius_mm

    if has_mm:
        def metric_fn(pn, tn, pm, tm):
            return localisation_metrics(pn, tn, pm, tm, radius)
    else:
        def metric_fn(pn, tn, pm, tm):
            return {"mean_error_norm": float(euclidean_errors(pn, tn).mean())}

    return TaskOutput(
        predictions=preds, metric_fn=metric_fn, eval_ids=[data.ids[r] for r in te],
        eval_arrays=(pred_norm[nv:], true_norm[te], pred_mm[nv:], true_mm[te]),
        history=[{"probe": "localiser", **h} for h in result.history], states={"localiser": result.model.state_dict()},
        head_specs={"localiser": spec},
    )


__all__ = ["fit"]
