"""A report model that writes one text for every scan is named as such, and the finding F1 a fixed
report naming every finding gets is scored beside the chance baselines."""

from __future__ import annotations

import pytest

from voxelfm.report.evaluate import distinct_reports, evaluate_reports, reading_notes
from voxelfm.report.findings import FindingVocabulary

REFS = {"a": "Hiatal hernia.", "b": "No acute cardiopulmonary abnormality.", "c": "Aortic atherosclerosis.",
        "d": "Hiatal hernia. Aortic atherosclerosis."}
VOCAB = FindingVocabulary.ct_rate().subset(["hiatal_hernia", "arterial_wall_calcification"])


def test_distinct_reports_ignore_case_and_spacing() -> None:
    assert distinct_reports(["Hiatal hernia.", "hiatal  hernia.", "Aortic atherosclerosis."]) == {"distinct": 2, "n": 3}


def test_a_constant_report_is_flagged_and_the_every_finding_report_scored() -> None:
    constant = evaluate_reports({s: "Hiatal hernia." for s in REFS}, REFS, vocabulary=VOCAB, n_bootstrap=50)
    varied = evaluate_reports(dict(REFS), REFS, vocabulary=VOCAB, n_bootstrap=50)
    assert constant["reports"] == {"distinct": 1, "n": 4} and varied["reports"]["distinct"] == 4
    # every finding named for every scan: hernia F1 2*2/(2*2+2) = 2/3, calcification the same
    assert constant["baseline_every_finding"]["macro"]["f1"] == pytest.approx(2 / 3)
    notes = reading_notes({"pretrained": constant, "random": varied})
    assert any("pretrained wrote the same text for every test scan" in n for n in notes)
    assert not any("random wrote" in n for n in notes)
    assert any("naming every finding" in n and "0.667" in n for n in notes)
    both = reading_notes({"pretrained": constant, "random": constant, "histogram": varied})
    assert any("models of pretrained and random each wrote one text for every test scan" in n for n in both)


def test_chance_f1_is_that_of_naming_a_finding_at_the_same_rate_at_random() -> None:
    from voxelfm.report.evaluate import chance_f1

    assert chance_f1(30, 30, 100) == pytest.approx(0.3)  # p = q = 0.3
    assert chance_f1(30, 100, 100) == pytest.approx(2 * 0.3 / 1.3)  # naming it always
    assert chance_f1(0, 0, 10) == 0.0


def test_findings_the_probes_detect_and_the_reports_f1_on_them() -> None:
    from voxelfm.report.evaluate import detected_by_probes, detected_findings_f1

    qformer = {"hiatal_hernia/auroc": {"value": 0.8, "ci_low": 0.62}, "macro/auroc": {"value": 0.7, "ci_low": 0.6},
               "arterial_wall_calcification/auroc": {"value": 0.6, "ci_low": 0.45}, "hiatal_hernia/auprc": 0.5}
    mlp = {"arterial_wall_calcification/auroc": {"value": 0.7, "ci_low": 0.51}}
    assert detected_by_probes([qformer, mlp]) == ["hiatal_hernia", "arterial_wall_calcification"]
    assert detected_by_probes([qformer]) == ["hiatal_hernia"]
    varied = evaluate_reports(dict(REFS), REFS, vocabulary=VOCAB, n_bootstrap=20)
    on_hernia = detected_findings_f1(varied, ["hiatal_hernia", "not_a_finding"])
    assert on_hernia["findings"] == ["hiatal_hernia"] and on_hernia["f1"] == 1.0
    assert on_hernia["chance_f1"] == pytest.approx(0.5) and on_hernia["every_finding_f1"] == pytest.approx(2 / 3)
    assert detected_findings_f1(varied, []) is None
    notes = reading_notes({"pretrained": varied}, {"pretrained": ["hiatal_hernia"]})
    assert any("probes detect" in n and "pretrained 1.000 against 0.500 by chance (hiatal hernia)" in n for n in notes)
