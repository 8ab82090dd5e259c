"""The report document: every section present, values and CIs formatted, schema checks."""

from __future__ import annotations

import numpy as np

from voxelfm.demo.document import SECTIONS, compose_report
from voxelfm.demo.results import (
    CATEGORIES,
    SCHEMA_VERSION,
    VERSUS_BASELINE,
    VERSUS_RANDOM,
    validate_results,
)
from voxelfm.metrics import DifferenceCI, MetricCI
from voxelfm.viz.panels import (
    Neighbour,
    PcaPanel,
    pca_figure,
    retrieval_figure,
    segmentation_figure,
)
from voxelfm.viz.result_rows import ResultRow
from voxelfm.viz.slices import to_png


def _est(v: float) -> dict:
    return MetricCI(v, v - 0.05, v + 0.05, 20).to_dict()


def _diff(v: float, low: float, high: float) -> DifferenceCI:
    return DifferenceCI(v, low, high, 0.01, 20, 0.8, 0.6)


def _results() -> dict:
    tasks = [
        ResultRow(cat, f"{cat} task", "AUROC", True,
                  {"pretrained": MetricCI(0.8, 0.75, 0.85, 20), "random": MetricCI(0.6, 0.55, 0.65, 20),
                   "histogram": MetricCI(0.85, 0.8, 0.9, 20)},
                  {VERSUS_RANDOM: _diff(0.2, 0.1, 0.3), VERSUS_BASELINE: _diff(-0.05, -0.09, -0.01)}).to_dict()
        for cat in CATEGORIES
    ]
    return {
        "schema_version": SCHEMA_VERSION, "voxelfm_version": "0", "created": "now", "size": "tiny",
        "device": "cpu", "config": {}, "data": {"n_scans": 10, "n_patients": 8, "splits": {"train": 6}},
        "backbones": {"pretrained": {"model_id": "m1", "pretrain_steps": 100}, "random": {"model_id": "m2"},
                      "histogram": {"model_id": "h"}},
        "tasks": tasks, "heads": [], "inference_modes": [],
        "data_fraction": {"points": []},
        "per_finding_f1": [{"finding": "lung_nodule", "probe": _est(0.7), "report": _est(0.5), "support": 4}],
        "report_generation": {"lm": "tiny"},
        "examples": {"reports": [{"scan_id": "s1", "reference": "Nodule.", "generated": "No nodule."}]},
        "timings": {"cohort": 1.5}, "cpu_seconds": {"cohort": 2.5}, "notes": ["a note"],
    }


def test_valid_results_pass_and_incomplete_fail() -> None:
    res = _results()
    assert validate_results(res) == []
    res["tasks"] = res["tasks"][:-1]
    assert any("report generation" in p for p in validate_results(res))
    del res["timings"]
    assert validate_results(res) == ["missing key 'timings'"]


def test_every_section_is_rendered_with_data_or_a_reason() -> None:
    grey = np.full((32, 32), 90, dtype=np.uint8)
    labels = np.zeros((32, 32), dtype=np.int16)
    labels[8:20, 8:20] = 2
    thumb = np.zeros((40, 40, 3), dtype=np.uint8)
    figures = {
        "bars": to_png(thumb),
        "retrieval": [(retrieval_figure(thumb, "q", "lung_nodule", [Neighbour(thumb, "n1", 0.9, True, "x")]), "r")],
        "segmentation": [(segmentation_figure(grey, labels, labels, {2: "heart"}), "s")],
        "pca": [(pca_figure([PcaPanel("s1", grey, {"pretrained": np.random.rand(32, 32, 3)})]), "p")],
    }
    html = compose_report(_results(), figures).render()
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert "synthetic" in html
    assert "0.800 [0.750, 0.850]" in html  # value with its CI
    assert 'class="num good"' in html  # a paired difference whose CI excludes 0
    assert "Not available in this run: data-fraction sweep" in html
    assert html.count("data:image/png;base64,") == 4
    assert "No nodule." in html
    # The first screen says what beat what, with CIs, and what the test set cannot detect.
    about = html.split('<section id="about">')[1].split("</section>")[0]
    assert "for 100 steps" in about
    assert "Pretrained vs random init: clearly better on 7 of 7 metrics" in about
    assert "Pretrained vs the HU-histogram baseline: clearly better on 0 of 7 metrics, clearly worse on 7" in about
    assert "better on classification task (AUROC) 0.200 [0.100, 0.300]" in about
    assert "worse on classification task (AUROC) -0.050 [-0.090, -0.010]" in about
    assert "HU histogram (no network) 0.850 [0.800, 0.900]" in about
    assert "about 0.143 (median minimum detectable difference" in about  # 2.8 x 0.2 / 3.92
    assert 'class="num bad"' in html  # pretrained worse than the baseline, CI excludes 0
    assert "HU histogram (no network)" in html.split('id="fig2-table"')[1]


def test_head_comparison_describes_the_configured_q_former() -> None:
    res = _results()
    res["heads"] = [ResultRow("classification", "3 findings", "macro AUROC", True,
                              {"pretrained · MLP on CLS": MetricCI(0.7, 0.6, 0.8, 20)}).to_dict()]
    res["config"] = {"probes": {"qformer_queries": 1, "qformer_skip": "cls"}}
    heads = compose_report(res, {}).render().split('<section id="heads">')[1].split("</section>")[0]
    assert "(1 learned query cross-attending to all patch tokens, plus a linear path from the CLS token)" in heads
    res["config"] = {"probes": {"qformer_queries": 4, "qformer_skip": None}}
    heads = compose_report(res, {}).render().split('<section id="heads">')[1].split("</section>")[0]
    assert "(4 learned queries cross-attending to all patch tokens, outputs averaged)" in heads


def test_the_first_screen_says_how_the_cohort_was_drawn() -> None:
    default = compose_report(_results(), {}).render()
    assert "enriched" not in default and "conspicuity" not in default
    res = _results()
    res["data"].update(prevalence="enriched", conspicuity=1.0)
    html = compose_report(res, {}).render()
    assert "enriched to about 30 % prevalence" in html and "conspicuity 1 " in html
