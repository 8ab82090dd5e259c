"""Load a trained report run and generate reports (greedy, nucleus or beam decoding)."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.errors import CheckpointError, DataError, located
from voxelfm.report.dataset import FeatureMap, check_features, load_reports, vision_tokens
from voxelfm.report.model import DecodingConfig, ReportModel


def read_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``RUN/config.json`` of a finished training run."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(located(run_dir, "not a finished report run (no config.json)"))
    return json.loads(path.read_text())


def load_report_model(run_dir: str | os.PathLike[str], device: str | torch.device | None = None,
                      ) -> tuple[ReportModel, dict[str, Any]]:
    """Rebuild the trained model: LM (+ merged LoRA) + projector, in eval mode."""
    from voxelfm.core.device import resolve_device
    from voxelfm.report.lm import load_lm
    from voxelfm.report.projector import FeatureProjector
    from voxelfm.report.train import ReportTrainConfig

    run = Path(run_dir)
    cfg = read_run_config(run)
    train_cfg = ReportTrainConfig.from_dict(cfg["train"])
    lm_dir = run / cfg["lm"] if cfg["lm"] == "lm" else Path(cfg["lm"])
    if not lm_dir.is_dir():
        raise CheckpointError(located(lm_dir, "the run's language model directory is missing; "
                                              "run `voxelfm report get-lm smollm2` if it was the cache"))
    lm, tokenizer = load_lm(lm_dir, dtype=train_cfg.lm_dtype)
    if cfg.get("lora"):
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(run / "lora")).merge_and_unload()
    projector = FeatureProjector.load(run)
    model = ReportModel(lm, tokenizer, projector, train_cfg.chat, use_cls=train_cfg.use_cls)
    model.to(resolve_device(device if device is not None else "cpu", key="device")).eval()
    return model, cfg


def default_ids(run_dir: str | os.PathLike[str], split: str = "test") -> list[str]:
    """Scan ids of ``split`` in the run's ``references.jsonl``."""
    refs = load_reports(Path(run_dir) / "references.jsonl")
    ids = [r.scan_id for r in refs if r.split == split]
    if not ids:
        raise DataError(located(run_dir, f"no {split!r} scans in references.jsonl"))
    return ids


def generate_reports(
    run_dir: str | os.PathLike[str],
    features: FeatureMap,
    ids: Sequence[str] | None = None,
    *,
    decoding: DecodingConfig | None = None,
    batch_size: int = 1,
    seed: int = 0,
    model: ReportModel | None = None,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """Generate a report per scan id (default: the run's test split).

    Returns ``[{"scan_id", "generated", "seconds"}]`` where ``seconds`` is the wall time of the
    scan's batch divided by its size.
    """
    if model is None:
        model, cfg = load_report_model(run_dir, device=device)
    else:
        cfg = read_run_config(run_dir)
    train_cfg = cfg["train"]
    if decoding is None:
        # Reports longer than 1.5x the longest training report are runaway repetitions.
        longest = int(cfg.get("max_report_tokens", 170))
        decoding = DecodingConfig(max_new_tokens=int(1.5 * longest) + 8)
    wanted = list(ids) if ids is not None else default_ids(run_dir)
    check_features(features, wanted)
    if batch_size < 1:
        raise DataError("batch_size must be ≥ 1")
    rows: list[dict[str, Any]] = []
    for i in range(0, len(wanted), batch_size):
        chunk = wanted[i:i + batch_size]
        items = [vision_tokens(*features[s], use_cls=train_cfg["use_cls"],
                               max_tokens=train_cfg["max_tokens"]) for s in chunk]
        t0 = time.perf_counter()
        texts = model.generate(items, decoding, seed=seed + i)
        per = (time.perf_counter() - t0) / len(chunk)
        rows.extend({"scan_id": s, "generated": t, "seconds": round(per, 3)}
                    for s, t in zip(chunk, texts, strict=True))
    return rows


def write_generated(run_dir: str | os.PathLike[str], rows: Iterable[dict[str, Any]],
                    name: str = "generated") -> tuple[Path, Path]:
    """Write ``RUN/<name>.jsonl`` and ``RUN/<name>.csv`` (with the reference text when known)."""
    run = Path(run_dir)
    refs = {}
    ref_path = run / "references.jsonl"
    if ref_path.is_file():
        refs = {r.scan_id: r for r in load_reports(ref_path)}
    text_field = read_run_config(run)["train"].get("text_field", "report")
    rows = list(rows)
    out_rows = [{**r, "reference": refs[r["scan_id"]].text(text_field) if r["scan_id"] in refs else ""}
                for r in rows]
    jsonl = run / f"{name}.jsonl"
    atomic_write_text(jsonl, "".join(json.dumps(r) + "\n" for r in out_rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["scan_id", "reference", "generated", "seconds"])
    writer.writeheader()
    writer.writerows({k: r[k] for k in writer.fieldnames} for r in out_rows)
    csv_path = run / f"{name}.csv"
    atomic_write_text(csv_path, buf.getvalue())
    return jsonl, csv_path
