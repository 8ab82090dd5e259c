"""``results.json``: the machine-readable result of a demo run, and its schema check.

Layout (``schema_version`` 2)::

    {
      "schema_version": 2, "voxelfm_version": "...", "created": "ISO time", "size": "small",
      "device": "cpu", "config": {...DemoConfig...},
      "data": {"synthetic": true, "n_scans": 160, "n_patients": 120,
               "splits": {"train": 112, "val": 24, "test": 24}, "findings": [...]},
      "backbones": {"pretrained": {"model_id": ..., "preset": ..., "dir": ..., "pretrain": {...}},
                    "random": {...}},
      "tasks": [ResultRow...],           # the Fig. 2 table: one row per task/metric
      "heads": [ResultRow...],           # MLP on CLS vs Q-Former on patches (Fig. 5 left)
      "inference_modes": [ResultRow...], # full 3D vs chunked 2.5D (Fig. 5 right)
      "data_fraction": {"metric": ..., "task": ..., "points": [FractionPoint...]},   # Fig. 4
      "per_finding_f1": [{"finding": ..., "probe": MetricCI, "report": MetricCI}],   # Fig. 3
      "report_generation": {...},      # macro F1, text metrics, LM used, example reports
      "examples": {"retrieval": [...], "reports": [...], "segmentation": [...], "pca": [...]},
      "timings": {"stage": seconds}, "notes": ["..."]
    }

A row is :class:`voxelfm.viz.result_rows.ResultRow`: ``{"category", "task", "metric",
"higher_is_better", "values": {backbone: MetricCI}, "differences": {label: DifferenceCI}, "detail"}``.
A results-table row has the paired differences ``"pretrained − random"`` and ``"pretrained −
histogram"`` (paired bootstrap on the same test scans); a comparison row (heads, 3D vs 2.5D,
comparators) has one. A ``MetricCI`` is :meth:`voxelfm.metrics.MetricCI.to_dict` (``value``,
``ci_low``, ``ci_high``, ``n``, ``n_resamples``, ``n_failed``; null where undefined, e.g. one class in
the test set); a ``DifferenceCI`` adds ``p_value``, ``value_a``, ``value_b``. Schema 1 (``low``/``high``,
``difference``/``baseline_difference``/``p_value`` keys) is still read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from voxelfm.demo.layout import BACKBONE_NAMES
from voxelfm.viz import result_rows
from voxelfm.viz.result_rows import ResultRow

SCHEMA_VERSION = 2
#: The two paired differences of every results-table row (first − second, same test scans).
VERSUS_RANDOM, VERSUS_BASELINE = "pretrained − random", "pretrained − histogram"
#: Schema 1 kept each row's differences under fixed keys; read them under their labels.
LEGACY_DIFFERENCES = {"difference": VERSUS_RANDOM, "baseline_difference": VERSUS_BASELINE}

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

REQUIRED_KEYS: tuple[str, ...] = (
    "schema_version", "voxelfm_version", "created", "size", "device", "config", "data", "backbones",
    "tasks", "heads", "inference_modes", "data_fraction", "per_finding_f1", "report_generation",
    "examples", "timings", "notes",
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
                rows.append(ResultRow.from_dict(row, LEGACY_DIFFERENCES))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problems.append(f"{key}[{i}] is not a task row: {exc}")
    problems += row_problems(data.get("tasks", []))
    for stage, seconds in dict(data["timings"]).items():
        if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
            problems.append(f"timing of stage {stage!r} is not a non-negative number")
    return problems


def row_problems(rows: Any, categories: Sequence[str] = CATEGORIES) -> list[str]:
    """The gaps of a results table: categories without a row, rows without a value of every backbone
    (``validate_results`` and the checks of the stages that write rows)."""
    parsed = parse_rows(rows)
    missing = [c for c in categories if c not in {r.category for r in parsed}]
    problems = [f"no result rows for: {', '.join(missing)}"] if missing else []
    return problems + [f"task {r.task!r} ({r.metric}) lacks backbones {absent}"
                       for r in parsed if (absent := [b for b in BACKBONE_NAMES if b not in r.values])]


def parse_rows(rows: Any) -> list[ResultRow]:
    """Task rows of a results.json list (schema 1 rows too), skipping malformed ones (validation reports them)."""
    return result_rows.parse_rows(rows, LEGACY_DIFFERENCES)
