"""Classification metrics over many resamples at once equal the per-call metrics bit for bit (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.metrics.bootstrap import (
    _safe_call,
    bootstrap_metrics,
    paired_bootstrap,
    resample_indices,
)
from voxelfm.metrics.classification import ThresholdMetrics


def _data(seed: int, n: int, labels: int, *, ties: bool, rare: bool):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < (0.06 if rare else 0.35)).astype(int)
    p = np.clip(0.25 * y + 0.75 * rng.random((n, labels)), 0.0, 1.0)
    if ties:  # many tied scores, and scores exactly at the thresholds
        p = np.round(p, 1)
    return y, p


def _per_call(fn, arrays, indices) -> dict[str, np.ndarray]:
    """The old bootstrap loop: one call per resample, a failed call or a missing key is NaN."""
    out: dict[str, np.ndarray] = {}
    for r, idx in enumerate(indices):
        for k, v in _safe_call(fn, [a[idx] for a in arrays]).items():
            out.setdefault(k, np.full(len(indices), np.nan))[r] = v
    return out


@pytest.mark.parametrize("labels", [1, 4, 15])
@pytest.mark.parametrize("case", range(4))
def test_over_resamples_equals_per_call(labels: int, case: int) -> None:
    y, p = _data(10 * labels + case, 25 + 10 * case, labels, ties=case % 2 == 0, rare=case == 3)
    names = [f"finding{j}" for j in range(labels)]
    fn = ThresholdMetrics(names, {t: v for t, v in zip(names, (0.3, 0.5, 0.6, 0.7) * 4, strict=False)})
    indices = resample_indices(len(y), 200, np.random.default_rng(case))
    expected = _per_call(lambda a, b: fn(a, b), (y, p), indices)
    got = fn.over_resamples((y, p), indices)
    assert expected, "no resample was defined"
    for k, v in expected.items():
        # bit-identical, NaN where the per-call function failed or left the label out
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    for k in set(got) - set(expected):
        assert np.isnan(got[k]).all()


def test_bootstrap_intervals_unchanged() -> None:
    y, p = _data(3, 60, 15, ties=False, rare=False)
    names = [f"f{j}" for j in range(15)]
    fn = ThresholdMetrics(names, dict.fromkeys(names, 0.45))
    slow = bootstrap_metrics(lambda a, b: fn(a, b), y, p, n_resamples=150, seed=4)
    fast = bootstrap_metrics(fn, y, p, n_resamples=150, seed=4)
    assert {k: v.to_dict() for k, v in fast.items()} == {k: v.to_dict() for k, v in slow.items()}
    p_b = np.clip(p + np.random.default_rng(0).normal(0, 0.1, p.shape), 0, 1)
    fn_b = ThresholdMetrics(names, dict.fromkeys(names, 0.55))
    slow_d = paired_bootstrap(lambda a, b: fn(a, b), (y, p), (y, p_b), fn_b=lambda a, b: fn_b(a, b),
                              n_resamples=120, seed=2)
    fast_d = paired_bootstrap(fn, (y, p), (y, p_b), fn_b=fn_b, n_resamples=120, seed=2)
    assert {k: v.to_dict() for k, v in fast_d.items()} == {k: v.to_dict() for k, v in slow_d.items()}


def test_large_test_sets_are_processed_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import voxelfm.metrics.resampled as resampled

    y, p = _data(5, 40, 2, ties=True, rare=False)
    fn = ThresholdMetrics(["a", "b"], {"a": 0.5, "b": 0.4})
    indices = resample_indices(len(y), 50, np.random.default_rng(1))
    whole = fn.over_resamples((y, p), indices)
    monkeypatch.setattr(resampled, "_ELEMENTS_PER_BLOCK", 100)  # 2 rows per block
    blocked = fn.over_resamples((y, p), indices)
    for k in whole:
        np.testing.assert_array_equal(blocked[k], whole[k])
