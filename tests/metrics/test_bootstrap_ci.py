import json

import numpy as np
import pytest

from voxelfm.metrics.bootstrap import (
    DifferenceCI,
    MetricCI,
    bootstrap_ci,
    bootstrap_metrics,
    paired_bootstrap,
)
from voxelfm.metrics.classification import binary_metrics


def test_percentile_ci_covers_true_mean_at_nominal_rate():
    rng = np.random.default_rng(0)
    hits = 0
    reps = 200
    for r in range(reps):
        x = rng.normal(1.0, 2.0, 80)
        ci = bootstrap_ci(np.mean, x, n_resamples=300, seed=r)
        hits += ci.ci_low <= 1.0 <= ci.ci_high
    # Binomial SD of the coverage over 200 reps is ~0.015; the percentile bootstrap of a mean at
    # n = 80 under-covers slightly, so accept a band around 0.95.
    assert 0.91 <= hits / reps <= 0.98


def test_bootstrap_is_seeded_and_skips_undefined_resamples():
    y = np.r_[np.ones(3), np.zeros(30)]
    s = np.linspace(0, 1, 33)
    a = bootstrap_metrics(lambda y, s: binary_metrics(y, s), y, s, n_resamples=300, seed=5)
    b = bootstrap_metrics(lambda y, s: binary_metrics(y, s), y, s, n_resamples=300, seed=5)
    assert a["auroc"] == b["auroc"]
    assert a["auroc"].n_failed > 0  # some resamples draw no positive
    assert a["auroc"].ci_low <= a["auroc"].value <= a["auroc"].ci_high
    assert a["auroc"].to_dict()["n"] == 33


def test_paired_bootstrap_detects_a_better_model_and_not_a_copy():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    good = y + rng.normal(0, 0.6, 400)
    bad = y + rng.normal(0, 2.0, 400)
    fn = lambda y, s: {"auroc": binary_metrics(y, s)["auroc"]}  # noqa: E731
    d = paired_bootstrap(fn, (y, good), (y, bad), n_resamples=500, seed=0)["auroc"]
    assert d.value > 0 and d.ci_low > 0 and d.p_value < 0.01
    same = paired_bootstrap(fn, (y, good), (y, good), n_resamples=200, seed=0)["auroc"]
    assert same.value == 0 and same.ci_low == 0 and same.ci_high == 0


def test_bootstrap_rejects_mismatched_arrays():
    from voxelfm.core.errors import InputValidationError

    with pytest.raises(InputValidationError):
        bootstrap_ci(np.mean, np.ones(3), np.ones(4))


def test_ci_records_are_json_ready_with_counts_as_ints() -> None:
    ci = MetricCI(0.5, float("nan"), 0.7, np.int64(10), 100, 1).to_dict()
    assert ci == {"value": 0.5, "ci_low": None, "ci_high": 0.7, "n": 10, "n_resamples": 100, "n_failed": 1}
    assert type(ci["n"]) is int
    diff = DifferenceCI(0.1, -0.1, 0.2, float("inf"), 10, 0.6, 0.5, 100).to_dict()
    assert list(diff) == ["value", "ci_low", "ci_high", "p_value", "n", "value_a", "value_b", "n_resamples", "n_failed"]
    assert diff["p_value"] is None and json.loads(json.dumps(diff)) == diff
