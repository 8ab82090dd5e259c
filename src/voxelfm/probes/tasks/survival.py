"""Survival probes: a scalar risk head trained with the Cox partial likelihood (Efron or Breslow).

Selection on validation Harrell's C. Test metrics: Harrell's and Uno's C, time-dependent
cumulative/dynamic AUROC with IPCW at the configured horizons, and the paper's "event within
horizon" AUROC for parity. Risk groups for Kaplan-Meier plots split the test set at the median
*validation* risk, so the cut-off is not tuned on test.
"""

from __future__ import annotations

import numpy as np
import torch

from voxelfm.core.errors import DataError, located
from voxelfm.metrics.survival import SurvivalMetrics, harrell_c
from voxelfm.probes.batching import shuffled_batches
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import ProbeData
from voxelfm.probes.losses import cox_partial_likelihood
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


def fit(data: ProbeData, targets: list[str], config: ProbeConfig) -> TaskOutput:
    """Train a Cox risk probe; ``targets`` may name ``[time, event]`` columns (else the config's)."""
    time_col, event_col = (targets[0], targets[1]) if len(targets) == 2 else (config.time_column, config.event_column)
    source = data.labels.attrs.get("source", "labels")
    time = numeric_column(data, time_col)
    event = numeric_column(data, event_col)
    if not np.isin(event, (0, 1)).all():
        raise DataError(located(source, f"event column {event_col!r} must be 0/1"))
    if np.any(time < 0):
        raise DataError(located(source, f"time column {time_col!r} has negative values"))
    tr, va, te = data.rows("train"), data.rows("val"), data.rows("test")
    for split, rows, need in (("train", tr, config.min_events), ("val", va, 1), ("test", te, 1)):
        n_ev = int(event[rows].sum())
        if n_ev < need:
            raise DataError(located(source, f"too few events in the {split} split: {n_ev} of {len(rows)} scans "
                                            f"(need at least {need})"))
    inputs = Inputs(data.features, config.head)
    model, spec = make_head(config.head, data.features.dim, 1, config.head_params, seed=config.train.seed)
    t_t = torch.as_tensor(time, dtype=torch.float32)
    e_t = torch.as_tensor(event, dtype=torch.float32)

    def batches(rng):
        for rows in shuffled_batches(tr, config.train.batch_size, rng):
            yield {**inputs.batch(rows), "time": t_t[rows], "event": e_t[rows]}

    def loss_fn(m, batch):
        return cox_partial_likelihood(forward(m, batch).squeeze(-1), batch["time"], batch["event"], config.ties)

    def validate(m):
        risk = predict(m, inputs, va).reshape(-1)
        return {"c_index": harrell_c(time[va], event[va], risk)}

    result = train(model, batches=batches, loss_fn=loss_fn, validate=validate, monitor="c_index", mode="max",
                   config=config.train)
    rows = np.r_[va, te]
    risk = predict(result.model, inputs, rows).reshape(-1)
    cutoff = float(np.median(risk[: len(va)]))
    preds = base_predictions(data, rows)
    preds[time_col] = time[rows]
    preds[event_col] = event[rows].astype(int)
    preds["risk"] = risk
    preds["risk_group"] = np.where(risk > cutoff, "high", "low")
    horizons = list(config.horizons)
    metric_fn = SurvivalMetrics(time[tr], event[tr], horizons)

    return TaskOutput(
        predictions=preds, metric_fn=metric_fn, eval_ids=[data.ids[r] for r in te],
        eval_arrays=(time[te], event[te].astype(int), risk[len(va):]),
        history=[{"probe": "cox", **h} for h in result.history], states={"cox": result.model.state_dict()},
        head_specs={"cox": spec}, extras={"risk_cutoff": cutoff, "columns": (time_col, event_col)},
    )


__all__ = ["fit"]
