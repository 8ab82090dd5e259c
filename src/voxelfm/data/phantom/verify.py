"""Check a cohort written by :func:`voxelfm.data.phantom.write_cohort` before it is used.

:func:`verify_cohort` reads ``labels.csv`` and ``reports.jsonl`` and looks at every file they name;
it returns the problems it found, one line each naming the file (an empty list: the cohort is
complete). It never raises for a broken cohort, so a caller (a pipeline stage check, a test, a
script) can report every problem at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from voxelfm.data.splits import SPLIT_NAMES

#: Columns of ``labels.csv`` a cohort cannot be used without.
REQUIRED_COLUMNS = frozenset({"patient_id", "scan_id", "split", "path", "label_path"})


def verify_cohort(root: str | os.PathLike[str], n_scans: int | None = None) -> list[str]:
    """The problems of the cohort in ``root``: ``labels.csv`` unreadable or lacking a required
    column, not ``n_scans`` scans (when given), duplicate scan ids, an empty split, a patient in
    more than one split, a scan or label map missing or empty, ``reports.jsonl`` unreadable or
    naming other scans than ``labels.csv``."""
    import pandas as pd

    root = Path(root)
    problems: list[str] = []

    def require(condition: bool, problem: str) -> bool:
        if not condition:
            problems.append(problem)
        return condition

    labels_path = root / "labels.csv"
    try:
        labels = pd.read_csv(labels_path)
    except (OSError, ValueError) as exc:
        return [f"{labels_path}: unreadable ({exc})"]
    columns = set(labels.columns)
    if not require(columns >= REQUIRED_COLUMNS, f"{labels_path}: missing columns {sorted(REQUIRED_COLUMNS - columns)}"):
        return problems
    if n_scans is not None:
        require(len(labels) == n_scans, f"{labels_path}: {len(labels)} scans, expected {n_scans}")
    require(labels["scan_id"].is_unique, f"{labels_path}: duplicate scan ids")
    for split in SPLIT_NAMES:
        require(int((labels["split"] == split).sum()) > 0, f"{labels_path}: no {split!r} scans")
    straddling = labels.groupby("patient_id")["split"].nunique()
    require(int((straddling > 1).sum()) == 0, f"{labels_path}: patients in more than one split")
    for col in ("path", "label_path"):
        missing = [p for p in labels[col] if not non_empty(root / str(p))]
        require(not missing, f"{root}: {len(missing)} {col} entries missing or empty (e.g. {missing[:2]})")
    reports = root / "reports.jsonl"
    try:
        ids = [json.loads(line)["scan_id"] for line in reports.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        problems.append(f"{reports}: unreadable ({exc})")
        return problems
    require(sorted(ids) == sorted(labels["scan_id"]), f"{reports}: scan ids differ from labels.csv")
    return problems


def non_empty(path: Path) -> bool:
    """A file with bytes, or a folder (a DICOM series) with at least one such file below it."""
    if path.is_dir():
        return any(p.is_file() and p.stat().st_size > 0 for p in path.rglob("*"))
    return path.is_file() and path.stat().st_size > 0


__all__ = ["REQUIRED_COLUMNS", "non_empty", "verify_cohort"]
