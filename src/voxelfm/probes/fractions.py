"""Data-fraction sweeps (paper Fig. 4): nested training subsets, several seeds, fixed val/test.

The original drew each fraction independently (``random.sample`` per fraction), so a smaller
subset was not contained in a larger one and curves mixed subset noise with data size. Here one
stratified order of the training scans is drawn per seed and fraction f keeps its first ``n_f``
scans, so subsets are nested and keep the class balance.

Rounding: ``n_f = ceil(f · n)`` scans of the ``n`` training scans (at least one; ``f = 1`` keeps
all). The order interleaves the strata: each stratum is shuffled and its i-th scan gets the key
``(i + 0.5) / n_stratum``; scans are taken in key order (ties in a random order). Every stratum
therefore contributes within one scan of ``f · n_stratum``, however many small strata there are
(rounding up per stratum would give every singleton stratum a scan at any fraction).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voxelfm.core.errors import ConfigError
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import read_labels, resolve_splits
from voxelfm.probes.run import load_features, needs_patches, run_probe


def subset_size(fraction: float, n: int) -> int:
    """``ceil(fraction · n)``, at least 1 and at most ``n`` (a float error does not add a scan)."""
    return min(n, max(1, math.ceil(fraction * n - 1e-9)))


def stratified_order(ids: Sequence[str], seed: int, strata: Sequence[Any] | None = None) -> list[str]:
    """All ``ids`` in an order whose every prefix holds each stratum in proportion (within one scan)."""
    ids_arr = np.asarray([str(i) for i in ids])
    strata_arr = np.zeros(len(ids_arr)) if strata is None else np.asarray(strata)
    if len(strata_arr) != len(ids_arr):
        raise ConfigError(f"{len(strata_arr)} strata for {len(ids_arr)} ids")
    rng = np.random.default_rng(seed)
    keys = np.empty(len(ids_arr))
    for s in np.unique(strata_arr):
        rows = rng.permutation(np.flatnonzero(strata_arr == s))
        keys[rows] = (np.arange(len(rows)) + 0.5) / len(rows)
    ties = rng.permutation(len(ids_arr))
    return ids_arr[np.lexsort((ties, keys))].tolist()


def nested_subsets(ids: Sequence[str], fractions: Sequence[float], seed: int,
                   strata: Sequence[Any] | None = None) -> dict[float, list[str]]:
    """``{fraction: sorted ids}`` with ``subset(f1) ⊆ subset(f2)`` whenever ``f1 <= f2`` (module docstring)."""
    for f in fractions:
        if not 0 < f <= 1:
            raise ConfigError(f"fractions must lie in (0, 1], got {f}")
    order = stratified_order(ids, seed, strata)
    return {float(f): sorted(order[: subset_size(f, len(order))]) for f in sorted(fractions)}


def fraction_sweep(
    task: str, store: Any, labels: Any, *, fractions: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0),
    seeds: Sequence[int] = (0, 1, 2), target: str | list[str] | None = None, head: str | None = None,
    config: dict[str, Any] | None = None, out_dir: str | os.PathLike[str] | None = None,
    split_column: str | None = "split", split_dir: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Run the probe on nested training fractions for several seeds; one row per run and metric."""
    label_df = read_labels(labels)
    targets = [target] if isinstance(target, str) else list(target or [])
    cfg = ProbeConfig.for_task(task, {**(config or {}), **({"head": head} if head else {})})
    split = resolve_splits(label_df, split_column=split_column, split_dir=split_dir, patient_column=cfg.patient_column,
                           seed=cfg.train.seed)
    features = load_features(store, patches=needs_patches(task, cfg))
    have = set(features.ids)
    train_ids = [sid for sid in label_df.index if split.get(sid) == "train" and sid in have]
    strata = None
    if task in ("classification", "knn") and targets:
        complete = label_df.loc[train_ids, targets].notna().all(axis=1)
        train_ids = [sid for sid in train_ids if complete[sid]]
        strata = label_df.loc[train_ids, targets].astype(str).agg("|".join, axis=1).to_numpy()
    rows = []
    for seed in seeds:
        subsets = nested_subsets(train_ids, fractions, seed, strata)
        for f, ids in subsets.items():
            run_dir = None if out_dir is None else Path(out_dir) / f"fraction{f:.2f}_seed{seed}"
            run_cfg = {**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "seed": int(seed)}}
            res = run_probe(task, features, label_df, target=targets or None, out_dir=run_dir, config=run_cfg,
                            split_column=split_column, split_dir=split_dir, train_ids=ids, figures=False)
            for metric, ci in res.metrics.items():
                rows.append({"fraction": f, "seed": int(seed), "n_train": len(ids), "metric": metric, **ci.to_dict()})
    table = pd.DataFrame(rows)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(out_dir) / "fractions.csv", index=False)
    return table


__all__ = ["fraction_sweep", "nested_subsets", "stratified_order", "subset_size"]
