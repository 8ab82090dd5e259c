"""Paired comparisons of probe runs: the one routine behind ``compare``, ``evaluate`` and the demo.

Two runs (e.g. two backbones, two heads, 3D vs 2.5D) are compared with a paired bootstrap
(:func:`voxelfm.metrics.bootstrap.paired_bootstrap`) over the test units both evaluated (the same
scans, or the same retrieval trials). Every evaluation group of a task output (the main one and
prefixed ones such as ``same_patient/``) is resampled on its own units, and each side keeps its own
metric settings (e.g. the threshold it chose on its own validation predictions).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from voxelfm.core.errors import DataError, VoxelFMError
from voxelfm.metrics.bootstrap import DifferenceCI, paired_bootstrap
from voxelfm.probes.run import ProbeResult, run_probe

log = logging.getLogger(__name__)

K = TypeVar("K")

DIFFERENCE_COLUMNS = ["metric", "value", "ci_low", "ci_high", "p_value", "n"]


@dataclass
class Comparison:
    table: pd.DataFrame  # backbone, metric, value, ci_low, ci_high, n
    differences: pd.DataFrame  # backbone, reference, metric, value, ci_low, ci_high, p_value, n
    results: dict[str, ProbeResult]


def _groups(result: ProbeResult) -> dict[str, tuple[Any, list[str], tuple[np.ndarray, ...]]]:
    """``{prefix: (metric_fn, test unit ids, arrays)}`` of every evaluation group of a run."""
    out = result.output
    groups = {"": (out.metric_fn, list(out.eval_ids), tuple(out.eval_arrays))}
    for prefix, fn, ids, arrays in out.more_evaluations:
        groups[prefix] = (fn, list(ids), tuple(arrays))
    return groups


def _aligned(ids: list[str], arrays: tuple[np.ndarray, ...], common: list[str]) -> tuple[np.ndarray, ...]:
    pos = {u: i for i, u in enumerate(ids)}
    rows = np.array([pos[u] for u in common], dtype=np.int64)
    return tuple(np.asarray(a)[rows] for a in arrays)


def paired_differences(
    a: ProbeResult, b: ProbeResult, *, n_resamples: int = 1000, seed: int = 4,
    metrics: Iterable[str] | None = None,
) -> dict[str, DifferenceCI]:
    """``a − b`` for every metric both runs report (or only ``metrics``), paired over common test units.

    A group whose metric is undefined on the common units (e.g. one class left) is left out with a
    log message; runs that share no test unit at all raise :class:`DataError`.
    """
    wanted = None if metrics is None else set(metrics)
    groups_a, groups_b = _groups(a), _groups(b)
    # A metric belongs to the group whose (non-empty) prefix it starts with, else to the main group.
    needed = None if wanted is None else {next((p for p in groups_a if p and k.startswith(p)), "") for k in wanted}
    out: dict[str, DifferenceCI] = {}
    shared_any = False
    for prefix, (fn_a, ids_a, arrays_a) in groups_a.items():
        if prefix not in groups_b:
            continue
        fn_b, ids_b, arrays_b = groups_b[prefix]
        in_b = set(ids_b)
        common = [u for u in ids_a if u in in_b]
        shared_any = shared_any or bool(common)
        if not common or (needed is not None and prefix not in needed):
            continue
        try:
            diffs = paired_bootstrap(fn_a, _aligned(ids_a, arrays_a, common), _aligned(ids_b, arrays_b, common),
                                     fn_b=fn_b, n_resamples=n_resamples, seed=seed)
        except (VoxelFMError, ValueError) as exc:
            log.info("no paired difference for %r metrics: %s", prefix or "main", exc)
            continue
        out.update({f"{prefix}{k}": d for k, d in diffs.items() if wanted is None or f"{prefix}{k}" in wanted})
    if not shared_any:
        raise DataError("the two runs share no test units; they cannot be compared pairwise")
    return out


def differences_table(a: ProbeResult, b: ProbeResult, *, n_resamples: int = 1000, seed: int = 4) -> pd.DataFrame:
    """:func:`paired_differences` as a table: one row per metric (``DIFFERENCE_COLUMNS`` and more)."""
    diffs = paired_differences(a, b, n_resamples=n_resamples, seed=seed)
    rows = [{"metric": k, **d.to_dict()} for k, d in diffs.items()]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=DIFFERENCE_COLUMNS)


def differences_to(results: Mapping[str, ProbeResult], reference: str) -> pd.DataFrame:
    """``<name> − reference`` for every other run, each with its own run's bootstrap settings.

    Columns ``backbone``, ``reference`` and those of :func:`differences_table`.
    """
    return differences_frame({name: paired_differences(res, results[reference], n_resamples=int(res.config["bootstrap"]),
                                                       seed=int(res.config["bootstrap_seed"]))
                              for name, res in results.items() if name != reference}, reference)


def differences_frame(diffs: Mapping[str, Mapping[str, DifferenceCI]], reference: str) -> pd.DataFrame:
    """``{name: paired differences name − reference}`` as one table: columns ``backbone``,
    ``reference`` and those of :func:`differences_table`."""
    frames = []
    for name, by_metric in diffs.items():
        rows = [{"metric": k, **d.to_dict()} for k, d in by_metric.items()]
        d = pd.DataFrame(rows) if rows else pd.DataFrame(columns=DIFFERENCE_COLUMNS)
        frames.append(d.assign(backbone=name, reference=reference))
    if not frames:
        return pd.DataFrame(columns=["backbone", "reference", *DIFFERENCE_COLUMNS])
    table = pd.concat(frames, ignore_index=True)
    return table[["backbone", "reference", *[c for c in table.columns if c not in ("backbone", "reference")]]]


def comparable(result: ProbeResult) -> ProbeResult:
    """The part of a run that a paired comparison reads (test outputs, metric functions), without its
    weights, masks or predictions: small enough to send to a worker process."""
    import dataclasses

    output = dataclasses.replace(result.output, states={}, extras={}, predictions=result.output.predictions.iloc[:0])
    return dataclasses.replace(result, output=output, predictions=result.predictions.iloc[:0])


def _pair_job(item: bytes) -> dict[str, DifferenceCI] | str:
    import cloudpickle  # the runs' metric functions are closures

    a, b, n_resamples, seed = cloudpickle.loads(item)
    try:
        return paired_differences(a, b, n_resamples=n_resamples, seed=seed)
    except VoxelFMError as exc:
        return str(exc)


def paired_differences_many(pairs: Sequence[tuple[ProbeResult, ProbeResult]], *, n_resamples: int | None = None,
                            seed: int | None = None, workers: int = 1) -> list[dict[str, DifferenceCI] | str]:
    """:func:`paired_differences` ``a − b`` of every pair, in order, on ``workers`` processes at once
    (:func:`voxelfm.core.parallel.run_items`; the same numbers with any count).

    ``n_resamples``/``seed`` None: each pair uses its run ``a``'s ``bootstrap``/``bootstrap_seed``.
    A pair that cannot be compared (e.g. no shared test unit) gives the reason, a string.
    """
    import cloudpickle

    from voxelfm.core.parallel import run_items

    items = [cloudpickle.dumps((comparable(a), comparable(b),
                                int(a.config["bootstrap"]) if n_resamples is None else n_resamples,
                                int(a.config["bootstrap_seed"]) if seed is None else seed)) for a, b in pairs]
    return run_items(_pair_job, items, workers=workers)


def differences_between(results: Mapping[K, ProbeResult], pairs: Iterable[tuple[K, K]], *,
                        n_resamples: int | None = None, seed: int | None = None,
                        workers: int = 1) -> dict[tuple[K, K], dict[str, DifferenceCI] | str]:
    """``a − b`` (:func:`paired_differences`) of every pair ``(a, b)`` of keys of ``results``, each
    distinct pair once, on ``workers`` processes (:func:`paired_differences_many`).

    A pair naming a run that is not in ``results`` (not run, or failed) is left out; a pair that
    cannot be compared maps to the reason, a string. Keys are whatever names the runs: a store name,
    ``(job, source)``, ``(task, head, store)``.
    """
    wanted = [(a, b) for a, b in dict.fromkeys(pairs) if a in results and b in results]
    computed = paired_differences_many([(results[a], results[b]) for a, b in wanted], n_resamples=n_resamples,
                                       seed=seed, workers=workers)
    return dict(zip(wanted, computed, strict=True))


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
    reference = reference or list(stores)[-1]
    if reference not in stores:
        raise DataError(f"reference store {reference!r} is not among {list(stores)}")
    results: dict[str, ProbeResult] = {}
    for name, store in stores.items():
        run_dir = None if out_dir is None else Path(out_dir) / name
        results[name] = run_probe(task, store, labels, target=target, head=head, out_dir=run_dir, config=config,
                                  split_column=split_column, split_dir=split_dir)
    differences = differences_to(results, reference)
    table = metrics_table(results)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        table.to_csv(Path(out_dir) / "comparison.csv", index=False)
        differences.to_csv(Path(out_dir) / "differences.csv", index=False)
    return Comparison(table, differences, results)


__all__ = ["Comparison", "comparable", "compare_stores", "differences_between", "differences_frame", "differences_table",
           "differences_to", "metrics_table", "paired_differences", "paired_differences_many"]
