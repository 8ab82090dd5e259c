"""`voxelfm demo --size tiny` end to end: every stage's outputs, every report section, resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from voxelfm.cli.main import app
from voxelfm.demo import layout, run_demo
from voxelfm.demo.document import SECTIONS
from voxelfm.demo.pipeline import DemoContext, Pipeline
from voxelfm.demo.results import BACKBONES, CATEGORIES, validate_results
from voxelfm.demo.stages import default_stages


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_demo(out, size="tiny", device="cpu")
    assert set(result.timings) == {s.name for s in default_stages()}

    # Every stage left outputs that pass its own check.
    from voxelfm.demo.config import get_config

    ctx = DemoContext(out=out, config=get_config("tiny"))
    for stage in default_stages():
        for path in stage.outputs(ctx):
            assert path.exists(), f"{stage.name} did not write {path}"
        check = stage.check(ctx)
        assert check.ok, f"{stage.name}: {check.problems}"

    results = json.loads(result.results_json.read_text())
    assert validate_results(results) == []
    rows = results["tasks"]
    assert {r["category"] for r in rows} == set(CATEGORIES)
    for row in rows:
        for backbone in BACKBONES:
            assert backbone in row["values"], (row["task"], backbone)
    finite = [r for r in rows if r["values"]["pretrained"]["value"] is not None
              and math.isfinite(r["values"]["pretrained"]["value"])]
    assert len(finite) >= len(CATEGORIES)
    assert results["heads"] and results["inference_modes"] and results["data_fraction"]["points"]
    assert set(results["timings"]) >= {"cohort", "pretrain", "embed", "probes", "reportgen"}

    html = result.report_html.read_text()
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in html, sid
    assert "Not available in this run" not in html  # every section has real content
    assert html.count("data:image/png;base64,") >= 8
    assert "synthetic" in html.lower()

    # Re-running through the CLI skips every stage (outputs are checked, not recomputed).
    runner = CliRunner()
    res = runner.invoke(app, ["demo", "--out", str(out), "--size", "tiny", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    markers = {s.name: Pipeline.read_marker(Pipeline(default_stages()), ctx, s.name) for s in default_stages()}
    assert all(m is not None for m in markers.values())
    assert layout.report_html(out).stat().st_size > 50_000


def test_unknown_size_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--size", "huge"])
    assert res.exit_code == 1
    assert "unknown demo size 'huge'" in res.output
