import numpy as np
import pytest
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc
from sksurv.util import Surv

from voxelfm.metrics.survival import (
    cumulative_dynamic_auroc,
    event_within_horizon_auroc,
    harrell_c,
    survival_metrics,
    uno_c,
)


def _cohort(n, seed):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    t_event = rng.exponential(np.exp(-risk))
    t_cens = rng.exponential(1.5, n)
    time = np.minimum(t_event, t_cens)
    event = (t_event <= t_cens).astype(int)
    return time, event, risk + rng.normal(0, 0.5, n)


def test_harrell_matches_lifelines():
    time, event, risk = _cohort(300, 0)
    assert harrell_c(time, event, risk) == pytest.approx(concordance_index(time, -risk, event), abs=1e-9)


def test_uno_and_time_dependent_auc_match_sksurv():
    tr_t, tr_e, _ = _cohort(400, 1)
    time, event, risk = _cohort(200, 2)
    tr = Surv.from_arrays(tr_e.astype(bool), tr_t)
    te = Surv.from_arrays(event.astype(bool), time)
    tau = float(np.quantile(time, 0.8))
    assert uno_c(time, event, risk, tr_t, tr_e) == pytest.approx(concordance_index_ipcw(tr, te, risk)[0])
    assert uno_c(time, event, risk, tr_t, tr_e, tau=tau) == pytest.approx(concordance_index_ipcw(tr, te, risk, tau=tau)[0])
    horizons = [0.3, 0.6]
    expected = cumulative_dynamic_auc(tr, te, risk, horizons)[0]
    got = cumulative_dynamic_auroc(time, event, risk, tr_t, tr_e, horizons)
    np.testing.assert_allclose(got, expected)
    # A horizon beyond follow-up is not estimable: NaN, not an exception.
    assert np.isnan(cumulative_dynamic_auroc(time, event, risk, tr_t, tr_e, [time.max() * 2])[0])


def test_paper_parity_auroc_counts_early_censoring_as_negative():
    time, event, risk = _cohort(200, 3)
    h = 0.5
    assert event_within_horizon_auroc(time, event, risk, h) == pytest.approx(
        roc_auc_score((event == 1) & (time <= h), risk)
    )
    m = survival_metrics(time, event, risk, time, event, horizons=[h])
    assert {"c_index_harrell", "c_index_uno", "td_auroc@0.5", "auroc_event_within@0.5"} <= set(m)
