"""Patient-level splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from voxelfm.core.errors import DataError
from voxelfm.data.splits import patient_level_split


def _frame(n_patients: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 4, n_patients)
    pid = np.repeat([f"P{i}" for i in range(n_patients)], counts)
    label = np.repeat(rng.random(n_patients) < 0.2, counts).astype(int)
    return pd.DataFrame({"patient_id": pid, "y": label})


def test_patients_never_straddle_splits_and_fractions_hold():
    df = _frame()
    split = patient_level_split(df, seed=3)
    assert split.index.equals(df.index) and set(split) == {"train", "val", "test"}
    assert (df.assign(split=split).groupby("patient_id")["split"].nunique() == 1).all()
    per_patient = df.assign(split=split).drop_duplicates("patient_id")["split"].value_counts(normalize=True)
    np.testing.assert_allclose(per_patient[["train", "val", "test"]], [0.7, 0.15, 0.15], atol=0.02)


def test_deterministic_and_seed_dependent():
    df = _frame()
    assert patient_level_split(df, seed=1).equals(patient_level_split(df, seed=1))
    assert not patient_level_split(df, seed=1).equals(patient_level_split(df, seed=2))


def test_stratified_split_balances_prevalence():
    df = _frame(400, seed=5)
    split = patient_level_split(df, seed=0, stratify="y")
    prev = df.assign(split=split).drop_duplicates("patient_id").groupby("split")["y"].mean()
    assert prev.max() - prev.min() < 0.05


def test_tiny_cohorts_still_fill_every_split():
    df = pd.DataFrame({"patient_id": ["a", "b", "c", "c"]})
    assert set(patient_level_split(df, seed=0)) == {"train", "val", "test"}


def test_bad_input_is_reported():
    with pytest.raises(DataError, match="patient_id"):
        patient_level_split(pd.DataFrame({"x": [1]}), seed=0)
    with pytest.raises(DataError, match="fractions"):
        patient_level_split(_frame(), seed=0, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(DataError, match="stratify"):
        patient_level_split(_frame(), seed=0, stratify="missing")
