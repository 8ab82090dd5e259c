"""Generative model without images: co-occurrence, survival, reports, cohort plan."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.core.errors import ConfigError
from voxelfm.data.phantom import FINDINGS, PrevalenceConfig
from voxelfm.data.phantom.cohort import assign_splits, plan_cohort
from voxelfm.data.phantom.patient import sample_patient
from voxelfm.data.phantom.reports import write_report
from voxelfm.data.phantom.survival import linear_predictor, sample_survival


@pytest.fixture(scope="module")
def patients():
    rng = np.random.default_rng(0)
    return [sample_patient(rng, f"P{i}", PrevalenceConfig()) for i in range(1500)]


def _rate(patients, finding, cond) -> float:
    sel = [p.findings[finding] for p in patients if cond(p)]
    return float(np.mean(sel))


def test_realistic_co_occurrence(patients):
    assert _rate(patients, "arterial_wall_calcification", lambda p: p.age > 70) > 2 * _rate(
        patients, "arterial_wall_calcification", lambda p: p.age < 50)
    assert _rate(patients, "emphysema", lambda p: p.smoker) > 2.5 * _rate(patients, "emphysema", lambda p: not p.smoker)
    assert _rate(patients, "atelectasis", lambda p: p.findings["pleural_effusion"]) > 2 * _rate(
        patients, "atelectasis", lambda p: not p.findings["pleural_effusion"])
    prevalence = {f: np.mean([p.findings[f] for p in patients]) for f in FINDINGS}
    assert all(0.02 < v < 0.6 for v in prevalence.values()), prevalence


def test_prevalences_are_configurable():
    rng = np.random.default_rng(1)
    config = PrevalenceConfig().with_base(lung_nodule=0.95)
    rate = np.mean([sample_patient(rng, "x", config).findings["lung_nodule"] for _ in range(300)])
    assert rate > 0.9
    with pytest.raises(ConfigError):
        PrevalenceConfig().with_base(fracture=0.5)


def test_survival_follows_the_hazard_model():
    rng = np.random.default_rng(2)
    risks = rng.normal(0, 1, 4000)
    outcomes = [sample_survival(rng, r) for r in risks]
    time = np.array([o.time for o in outcomes])
    event = np.array([o.event for o in outcomes])
    assert 0.2 < event.mean() < 0.8  # both events and (administrative / random) censoring
    assert time.max() <= 10.0 + 1e-9
    from lifelines.utils import concordance_index

    # Higher risk means shorter survival: concordance of -risk with time well above chance.
    assert concordance_index(time, -risks, event) > 0.65
    older = linear_predictor(80, 0, {}, 0.0, 0.0)
    younger = linear_predictor(50, 0, {}, 0.0, 0.0)
    assert older > younger
    assert linear_predictor(60, 0, {"cardiomegaly": 1}, 12.0, 100.0) > linear_predictor(60, 0, {}, 0.0, 0.0)


def test_reports_vary_and_negate(patients):
    p = next(q for q in patients if q.findings["lung_nodule"] and not q.findings["pleural_effusion"])
    m = {"nodules": [(9.5, np.zeros(3), "solid", "right", "right upper lobe")], "heart_volume_ml": 600.0,
         "effusion_volume_ml": 0.0, "calcium_score": 0.0, "largest_node_mm": 6.0}
    texts = {write_report(p.findings, p.params, m, {"thickness_mm": 2.5, "kernel": "smooth"},
                          np.random.default_rng(s))["report"] for s in range(12)}
    assert len(texts) > 6  # phrasing varies
    for text in texts:
        assert "right upper lobe" in text and ("9.5" in text or "10 mm" in text)
        assert "effusion" in text.lower()  # stated as a negation
        assert "Impression:" in text


def test_cohort_plan_has_repeat_scans_and_patient_level_splits():
    plans = assign_splits(plan_cohort(200, seed=0), seed=0)
    assert len(plans) == 200 and len({p.scan_id for p in plans}) == 200
    by_patient: dict[str, set[str]] = {}
    for p in plans:
        by_patient.setdefault(p.patient_id, set()).add(p.split)
    assert all(len(s) == 1 for s in by_patient.values())
    assert 0.1 < sum(1 for p in plans if p.scan_index > 0) / 200 < 0.4
    assert {p.split for p in plans} == {"train", "val", "test"}
