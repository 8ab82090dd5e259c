"""Survival metrics on predicted risk scores (higher risk = earlier event).

* Harrell's C-index (``sksurv.metrics.concordance_index_censored``).
* Uno's C-index with inverse-probability-of-censoring weights estimated on the *training* data
  (``sksurv.metrics.concordance_index_ipcw``), optionally truncated at ``tau``.
* Time-dependent cumulative/dynamic AUROC at user horizons with IPCW
  (``sksurv.metrics.cumulative_dynamic_auc``): cases = event by t, controls = still at risk at t;
  subjects censored before t get no vote but are accounted for through the weights.
* ``event_within_horizon_auroc``: the original code's "death within horizon" AUROC (label =
  event and time <= h, censored-before-horizon subjects counted as negatives; docs/original.md §4.4), kept for
  parity with the paper and labelled as such; it is biased when censoring is heavy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

from voxelfm.core.errors import InputValidationError
from voxelfm.metrics.classification import auroc


def _inputs(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event).ravel()
    r = np.asarray(risk, dtype=np.float64).ravel()
    if not (t.size == e.size == r.size):
        raise InputValidationError(f"time ({t.size}), event ({e.size}) and risk ({r.size}) differ in length")
    if not np.all(np.isin(e, (0, 1, True, False))):
        raise InputValidationError("event indicators must be 0/1")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(r))):
        raise InputValidationError("times or risks contain NaN or inf")
    if np.any(t < 0):
        raise InputValidationError("survival times must be >= 0")
    return t, e.astype(bool), r


def survival_array(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """The structured array scikit-survival expects."""
    from sksurv.util import Surv

    return Surv.from_arrays(event=np.asarray(event).astype(bool), time=np.asarray(time, dtype=np.float64))


def harrell_c(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index (ties in risk count 1/2)."""
    from sksurv.metrics import concordance_index_censored

    t, e, r = _inputs(time, event, risk)
    if not e.any():
        raise ValueError("C-index is undefined without events")
    return float(concordance_index_censored(e, t, r)[0])


def uno_c(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, train_time: np.ndarray,
    train_event: np.ndarray, tau: float | None = None,
) -> float:
    """Uno's IPCW C-index; the censoring distribution is estimated on the training data."""
    from sksurv.metrics import concordance_index_ipcw

    t, e, r = _inputs(time, event, risk)
    if not e.any():
        raise ValueError("C-index is undefined without events")
    return float(concordance_index_ipcw(survival_array(train_time, train_event), survival_array(t, e), r, tau=tau)[0])


def cumulative_dynamic_auroc(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, train_time: np.ndarray,
    train_event: np.ndarray, horizons: Sequence[float],
) -> np.ndarray:
    """Cumulative/dynamic AUROC at each horizon with IPCW (NaN where a horizon is not estimable)."""
    from sksurv.metrics import cumulative_dynamic_auc

    t, e, r = _inputs(time, event, risk)
    out = np.full(len(horizons), np.nan)
    train = survival_array(train_time, train_event)
    test = survival_array(t, e)
    for i, h in enumerate(horizons):
        # sksurv requires every horizon inside the test follow-up and at least one case and one
        # control; evaluate horizons one by one so one bad horizon does not hide the others.
        if not (np.any(e & (t <= h)) and np.any(t > h)) or h < t.min() or h >= t.max():
            continue
        try:
            out[i] = float(cumulative_dynamic_auc(train, test, r, [h])[0][0])
        except ValueError:
            continue
    return out


def event_within_horizon_auroc(time: np.ndarray, event: np.ndarray, risk: np.ndarray, horizon: float) -> float:
    """Paper-parity AUROC of "event by ``horizon``" (censored-before-horizon counted negative)."""
    t, e, r = _inputs(time, event, risk)
    return auroc(e & (t <= horizon), r)


def survival_metrics(
    time: np.ndarray, event: np.ndarray, risk: np.ndarray, train_time: np.ndarray,
    train_event: np.ndarray, horizons: Sequence[float] = (),
) -> dict[str, float]:
    """Harrell's C, Uno's C and, per horizon, cumulative/dynamic and paper-parity AUROC."""
    out = {"c_index_harrell": harrell_c(time, event, risk)}
    # Uno's C is undefined e.g. when test times lie beyond the training follow-up: left out then.
    with contextlib.suppress(ValueError):
        out["c_index_uno"] = uno_c(time, event, risk, train_time, train_event)
    if len(horizons):
        td = cumulative_dynamic_auroc(time, event, risk, train_time, train_event, horizons)
        for h, value in zip(horizons, td, strict=True):
            if np.isfinite(value):
                out[f"td_auroc@{h:g}"] = float(value)
            with contextlib.suppress(ValueError):
                out[f"auroc_event_within@{h:g}"] = event_within_horizon_auroc(time, event, risk, h)
    return out


__all__ = [
    "cumulative_dynamic_auroc",
    "event_within_horizon_auroc",
    "harrell_c",
    "survival_array",
    "survival_metrics",
    "uno_c",
]
