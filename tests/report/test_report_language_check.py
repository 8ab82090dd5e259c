"""language_check: does generated text use the training references' words and sentences?"""

from __future__ import annotations

import pytest

from voxelfm.report.evaluate import language_check

TRAIN = ["Aortic atherosclerosis.", "Hiatal hernia. Coronary artery calcification.",
         "No acute cardiopulmonary abnormality."]


def test_reference_language_scores_one_and_invented_text_scores_low() -> None:
    same = language_check(["Hiatal hernia.", "no acute cardiopulmonary abnormality"], TRAIN)
    assert same == {"known_words": 1.0, "known_sentences": 1.0, "all_known": 1.0, "empty": 0.0}
    invented = language_check(["The patient is a 20-year-old male with a chest infection."], TRAIN)
    assert invented["known_sentences"] == 0.0 and invented["all_known"] == 0.0
    assert invented["known_words"] < 0.2


def test_mixed_and_empty_reports() -> None:
    out = language_check(["Aortic atherosclerosis. Large dragon.", ""], TRAIN)
    assert out["known_sentences"] == pytest.approx(0.5)
    assert out["all_known"] == 0.0 and out["empty"] == 0.5
    assert out["known_words"] == pytest.approx(2 / 4)
