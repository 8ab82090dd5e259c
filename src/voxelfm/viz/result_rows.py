"""Result rows: one task's metric on several feature sources, with paired differences.

A :class:`ResultRow` holds :class:`~voxelfm.metrics.MetricCI` values by source (backbone, head,
inference mode) and :class:`~voxelfm.metrics.DifferenceCI` paired differences by label
(``"pretrained − random"``: first minus second, on the same test units). It is what
:mod:`voxelfm.viz.results_report` draws and tabulates, for ``voxelfm evaluate`` and the demo alike;
:func:`rows_from_suite` builds rows from the suite's ``summary``/``differences`` tables
(:mod:`voxelfm.probes.compare` columns), :class:`RowPlan` from runs and their paired differences.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voxelfm.metrics.bootstrap import DifferenceCI, MetricCI

NAN = float("nan")
#: Leaf names of metrics where lower is better (errors); every other metric is higher-is-better.
LOWER_IS_BETTER = ("mae", "mse", "rmse", "mean_error", "median_error", "brier", "ibs", "hausdorff")
#: A paired CI this close to 0 prints as 0.000 and is no difference at all (see :func:`excludes_zero`).
ZERO_TOLERANCE = 5e-4


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return NAN
    return out if math.isfinite(out) else NAN


def _count(value: Any) -> int:
    n = _num(value)
    return 0 if math.isnan(n) else int(n)


def as_ci(data: Any) -> MetricCI:
    """A :class:`MetricCI` from a MetricCI, a mapping (``value``, ``ci_low``/``ci_high`` or
    ``low``/``high`` of results.json schema 1, ``n``), a number or ``None`` (missing: NaN, n = 0)."""
    if isinstance(data, MetricCI):
        return data
    if isinstance(data, DifferenceCI):
        return MetricCI(data.value, data.ci_low, data.ci_high, data.n, data.n_resamples, data.n_failed)
    if isinstance(data, Mapping):
        return MetricCI(_num(data.get("value")), _num(data.get("ci_low", data.get("low"))),
                        _num(data.get("ci_high", data.get("high"))), _count(data.get("n")),
                        _count(data.get("n_resamples")), _count(data.get("n_failed")))
    return MetricCI(_num(data), NAN, NAN, 0)


def as_difference(data: Any, p_value: Any = None) -> DifferenceCI:
    """A :class:`DifferenceCI` from a DifferenceCI or a mapping (schema 1 ``low``/``high`` too)."""
    if isinstance(data, DifferenceCI):
        return data
    ci = as_ci(data)
    get = data.get if isinstance(data, Mapping) else {}.get
    return DifferenceCI(ci.value, ci.ci_low, ci.ci_high, _num(get("p_value", p_value)), ci.n,
                        _num(get("value_a")), _num(get("value_b")), ci.n_resamples, ci.n_failed)


def lower_is_better(metric: str) -> bool:
    """True for error metrics (MAE, localisation error, ...), by the metric's last path part."""
    return metric.rsplit("/", 1)[-1].lower().startswith(LOWER_IS_BETTER)


@dataclass
class ResultRow:
    """One line of a results table: a task's metric on every source, and paired differences."""

    category: str
    task: str
    metric: str
    higher_is_better: bool = True
    values: dict[str, MetricCI] = field(default_factory=dict)
    differences: dict[str, DifferenceCI] = field(default_factory=dict)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "task": self.task, "metric": self.metric,
                "higher_is_better": self.higher_is_better,
                "values": {k: v.to_dict() for k, v in self.values.items()},
                "differences": {k: d.to_dict() for k, d in self.differences.items()}, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], legacy: Mapping[str, str] | None = None) -> ResultRow:
        """Read :meth:`to_dict`'s form. ``legacy`` maps schema-1 keys holding one difference each
        (``{"difference": "pretrained − random"}``) to their labels; their p-value was ``p_value``."""
        diffs = {str(k): as_difference(v) for k, v in dict(data.get("differences") or {}).items()}
        for key, label in (legacy or {}).items():
            if data.get(key) is not None:
                diffs[label] = as_difference(data[key], data.get("p_value") if key == "difference" else None)
        return cls(str(data["category"]), str(data["task"]), str(data["metric"]), bool(data["higher_is_better"]),
                   {str(k): as_ci(v) for k, v in dict(data.get("values") or {}).items()}, diffs,
                   str(data.get("detail", "")))

    def n(self) -> int | None:
        """Test units of the first source with a value."""
        return next((v.n for v in self.values.values() if math.isfinite(v.value) and v.n), None)


