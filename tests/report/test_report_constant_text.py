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
