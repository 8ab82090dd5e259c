"""`voxelfm demo --size tiny` end to end: every stage's outputs, every report section, resume, and
the same numbers from a second run (every stage is budgeted in steps, not minutes)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from voxelfm.cli.main import app
from voxelfm.core.stages import Pipeline
from voxelfm.demo import layout, run_demo
from voxelfm.demo.config import DemoContext
from voxelfm.demo.document import SECTIONS
from voxelfm.demo.results import CATEGORIES, validate_results
from voxelfm.demo.stages import default_stages


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("demo") / "demo"
    return run_demo(out, size="tiny", device="cpu", workers=2)  # probes and report models in 2 processes


def _metrics(results: dict) -> dict:
    """Every number of results.json that the run computed (not timings, dates or paths)."""
    keep = ("tasks", "heads", "inference_modes", "data_fraction", "per_finding_f1", "report_generation", "data")
    out = {k: results[k] for k in keep}
    metrics = dict(out["report_generation"].get("metrics") or {})
    out["report_generation"] = {**out["report_generation"],
                                "metrics": {k: v for k, v in metrics.items() if not k.startswith("seconds")}}
    return out


@pytest.mark.slow
def test_tiny_demo_end_to_end(tiny_run) -> None:  # type: ignore[no-untyped-def]
    result = tiny_run
    out = result.out
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
        for backbone in layout.BACKBONE_NAMES:
            assert backbone in row["values"], (row["task"], backbone)
    finite = [r for r in rows if r["values"]["pretrained"]["value"] is not None
              and math.isfinite(r["values"]["pretrained"]["value"])]
    assert len(finite) >= len(CATEGORIES)
    assert results["heads"] and results["inference_modes"] and results["data_fraction"]["points"]
    assert set(results["timings"]) >= {"cohort", "pretrain", "embed", "probes", "reportgen"}
    assert set(results["cpu_seconds"]) >= {"cohort", "pretrain", "embed", "probes", "reportgen"}
    assert "histogram" in results["backbones"]
    assert all("histogram" in r["values"] for r in rows)
    lang = json.loads((out / "reportgen" / "pretrained" / "metrics.json").read_text())["language"]
    assert set(lang) == {"known_words", "known_sentences", "all_known", "empty"}

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


@pytest.mark.slow
def test_tiny_demo_is_deterministic(tiny_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Same size and seed: the same metrics, exactly, from a fresh second run, here with one worker
    process instead of two (every probe and report model runs single-threaded either way)."""
    again = run_demo(tmp_path / "again", size="tiny", device="cpu", workers=1)
    first = json.loads(tiny_run.results_json.read_text())
    second = json.loads(again.results_json.read_text())
    assert _metrics(first) == _metrics(second)


def test_unknown_size_is_a_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--size", "huge"])
    assert res.exit_code == 1
    assert "unknown demo size 'huge'" in res.output
