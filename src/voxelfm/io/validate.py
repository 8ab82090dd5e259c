"""Sanity checks every loaded volume passes: dimensionality, finiteness, size, spacing, HU."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from voxelfm.core.errors import CTReadError, InputValidationError, located

MAX_AXIS = 2048
MAX_VOXELS = 1_000_000_000
MAX_SPACING_MM = 50.0
# 10 micrometres: finer than any clinical or specimen CT this toolkit targets; a smaller value is
# a unit error (metres written as millimetres) or a broken header, and would make resampling
# explode to absurd sizes.
MIN_SPACING_MM = 0.01
# Every CT in Hounsfield units contains values outside the [-100, 100] band (air, lung, fat or
# bone); data confined to it has been normalised, z-scored or windowed.
HU_BAND = 100.0


def describe_exception(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` of a library exception on one line (messages must stay one line)."""
    text = " ".join(str(exc).split())
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_readable(path: Path) -> None:
    """Refuse a file or folder the current user may not read (say so, not "corrupt")."""
    needed = os.R_OK | (os.X_OK if path.is_dir() else 0)
    if not os.access(path, needed):
        kind = "folder" if path.is_dir() else "file"
        raise CTReadError(located(path, f"permission denied: this {kind} is not readable by the current user"))


def constant_warning(value: float, shape: tuple[int, ...]) -> str:
    """The warning every constant volume carries (it holds no anatomy: features are meaningless)."""
    return (f"constant volume: all {int(np.prod(shape))} voxels are {value:.6g}; it holds no image content, "
            "so any features computed from it are meaningless")


def check_shape(shape: tuple[int, ...], source: object) -> None:
    """Refuse arrays that are not 3D, are empty, or are absurdly large."""
    if len(shape) != 3:
        raise InputValidationError(located(source, f"expected a 3D volume, got {len(shape)} dimensions {tuple(shape)}"))
    if min(shape) < 1:
        raise InputValidationError(located(source, f"volume is empty (shape {tuple(shape)})"))
    if max(shape) > MAX_AXIS:
        raise InputValidationError(
            located(source, f"absurd volume size {tuple(shape)}: more than {MAX_AXIS} voxels along an axis")
        )
    n = int(np.prod(np.asarray(shape, dtype=np.int64)))
    if n > MAX_VOXELS:
        raise InputValidationError(located(source, f"absurd volume size {tuple(shape)}: {n:.3g} voxels > {MAX_VOXELS:.0e}"))


def check_spacing(spacing: object, source: object) -> tuple[float, float, float]:
    """Return spacing (z, y, x) as floats after checking it is three finite values in [0.01, 50] mm."""
    try:
        values = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise InputValidationError(located(source, f"spacing must be three numbers (z, y, x) in mm, got {spacing!r}")) from exc
    if len(values) != 3:
        raise InputValidationError(located(source, f"spacing must be three numbers (z, y, x) in mm, got {len(values)}"))
    bad = [v for v in values if not np.isfinite(v) or v <= 0]
    if bad:
        raise InputValidationError(located(source, f"spacing must be positive and finite, got {values}"))
    if max(values) > MAX_SPACING_MM:
        raise InputValidationError(located(source, f"absurd spacing {values} mm: more than {MAX_SPACING_MM:g} mm"))
    if min(values) < MIN_SPACING_MM:
        raise InputValidationError(
            located(source, f"absurd spacing {values} mm: less than {MIN_SPACING_MM:g} mm (a unit error, e.g. metres?)")
        )
    return values  # type: ignore[return-value]


def check_finite(array: np.ndarray, source: object) -> None:
    """Refuse NaN or infinite values (they poison resampling and normalisation)."""
    if np.issubdtype(array.dtype, np.floating):
        n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if n_bad:
            raise InputValidationError(located(source, f"array contains {n_bad} NaN/inf values"))


def check_hu(
    array: np.ndarray, source: object, value_range: tuple[float, float] | None = None,
) -> list[str]:
    """Refuse volumes that are clearly not Hounsfield units; return soft warnings.

    Errors: every value inside [-100, 100] (e.g. normalised to [0, 1] or z-scored), or the
    original's ``is_HU`` failures (minimum >= 800 HU, or maximum <= -100 HU: nothing but air).
    Warning: nothing below -100 HU (no air or fat: stored values without the DICOM rescale, or a
    tight crop inside an organ). Pass ``allow_non_hu=True`` to the loader to skip this check.
    ``value_range``: the array's (min, max) when the caller already has it.
    """
    lo, hi = value_range if value_range is not None else (float(np.min(array)), float(np.max(array)))
    hint = "Pass allow_non_hu=True to load anyway"
    if lo >= -HU_BAND and hi <= HU_BAND:
        raise InputValidationError(
            located(source, f"values span [{lo:.4g}, {hi:.4g}], inside [-{HU_BAND:g}, {HU_BAND:g}]: this does not look "
                    f"like Hounsfield units (already normalised?). {hint}")
        )
    if lo >= 800.0:
        raise InputValidationError(located(source, f"minimum value {lo:.4g} >= 800: not Hounsfield units (no air or tissue). {hint}"))
    if hi <= -HU_BAND:
        raise InputValidationError(located(source, f"maximum value {hi:.4g} <= -100 HU: the volume holds only air. {hint}"))
    if lo > -HU_BAND:
        return [f"no voxel below -100 HU (min {lo:.4g}): check that the values are HU (rescale applied?)"]
    return []