@dataclass(frozen=True)
class RowPlan:
    """A :class:`ResultRow` to read off finished runs, each named by a key of the caller's choosing.

    ``values``: the run shown in each column; ``pairs``: the runs ``(a, b)`` of each paired
    difference ``a − b`` by label; both read at metric ``key``. The pairs are stated here once:
    give them all to :func:`voxelfm.probes.compare.differences_between`, then :meth:`row` each plan.
    """

    category: str
    task: str
    metric: str
    key: str
    higher_is_better: bool = True
    values: Mapping[str, Hashable] = field(default_factory=dict)
    pairs: Mapping[str, tuple[Hashable, Hashable]] = field(default_factory=dict)
    detail: str = ""

    def row(self, metrics: Mapping[Any, Mapping[str, Any]],
            differences: Mapping[tuple[Any, Any], Mapping[str, DifferenceCI] | str]) -> ResultRow:
        """The row from each run's metrics (a missing run or metric: NaN) and the pairs' differences
        (a pair not compared, or without this metric, is left out)."""
        diffs = {label: found[self.key] for label, pair in self.pairs.items()
                 if isinstance(found := differences.get(pair), Mapping) and found.get(self.key) is not None}
        return ResultRow(self.category, self.task, self.metric, self.higher_is_better,
                         {col: as_ci(metrics.get(run, {}).get(self.key)) for col, run in self.values.items()},
                         diffs, self.detail)


def parse_rows(rows: Any, legacy: Mapping[str, str] | None = None) -> list[ResultRow]:
    """Rows from a list of :meth:`ResultRow.to_dict` mappings, skipping malformed ones."""
    out = []
    for row in rows if isinstance(rows, list) else []:
        try:
            out.append(ResultRow.from_dict(row, legacy))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return out


def excludes_zero(d: DifferenceCI | MetricCI | None) -> bool:
    """True when a paired CI lies on one side of 0 at the displayed precision (3 digits)."""
    return d is not None and (d.ci_low > ZERO_TOLERANCE or d.ci_high < -ZERO_TOLERANCE)


def clear_direction(row: ResultRow, label: str) -> int:
    """+1 when the CI of difference ``label`` (a − b) excludes 0 in favour of a, -1 in favour of b, else 0."""
    d = row.differences.get(label)
    if d is None or not math.isfinite(d.value) or not excludes_zero(d):
        return 0
    return 1 if (d.value > 0) == row.higher_is_better else -1


def detectable_difference(d: DifferenceCI | MetricCI | None) -> float | None:
    """Minimum detectable difference (80% power, two-sided 5%) from a paired-bootstrap 95% CI.

    The CI half-width is 1.96 standard errors; a true difference of (1.96 + 0.84) SE is found
    with 80% power, so MDD = 2.8 x (high - low) / 3.92.
    """
    if d is None or not (math.isfinite(d.ci_low) and math.isfinite(d.ci_high)):
        return None
    return 2.8 * (d.ci_high - d.ci_low) / 3.92


def row_mdd(row: ResultRow) -> float | None:
    """A row's minimum detectable difference: the largest of its paired comparisons' (two identical
    feature sources have a zero-width CI that says nothing about the test set)."""
    found = [m for m in map(detectable_difference, row.differences.values()) if m is not None]
    return max(found) if found else None


def verdict(rows: Sequence[ResultRow], labels: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per difference label: metrics compared (``n``), clearly ``better`` and clearly ``worse``."""
    out = {}
    for label in labels:
        signs = [clear_direction(r, label) for r in rows if label in r.differences]
        out[label] = {"n": len(signs), "better": signs.count(1), "worse": signs.count(-1)}
    return out


def difference_labels(rows: Iterable[ResultRow]) -> list[str]:
    """Every difference label of ``rows``, in first-seen order."""
    return list(dict.fromkeys(k for r in rows for k in r.differences))


def rows_from_suite(summary: Sequence[Mapping[str, Any]], differences: Sequence[Mapping[str, Any]],
                    headline: Mapping[str, Sequence[str]]) -> list[ResultRow]:
    """One row per suite task × head with its headline metric (the first of ``headline[task]`` it
    reports): values by store, differences ``store − reference`` (``voxelfm evaluate``'s tables)."""
    by_run: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for rec in summary:
        by_run.setdefault((str(rec["name"]), str(rec["task"]), str(rec["head"])), {}).setdefault(
            str(rec["metric"]), {})[str(rec["backbone"])] = rec
    rows = []
    for (name, task, head), metrics in by_run.items():
        metric = next((m for m in headline.get(task, ()) if m in metrics), None)
        if metric is None:
            continue
        diffs = {f"{d['backbone']} − {d['reference']}": as_difference(d) for d in differences
                 if (str(d.get("name")), str(d.get("head")), str(d.get("metric"))) == (name, head, metric)}
        rows.append(ResultRow(task, f"{name} ({head})", metric, not lower_is_better(metric),
                              {b: as_ci(r) for b, r in metrics[metric].items()}, diffs))
    return rows


__all__ = ["ResultRow", "RowPlan", "as_ci", "as_difference", "clear_direction", "detectable_difference", "difference_labels",
           "excludes_zero", "lower_is_better", "parse_rows", "row_mdd", "rows_from_suite", "verdict"]
