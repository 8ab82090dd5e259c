"""run_report_generation: train, generate and score in one call, the same as the three steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import synthetic_cohort
from voxelfm.report.evaluate import evaluate_reports
from voxelfm.report.generate import generate_reports
from voxelfm.report.model import DecodingConfig
from voxelfm.report.run import run_report_generation
from voxelfm.report.train import ReportTrainConfig


def test_one_call_trains_generates_and_scores(tiny_lm_dir: Path, tmp_path: Path) -> None:
    features, records = synthetic_cohort(n=12)
    config = ReportTrainConfig(projector_hidden=24, projector_heads=2, num_queries=2, stage1_epochs=1,
                               stage2_epochs=1, batch_size=4)
    ids = [r.scan_id for r in records if r.split == "test"] or [records[0].scan_id]
    decoding = DecodingConfig(max_new_tokens=4)
    run = run_report_generation(features, records, ids, out_dir=tmp_path / "run", config=config,
                                lm=tiny_lm_dir, decoding=decoding, n_bootstrap=20, seed=3)
    assert [r["scan_id"] for r in run.generated] == ids and run.config["train"]["num_queries"] == 2
    assert json.loads((run.run_dir / "metrics.json").read_text())["findings"] == run.metrics["findings"]
    again = generate_reports(run.run_dir, features, ids, decoding=decoding, seed=3)
    assert [r["generated"] for r in again] == [r["generated"] for r in run.generated]
    refs = {r.scan_id: r.text(config.text_field) for r in records}
    train = [r.text(config.text_field) for r in records if r.split == "train"]
    scored = evaluate_reports({r["scan_id"]: r["generated"] for r in again}, refs, train_references=train,
                              n_bootstrap=20, seed=3)
    assert scored["findings"] == run.metrics["findings"]
    assert run.metrics["seconds_per_report"] == pytest.approx(
        sum(r["seconds"] for r in run.generated) / len(ids))
