"""The recipe study's probe protocol (benchmarks/study_pretrain.py ``oof_scores``): pooling raw
out-of-fold probabilities over patient-grouped folds ranks the folds by their training balance,
which pushes a finding without signal far below AUROC 0.5; within-fold percentiles remove that
and keep a planted signal."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
study = pytest.importorskip("study_pretrain")


def _cohort(dims: int, seed: int = 0):
    """The study cohort's shape: 154 patients with 1-3 scans (200 scans), 10 positive scans from
    4 patients (3 + 3 + 2 + 2: no grouped 5-fold split balances them), features of pure noise."""
    rng = np.random.default_rng(seed)
    sizes = np.array([1] * 112 + [2] * 38 + [3] * 4)
    rng.shuffle(sizes)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    sick = np.zeros(len(sizes), dtype=int)
    sick[np.flatnonzero(sizes == 3)[:2]] = 1
    sick[np.flatnonzero(sizes == 2)[:2]] = 1
    y = sick[groups]
    return rng.normal(size=(len(y), dims)), y, groups


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    return float(study._weighted_auroc(y, score, np.ones((1, len(y))))[0])


def test_constant_features_rank_the_folds_when_pooled_not_with_fold_ranks():
    # Each fold scores every scan by its training prevalence alone; a positive's fold always
    # holds out its patient's positives, so trains on fewer: pooled, positives rank low.
    _, y, groups = _cohort(1)
    x = np.ones((len(y), 4))
    assert _auroc(y, study.oof_scores(x, y, 3, 0, groups, "pooled")) < 0.35  # the old protocol
    assert _auroc(y, study.oof_scores(x, y, 3, 0, groups, "fold-rank")) == pytest.approx(0.5)


def test_pure_noise_is_near_chance_with_fold_ranks_far_below_when_pooled():
    x, y, groups = _cohort(1)
    pooled = _auroc(y, study.oof_scores(x, y, 3, 0, groups, "pooled"))
    fixed = _auroc(y, study.oof_scores(x, y, 3, 0, groups, "fold-rank"))
    assert pooled < 0.35
    assert abs(fixed - 0.5) < 0.1, fixed


def test_planted_signal_is_still_found():
    x, y, groups = _cohort(8)
    x[:, 0] += 1.5 * y  # one of 8 noise features shifted for the positives
    assert _auroc(y, study.oof_scores(x, y, 3, 0, groups, "fold-rank")) > 0.8


def test_unknown_pooling_is_refused():
    x, y, groups = _cohort(1)
    with pytest.raises(ValueError, match="out-of-fold"):
        study.oof_scores(x, y, 1, 0, groups, "mean")
