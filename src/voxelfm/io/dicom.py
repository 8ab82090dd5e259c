"""DICOM series discovery and assembly (pydicom for parsing, numpy for geometry).

Policy (also in docs/io.md):

* Every regular file under the folder is tried (any name, recursively); non-DICOM files and
  DICOMDIR index files are ignored. Series are grouped by SeriesInstanceUID.
* Skipped series: non-CT modality, localisers (ImageType contains LOCALIZER), secondary
  captures (SOP class 1.2.840.10008.5.1.4.1.1.7*), enhanced multi-frame CT (not supported), and
  slices without ImagePositionPatient/ImageOrientationPatient. The CT series with the most
  slices is chosen unless ``series_uid`` names one.
* Slices are ordered by their position along the slice normal (row x column direction), rescale
  slope/intercept are applied per slice, and the slice spacing comes from the positions.
* Refused (:class:`GeometryError`): mixed orientations, matrix sizes or pixel spacings in one
  series, duplicate slice positions, gaps larger than 3x the typical spacing (a largely
  incomplete series), in-plane offsets (tilt) of more than 45 degrees.
* Handled with a warning: gantry tilt (slice origins not on the normal) -> each slice is shifted
  in-plane (linear interpolation) onto an orthogonal grid; non-uniform spacing or a missing slice
  -> linear interpolation along the normal onto a regular grid at the median spacing.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.core.errors import CTReadError, GeometryError, located
from voxelfm.core.geometry import Geometry
from voxelfm.io.validate import check_shape, describe_exception

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
MAX_GAP_FACTOR = 3.0
# Gaps within 5 % of the median spacing count as uniform (header rounding, not missing data).
UNIFORM_TOL = 0.05
ORIENTATION_TOL = 1e-3


@dataclass
class SeriesInfo:
    """One series found in a folder, and whether it was chosen (or why it was skipped)."""

    uid: str
    modality: str
    n_slices: int
    description: str = ""
    series_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    chosen: bool = False
    skipped: str | None = None
    files: list[Path] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "modality": self.modality,
            "n_slices": self.n_slices,
            "description": self.description,
            "series_number": self.series_number,
            "rows": self.rows,
            "columns": self.columns,
            "chosen": self.chosen,
            "skipped": self.skipped,
        }


def _iter_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    return files


def _read_header(path: Path) -> Any | None:
    """pydicom dataset without pixel data, or None for non-DICOM files."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError):
        # Anything pydicom cannot parse as a DICOM header is treated as a non-DICOM file.
        return None


def _skip_reason(ds: Any) -> str | None:
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    modality = str(ds.get("Modality", "")).upper()
    image_type = [str(t).upper() for t in (ds.get("ImageType") or [])]
    if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture"
    if modality != "CT":
        return f"modality {modality or 'missing'} is not CT"
    if "LOCALIZER" in image_type:
        return "localizer"
    if sop_class == ENHANCED_CT or int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return "multi-frame (enhanced) CT is not supported"
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        return "no ImagePositionPatient/ImageOrientationPatient"
    return None


