"""Stage 5: report generation on both backbones and the HU-histogram baseline.

One :func:`voxelfm.report.run_report_generation` per feature source (training budgeted in epochs,
the test reports, their scores and whether the model reads the image), on the probes' cached
:class:`~voxelfm.probes.data.FeatureSet`; the probes' per-finding AUROCs say which findings each
source's features carry. The LM is SmolLM2-135M-Instruct when cached (``voxelfm report get-lm
smollm2``), otherwise the offline tiny LM trained from scratch (the report says which).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.stages import CheckResult, Stage
from voxelfm.demo import layout
from voxelfm.demo.config import DemoConfig, DemoContext, ReportGenConfig
from voxelfm.demo.results import VERSUS_BASELINE, VERSUS_RANDOM, row_problems
from voxelfm.metrics import MetricCI
from voxelfm.viz.result_rows import ResultRow


def finding_extractor() -> Any:
    """The rule-based, negation-aware extractor of the CT-RATE findings the phantom plants."""
    from voxelfm.data.phantom import FINDINGS
    from voxelfm.report.findings import FindingVocabulary, RuleBasedExtractor

    return RuleBasedExtractor(FindingVocabulary.ct_rate().subset(list(FINDINGS)))


def read_reports(out: Path, cfg: ReportGenConfig) -> tuple[list[Any], dict[str, str], list[str]]:
    """The cohort's reports, the reference text of each scan and the test scans to generate for."""
    from voxelfm.report.dataset import load_reports

    reports = load_reports(layout.cohort_dir(out) / "reports.jsonl")
    test_ids = [r.scan_id for r in reports if r.split == "test"][: cfg.n_generate]
    return reports, {r.scan_id: r.text(cfg.text_field) for r in reports}, test_ids


class ReportGenStage(Stage):
    name = "reportgen"
    title = "Report generation on both backbones and the baseline"
    inputs = ("cohort", "embed", "probes")  # the probes say which findings each source's features carry
    config_parts = ("reportgen",)

    def outputs(self, ctx: DemoContext) -> list[Path]:
        return [layout.reportgen_dir(ctx.out)]  # one run directory per backbone and summary.json

    def run(self, ctx: DemoContext) -> dict[str, Any]:
        from voxelfm.core.parallel import run_items
        from voxelfm.probes.data import forget_features
        from voxelfm.report.evaluate import label_matrix

        _, refs, test_ids = read_reports(ctx.out, ctx.config.reportgen)
        extractor = finding_extractor()
        # One report model per feature source, each single-threaded, two at a time on two cores (on
        # a GPU one at a time): the same numbers either way (voxelfm.core.parallel).
        items = [ReportItem(ctx.out, ctx.config, backbone, ctx.device) for backbone in layout.BACKBONE_NAMES]
        workers = ctx.config.workers if ctx.device == "cpu" else 1
        ctx.console.print(f"  report models on {', '.join(layout.BACKBONE_NAMES)} ({min(workers, len(items))} at a time)")
        outcomes = run_items(report_item, items, workers=workers,
                             done=lambda i, _: ctx.console.print(f"  report model on [bold]{items[i].backbone}[/] done"))
        per_backbone = dict(zip(layout.BACKBONE_NAMES, outcomes, strict=True))
        forget_features()
        truth = label_matrix([refs[s] for s in test_ids], extractor)
        summary = summarise(ctx, per_backbone, truth, test_ids, refs, extractor.vocabulary.names)
        atomic_write_text(layout.reportgen_summary(ctx.out), json.dumps(summary, indent=2))
        return {"lm": summary["lm"], "n_test": len(test_ids)}

    def check(self, ctx: DemoContext) -> CheckResult:
        res = CheckResult()
        path = layout.reportgen_summary(ctx.out)
        data = res.read_json(path)
        if data is None:
            return res
        res.problems += [f"{path}: {p}" for p in row_problems(data.get("tasks", []), ("report generation",))]
        res.require(bool(data.get("examples")), f"{path}: no example reports")
        for backbone in layout.BACKBONE_NAMES:
            run = layout.reportgen_dir(ctx.out) / backbone
            res.require((run / "config.json").is_file() and (run / "generated.jsonl").is_file(),
                        f"{run}: report run incomplete (config.json / generated.jsonl missing)")
        return res


@dataclass(frozen=True)
class ReportItem:
    """The report model of one feature source (picklable: it may run in a worker process)."""

    out: Path
    config: DemoConfig
    backbone: str
    device: str = "cpu"


