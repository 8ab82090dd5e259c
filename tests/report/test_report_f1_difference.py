"""macro_f1_difference: the paired comparison of two report models on the same test reports."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.report.evaluate import finding_metrics, macro_f1_difference

NAMES = ["a", "b"]


def test_difference_of_macro_f1_with_a_paired_ci() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((40, 2)) < 0.5
    perfect, noisy = truth.copy(), truth ^ (rng.random((40, 2)) < 0.3)
    diff = macro_f1_difference(truth, perfect, noisy, NAMES, n_resamples=200, seed=1)
    expected = 1.0 - finding_metrics(truth, noisy, NAMES, n_bootstrap=0)["macro"]["f1"]
    assert diff.value == pytest.approx(expected) and diff.n == 40
    assert 0 < diff.ci_low <= diff.value <= diff.ci_high and diff.p_value < 0.05
    same = macro_f1_difference(truth, noisy, noisy, NAMES, n_resamples=50, seed=1)
    assert (same.value, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)
    again = macro_f1_difference(truth, perfect, noisy, NAMES, n_resamples=200, seed=1)
    assert again == diff  # seeded
