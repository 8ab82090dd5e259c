"""One report-generation run end to end: train on a feature set, write the reports of chosen scans,
score them against their references (what comparing backbones on report generation repeats)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voxelfm.report.dataset import FeatureMap, ReportRecord

if TYPE_CHECKING:
    from voxelfm.report.findings import FindingExtractor
    from voxelfm.report.model import DecodingConfig
    from voxelfm.report.train import ReportTrainConfig


@dataclass
class ReportRun:
    """A finished run: its directory, config (``RUN/config.json``), generated rows and metrics."""

    run_dir: Path
    config: dict[str, Any]
    generated: list[dict[str, Any]]  # [{"scan_id", "generated", "seconds"}], in ``ids`` order
    metrics: dict[str, Any]  # evaluate_reports' metrics and ``seconds_per_report`` (RUN/metrics.json)


def run_report_generation(
    features: FeatureMap, reports: Sequence[ReportRecord], ids: Sequence[str], *,
    out_dir: str | os.PathLike[str], config: ReportTrainConfig | None = None, lm: str | os.PathLike[str] | None = None,
    decoding: DecodingConfig | None = None, extractor: FindingExtractor | None = None, n_bootstrap: int = 1000,
    seed: int = 4, device: Any = None,
) -> ReportRun:
    """:func:`~voxelfm.report.train.train_report_model`, then the reports of ``ids``
    (:func:`~voxelfm.report.generate.generate_reports`, written beside the run) scored by
    :func:`~voxelfm.report.evaluate.evaluate_reports` against the records' own text, with the
    training reports' majority and prevalence baselines, and (``image_reliance``) whether the model's
    loss on each reference is lower with its own image than with another scan's; ``seed`` seeds
    decoding, the bootstrap and the shuffle."""
    from voxelfm.core.atomic import atomic_write_text
    from voxelfm.report.evaluate import evaluate_reports, image_reliance
    from voxelfm.report.generate import (
        generate_reports,
        load_report_model,
        read_run_config,
        write_generated,
    )
    from voxelfm.report.train import ReportTrainConfig, train_report_model

    config = config or ReportTrainConfig()
    run = train_report_model(features, reports, lm=lm, out_dir=out_dir, config=config, device=device)
    model, _ = load_report_model(run, device=device)
    rows = generate_reports(run, features, list(ids), decoding=decoding, seed=seed, model=model)
    write_generated(run, rows)
    references = {r.scan_id: r.text(config.text_field) for r in reports}
    metrics = evaluate_reports({r["scan_id"]: r["generated"] for r in rows}, references, extractor=extractor,
                               train_references=[r.text(config.text_field) for r in reports if r.split == "train"],
                               n_bootstrap=n_bootstrap, seed=seed)
    metrics["seconds_per_report"] = float(np.mean([r["seconds"] for r in rows])) if rows else None
    if len(ids) > 1:  # the reference's loss with its own image against another scan's
        metrics["image_reliance"] = image_reliance(model, features, references, ids, seed=seed,
                                                   max_tokens=config.max_tokens)
    atomic_write_text(run / "metrics.json", json.dumps(metrics, indent=2))
    return ReportRun(run, read_run_config(run), rows, metrics)


__all__ = ["ReportRun", "run_report_generation"]
