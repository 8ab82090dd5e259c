"""Percentile bootstrap confidence intervals, single and paired.

Every reported metric gets a 95% percentile bootstrap CI over the test units (scans, trials or
labels), seeded and with a configurable number of resamples (default 1,000). The original code
mixed Hanley-McNeil analytic intervals, unseeded bootstraps and 10,000-resample bootstraps
(docs/original.md §4.8); here one resampler serves every metric, and all metrics of one evaluation share
the same resampled index sets, so their intervals are mutually consistent.

A metric function may carry a ``for_resamples`` attribute: a function giving the same numbers on
inputs that were already checked (the point estimate checks them), used for the resamples; e.g.
:class:`voxelfm.metrics.survival.SurvivalMetrics` skips scikit-survival's per-call input checks.

``over_resamples(arrays, indices)`` (e.g. :class:`voxelfm.metrics.classification.ThresholdMetrics`)
goes further: every metric for all index rows at once, NaN where a per-resample call would fail.

A resample on which a metric is undefined (e.g. an AUROC resample without positives) is skipped
for that metric and counted in ``n_failed``; the interval is built from the others.

``paired_bootstrap`` resamples the *same* test units for two prediction sets (two backbones on one
test set) and reports the CI of the difference plus a two-sided bootstrap p-value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from voxelfm.core.errors import InputValidationError

MetricFn = Callable[..., Mapping[str, float]]


@dataclass(frozen=True)
class MetricCI:
    """A metric value with its percentile-bootstrap CI and the number of test units."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    n_resamples: int = 0
    n_failed: int = 0

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready form (non-finite numbers become ``None``)."""
        return _json_ready(self)

    def format(self, digits: int = 3) -> str:
        """``0.812 [0.771, 0.850]``."""
        def f(x: float) -> str:
            return "nan" if not math.isfinite(x) else f"{x:.{digits}f}"

        return f"{f(self.value)} [{f(self.ci_low)}, {f(self.ci_high)}]"


@dataclass(frozen=True)
class DifferenceCI:
    """Paired difference ``a - b`` of one metric, with CI and two-sided bootstrap p-value."""

    value: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    value_a: float
    value_b: float
    n_resamples: int = 0
    n_failed: int = 0

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready form (non-finite numbers become ``None``)."""
        return _json_ready(self)


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _json_ready(record: MetricCI | DifferenceCI) -> dict[str, float | int | None]:
    """A CI record's fields in order: counts as ints, other numbers as floats (``None`` if not finite)."""
    return {f.name: int(getattr(record, f.name)) if f.type == "int" else _finite_or_none(getattr(record, f.name))
            for f in fields(record)}


def _check_arrays(arrays: Sequence[np.ndarray]) -> int:
    if not arrays:
        raise InputValidationError("bootstrap: no arrays given")
    n = len(arrays[0])
    for a in arrays:
        if len(a) != n:
            raise InputValidationError(f"bootstrap: arrays differ in length ({[len(x) for x in arrays]})")
    if n == 0:
        raise InputValidationError("bootstrap: no test units")
    return n


def resample_indices(
    n: int, n_resamples: int, rng: np.random.Generator, strata: np.ndarray | None = None
) -> np.ndarray:
    """``(n_resamples, n)`` bootstrap index sets; with ``strata`` each stratum keeps its size."""
    if strata is None:
        return rng.integers(0, n, size=(n_resamples, n))
    strata = np.asarray(strata)
    if len(strata) != n:
        raise InputValidationError(f"bootstrap: strata has {len(strata)} entries for {n} units")
    out = np.empty((n_resamples, n), dtype=np.int64)
    pos = 0
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        picks = rng.integers(0, len(members), size=(n_resamples, len(members)))
        out[:, pos : pos + len(members)] = members[picks]
        pos += len(members)
    return out


def _safe_call(fn: MetricFn, arrays: Sequence[np.ndarray]) -> dict[str, float]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fn(*arrays)
    except (ValueError, ZeroDivisionError, FloatingPointError, np.linalg.LinAlgError):
        return {}
    return {k: float(v) for k, v in result.items()}


def _resample_fn(fn: MetricFn) -> MetricFn:
    """``fn.for_resamples`` where the metric function has one (same numbers, no input checks), else ``fn``."""
    return getattr(fn, "for_resamples", fn)


def _take(arrays: Sequence[np.ndarray], idx: np.ndarray) -> list[np.ndarray]:
    return [a[idx] for a in arrays]