def report_item(item: ReportItem) -> dict[str, Any]:
    """Train the report model on one source's features, generate the test reports and score them
    (``RUN/metrics.json``); returns its run config, generated rows, metrics and finding labels."""
    from voxelfm.probes.data import cached_features
    from voxelfm.report.evaluate import label_matrix
    from voxelfm.report.model import DecodingConfig
    from voxelfm.report.run import run_report_generation
    from voxelfm.report.train import ReportTrainConfig

    cfg = item.config.reportgen
    reports, _, test_ids = read_reports(item.out, cfg)
    extractor = finding_extractor()
    train_cfg = ReportTrainConfig(
        stage1_epochs=cfg.stage1_epochs, stage2_epochs=cfg.stage2_epochs, text_field=cfg.text_field,
        max_val_examples=8, seed=cfg.seed, num_queries=cfg.num_queries,
        **({"stage2_lr": cfg.stage2_lr} if cfg.stage2_lr is not None else {}),
    )
    run = run_report_generation(
        cached_features(layout.store_dir(item.out, item.backbone), name=f"{item.backbone}-3d"), reports, test_ids,
        out_dir=layout.reportgen_dir(item.out) / item.backbone, config=train_cfg,
        lm=None if cfg.lm == "auto" else cfg.lm, decoding=DecodingConfig(max_new_tokens=cfg.max_new_tokens),
        extractor=extractor, n_bootstrap=item.config.probes.bootstrap, seed=cfg.seed, device=item.device)
    generated = {r["scan_id"]: r["generated"] for r in run.generated}
    return {"config": run.config, "rows": run.generated, "metrics": run.metrics,
            "pred": label_matrix([generated[s] for s in test_ids], extractor)}


def _f1(entry: dict[str, Any], n: int = 0) -> MetricCI:
    return MetricCI(entry["f1"], *entry["f1_ci"], n=n)


def summarise(ctx: DemoContext, per_backbone: dict[str, dict[str, Any]], truth: np.ndarray, test_ids: list[str],
              refs: dict[str, str], names: list[str]) -> dict[str, Any]:
    """The stage summary the render stage reads: Fig. 2 row, per-finding F1, examples, notes."""
    from voxelfm.report import evaluate
    from voxelfm.report.lm import FALLBACK_NOTE

    n = len(test_ids)
    values = {b: _f1(info["metrics"]["findings"]["macro"], n) for b, info in per_backbone.items()}

    def versus(other: str) -> Any:  # pretrained − other, resampling the same test reports
        return evaluate.macro_f1_difference(truth, per_backbone["pretrained"]["pred"], per_backbone[other]["pred"], names,
                                   n_resamples=ctx.config.probes.bootstrap, seed=ctx.config.reportgen.seed)

    pre = per_backbone["pretrained"]["metrics"]
    detected = {b: probe_detected(ctx.out, b) for b in per_backbone}
    chance = pre.get("baseline_prevalence", {}).get("macro", {}).get("f1")
    row = ResultRow("report generation", "findings extracted from generated reports", "macro F1", True, values,
                    {VERSUS_RANDOM: versus("random")}
                    | ({VERSUS_BASELINE: versus(layout.BASELINE)} if layout.BASELINE in per_backbone else {}),
                    detail="rule-based finding extraction with negation handling"
                           + (f"; chance (prevalence) {chance:.3f}" if chance is not None else ""))
    gen = {r["scan_id"]: r["generated"] for r in per_backbone["pretrained"]["rows"]}
    every = per_backbone.items()
    metrics = {f"macro F1 ({b})": values[b].to_dict() for b in values} | {
        "majority-class baseline macro F1": _f1(pre["baseline_majority"]["macro"]).to_dict(),
        "chance (training prevalence) macro F1": _f1(pre["baseline_prevalence"]["macro"]).to_dict(),
    } | {f"ROUGE-L ({b})": {"value": i["metrics"]["text"]["rouge_l"]} for b, i in every} | {
        f"BLEU ({b})": {"value": i["metrics"]["text"]["bleu"]} for b, i in every} | {
        f"generated {what} found in training references ({b})":
            {"value": i["metrics"].get("language", {}).get(f"known_{what}")}
        for what in ("sentences", "words") for b, i in every
    } | {f"distinct reports of {n} ({b})": {"value": i["metrics"]["reports"]["distinct"]} for b, i in every} | {
        f"loss gap, another scan's image − own ({b})": {"value": i["metrics"].get("image_reliance", {}).get("gap")}
        for b, i in every} | {
        "seconds per report (pretrained)": {"value": pre.get("seconds_per_report")}}
    run_cfg = list(per_backbone.values())[-1]["config"]  # every run used the same LM
    lm_used = str(run_cfg.get("lm_source", ""))
    note = f"SmolLM2 was not cached: {FALLBACK_NOTE}" if run_cfg.get("lm_fallback", False) else None
    return {
        "tasks": [row.to_dict()],
        "per_finding_f1": {f: {"f1": _f1(v, n).to_dict(), "support": v["support"]}
                           for f, v in pre["findings"]["per_finding"].items() if v["support"] > 0},
        "examples": [{"scan_id": s, "reference": refs[s], "generated": gen[s]} for s in test_ids[: ctx.config.n_examples]],
        "lm": lm_used,
        "lm_note": note,
        "text_field": ctx.config.reportgen.text_field,
        "metrics": metrics,
        "findings": names,
        "notes": [f"Report generation used {n} test scans and the LM {lm_used}."],
        "reading_notes": evaluate.reading_notes({b: i["metrics"] for b, i in every}, detected),  # what its F1 cannot show
        "detected_findings": {b: evaluate.detected_findings_f1(i["metrics"], detected[b]) for b, i in every},
    }


def probe_detected(out: Path, backbone: str) -> list[str]:
    """Findings the Q-Former or MLP probe detects on a source's 3D features (AUROC CI above 0.5)."""
    from voxelfm.report.evaluate import detected_by_probes

    return detected_by_probes([layout.probes_dir(out) / job / f"{backbone}-3d" / "metrics.json"
                               for job in ("classification-qformer", "classification-mlp")])
