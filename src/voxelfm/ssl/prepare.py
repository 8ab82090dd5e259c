"""``voxelfm pretrain prepare``: CT files -> cached isotropic HU volumes for fast training.

Each scan is read with :func:`voxelfm.io.load_ct`, clipped to the HU range, optionally cropped to
the body, resampled to isotropic voxels (the original rule ``max(min(spacing), 0.75 mm)``, or a
fixed spacing) and optionally shrunk so its longest side fits ``max_side``. Volumes are stored as
int16 HU ``.npy`` files (memory-mapped by the trainer, only crops are read) and listed in
``OUT/index.csv`` with the original's columns ``path`` and ``shape_final`` (plus provenance).

Resumable: every attempt is appended to ``OUT/prepare_log.jsonl`` with the source's fingerprint
(path, size, mtime; :mod:`voxelfm.core.fingerprint`). A re-run skips scans already done from an
unchanged source and prepares again those whose source changed. Scans that failed before are
retried when their source changed (or with ``retry_failed``); otherwise they are counted as
``earlier_failed`` and reported, so a re-run never reads as "all done" while scans are missing.
Bad scans are logged and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.core.atomic import atomic_save, atomic_write_text
from voxelfm.core.errors import DataError, VoxelFMError, located
from voxelfm.core.fingerprint import source_fingerprint

log = logging.getLogger(__name__)
INDEX_FILE = "index.csv"
LOG_FILE = "prepare_log.jsonl"
SETTINGS_FILE = "prepare.json"


@dataclass(frozen=True)
class PrepareSettings:
    """How volumes are cached (stored in ``OUT/prepare.json``; a re-run must use the same)."""

    hu_min: float = -1000.0
    hu_max: float = 1900.0
    crop_background: bool = False
    background_threshold_hu: float = -800.0
    background_kernel: int = 21
    min_spacing_mm: float = 0.75
    spacing_mm: float | None = None  # fixed isotropic spacing instead of the original rule
    max_side: int | None = None  # shrink (isotropy kept) so the longest side is at most this


def _prepare_array(volume: Any, settings: PrepareSettings) -> tuple[np.ndarray, float]:
    from voxelfm.preprocess import clip_hu, crop_background, resample_isotropic, resize_trilinear

    array = clip_hu(volume.array, settings.hu_min, settings.hu_max)
    if settings.crop_background:
        array, _ = crop_background(array, settings.background_threshold_hu, settings.background_kernel, source=volume.source)
    spacing = tuple(float(s) for s in volume.spacing)
    if settings.spacing_mm:
        size = tuple(max(1, round(n * s / settings.spacing_mm)) for n, s in zip(array.shape, spacing, strict=True))
        array = resize_trilinear(array, size)
        out_spacing = float(settings.spacing_mm)
    else:
        array, new_spacing = resample_isotropic(array, spacing, settings.min_spacing_mm)
        out_spacing = float(new_spacing[0])
    if settings.max_side and max(array.shape) > settings.max_side:
        factor = settings.max_side / max(array.shape)
        size = tuple(max(1, int(round(n * factor))) for n in array.shape)
        array = resize_trilinear(array, size)
        out_spacing /= factor
    return np.clip(np.rint(array), -32768, 32767).astype(np.int16), out_spacing


def _save_npy(path: Path, array: np.ndarray) -> None:
    # A file handle, because np.save(path) would append ".npy" to the temporary name.
    with open(path, "wb") as handle:
        np.save(handle, array)


def _read_log(out: Path) -> dict[str, dict[str, Any]]:
    """Last record per scan_id of the prepare log (a torn last line is ignored)."""
    records: dict[str, dict[str, Any]] = {}
    path = out / LOG_FILE
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[str(rec.get("scan_id"))] = rec
    return records


def _write_index(out: Path, records: dict[str, dict[str, Any]]) -> int:
    import pandas as pd

    rows = [r for r in records.values() if r.get("status") == "ok" and (out / r["path"]).is_file()]
    columns = ["path", "shape_final", "scan_id", "source", "spacing_mm"]
    table = pd.DataFrame([{k: r[k] for k in columns} for r in sorted(rows, key=lambda r: r["scan_id"])], columns=columns)
    atomic_write_text(out / INDEX_FILE, table.to_csv(index=False))
    return len(rows)


def prepare_volumes(
    inputs: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
    settings: PrepareSettings | None = None, retry_failed: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, int]:
    """Cache every scan found under ``inputs`` into ``out_dir``; returns counts ``{"found",
    "prepared", "skipped", "failed", "earlier_failed", "retried", "changed", "indexed"}``.

    ``skipped``: done before from the same source; ``earlier_failed``: failed before, source
    unchanged, not retried (their ids are logged); ``retried``/``changed``: failed/done before and
    prepared again because of ``retry_failed`` or a changed source. ``failed`` counts this run only.
    """
    from voxelfm.io import discover_sources, load_ct

    settings = settings or PrepareSettings()
    out = Path(out_dir)
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    settings_path = out / SETTINGS_FILE
    if settings_path.is_file():
        previous = json.loads(settings_path.read_text(encoding="utf-8"))
        if previous != asdict(settings):
            raise DataError(located(settings_path, f"this folder was prepared with other settings {previous}; use a new --out"))
    else:
        atomic_write_text(settings_path, json.dumps(asdict(settings), indent=2) + "\n")
    sources = discover_sources([Path(p) for p in inputs])
    if not sources:
        raise DataError(located(", ".join(str(p) for p in inputs), "no CT scans found"))
    records = _read_log(out)
    counts = {"found": len(sources), "prepared": 0, "skipped": 0, "failed": 0, "earlier_failed": 0,
              "retried": 0, "changed": 0}
    earlier_failed = []
    with open(out / LOG_FILE, "a", encoding="utf-8") as handle:
        for i, (scan_id, path) in enumerate(sources):
            previous = records.get(scan_id)
            fingerprint = source_fingerprint(path)
            same = previous is not None and _same_source(previous, path, fingerprint)
            if previous and previous["status"] == "ok" and (out / previous["path"]).is_file() and same:
                counts["skipped"] += 1
                continue
            if previous and previous["status"] == "failed":
                if same and not retry_failed:
                    counts["earlier_failed"] += 1
                    earlier_failed.append(f"{scan_id} ({previous.get('error')})")
                    continue
                counts["retried"] += 1
            elif previous and previous["status"] == "ok" and not same:
                counts["changed"] += 1
            t0 = time.perf_counter()
            rel = f"volumes/{scan_id}.npy"
            try:
                volume = load_ct(path)
                array, spacing = _prepare_array(volume, settings)
                atomic_save(out / rel, lambda tmp, a=array: _save_npy(tmp, a))
                rec = {"scan_id": scan_id, "source": str(path), "source_fingerprint": fingerprint, "status": "ok", "path": rel,
                       "shape_final": str(list(array.shape)), "spacing_mm": round(spacing, 6), "error": None}
                counts["prepared"] += 1
            except (VoxelFMError, OSError, ValueError, RuntimeError, MemoryError) as exc:
                # One bad scan must not stop a cohort-sized job: log it and move on.
                rec = {"scan_id": scan_id, "source": str(path), "source_fingerprint": fingerprint, "status": "failed", "path": rel,
                       "shape_final": None, "spacing_mm": None, "error": f"{type(exc).__name__}: {exc}"}
                counts["failed"] += 1
                log.warning("skipped %s: %s", path, exc)
            rec["seconds"] = round(time.perf_counter() - t0, 3)
            handle.write(json.dumps(rec) + "\n")
            handle.flush()
            records[scan_id] = rec
            if progress is not None:
                progress(i + 1, len(sources), scan_id)
    if earlier_failed:
        log.warning("%d scan(s) failed in an earlier run and were not retried (their files are unchanged; "
                    "--retry-failed tries again): %s", len(earlier_failed), "; ".join(earlier_failed[:5]))
    counts["indexed"] = _write_index(out, records)
    return counts


def _same_source(record: dict[str, Any], path: str | os.PathLike[str], fingerprint: str | None) -> bool:
    """Whether a log record was made from this source as it is now (records without a fingerprint,
    from older versions, are compared by path)."""
    if os.path.abspath(str(record.get("source"))) != os.path.abspath(path):
        return False
    stored = record.get("source_fingerprint")
    return stored is None or stored == fingerprint
