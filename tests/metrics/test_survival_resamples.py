"""The survival bootstrap's fast path gives scikit-survival's numbers exactly (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.metrics.bootstrap import bootstrap_metrics, paired_bootstrap
from voxelfm.metrics.survival import SurvivalMetrics


def _cohort(rng: np.random.Generator, n: int, *, round_to: int | None, censor: float):
    time = rng.exponential(4.0, n) + 0.05
    if round_to is not None:  # ties in time
        time = np.round(time, round_to)
    event = (rng.random(n) > censor).astype(int)
    risk = rng.normal(size=n) - 0.2 * time
    if round_to is not None:  # ties in risk too
        risk = np.round(risk, 1)
    return time, event, risk


def _same(a: dict, b: dict) -> bool:
    """Same keys and bit-identical values (NaN equal to NaN)."""
    return list(a) == list(b) and all(x == y or (np.isnan(x) and np.isnan(y)) for x, y in zip(a.values(), b.values(), strict=True))


def _outcome(fn, *arrays):
    try:
        return fn(*arrays)
    except ValueError as exc:
        return type(exc)


@pytest.mark.parametrize("case", range(12))
def test_fast_path_equals_scikit_survival(case: int) -> None:
    rng = np.random.default_rng(case)
    round_to = (None, 0, 1)[case % 3]
    censor = (0.2, 0.5, 0.85, 0.0)[case % 4]
    tt, et, _ = _cohort(rng, 80, round_to=round_to, censor=censor)
    t, e, r = _cohort(rng, 30, round_to=round_to, censor=censor)
    if case % 5 == 0:
        t[0] = tt.max() + 1.0  # a test time beyond the training follow-up: Uno's C and td-AUROC undefined
        e[0] = 1
    metrics = SurvivalMetrics(tt, et, [1.0, 3.0, 20.0])
    compared = 0
    for _ in range(60):
        idx = rng.integers(0, len(t), len(t))
        reference = _outcome(metrics, t[idx], e[idx], r[idx])
        fast = _outcome(metrics.for_resamples, t[idx], e[idx], r[idx])
        if isinstance(reference, dict):
            assert _same(fast, reference)
            compared += len(reference)
        else:
            assert not isinstance(fast, dict)
    assert compared > 0


def test_bootstrap_uses_the_fast_path_with_unchanged_intervals() -> None:
    rng = np.random.default_rng(7)
    tt, et, _ = _cohort(rng, 120, round_to=1, censor=0.4)
    t, e, r = _cohort(rng, 40, round_to=1, censor=0.4)
    metrics = SurvivalMetrics(tt, et, [2.0, 5.0])
    slow = bootstrap_metrics(lambda *a: metrics(*a), t, e, r, n_resamples=80, seed=3)
    fast = bootstrap_metrics(metrics, t, e, r, n_resamples=80, seed=3)
    assert {k: v.to_dict() for k, v in fast.items()} == {k: v.to_dict() for k, v in slow.items()}
    r_b = r + rng.normal(0, 0.5, len(r))
    slow_d = paired_bootstrap(lambda *a: metrics(*a), (t, e, r), (t, e, r_b), n_resamples=50, seed=1)
    fast_d = paired_bootstrap(metrics, (t, e, r), (t, e, r_b), n_resamples=50, seed=1)
    assert {k: v.to_dict() for k, v in fast_d.items()} == {k: v.to_dict() for k, v in slow_d.items()}


def test_survival_metrics_object_pickles_without_its_fitted_curve() -> None:
    import pickle

    rng = np.random.default_rng(1)
    tt, et, _ = _cohort(rng, 50, round_to=None, censor=0.3)
    t, e, r = _cohort(rng, 20, round_to=None, censor=0.3)
    metrics = SurvivalMetrics(tt, et, [2.0])
    before = metrics.for_resamples(t, e, r)
    copy = pickle.loads(pickle.dumps(metrics))
    assert copy._censoring is None and copy.for_resamples(t, e, r) == before