def scan_folder(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Group every DICOM file under ``folder`` by series (no pixel data read)."""
    folder = Path(folder)
    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    for path in _iter_files(folder):
        ds = _read_header(path)
        if ds is None or str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
            continue
        if "SOPClassUID" not in ds and "Modality" not in ds:
            continue  # a DICOM object that is no image instance (e.g. a bare dataset)
        uid = str(ds.get("SeriesInstanceUID", "") or f"<no SeriesInstanceUID: {path.parent.name}>")
        groups[uid].append((path, ds))
    series = []
    for uid, items in groups.items():
        first = items[0][1]
        reasons = [_skip_reason(ds) for _, ds in items]
        usable = [item for item, reason in zip(items, reasons, strict=True) if reason is None]
        skipped = None
        if not usable:
            skipped = next(r for r in reasons if r is not None)
        info = SeriesInfo(
            uid=uid,
            modality=str(first.get("Modality", "")),
            n_slices=len(usable) if usable else len(items),
            description=str(first.get("SeriesDescription", "") or ""),
            series_number=int(first.SeriesNumber) if first.get("SeriesNumber") not in (None, "") else None,
            rows=int(first.Rows) if "Rows" in first else None,
            columns=int(first.Columns) if "Columns" in first else None,
            skipped=skipped,
            files=[p for p, _ in (usable or items)],
        )
        series.append(info)
    series.sort(key=lambda s: (s.skipped is not None, -s.n_slices, s.uid))
    return series


def choose_series(series: list[SeriesInfo], folder: object, series_uid: str | None = None) -> SeriesInfo:
    """Mark and return the series to load: ``series_uid`` if given, else the largest CT series."""
    if not series:
        raise CTReadError(located(folder, "no DICOM files found"))
    if series_uid is not None:
        match = [s for s in series if s.uid == series_uid]
        if not match:
            known = ", ".join(s.uid for s in series)
            raise CTReadError(located(folder, f"series {series_uid} not found (series present: {known})"))
        chosen = match[0]
        if chosen.skipped:
            raise CTReadError(located(folder, f"series {series_uid} cannot be loaded: {chosen.skipped}"))
    else:
        candidates = [s for s in series if s.skipped is None]
        if not candidates:
            found = "; ".join(f"{s.uid} ({s.skipped})" for s in series)
            raise CTReadError(located(folder, f"no CT series to load (found: {found})"))
        chosen = candidates[0]
    for s in series:
        s.chosen = s is chosen
        if s.skipped is None and not s.chosen:
            s.skipped = "not chosen: fewer slices" if series_uid is None else "not requested"
    return chosen


def _slice_hu(path: Path) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom/handlers raise many types for truncated or odd data
        raise CTReadError(located(path, f"cannot decode pixel data ({describe_exception(exc)})")) from exc
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if pixels.ndim != 2:
        raise CTReadError(located(path, f"expected a single 2D frame, got pixel array {pixels.shape}"))
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def _vec(ds: Any, name: str, n: int, path: Path) -> np.ndarray:
    try:
        values = np.asarray([float(v) for v in ds[name].value], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise GeometryError(located(path, f"unreadable {name}")) from exc
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise GeometryError(located(path, f"{name} must hold {n} finite numbers, got {ds[name].value!r}"))
    return values


def read_series(info: SeriesInfo, folder: object) -> tuple[np.ndarray, Geometry, list[str]]:
    """Assemble the slices of one series into an (array, geometry, warnings) triple.

    The geometry's direction columns are (row, column, normal) of the acquisition; callers
    reorient to the canonical layout.
    """
    headers = []
    for path in info.files:
        ds = _read_header(path)
        if ds is None:
            raise CTReadError(located(path, "file became unreadable"))
        headers.append((path, ds))
    path0, ds0 = headers[0]
    iop0 = _vec(ds0, "ImageOrientationPatient", 6, path0)
    rows0, cols0 = int(ds0.Rows), int(ds0.Columns)
    spacing0 = _vec(ds0, "PixelSpacing", 2, path0) if "PixelSpacing" in ds0 else None
    if spacing0 is None:
        raise GeometryError(located(path0, "no PixelSpacing: cannot build a geometry"))
    for path, ds in headers[1:]:
        iop = _vec(ds, "ImageOrientationPatient", 6, path)
        if np.max(np.abs(iop - iop0)) > ORIENTATION_TOL:
            raise GeometryError(located(folder, f"series {info.uid} mixes slice orientations ({path.name}: {iop.tolist()} vs {iop0.tolist()})"))
        if (int(ds.Rows), int(ds.Columns)) != (rows0, cols0):
            raise GeometryError(located(folder, f"series {info.uid} mixes matrix sizes ({path.name}: {ds.Rows}x{ds.Columns} vs {rows0}x{cols0})"))
        if "PixelSpacing" not in ds or np.max(np.abs(_vec(ds, "PixelSpacing", 2, path) - spacing0)) > 1e-4:
            raise GeometryError(located(folder, f"series {info.uid} mixes pixel spacings ({path.name})"))
    check_shape((len(headers), rows0, cols0), folder)
    row_dir, col_dir = iop0[:3], iop0[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-2 or abs(np.linalg.norm(col_dir) - 1) > 1e-2 or abs(row_dir @ col_dir) > 1e-2:
        raise GeometryError(located(path0, f"ImageOrientationPatient {iop0.tolist()} is not two orthonormal vectors"))
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir - (col_dir @ row_dir) * row_dir
    col_dir = col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    positions = np.stack([_vec(ds, "ImagePositionPatient", 3, path) for path, ds in headers])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    positions, dist = positions[order], dist[order]
    files = [headers[i][0] for i in order]
    dy, dx = float(spacing0[0]), float(spacing0[1])  # PixelSpacing = [row spacing, column spacing]
    warnings: list[str] = []

    gaps = np.diff(dist)
    if gaps.size and np.min(gaps) < 1e-3:
        i = int(np.argmin(gaps))
        raise GeometryError(
            located(folder, f"series {info.uid} has two slices at the same position ({files[i].name}, {files[i + 1].name}); "
                    "multi-phase or duplicated data: name one series or separate them")
        )

    volume = np.empty((len(files), rows0, cols0), dtype=np.float32)
    for k, path in enumerate(files):
        volume[k] = _slice_hu(path)

    # Gantry tilt: slice origins drift in-plane along the stack.
    inplane = positions - positions[0] - np.outer(dist - dist[0], normal)
    offsets_ij = np.stack([inplane @ row_dir / dx, inplane @ col_dir / dy], axis=1)  # in pixels
    drift_mm = np.linalg.norm(inplane, axis=1)
    # Below 5 % of a pixel the drift is rounding in the headers, not tilt.
    if drift_mm.max() > 0.05 * min(dx, dy) and len(files) > 1:
        extent = dist[-1] - dist[0]
        angle = float(np.degrees(np.arctan2(drift_mm[-1], extent))) if extent > 0 else 90.0
        if angle > 45.0:
            raise GeometryError(located(folder, f"series {info.uid}: slice positions are not along the slice normal (tilt {angle:.1f} deg)"))
        volume = _untilt(volume, offsets_ij)
        warnings.append(
            f"gantry tilt of about {angle:.2f} deg (slice origins drift {drift_mm.max():.2f} mm in-plane): "
            "slices shifted onto an orthogonal grid (linear interpolation)"
        )

    if len(files) == 1:
        dz = float(ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness") or 0) or min(dx, dy)
        warnings.append(f"single slice: slice spacing {dz:g} mm taken from the header, not from positions")
    else:
        dz = float(np.median(gaps))
        if np.max(np.abs(gaps - dz)) <= UNIFORM_TOL * dz + 1e-3:
            # Uniform up to header rounding: the mean gap is the most accurate spacing.
            dz = float((dist[-1] - dist[0]) / (len(dist) - 1))
        else:
            worst = float(gaps.max())
            if worst > MAX_GAP_FACTOR * dz:
                raise GeometryError(
                    located(folder, f"series {info.uid} is incomplete: a gap of {worst:.4g} mm between slices "
                            f"(typical spacing {dz:.4g} mm, gaps {np.round(gaps, 3).tolist()[:8]}...)")
                )
            check_shape((int(round((dist[-1] - dist[0]) / dz)) + 1, rows0, cols0), folder)
            volume, n_new = _regularise(volume, dist - dist[0], dz)
            warnings.append(
                f"non-uniform slice spacing (gaps {gaps.min():.4g}..{worst:.4g} mm, e.g. a missing slice): "
                f"resampled {len(files)} slices onto {n_new} at {dz:.4g} mm (linear interpolation)"
            )
    check_shape(volume.shape, folder)
    geometry = Geometry(
        shape=volume.shape,
        spacing=(dz, dy, dx),
        origin=tuple(positions[0]),
        direction=np.stack([row_dir, col_dir, normal], axis=1),
    )
    return volume, geometry, warnings


def _untilt(volume: np.ndarray, offsets_ij: np.ndarray) -> np.ndarray:
    """Shift slice n by -offset_n so every slice shares the first slice's in-plane grid."""
    from scipy.ndimage import shift

    out = np.empty_like(volume)
    fill = float(volume.min())
    for n in range(volume.shape[0]):
        di, dj = offsets_ij[n]
        # Pixel (j, i) of the orthogonal grid sits at (j - dj, i - di) of tilted slice n.
        out[n] = shift(volume[n], (dj, di), order=1, mode="constant", cval=fill)
    return out


def _regularise(volume: np.ndarray, rel: np.ndarray, dz: float) -> tuple[np.ndarray, int]:
    """Linearly interpolate slices at positions ``rel`` (mm, ascending) onto a regular grid."""
    n_new = int(round(rel[-1] / dz)) + 1
    targets = np.arange(n_new) * dz
    targets[-1] = min(targets[-1], rel[-1])
    upper = np.clip(np.searchsorted(rel, targets, side="right"), 1, len(rel) - 1)
    lower = upper - 1
    w = ((targets - rel[lower]) / (rel[upper] - rel[lower])).astype(np.float32)
    w = np.clip(w, 0.0, 1.0)[:, None, None]
    return (volume[lower] * (1 - w) + volume[upper] * w).astype(np.float32), n_new
