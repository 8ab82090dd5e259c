"""``results.json``: the machine-readable result of a demo run, and its schema check.

Layout (``schema_version`` 1)::

    {
      "schema_version": 1, "voxelfm_version": "...", "created": "ISO time", "size": "small",
      "device": "cpu", "config": {...DemoConfig...},
      "data": {"synthetic": true, "n_scans": 160, "n_patients": 120,
               "splits": {"train": 112, "val": 24, "test": 24}, "findings": [...]},
      "backbones": {"pretrained": {"model_id": ..., "preset": ..., "dir": ..., "pretrain": {...}},
                    "random": {...}},
      "tasks": [TaskRow...],           # the Fig. 2 table: one row per task/metric
      "heads": [TaskRow...],           # MLP on CLS vs Q-Former on patches (Fig. 5 left)
      "inference_modes": [TaskRow...], # full 3D vs chunked 2.5D (Fig. 5 right)
      "data_fraction": {"metric": ..., "task": ..., "points": [FractionPoint...]},   # Fig. 4
      "per_finding_f1": [{"finding": ..., "probe": Estimate, "report": Estimate}],   # Fig. 3
      "report_generation": {...},      # macro F1, text metrics, LM used, example reports
      "examples": {"retrieval": [...], "reports": [...], "segmentation": [...], "pca": [...]},
      "timings": {"stage": seconds}, "notes": ["..."]
    }

A ``TaskRow`` is ``{"category", "task", "metric", "higher_is_better", "values": {backbone:
Estimate}, "difference": Estimate | null, "baseline_difference": Estimate | null}`` where
``difference`` is pretrained − random and ``baseline_difference`` pretrained − HU histogram, each
from a paired bootstrap on the same test scans. An ``Estimate`` is ``{"value", "low", "high", "n"}``
(95% CI; ``low``/``high`` may be null when a CI is undefined, e.g. one class in the test set).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1

#: The seven task categories of the paper, in the order of its Fig. 2.
CATEGORIES: tuple[str, ...] = (
    "classification",
    "regression",
    "survival",
    "retrieval",
    "localisation",
    "segmentation",
    "report generation",
)

#: Every feature source compared: the SSL backbone, its random-init twin, and the non-learned
#: HU-histogram baseline (voxelfm.embed.histogram).
BACKBONES: tuple[str, ...] = ("pretrained", "random", "histogram")

REQUIRED_KEYS: tuple[str, ...] = (
    "schema_version", "voxelfm_version", "created", "size", "device", "config", "data", "backbones",
    "tasks", "heads", "inference_modes", "data_fraction", "per_finding_f1", "report_generation",
    "examples", "timings", "notes",
)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


@dataclass(frozen=True)
class Estimate:
    """A metric value with its 95% confidence interval and the number of test units."""

    value: float | None
    low: float | None = None
    high: float | None = None
    n: int | None = None

    @classmethod
    def from_any(cls, data: Any) -> Estimate:
        """Accept an Estimate, a mapping with value/low/high/n (or ci_low/ci_high) or a number."""
        if isinstance(data, Estimate):
            return data
        if isinstance(data, Mapping):
            low = data.get("low", data.get("ci_low"))
            high = data.get("high", data.get("ci_high"))
            if low is None and isinstance(data.get("ci"), list | tuple) and len(data["ci"]) == 2:
                low, high = data["ci"]
            n = data.get("n")
            return cls(_num(data.get("value")), _num(low), _num(high), None if n is None else int(n))
        return cls(_num(data))

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}

    def format(self, digits: int = 3) -> str:
        """``0.812 [0.741, 0.880]`` (or ``n/a``)."""
        if self.value is None:
            return "n/a"
        text = f"{self.value:.{digits}f}"
        if self.low is not None and self.high is not None:
            text += f" [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return text

    @property
    def excludes_zero(self) -> bool:
        """True when the CI lies on one side of 0 at the displayed precision (paired differences).

        A CI of ``[0.0000001, 0.0000004]`` prints as ``[0.000, 0.000]`` and is no difference at all.
        """
        tol = 5e-4
        return self.low is not None and self.high is not None and (self.low > tol or self.high < -tol)


@dataclass
class TaskRow:
    """One line of the results table: a task's metric for each backbone."""

    category: str
    task: str
    metric: str
    higher_is_better: bool
    values: dict[str, Estimate] = field(default_factory=dict)
    difference: Estimate | None = None
    p_value: float | None = None  # two-sided paired-bootstrap p-value of a zero difference
    detail: str = ""
    baseline_difference: Estimate | None = None  # pretrained − HU-histogram baseline (paired)

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "task": self.task,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "values": {k: v.to_dict() for k, v in self.values.items()},
            "difference": None if self.difference is None else self.difference.to_dict(),
            "p_value": _num(self.p_value),
            "detail": self.detail,
            "baseline_difference": None if self.baseline_difference is None else self.baseline_difference.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskRow:
        diff = data.get("difference")
        base = data.get("baseline_difference")
        return cls(
            category=str(data["category"]),
            task=str(data["task"]),
            metric=str(data["metric"]),
            higher_is_better=bool(data["higher_is_better"]),
            values={k: Estimate.from_any(v) for k, v in dict(data.get("values", {})).items()},
            difference=None if diff is None else Estimate.from_any(diff),
            p_value=_num(data.get("p_value")),
            detail=str(data.get("detail", "")),
            baseline_difference=None if base is None else Estimate.from_any(base),
        )


def validate_results(data: Mapping[str, Any]) -> list[str]:
    """Problems that make a ``results.json`` incomplete (empty list when it is valid)."""
    problems = [f"missing key {k!r}" for k in REQUIRED_KEYS if k not in data]
    if problems:
        return problems
    if data["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version {data['schema_version']!r} != {SCHEMA_VERSION}")
    rows = []
    for key in ("tasks", "heads", "inference_modes", "comparators"):
        if key not in data:  # "comparators" only with --backbones
            continue
        if not isinstance(data[key], list):
            problems.append(f"{key!r} must be a list")
            continue
        for i, row in enumerate(data[key]):
            try:
                rows.append(TaskRow.from_dict(row))
            except (KeyError, TypeError, ValueError) as exc:
                problems.append(f"{key}[{i}] is not a task row: {exc}")
    seen = {r.category for r in parse_rows(data.get("tasks", []))}
    missing = [c for c in CATEGORIES if c not in seen]
    if missing:
        problems.append(f"no result rows for: {', '.join(missing)}")
    for row in parse_rows(data.get("tasks", [])):
        absent = [b for b in BACKBONES if b not in row.values]
        if absent:
            problems.append(f"task {row.task!r} ({row.metric}) lacks backbones {absent}")
    for stage, seconds in dict(data["timings"]).items():
        if _num(seconds) is None or float(seconds) < 0:
            problems.append(f"timing of stage {stage!r} is not a non-negative number")
    return problems


def parse_rows(rows: Any) -> list[TaskRow]:
    """Parse a list of task-row dicts, skipping malformed ones (validation reports them)."""
    out = []
    for row in rows if isinstance(rows, list) else []:
        try:
            out.append(TaskRow.from_dict(row))
        except (KeyError, TypeError, ValueError):
            continue
    return out
