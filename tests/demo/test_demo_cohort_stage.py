"""The cohort stage passes the demo's prevalence and conspicuity through to the phantom."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from voxelfm.demo import layout
from voxelfm.demo.config import DemoContext, get_config
from voxelfm.demo.stages.cohort import CohortStage


def test_cohort_stage_passes_prevalence_and_conspicuity(tmp_path: Path) -> None:
    tiny = get_config("tiny")
    cohort = dataclasses.replace(tiny.cohort, n_scans=6, prevalence="enriched", conspicuity=1.0)
    ctx = DemoContext(out=tmp_path, config=dataclasses.replace(tiny, cohort=cohort))
    stage = CohortStage()
    info = stage.run(ctx)
    assert info["prevalence"] == "enriched" and info["conspicuity"] == 1.0
    root = layout.cohort_dir(tmp_path)
    assert "config_digest" in json.loads((root / ".phantom" / "settings.json").read_text())
    assert "Conspicuity 1" in (root / "dataset.md").read_text()
    assert stage.check(ctx).ok, stage.check(ctx).problems
