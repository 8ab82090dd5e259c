"""The cohort must not be trivially separable: a mean-HU baseline cannot solve every task."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from voxelfm.data.phantom import FINDINGS, LABEL_IDS, generate_cohort


@pytest.fixture(scope="module")
def cohort():
    return generate_cohort(36, seed=11, size="tiny", workers=1)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    auc = roc_auc_score(y, score)
    return max(auc, 1.0 - auc)  # the baseline may pick either direction


def test_mean_hu_does_not_solve_the_tasks(cohort):
    table = cohort.table()
    mean_hu = np.array([s.volume.array.mean() for s in cohort])
    aucs = {}
    for name in FINDINGS:
        y = table[name].to_numpy()
        if 3 <= y.sum() <= len(y) - 3:
            aucs[name] = _auc(y, mean_hu)
    assert len(aucs) >= 6
    assert np.median(list(aucs.values())) < 0.8, aucs
    assert sum(v > 0.9 for v in aucs.values()) <= len(aucs) // 4, aucs
    # Continuous targets: mean HU explains little of age, nor of the calcium score.
    for target in ("age", "calcium_score"):
        r = np.corrcoef(mean_hu, table[target])[0, 1]
        assert abs(r) < 0.6, (target, r)


def test_the_information_is_in_the_anatomy(cohort):
    """Features that look at the right place do separate the classes."""
    table = cohort.table()
    nodule_voxels = np.array([(s.labels == LABEL_IDS["nodule"]).sum() for s in cohort])
    assert _auc(table["lung_nodule"].to_numpy(), nodule_voxels) > 0.95
    lung = [np.isin(s.labels, [LABEL_IDS["lung_left"], LABEL_IDS["lung_right"]]) for s in cohort]
    lung_vol = np.array([m.sum() * np.prod(s.volume.spacing) / 1e6 for m, s in zip(lung, cohort, strict=True)])
    np.testing.assert_allclose(lung_vol, table["lung_volume_l"], rtol=1e-2)