def _percentile_ci(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_metrics(
    fn: MetricFn,
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    strata: np.ndarray | None = None,
) -> dict[str, MetricCI]:
    """Evaluate ``fn(*arrays) -> {name: value}`` and give every metric a percentile CI.

    The arrays are resampled jointly along their first axis (one row = one test unit).
    """
    arrays = [np.asarray(a) if not isinstance(a, np.ndarray) else a for a in arrays]
    n = _check_arrays(arrays)
    if not 0.0 < confidence < 1.0:
        raise InputValidationError(f"bootstrap: confidence must be in (0, 1), got {confidence}")
    point = _safe_call(fn, arrays)
    if not point:
        # Let the metric function raise its own (informative) error on the full data.
        point = {k: float(v) for k, v in fn(*arrays).items()}
    rng = np.random.default_rng(seed)
    samples = {k: np.full(n_resamples, np.nan) for k in point}
    indices = resample_indices(n, n_resamples, rng, strata)
    over = getattr(fn, "over_resamples", None)
    if over is not None:
        values = over(arrays, indices)
        for k in samples:
            if k in values:
                samples[k][:] = values[k]
    else:
        resample_fn = _resample_fn(fn)
        for r, idx in enumerate(indices):
            for k, v in _safe_call(resample_fn, _take(arrays, idx)).items():
                if k in samples:
                    samples[k][r] = v
    out: dict[str, MetricCI] = {}
    for k, value in point.items():
        low, high = _percentile_ci(samples[k], confidence)
        failed = int(np.sum(~np.isfinite(samples[k])))
        out[k] = MetricCI(float(value), low, high, n, n_resamples, failed)
    return out


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    strata: np.ndarray | None = None,
) -> MetricCI:
    """Percentile bootstrap CI of one scalar ``statistic(*arrays)``."""
    result = bootstrap_metrics(
        lambda *a: {"stat": statistic(*a)}, *arrays,
        n_resamples=n_resamples, seed=seed, confidence=confidence, strata=strata,
    )
    return result["stat"]


def paired_bootstrap(
    fn: MetricFn,
    arrays_a: Sequence[np.ndarray],
    arrays_b: Sequence[np.ndarray],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    fn_b: MetricFn | None = None,
) -> dict[str, DifferenceCI]:
    """CI of ``fn(*arrays_a)[k] - fn_b(*arrays_b)[k]`` resampling the same test units for both.

    Row ``i`` of every array in ``arrays_a`` and ``arrays_b`` must be the same test unit (e.g. the
    same scan predicted by two backbones). ``fn_b`` (default ``fn``) lets each side keep its own
    settings, e.g. a threshold chosen on its own validation predictions. The p-value is the two-sided bootstrap p-value of a
    zero difference: ``2 * min(P(diff* <= 0), P(diff* >= 0))`` over the resamples.
    """
    arrays_a = [np.asarray(a) for a in arrays_a]
    arrays_b = [np.asarray(a) for a in arrays_b]
    n = _check_arrays(list(arrays_a) + list(arrays_b))
    fn_b = fn if fn_b is None else fn_b
    point_a = {k: float(v) for k, v in fn(*arrays_a).items()}
    point_b = {k: float(v) for k, v in fn_b(*arrays_b).items()}
    keys = [k for k in point_a if k in point_b]
    rng = np.random.default_rng(seed)
    diffs = {k: np.full(n_resamples, np.nan) for k in keys}
    indices = resample_indices(n, n_resamples, rng)
    over_a, over_b = getattr(fn, "over_resamples", None), getattr(fn_b, "over_resamples", None)
    if over_a is not None and over_b is not None:
        va, vb = over_a(arrays_a, indices), over_b(arrays_b, indices)
        for k in keys:
            if k in va and k in vb:
                diffs[k][:] = va[k] - vb[k]
    else:
        resample_a, resample_b = _resample_fn(fn), _resample_fn(fn_b)
        for r, idx in enumerate(indices):
            ra = _safe_call(resample_a, _take(arrays_a, idx))
            rb = _safe_call(resample_b, _take(arrays_b, idx))
            for k in keys:
                if k in ra and k in rb:
                    diffs[k][r] = ra[k] - rb[k]
    out: dict[str, DifferenceCI] = {}
    for k in keys:
        d = diffs[k]
        finite = d[np.isfinite(d)]
        low, high = _percentile_ci(d, confidence)
        if finite.size:
            p = min(1.0, 2.0 * min(np.mean(finite <= 0.0), np.mean(finite >= 0.0)))
        else:
            p = math.nan
        out[k] = DifferenceCI(
            point_a[k] - point_b[k], low, high, float(p), n, point_a[k], point_b[k],
            n_resamples, int(d.size - finite.size),
        )
    return out
