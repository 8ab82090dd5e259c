"""Several stores (backbones) under one protocol: one table with CIs and paired differences.

Every store is probed with the same labels, split, task and config. Differences to a reference
store use a paired bootstrap over the test units both runs evaluated (same scans, or the same
retrieval trials), each side with its own metric settings (e.g. its own validation threshold).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from voxelfm.core.errors import DataError
from voxelfm.metrics.bootstrap import paired_bootstrap
from voxelfm.probes.run import ProbeResult, run_probe


@dataclass
class Comparison:
    table: pd.DataFrame  # backbone, metric, value, ci_low, ci_high, n
    differences: pd.DataFrame  # backbone, reference, metric, value, ci_low, ci_high, p_value, n
    results: dict[str, ProbeResult]


def _aligned(result: ProbeResult, ids: list[str]) -> tuple[np.ndarray, ...]:
    pos = {u: i for i, u in enumerate(result.output.eval_ids)}
    rows = np.array([pos[u] for u in ids])
    return tuple(np.asarray(a)[rows] for a in result.output.eval_arrays)


def paired_differences(a: ProbeResult, b: ProbeResult, *, n_resamples: int = 1000, seed: int = 4) -> pd.DataFrame:
    """``a - b`` for every metric of the main evaluation, paired over their common test units."""
    common = [u for u in a.output.eval_ids if u in set(b.output.eval_ids)]
    if not common:
        raise DataError("the two runs share no test units; they cannot be compared pairwise")
    diffs = paired_bootstrap(a.output.metric_fn, _aligned(a, common), _aligned(b, common),
                             fn_b=b.output.metric_fn, n_resamples=n_resamples, seed=seed)
    return pd.DataFrame([{"metric": k, **d.to_dict()} for k, d in diffs.items()])


def metrics_table(results: Mapping[str, ProbeResult], column: str = "backbone") -> pd.DataFrame:
    rows = []
    for name, res in results.items():
        for metric, ci in res.metrics.items():
            rows.append({column: name, "task": res.task, "head": res.head, "metric": metric, **ci.to_dict()})
    return pd.DataFrame(rows)


def compare_stores(
    task: str, stores: Mapping[str, Any], labels: Any, *, target: str | list[str] | None = None,
    head: str | None = None, config: dict[str, Any] | None = None, reference: str | None = None,
    out_dir: str | os.PathLike[str] | None = None, split_column: str | None = "split",
    split_dir: str | os.PathLike[str] | None = None,
) -> Comparison:
    """Probe every store, tabulate metrics with CIs, and give paired differences to ``reference``.

    ``reference`` defaults to the last store (e.g. ``{"pretrained": ..., "random": ...}`` gives
    pretrained − random).
    """
    if len(stores) < 1:
        raise DataError("compare_stores needs at least one store")
    results: dict[str, ProbeResult] = {}
    for name, store in stores.items():
        run_dir = None if out_dir is None else Path(out_dir) / name
        results[name] = run_probe(task, store, labels, target=target, head=head, out_dir=run_dir, config=config,
                                  split_column=split_column, split_dir=split_dir)
    reference = reference or list(stores)[-1]
    if reference not in results:
        raise DataError(f"reference store {reference!r} is not among {list(stores)}")
    n_boot = int(next(iter(results.values())).config["bootstrap"])
    seed = int(next(iter(results.values())).config["bootstrap_seed"])
    diff_rows = []
    for name, res in results.items():
        if name == reference:
            continue
        d = paired_differences(res, results[reference], n_resamples=n_boot, seed=seed)
        d.insert(0, "reference", reference)
        d.insert(0, "backbone", name)
        diff_rows.append(d)
    differences = pd.concat(diff_rows, ignore_index=True) if diff_rows else pd.DataFrame(
        columns=["backbone", "reference", "metric", "value", "ci_low", "ci_high", "p_value", "n"])
    table = metrics_table(results)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(out_dir) / "comparison.csv", index=False)
        differences.to_csv(Path(out_dir) / "differences.csv", index=False)
    return Comparison(table, differences, results)


__all__ = ["Comparison", "compare_stores", "metrics_table", "paired_differences"]
