"""voxelfm.report: radiology report generation from frozen CT features with a causal LM.

Public API (see docs/report.md):

* :func:`train_report_model(features, reports, lm=None, out_dir=..., config=None, device=None)`
  → run directory (stage 1 projector, stage 2 projector + LoRA). ``features`` is
  ``{scan_id: (cls (C,), patch (d,h,w,C))}``; ``reports`` are :class:`ReportRecord`.
* :func:`generate_reports(run_dir, features, ids=None, decoding=None, batch_size=1)` →
  ``[{"scan_id", "generated", "seconds"}]``; :class:`DecodingConfig` (greedy/nucleus/beam).
* :func:`evaluate_reports(generated, references, train_references=None)` → metrics dict
  (per-finding P/R/F1 + bootstrap CIs, macro, majority baseline, BLEU, ROUGE-L);
  :func:`evaluate_run(run_dir)` writes ``metrics.json`` and ``findings_f1.png``.
* :func:`run_report_generation(features, reports, ids, out_dir=...)` → :class:`ReportRun`: train,
  generate for ``ids`` and score in one call (one run per feature set when comparing backbones).
* :func:`load_reports(path)`, :func:`features_from_store(path, ids=None)`.
* :class:`RuleBasedExtractor`, :class:`LLMExtractor`, :class:`FindingVocabulary` (CT-RATE 18).
* :func:`get_lm("smollm2", cache=None)` (network, on purpose), :func:`resolve_lm(name_or_dir)`
  (never network), :func:`load_lm(dir)`, :func:`build_tiny_lm(texts, out_dir)`.
* :class:`FeatureProjector`, :class:`ProjectorConfig`, :class:`ReportModel`, :class:`ChatFormat`,
  :func:`inject_image_tokens`.

Attributes are imported lazily so ``import voxelfm.report`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train_report_model": "train", "ReportTrainConfig": "train",
    "generate_reports": "generate", "load_report_model": "generate", "write_generated": "generate",
    "run_report_generation": "run", "ReportRun": "run",
    "evaluate_reports": "evaluate", "evaluate_run": "evaluate", "finding_metrics": "evaluate",
    "text_metrics": "evaluate", "plot_finding_f1": "evaluate",
    "load_reports": "dataset", "features_from_store": "dataset", "ReportRecord": "dataset",
    "RuleBasedExtractor": "findings", "LLMExtractor": "findings", "FindingVocabulary": "findings",
    "get_lm": "lm", "resolve_lm": "lm", "load_lm": "lm", "build_tiny_lm": "lm",
    "FeatureProjector": "projector", "ProjectorConfig": "projector",
    "ReportModel": "model", "DecodingConfig": "model",
    "ChatFormat": "chat", "inject_image_tokens": "chat", "encode_example": "chat",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'voxelfm.report' has no attribute {name!r}")
    return getattr(importlib.import_module(f"voxelfm.report.{module}"), name)
