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
* Refused (:class:`CTReadError`, each file named): slice files of the series that cannot be read
  (empty, truncated, permission, undecodable pixel data) unless ``allow_missing_slices``; a
  rescale slope/intercept that is not a finite number (or a slope of 0).
* Refused (:class:`GeometryError`): mixed orientations, matrix sizes or pixel spacings in one
  series, duplicate slice positions, gaps larger than 3x the typical spacing (a largely
  incomplete series), in-plane offsets (tilt) of more than 45 degrees.
* Handled with a warning: gantry tilt (slice origins not on the normal) -> each slice is shifted
  in-plane (linear interpolation) onto an orthogonal grid; non-uniform spacing or a missing slice
  -> linear interpolation along the normal onto a regular grid at the median spacing.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.core.errors import CTReadError, GeometryError, located
from voxelfm.core.geometry import Geometry
from voxelfm.io.discover import has_dicom_magic
from voxelfm.io.validate import check_shape, describe_exception

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}
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
    #: Files next to this series' slices that look like slices of it but cannot be read: (path, why).
    lost: list[tuple[Path, str]] = field(default_factory=list, repr=False)

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
            "unreadable_files": [f"{p.name} ({why})" for p, why in self.lost],
        }


def list_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` (or ``folder`` itself if it is a file), hidden ones skipped, in a
    stable order (sorted names, depth first)."""
    if folder.is_file():
        return [folder]
    files = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith("."))
    return files


def read_header(path: Path) -> Any | None:
    """pydicom dataset without pixel data, or None for non-DICOM files."""
    return _try_header(path)[0]


def _try_header(path: Path) -> tuple[Any | None, str | None]:
    """``(dataset, None)``, or ``(None, why it could not be read)`` for every other file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True), None
    except PermissionError:
        return None, "permission denied"
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError, KeyError, AttributeError,
            IndexError, OverflowError) as exc:
        # Anything pydicom cannot parse as a DICOM header is a non-DICOM file (or a broken one).
        return None, describe_exception(exc, limit=120)


def name_pattern(name: str) -> str:
    """File name with every digit run replaced: ``IM0004`` and ``IM0012`` share ``IM#``."""
    return re.sub(r"[0-9]+", "#", name.lower())


def _lost_reason(path: Path, why: str) -> str:
    """Why an unparsable file that looks like a slice of the series could not be used."""
    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if why == "permission denied":
        return why
    if size == 0:
        return "empty file"
    if has_dicom_magic(path):
        return f"truncated or corrupt DICOM header ({why})"
    return f"not readable as DICOM, {size} bytes: truncated or not an image"


def _int_attr(ds: Any, name: str) -> int | None:
    """An integer attribute, or None when it is missing or not a number (informational fields)."""
    try:
        value = ds.get(name)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _number(ds: Any, name: str, path: Path, default: float) -> float:
    """A numeric DICOM attribute as a finite float (``default`` when absent or empty)."""
    try:
        value = ds.get(name)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CTReadError(located(path, f"DICOM attribute {name} is not a number ({describe_exception(exc)})")) from exc
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CTReadError(located(path, f"DICOM attribute {name} = {str(value)[:40]!r} is not a number")) from exc
    if not np.isfinite(number):
        raise CTReadError(located(path, f"DICOM attribute {name} is {number}: rescaled values would not be finite HU"))
    return number


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
    if sop_class == ENHANCED_CT or (_int_attr(ds, "NumberOfFrames") or 1) > 1:
        return "multi-frame (enhanced) CT is not supported"
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        return "no ImagePositionPatient/ImageOrientationPatient"
    return None


def scan_folder(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """Group every DICOM file under ``folder`` by series (no pixel data read).

    Files that cannot be parsed but look like slices of a series (a DICOM preamble, a DICOM file
    suffix, or the same numbered name pattern as slices in the same folder: ``IM0004`` among
    ``IM0001``..``IM0009``) are attached to that series as ``lost``, with the reason.
    """
    folder = Path(folder)
    groups: dict[str, list[tuple[Path, Any]]] = defaultdict(list)
    rejected: list[tuple[Path, str]] = []
    for path in list_files(folder):
        ds, why = _try_header(path)
        if ds is None:
            rejected.append((path, _lost_reason(path, why or "unreadable")))
            continue
        if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_CLASS:
            continue
        if "SOPClassUID" not in ds and "Modality" not in ds:
            # A DICOM object that is no image instance, or a slice whose header was cut short.
            rejected.append((path, "DICOM header without SOPClassUID or Modality: truncated?"))
            continue
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
            if uid.startswith("<no SeriesInstanceUID"):
                # Headers cut short before the series attributes: candidates for lost slices.
                rejected += [(p, f"incomplete DICOM header (no SeriesInstanceUID; {r}): truncated?")
                             for (p, _), r in zip(items, reasons, strict=True)]
        incomplete = [(p, f"{r}: truncated header?") for (p, _), r in zip(items, reasons, strict=True)
                      if usable and r is not None and r.startswith("no ImagePosition")]
        info = SeriesInfo(
            uid=uid,
            modality=str(first.get("Modality", "")),
            n_slices=len(usable) if usable else len(items),
            description=str(first.get("SeriesDescription", "") or ""),
            series_number=_int_attr(first, "SeriesNumber"),
            rows=_int_attr(first, "Rows"),
            columns=_int_attr(first, "Columns"),
            skipped=skipped,
            files=[p for p, _ in (usable or items)],
        )
        info.lost = incomplete
        series.append(info)
    for info in series:
        if info.skipped is None:
            info.lost += _lost_slices(info.files, rejected)
    series.sort(key=lambda s: (s.skipped is not None, -s.n_slices, s.uid))
    return series


def _lost_slices(files: list[Path], rejected: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """The rejected files that look like slices of the series made of ``files``."""
    patterns = {(f.parent, name_pattern(f.name)) for f in files}
    folders = {f.parent for f in files}
    lost = []
    for path, why in rejected:
        if path.parent not in folders:
            continue
        if ((path.parent, name_pattern(path.name)) in patterns or path.suffix.lower() in DICOM_SUFFIXES
                or has_dicom_magic(path)):
            lost.append((path, why))
    return lost


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


class _UndecodableSlice(Exception):
    """Pixel data of one slice cannot be decoded (truncated, unsupported compression, ...)."""


def _slice_hu(path: Path) -> np.ndarray:
    """One slice in HU (rescale applied); refuses a rescale that is not a finite number."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom/handlers raise many types for truncated or odd data
        raise _UndecodableSlice(describe_exception(exc, limit=120)) from exc
    slope = _number(ds, "RescaleSlope", path, 1.0)
    intercept = _number(ds, "RescaleIntercept", path, 0.0)
    if slope == 0:
        raise CTReadError(located(path, "DICOM attribute RescaleSlope is 0: every voxel would be the intercept"))
    if pixels.ndim != 2:
        raise CTReadError(located(path, f"expected a single 2D frame, got pixel array {pixels.shape}"))
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
        hu = (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)
    if not np.all(np.isfinite(hu)):  # float pixel data, or a rescale that overflows float32
        raise CTReadError(located(path, f"{hu.size - int(np.count_nonzero(np.isfinite(hu)))} voxels are not finite after the rescale"))
    return hu


def _describe_lost(lost: list[tuple[Path, str]], folder: object, limit: int = 5) -> str:
    root = Path(os.fspath(folder)) if isinstance(folder, str | os.PathLike) else None

    def name(path: Path) -> str:
        if root is not None:
            try:
                return str(path.relative_to(root)) if path != root else path.name
            except ValueError:
                pass
        return path.name

    text = ", ".join(f"{name(p)} ({why})" for p, why in lost[:limit])
    return text + (f" and {len(lost) - limit} more" if len(lost) > limit else "")


MISSING_HINT = "pass allow_missing_slices=True (voxelfm info --allow-missing-slices) to load the rest"


def _vec(ds: Any, name: str, n: int, path: Path) -> np.ndarray:
    try:
        values = np.asarray([float(v) for v in ds[name].value], dtype=np.float64)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raw = ds.get_item(name)
        value = None if raw is None else raw.value
        if isinstance(value, bytes):
            text = value.decode("latin-1", "replace")
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            text = "\\".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        shown = f" {text.strip()[:60]!r}" if text.strip() else ""
        raise GeometryError(located(path, f"unreadable {name}{shown}: expected {n} numbers")) from exc
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise GeometryError(located(path, f"{name} must hold {n} finite numbers, got {ds[name].value!r}"))
    return values


def _read_headers(info: SeriesInfo, folder: object, allow_missing_slices: bool) -> tuple[list[tuple[Path, Any]], list[tuple[Path, str]]]:
    """Headers of the series' files, and the files that look like its slices but cannot be read
    (refused unless ``allow_missing_slices``)."""
    lost = list(info.lost)
    headers = []
    for path in info.files:
        ds, why = _try_header(path)
        if ds is None:
            lost.append((path, _lost_reason(path, why or "unreadable")))
            continue
        headers.append((path, ds))
    if lost and not allow_missing_slices:
        raise CTReadError(located(folder, f"series {info.uid}: {len(lost)} file(s) that look like its slices cannot "
                                  f"be read, so slices would be missing: {_describe_lost(lost, folder)}; {MISSING_HINT}"))
    if not headers:
        raise CTReadError(located(folder, f"series {info.uid}: no readable slice ({_describe_lost(lost, folder)})"))
    return headers, lost


def _common_frame(info: SeriesInfo, folder: object, headers: list[tuple[Path, Any]]) -> tuple[np.ndarray, int, int, np.ndarray]:
    """Orientation, matrix size and pixel spacing shared by every slice: ``(iop, rows, cols, spacing)``."""
    path0, ds0 = headers[0]
    iop0 = _vec(ds0, "ImageOrientationPatient", 6, path0)
    rows0, cols0 = _int_attr(ds0, "Rows"), _int_attr(ds0, "Columns")
    if rows0 is None or cols0 is None:
        if "Rows" not in ds0 or "Columns" not in ds0:
            raise GeometryError(located(path0, "no Rows/Columns in the DICOM header (truncated file?)"))
        raise GeometryError(located(path0, f"Rows/Columns must be integers, got {ds0.get('Rows')!r}/{ds0.get('Columns')!r}"))
    spacing0 = _vec(ds0, "PixelSpacing", 2, path0) if "PixelSpacing" in ds0 else None
    if spacing0 is None:
        raise GeometryError(located(path0, "no PixelSpacing: cannot build a geometry"))
    for path, ds in headers[1:]:
        iop = _vec(ds, "ImageOrientationPatient", 6, path)
        if np.max(np.abs(iop - iop0)) > ORIENTATION_TOL:
            raise GeometryError(located(folder, f"series {info.uid} mixes slice orientations ({path.name}: {iop.tolist()} vs {iop0.tolist()})"))
        if (_int_attr(ds, "Rows"), _int_attr(ds, "Columns")) != (rows0, cols0):
            raise GeometryError(located(folder, f"series {info.uid} mixes matrix sizes ({path.name}: {ds.Rows}x{ds.Columns} vs {rows0}x{cols0})"))
        if "PixelSpacing" not in ds or np.max(np.abs(_vec(ds, "PixelSpacing", 2, path) - spacing0)) > 1e-4:
            raise GeometryError(located(folder, f"series {info.uid} mixes pixel spacings ({path.name})"))
    return iop0, rows0, cols0, spacing0


def _slice_axes(iop: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and normal unit vectors from ImageOrientationPatient (re-orthonormalised)."""
    row_dir, col_dir = iop[:3], iop[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-2 or abs(np.linalg.norm(col_dir) - 1) > 1e-2 or abs(row_dir @ col_dir) > 1e-2:
        raise GeometryError(located(path, f"ImageOrientationPatient {iop.tolist()} is not two orthonormal vectors"))
    row_dir = row_dir / np.linalg.norm(row_dir)
    col_dir = col_dir - (col_dir @ row_dir) * row_dir
    col_dir = col_dir / np.linalg.norm(col_dir)
    return row_dir, col_dir, np.cross(row_dir, col_dir)


def _decode_slices(files: list[Path], shape: tuple[int, int], allow_missing_slices: bool,
                   lost: list[tuple[Path, str]]) -> tuple[np.ndarray, list[int]]:
    """HU of every slice that decodes, and the indices of those slices (undecodable ones are
    refused, or appended to ``lost`` with ``allow_missing_slices``)."""
    volume = np.empty((len(files), *shape), dtype=np.float32)
    keep = []
    for k, path in enumerate(files):
        try:
            volume[len(keep)] = _slice_hu(path)
            keep.append(k)
        except _UndecodableSlice as exc:
            if not allow_missing_slices:
                raise CTReadError(located(path, f"cannot decode pixel data ({exc}); {MISSING_HINT}")) from exc
            lost.append((path, f"pixel data: {exc}"))
    return volume[: len(keep)], keep


def _untilt_stack(volume: np.ndarray, positions: np.ndarray, dist: np.ndarray, axes: tuple[np.ndarray, ...],
                  pixel: tuple[float, float], info: SeriesInfo, folder: object, warnings: list[str]) -> np.ndarray:
    """Gantry tilt: slice origins drift in-plane along the stack; shift the slices back onto an
    orthogonal grid (with a warning), refuse drifts beyond 45 degrees."""
    row_dir, col_dir, normal = axes
    dy, dx = pixel
    inplane = positions - positions[0] - np.outer(dist - dist[0], normal)
    offsets_ij = np.stack([inplane @ row_dir / dx, inplane @ col_dir / dy], axis=1)  # in pixels
    drift_mm = np.linalg.norm(inplane, axis=1)
    # Below 5 % of a pixel the drift is rounding in the headers, not tilt.
    if drift_mm.max() > 0.05 * min(dx, dy) and len(volume) > 1:
        extent = dist[-1] - dist[0]
        angle = float(np.degrees(np.arctan2(drift_mm[-1], extent))) if extent > 0 else 90.0
        if angle > 45.0:
            raise GeometryError(located(folder, f"series {info.uid}: slice positions are not along the slice normal (tilt {angle:.1f} deg)"))
        volume = _untilt(volume, offsets_ij)
        warnings.append(
            f"gantry tilt of about {angle:.2f} deg (slice origins drift {drift_mm.max():.2f} mm in-plane): "
            "slices shifted onto an orthogonal grid (linear interpolation)"
        )
    return volume


def _even_spacing(volume: np.ndarray, dist: np.ndarray, header: tuple[Path, Any], pixel: tuple[float, float],
                  info: SeriesInfo, folder: object, warnings: list[str]) -> tuple[np.ndarray, float]:
    """Slice spacing from the positions; an uneven stack (a missing slice) is resampled onto an
    even grid with a warning, a gap over ``MAX_GAP_FACTOR`` spacings is refused."""
    path0, ds0 = header
    if len(volume) == 1:
        header_dz = _number(ds0, "SpacingBetweenSlices", path0, 0.0) or _number(ds0, "SliceThickness", path0, 0.0)
        dz = abs(header_dz) or min(pixel)
        warnings.append(f"single slice: slice spacing {dz:g} mm taken from the header, not from positions")
        return volume, dz
    gaps = np.diff(dist)
    dz = float(np.median(gaps))
    if np.max(np.abs(gaps - dz)) <= UNIFORM_TOL * dz + 1e-3:
        # Uniform up to header rounding: the mean gap is the most accurate spacing.
        return volume, float((dist[-1] - dist[0]) / (len(dist) - 1))
    worst = float(gaps.max())
    if worst > MAX_GAP_FACTOR * dz:
        raise GeometryError(
            located(folder, f"series {info.uid} is incomplete: a gap of {worst:.4g} mm between slices "
                    f"(typical spacing {dz:.4g} mm, gaps {np.round(gaps, 3).tolist()[:8]}...)")
        )
    check_shape((int(round((dist[-1] - dist[0]) / dz)) + 1, *volume.shape[1:]), folder)
    n_slices = len(volume)
    volume, n_new = _regularise(volume, dist - dist[0], dz)
    warnings.append(
        f"non-uniform slice spacing (gaps {gaps.min():.4g}..{worst:.4g} mm, e.g. a missing slice): "
        f"resampled {n_slices} slices onto {n_new} at {dz:.4g} mm (linear interpolation)"
    )
    return volume, dz


def read_series(
    info: SeriesInfo, folder: object, *, allow_missing_slices: bool = False,
) -> tuple[np.ndarray, Geometry, list[str]]:
    """Assemble the slices of one series into an (array, geometry, warnings) triple.

    The geometry's direction columns are (row, column, normal) of the acquisition; callers
    reorient to the canonical layout. Slices that cannot be read (``info.lost``, or pixel data
    that does not decode) refuse the series unless ``allow_missing_slices``: then they are left
    out with a warning naming them (a gap in the middle is interpolated under the usual rules).
    """
    headers, lost = _read_headers(info, folder, allow_missing_slices)
    iop0, rows0, cols0, spacing0 = _common_frame(info, folder, headers)
    check_shape((len(headers), rows0, cols0), folder)
    axes = _slice_axes(iop0, headers[0][0])
    positions = np.stack([_vec(ds, "ImagePositionPatient", 3, path) for path, ds in headers])
    dist = positions @ axes[2]
    order = np.argsort(dist, kind="stable")
    positions, dist = positions[order], dist[order]
    files = [headers[i][0] for i in order]
    pixel = (float(spacing0[0]), float(spacing0[1]))  # PixelSpacing = [row spacing, column spacing]
    warnings: list[str] = []

    gaps = np.diff(dist)
    if gaps.size and np.min(gaps) < 1e-3:
        i = int(np.argmin(gaps))
        raise GeometryError(
            located(folder, f"series {info.uid} has two slices at the same position ({files[i].name}, {files[i + 1].name}); "
                    "multi-phase or duplicated data: name one series or separate them")
        )

    volume, keep = _decode_slices(files, (rows0, cols0), allow_missing_slices, lost)
    if not keep:
        raise CTReadError(located(folder, f"series {info.uid}: no slice could be decoded ({_describe_lost(lost, folder)})"))
    positions, dist = positions[keep], dist[keep]
    if lost:
        warnings.append(f"{len(lost)} unreadable file(s) left out of series {info.uid} (allow_missing_slices): "
                        f"{_describe_lost(lost, folder)}")
    volume = _untilt_stack(volume, positions, dist, axes, pixel, info, folder, warnings)
    volume, dz = _even_spacing(volume, dist, headers[0], pixel, info, folder, warnings)
    check_shape(volume.shape, folder)
    geometry = Geometry(
        shape=volume.shape,
        spacing=(dz, *pixel),
        origin=tuple(positions[0]),
        direction=np.stack(axes, axis=1),
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
