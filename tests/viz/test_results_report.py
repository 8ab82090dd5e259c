"""The results report of ``voxelfm evaluate`` from synthetic suite tables: sections, CI formatting,
paired-difference colours, and a missing input that says why."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from voxelfm.core.errors import DataError
from voxelfm.metrics import DifferenceCI, MetricCI
from voxelfm.viz.html import check_html
from voxelfm.viz.result_rows import (
    ResultRow,
    as_ci,
    detectable_difference,
    lower_is_better,
    rows_from_suite,
)
from voxelfm.viz.results_report import SUITE_SECTIONS, fmt_ci, suite_report, write_suite_report


def _metric(name: str, task: str, head: str, backbone: str, metric: str, value: float) -> dict:
    return {"name": name, "task": task, "head": head, "backbone": backbone, "metric": metric,
            **MetricCI(value, value - 0.05, value + 0.05, 20, 100, 0).to_dict()}


def _suite_dir(tmp_path: Path, *, fractions: bool = True) -> Path:
    summary = [_metric("findings", "classification", head, b, "macro/auroc", v)
               for head, b, v in (("mlp", "ssl", 0.8), ("mlp", "random", 0.6), ("qformer", "ssl", 0.85),
                                  ("qformer", "random", 0.55))]
    summary += [_metric("age", "regression", "mlp", b, m, v) for b, m, v in
                (("ssl", "r2", 0.4), ("random", "r2", 0.1), ("ssl", "mae", 5.0), ("random", "mae", 7.0))]
    differences = [{"name": "findings", "head": "mlp", "backbone": "ssl", "reference": "random",
                    "metric": "macro/auroc", **DifferenceCI(0.2, 0.1, 0.3, 0.01, 20, 0.8, 0.6).to_dict()},
                   {"name": "age", "head": "mlp", "backbone": "ssl", "reference": "random",
                    "metric": "r2", **DifferenceCI(0.3, -0.1, 0.7, 0.2, 20, 0.4, 0.1).to_dict()}]
    payload = {"summary": summary, "differences": differences, "reference": "random",
               "stores": {"ssl": "/s/ssl", "random": "/s/random"},
               "errors": [{"name": "bad", "head": "mlp", "backbone": "ssl", "error": "missing column 'x'"}]}
    (tmp_path / "summary.json").write_text(json.dumps(payload))
    if fractions:
        pd.DataFrame([{"fraction": f, "seed": 0, "n_train": 10, "metric": "macro/auroc", "value": 0.5 + f / 4,
                       "ci_low": 0.4, "ci_high": 0.9, "n": 20, "backbone": b, "task": "classification"}
                      for f in (0.5, 1.0) for b in ("ssl", "random")]).to_csv(tmp_path / "fractions_findings_mlp.csv",
                                                                               index=False)
    return tmp_path


def test_suite_report_has_every_section_with_cis(tmp_path: Path) -> None:
    path = write_suite_report(_suite_dir(tmp_path))
    html = path.read_text()
    assert check_html(html, [sid for sid, _ in SUITE_SECTIONS]) == []  # every section, nothing external
    assert check_html('<img src="x.png">', ["a"], name="r") == [
        "r lacks section 'a'", "r references external files: ['x.png']", "r is truncated"]
    table = html.split('id="fig2-table"')[1].split("</table>")[0]
    assert "0.800 [0.750, 0.850]" in table and "0.600 [0.550, 0.650]" in table
    assert "findings (qformer)" in table and "r2 ↑" in table
    paired = html.split('id="paired-table"')[1].split("</table>")[0]
    assert "ssl − random [95% CI]" in paired
    assert '<td class="num good">0.200 [0.100, 0.300]</td>' in paired  # CI excludes 0
    assert '<td class="num">0.300 [-0.100, 0.700]</td>' in paired  # CI includes 0: plain
    assert "ssl vs random: clearly better on 1 of 2 metrics" in html
    assert html.count("data:image/png;base64,") == 4  # bars, fraction curve, heads on each store
    for fig in ("tasks.png", "fractions_findings_mlp.png", "heads_ssl.png", "heads_random.png"):
        assert (tmp_path / "figures" / fig).is_file(), fig
    assert "missing column &#x27;x&#x27;" in html.split('<section id="errors">')[1]


def test_missing_inputs_say_why(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"summary.json: suite summary \(run voxelfm evaluate first\) not found"):
        suite_report(tmp_path)
    html = suite_report(_suite_dir(tmp_path, fractions=False)).render()
    assert "Not available in this run: no task of the suite lists &#x27;fractions&#x27;" in html


def test_rows_ci_parsing_and_formatting() -> None:
    assert fmt_ci(MetricCI(0.8123, 0.7, 0.9, 5)) == "0.812 [0.700, 0.900]"
    assert fmt_ci(as_ci({"value": 0.5})) == "0.500"  # no CI: the value alone
    assert fmt_ci(as_ci(None)) == "n/a" and fmt_ci(None) == "—"
    assert as_ci({"value": 0.7, "low": 0.6, "high": 0.8, "n": 3}) == MetricCI(0.7, 0.6, 0.8, 3)  # schema 1
    row = ResultRow("c", "t", "auroc", values={"a": MetricCI(0.7, 0.6, 0.8, 3)},
                    differences={"a − b": DifferenceCI(0.1, 0.0, 0.2, 0.1, 3, 0.7, 0.6)})
    back = ResultRow.from_dict(json.loads(json.dumps(row.to_dict())))
    assert back.values == row.values and back.differences["a − b"].value_a == 0.7
    legacy = ResultRow.from_dict({"category": "c", "task": "t", "metric": "m", "higher_is_better": True,
                                  "difference": {"value": 0.1, "low": 0.0, "high": 0.2}, "p_value": 0.3},
                                 legacy={"difference": "a − b"})
    assert legacy.differences["a − b"].p_value == 0.3
    assert detectable_difference(DifferenceCI(0.0, -0.0392, 0.0392, 1, 3, 0, 0)) == pytest.approx(0.056)
    assert detectable_difference(as_ci(0.1)) is None
    assert lower_is_better("mean_error_mm") and lower_is_better("same/mae_sd") and not lower_is_better("r2")
    rows = rows_from_suite([_metric("n", "regression", "mlp", "a", "mae", 1.0)], [], {"regression": ["r2", "mae"]})
    assert rows[0].metric == "mae" and not rows[0].higher_is_better and math.isnan(rows[0].values["a"].ci_low) is False


def test_stage_timings_table_totals_and_galleries_say_what_is_missing() -> None:
    from voxelfm.viz.html import HtmlReport
    from voxelfm.viz.results_report import gallery, timings_table

    report = HtmlReport("t")
    sec = report.section("s", "S")
    timings_table(sec, {"a": 1.25, "b": 2.0}, {"a": 3.0}, caption="why", table_id="timings")
    empty = report.section("g", "G")
    gallery(empty, [], "intro", "example pictures")
    html = report.render()
    assert "3.2" in html and "—" in html and "timings" in html  # wall total 3.25, b has no CPU time
    assert "Not available in this run: example pictures" in html and "intro" not in html
