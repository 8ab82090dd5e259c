"""Regression probes: one scalar head per target, standardised with training statistics only.

The original z-scored targets over all labelled scans before splitting (docs/original.md §4.3, docs/original.md §9: mild test
leakage). Here mean and SD come from the training split; predictions are mapped back to the
target's units, and MAE is reported in units and in training-SD units.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from voxelfm.core.errors import DataError, located
from voxelfm.metrics.regression import regression_metrics
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


def fit(data: ProbeData, targets: list[str], config: ProbeConfig) -> TaskOutput:
    """Train one regression probe per target column and evaluate on the test split."""
    if not targets:
        raise DataError("regression needs at least one --target column")
    source = data.labels.attrs.get("source", "labels")
    inputs = Inputs(data.features, config.head)
    tr, va, te = data.rows("train"), data.rows("val"), data.rows("test")
    rows = np.r_[va, te]
    preds = base_predictions(data, rows)
    states, specs, history, stats = {}, {}, [], {}
    y_test, p_test = [], []
    for target in targets:
        y = numeric_column(data, target)
        mean, sd = float(y[tr].mean()), float(y[tr].std())
        if not sd > 0:
            raise DataError(located(source, f"target {target!r} is constant in the train split"))
        z = torch.as_tensor((y - mean) / sd, dtype=torch.float32)
        model, spec = make_head(config.head, data.features.dim, 1, config.head_params, seed=config.train.seed)
        crit = F.mse_loss if config.loss == "mse" else F.smooth_l1_loss

        def batches(rng, z=z):
            for r in shuffled_batches(tr, config.train.batch_size, rng):
                yield {**inputs.batch(r), "y": z[r]}

        def loss_fn(m, batch, crit=crit):
            return crit(forward(m, batch).squeeze(-1), batch["y"])

        def validate(m, z=z):
            out = predict(m, inputs, va).reshape(-1)
            return {"mse": float(np.mean((out - z[va].numpy()) ** 2))}

        result = train(model, batches=batches, loss_fn=loss_fn, validate=validate, monitor="mse", mode="min",
                       config=config.train)
        pred = predict(result.model, inputs, rows).reshape(-1) * sd + mean
        preds[target] = y[rows]
        preds[f"{target}_pred"] = pred
        y_test.append(y[te])
        p_test.append(pred[len(va):])
        states[target], specs[target] = result.model.state_dict(), spec
        history += [{"probe": target, **h} for h in result.history]
        stats[target] = {"train_mean": mean, "train_sd": sd}
    sds = np.array([stats[t]["train_sd"] for t in targets])
    names = list(targets)

    def metric_fn(y, p):
        if len(names) == 1:
            return regression_metrics(y[:, 0], p[:, 0], sds[0])
        out = {}
        for j, t in enumerate(names):
            out.update({f"{t}/{k}": v for k, v in regression_metrics(y[:, j], p[:, j], sds[j]).items()})
        return out

    return TaskOutput(
        predictions=preds, metric_fn=metric_fn, eval_ids=[data.ids[r] for r in te],
        eval_arrays=(np.stack(y_test, 1), np.stack(p_test, 1)), history=history, states=states, head_specs=specs,
        extras={"standardisation": stats},
    )


__all__ = ["fit"]
