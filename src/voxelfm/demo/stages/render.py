"""Stage 6: assemble ``results.json`` and the self-contained ``report.html``.

Reads the cohort, the two model directories, the embedding stores, and the summaries the probe and
report-generation stages wrote; draws the figures (metric charts through
:mod:`voxelfm.viz.results_report`, CT pictures through :mod:`voxelfm.viz.panels`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.errors import DataError, located
from voxelfm.core.readers import read_json
from voxelfm.core.stages import CheckResult, Stage, read_summary, read_timings
from voxelfm.demo import layout
from voxelfm.demo.config import DemoContext
from voxelfm.demo.document import SECTIONS, compose_report
from voxelfm.demo.results import SCHEMA_VERSION, parse_rows, validate_results
from voxelfm.viz.html import check_html


class RenderStage(Stage):
    name = "render"
    title = "Write results.json and report.html"
    inputs = ("cohort", "pretrain", "embed", "probes", "reportgen")
    config_parts = ("n_examples",)

    def __init__(self, upstream_stages: list[Stage] | None = None) -> None:
        self.upstream_stages = upstream_stages or []

    def outputs(self, ctx: DemoContext) -> list[Path]:
        return [layout.results_json(ctx.out), layout.report_html(ctx.out)]

    def run(self, ctx: DemoContext) -> dict[str, Any]:
        from voxelfm.demo import pictures

        results = assemble_results(ctx, read_timings(ctx, self.upstream_stages),
                                   read_timings(ctx, self.upstream_stages, "cpu_seconds"))
        problems = validate_results(results)
        if problems:
            raise DataError(located(layout.results_json(ctx.out), "incomplete results: " + "; ".join(problems)))
        atomic_write_text(layout.results_json(ctx.out), json.dumps(results, indent=2))
        figures = pictures.all_figures(ctx, results)
        report = compose_report(results, figures)
        report.write(layout.report_html(ctx.out))
        return {"figures": sorted(figures), "tasks": len(results["tasks"])}

    def check(self, ctx: DemoContext) -> CheckResult:
        res = CheckResult()
        rpath, hpath = layout.results_json(ctx.out), layout.report_html(ctx.out)
        results = res.read_json(rpath)
        if results is None:
            return res
        res.problems += [f"{rpath}: {p}" for p in validate_results(results)]
        try:
            html = hpath.read_text()
        except OSError as exc:
            res.problems.append(f"{hpath}: unreadable ({exc})")
            return res
        res.problems += check_html(html, [sid for sid, _ in SECTIONS], name="report.html")
        return res


def assemble_results(ctx: DemoContext, timings: dict[str, float],
                     cpu_seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """Merge every stage's summary into the ``results.json`` document (rows in the current schema,
    also when a stage's summary was written in schema 1)."""
    def rows(data: Any) -> list[dict[str, Any]]:
        return [r.to_dict() for r in parse_rows(data)]

    import pandas as pd

    import voxelfm

    out = ctx.out
    labels = pd.read_csv(layout.cohort_dir(out) / "labels.csv")
    probes = read_json(layout.probes_summary(out), what="probe stage summary")
    reportgen = read_json(layout.reportgen_summary(out), what="report-generation stage summary")
    from voxelfm.embed.histogram import FEATURE_NAMES, MODEL_ID

    def model(name: str, preset: str, description: str) -> dict[str, Any]:
        cfg = read_json(layout.model_dir(out, name) / "config.json", what="model config")
        return {"model_id": cfg.get("model_id"), "preset": preset,
                "dir": str(layout.model_dir(out, name).relative_to(out)), "description": description}

    pre = ctx.config.pretrain
    backbones = {
        "pretrained": {**model("pretrained", pre.preset, f"self-supervised pretraining (voxelfm.ssl recipe {pre.recipe}, "
                                                         f"{pre.max_steps} steps) on the cohort's training scans"),
                       "pretrain_steps": pre.max_steps, "recipe": pre.recipe,
                       "pretrain_final_loss": read_summary(ctx, "pretrain").get("final_loss")},
        "random": model("random", pre.preset, "the same architecture with its random initial weights"),
    }
    backbones[layout.BASELINE] = {
        "model_id": MODEL_ID, "preset": "none (no network)",
        "dir": str(layout.store_dir(out, layout.BASELINE).relative_to(out)),
        "description": f"{len(FEATURE_NAMES)} non-learned features per volume and per patch: HU histogram "
                       "fractions, mean, SD, 5th/50th/95th percentiles and log volume (voxelfm.embed.histogram)",
    }
    for name in layout.comparator_names(ctx.config):
        backbones[name] = model(name, f"{name} (reduced)",
                                "comparator architecture at random initialisation with hyper-parameters reduced for a "
                                "CPU, fed by its own preprocessing recipe (voxelfm.models.backbones); compared with "
                                "pretrained as the reference")
    report_f1 = reportgen.get("per_finding_f1", {})  # the findings both a probe and the reports scored
    per_finding = [{"finding": f, "probe": probe, "report": report_f1[f].get("f1", report_f1[f]),
                    "support": report_f1[f].get("support", probe.get("support"))}
                   for f, probe in probes.get("per_finding_f1", {}).items() if f in report_f1]
    return {
        "schema_version": SCHEMA_VERSION,
        "voxelfm_version": voxelfm.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": ctx.config.size,
        "device": ctx.device,
        "config": ctx.config.to_dict(),
        "data": {
            "synthetic": True,
            "n_scans": int(len(labels)),
            "n_patients": int(labels["patient_id"].nunique()),
            "splits": {str(k): int(v) for k, v in labels["split"].value_counts().items()},
            "prevalence": ctx.config.cohort.prevalence,
            "conspicuity": ctx.config.cohort.conspicuity,
        },
        "backbones": backbones,
        "tasks": rows(probes.get("tasks", [])) + rows(reportgen.get("tasks", [])),
        "heads": rows(probes.get("heads", [])),
        "inference_modes": rows(probes.get("inference_modes", [])),
        **({"comparators": rows(probes.get("comparators", []))} if layout.comparator_names(ctx.config) else {}),
        "data_fraction": probes.get("data_fraction", {}),
        "per_finding_f1": per_finding,
        "report_generation": {k: reportgen.get(k) for k in ("lm", "lm_note", "metrics", "text_field", "reading_notes")
                              if k in reportgen},
        "examples": {
            "retrieval": probes.get("examples", {}).get("retrieval", []),
            "segmentation": probes.get("examples", {}).get("segmentation", []),
            "reports": reportgen.get("examples", []),
        },
        "timings": {k: round(float(v), 2) for k, v in timings.items()},
        "cpu_seconds": {k: round(float(v), 1) for k, v in (cpu_seconds or {}).items()},
        "notes": list(probes.get("notes", [])) + list(reportgen.get("notes", [])),
    }
