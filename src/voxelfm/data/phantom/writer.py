"""Write a cohort to disk: scans (NIfTI or DICOM), label maps, labels.csv, reports.jsonl, dataset.md.

Layout of ``OUT``::

    images/<scan_id>.nii.gz | images/<scan_id>/  (DICOM series)
    labels/<scan_id>.nii.gz                      (int16 label map, same geometry)
    labels.csv  reports.jsonl  dataset.md
    .phantom/settings.json  .phantom/rows/<scan_id>.json   (resume state)

Every file is written atomically (DICOM series into a temporary folder renamed into place), and a
scan counts as done only once its row file exists, so an interrupted run resumes where it
stopped; the tables are rebuilt from the row files at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

from voxelfm.core.atomic import atomic_write_text
from voxelfm.core.errors import ConfigError, located
from voxelfm.data.phantom.cohort import (
    PhantomScan,
    ScanPlan,
    assign_splits,
    check_size,
    generate_planned,
    plan_cohort,
)
from voxelfm.data.phantom.patient import PrevalenceConfig
from voxelfm.data.phantom.workers import default_workers, worker_pool

FORMATS = ("nifti", "dicom")
STATE_VERSION = 1


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _write_scan(scan: PhantomScan, out: Path, format: str, seed: int, plan: ScanPlan) -> dict[str, Any]:
    from voxelfm.io import write_dicom_series, write_nifti

    row = dict(scan.row)
    write_nifti(scan.labels.astype("int16"), scan.volume.geometry, out / row["label_path"])
    if format == "nifti":
        write_nifti(scan.volume.array.astype("int16"), scan.volume.geometry, out / row["path"])
    else:
        final = out / row["path"]
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        series_uid = _uid(seed, plan.scan_id, "series")
        meta = scan.volume.metadata
        write_dicom_series(
            scan.volume, tmp, series_uid=series_uid, study_uid=_uid(seed, plan.scan_id, "study"),
            frame_of_reference_uid=_uid(seed, plan.scan_id, "frame"), patient_id=plan.patient_id,
            patient_name=f"PHANTOM^{plan.patient_id}",
            series_description=f"CHEST {meta['slice_thickness_mm']:g}mm {meta['kernel'].upper()}",
            slice_order="descending" if (plan.patient_index + plan.scan_index) % 2 else "ascending",
        )
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        row["series_uid"] = series_uid
    return row


def _job(args: tuple[ScanPlan, int, str, PrevalenceConfig | None, str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    plan, seed, size, config, format, out = args
    scan = generate_planned((plan, seed, size, config, format))
    row = _write_scan(scan, Path(out), format, seed, plan)
    state = {"row": row, "report": scan.report}
    atomic_write_text(Path(out) / ".phantom" / "rows" / f"{plan.scan_id}.json", json.dumps(state))
    return row, scan.report


def _done(out: Path, plan: ScanPlan, format: str) -> bool:
    state = out / ".phantom" / "rows" / f"{plan.scan_id}.json"
    image = out / "images" / (f"{plan.scan_id}.nii.gz" if format == "nifti" else plan.scan_id)
    return state.exists() and image.exists() and (out / "labels" / f"{plan.scan_id}.nii.gz").exists()


def config_digest(config: PrevalenceConfig) -> str:
    """A short digest of every field of ``config`` (finding models, demographics, conspicuity)."""
    text = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_settings(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    path = out / ".phantom" / "settings.json"
    if path.exists() and not overwrite:
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = None
        if old != settings:
            raise ConfigError(located(out, f"holds a cohort made with other settings ({old}); "
                                           "use another folder or --overwrite"))
    if overwrite:
        for name in ("images", "labels", ".phantom"):
            shutil.rmtree(out / name, ignore_errors=True)
    atomic_write_text(path, json.dumps(settings, indent=2))


def write_cohort(out_dir: str | os.PathLike[str], n: int, seed: int = 0, format: str = "nifti",
                 size: str = "small", *, config: PrevalenceConfig | None = None, workers: int | None = None,
                 overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                 split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> Path:
    """Generate ``n`` scans into ``out_dir`` (resumable); returns the path of ``labels.csv``.

    ``split_fractions``: train/val/test shares of the patients (a larger test share gives
    tighter confidence intervals on a small cohort).

    ``progress(done, total)`` is called after every finished scan (including resumed ones).
    A custom ``config`` (e.g. :func:`~voxelfm.data.phantom.patient.phantom_config`) is part of the
    resume check through its digest.
    """
    import pandas as pd

    from voxelfm.data.phantom.card import write_card

    if format not in FORMATS:
        raise ConfigError(located("phantom", f"--format must be one of {FORMATS}, got {format!r}"))
    check_size(size)
    if n < 1:
        raise ConfigError(located("phantom", f"--n must be >= 1, got {n}"))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(located(out, "exists and is not a folder"))
    out.mkdir(parents=True, exist_ok=True)
    settings = {"version": STATE_VERSION, "n": n, "seed": seed, "format": format, "size": size,
                "custom_config": config is not None}
    if config is not None:  # a different custom config must not resume this cohort
        settings["config_digest"] = config_digest(config)
    fractions = tuple(float(f) for f in split_fractions)
    if fractions != (0.7, 0.15, 0.15):  # recorded only when not the default: older cohorts still resume
        settings["split_fractions"] = list(fractions)
    _check_settings(out, settings, overwrite)
    plans = assign_splits(plan_cohort(n, seed), seed, fractions)
    todo = [p for p in plans if not _done(out, p, format)]
    finished = len(plans) - len(todo)
    if progress:
        progress(finished, len(plans))
    jobs = [(p, seed, size, config, format, str(out)) for p in todo]
    workers = default_workers(len(jobs), size) if workers is None else max(1, workers)
    if workers == 1:
        for job in jobs:
            _job(job)
            finished += 1
            if progress:
                progress(finished, len(plans))
    elif jobs:
        with worker_pool(workers) as pool:
            for fut in as_completed([pool.submit(_job, job) for job in jobs]):
                fut.result()
                finished += 1
                if progress:
                    progress(finished, len(plans))
    rows, reports = [], []
    for p in plans:
        state = json.loads((out / ".phantom" / "rows" / f"{p.scan_id}.json").read_text())
        rows.append(state["row"])
        reports.append(state["report"])
    table = pd.DataFrame(rows)
    labels_csv = out / "labels.csv"
    atomic_write_text(labels_csv, table.to_csv(index=False))
    atomic_write_text(out / "reports.jsonl", "".join(json.dumps(r) + "\n" for r in reports))
    write_card(out / "dataset.md", table, seed=seed, size=size, format=format, config=config)
    return labels_csv
