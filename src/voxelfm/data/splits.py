"""Patient-level train/val/test splits: a patient's scans never straddle two splits."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from voxelfm.core.errors import DataError, located

SPLIT_NAMES = ("train", "val", "test")


def patient_level_split(df: pd.DataFrame, *, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0,
                        stratify: str | None = None, patient_col: str = "patient_id",
                        names: Sequence[str] = SPLIT_NAMES) -> pd.Series:
    """Assign every row of ``df`` to a split (``names``), grouping rows by ``patient_col``.

    Patients are shuffled with ``seed`` and cut at the cumulative ``fractions``; with
    ``stratify`` (a column, e.g. a finding) the cut is made within each stratum (a patient's
    stratum is its most frequent value) so label prevalence is similar across splits. Every split
    with a positive fraction gets at least one patient when there are enough patients. Returns a
    Series named ``split`` aligned with ``df.index``. Deterministic for a given ``seed``.
    """
    where = "patient_level_split"
    if patient_col not in df.columns:
        raise DataError(located(where, f"column {patient_col!r} not found (columns: {list(df.columns)})"))
    if stratify is not None and stratify not in df.columns:
        raise DataError(located(where, f"stratify column {stratify!r} not found"))
    frac = np.asarray(fractions, dtype=float)
    if len(frac) != len(names) or np.any(frac < 0) or not np.isclose(frac.sum(), 1.0):
        raise DataError(located(where, f"fractions {tuple(fractions)} must be {len(names)} non-negative numbers summing to 1"))
    if df[patient_col].isna().any():
        raise DataError(located(where, f"column {patient_col!r} has missing patient ids"))
    patients = pd.Index(pd.unique(df[patient_col]))
    if stratify is None:
        strata = pd.Series(0, index=patients)
    else:
        strata = df.groupby(patient_col, sort=False)[stratify].agg(lambda s: s.mode().iloc[0]).reindex(patients)
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(frac)
    assigned: dict[object, int] = {}
    for _, members in strata.groupby(strata, sort=True):
        order = rng.permutation(len(members))
        offset = rng.random()  # spreads the rounding of small strata across splits
        for rank, idx in enumerate(order):
            pos = (rank + offset) / len(members)
            assigned[members.index[idx]] = int(min(np.searchsorted(cuts, pos, side="right"), len(names) - 1))
    _fill_empty_splits(assigned, frac, rng)
    split_of = {pid: names[k] for pid, k in assigned.items()}
    return pd.Series([split_of[p] for p in df[patient_col]], index=df.index, name="split")


def _fill_empty_splits(assigned: dict[object, int], frac: np.ndarray, rng: np.random.Generator) -> None:
    """Move one patient from the largest split into each empty split that should not be empty."""
    wanted = [k for k in range(len(frac)) if frac[k] > 0]
    if len(assigned) < len(wanted):
        return
    for k in wanted:
        counts = np.bincount(list(assigned.values()), minlength=len(frac))
        if counts[k] > 0:
            continue
        donor = int(np.argmax(counts))
        candidates = sorted((p for p, s in assigned.items() if s == donor), key=str)
        assigned[candidates[int(rng.integers(len(candidates)))]] = k
