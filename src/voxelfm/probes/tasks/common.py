"""Shared pieces of the task modules: model inputs, batched prediction, and the task output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from voxelfm.core.errors import DataError, located
from voxelfm.probes.batching import TokenBank
from voxelfm.probes.data import FeatureSet, ProbeData
from voxelfm.probes.heads import HeadSpec, build_head


@dataclass
class TaskOutput:
    """What a task hands to the run harness.

    ``metric_fn(*eval_arrays)`` gives the test metrics; row ``i`` of every eval array is test unit
    ``eval_ids[i]`` (a scan, or a retrieval trial), which is what the bootstrap resamples and what
    paired comparisons align on.
    """

    predictions: pd.DataFrame
    metric_fn: Callable[..., dict[str, float]]
    eval_ids: list[str]
    eval_arrays: tuple[np.ndarray, ...]
    history: list[dict[str, Any]] = field(default_factory=list)
    states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    head_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    #: Further metric groups with their own test units: ``(prefix, metric_fn, ids, arrays)``.
    more_evaluations: list[tuple[str, Callable[..., dict[str, float]], list[str], tuple[np.ndarray, ...]]] = field(
        default_factory=list)


class Inputs:
    """Turns row indices into head inputs: CLS ``(B, C)`` for the MLP, padded tokens otherwise."""

    def __init__(self, features: FeatureSet, head: str) -> None:
        self.head = head
        self.cls = torch.from_numpy(features.cls)
        if head == "mlp":
            self.bank = None
        else:
            patches = features.require_patches(f"the {head} head")
            positions = [features.patch_positions(i).reshape(-1, 3) for i in range(len(features))]
            self.bank = TokenBank([g.reshape(-1, g.shape[-1]) for g in patches], positions)

    def batch(self, rows: np.ndarray) -> dict[str, Any]:
        if self.bank is None:
            return {"x": self.cls[torch.as_tensor(np.asarray(rows), dtype=torch.long)]}
        x, mask, pos = self.bank.gather(rows)
        out = {"x": x, "mask": mask, "pos": pos}
        if self.head == "qformer":  # for the Q-Former's optional CLS skip path
            out["cls"] = self.cls[torch.as_tensor(np.asarray(rows), dtype=torch.long)]
        return out


def forward(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    if "cls" in batch:
        return model(batch["x"], mask=batch.get("mask"), pos=batch.get("pos"), cls=batch["cls"])
    return model(batch["x"], mask=batch.get("mask"), pos=batch.get("pos"))


@torch.no_grad()
def predict(model: nn.Module, inputs: Inputs, rows: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Raw head outputs for ``rows`` (eval mode), concatenated in row order."""
    model.eval()
    outs = [forward(model, inputs.batch(rows[s : s + batch_size])).float().numpy()
            for s in range(0, len(rows), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,))


def make_head(kind: str, in_dim: int, out_dim: int, params: dict[str, Any], *,
              seed: int) -> tuple[nn.Module, dict[str, Any]]:
    """A freshly initialised head and its spec; the initial weights depend on ``seed`` only (the
    global torch generator is left as it was), so a probe run is reproducible across processes."""
    spec = HeadSpec(kind, in_dim, out_dim, dict(params))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_head(spec), spec.to_dict()


def binary_column(data: ProbeData, column: str) -> np.ndarray:
    """A 0/1 label column as int (DataError for anything else)."""
    values = pd.to_numeric(data.labels[column], errors="coerce")
    if values.isna().any() or not values.isin([0, 1]).all():
        raise DataError(located(data.labels.attrs.get("source", "labels"),
                                f"column {column!r} must hold 0/1 values for binary classification"))
    return values.to_numpy().astype(np.int64)


def numeric_column(data: ProbeData, column: str) -> np.ndarray:
    """A numeric label column as float64; non-numeric or infinite values are a DataError naming the ids."""
    source = data.labels.attrs.get("source", "labels")
    values = pd.to_numeric(data.labels[column], errors="coerce")
    if values.isna().any():
        raise DataError(located(source, f"column {column!r} has non-numeric values"))
    array = values.to_numpy().astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(array))
    if len(bad):
        where = ", ".join(f"{data.labels.index[i]} ({array[i]})" for i in bad[:3])
        raise DataError(located(source, f"column {column!r} has {len(bad)} non-finite value(s), at scan id(s) {where}"))
    return array


def require_both_classes(y: np.ndarray, rows: np.ndarray, split: str, column: str, source: str) -> None:
    counts = np.bincount(y[rows], minlength=2)
    if counts.min() == 0:
        raise DataError(located(source, f"label {column!r} is constant in the {split} split "
                                        f"({counts[1]} positives of {len(rows)}); nothing to learn or evaluate"))


def base_predictions(data: ProbeData, rows: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"scan_id": [data.ids[r] for r in rows], "split": data.split[rows]})


__all__ = ["Inputs", "TaskOutput", "base_predictions", "binary_column", "forward", "make_head", "numeric_column", "predict"]
