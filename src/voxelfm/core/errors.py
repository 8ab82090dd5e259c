"""One exception hierarchy so callers (and the CLI) can catch every voxelfm failure at once.

Every message should name the offending file (or object) and the problem in one line, e.g.
``/data/scan.nii.gz: array contains 12 NaN values``. Use :func:`located` to build it.
"""

from __future__ import annotations

import os


class VoxelFMError(Exception):
    """Base class of every error voxelfm raises on purpose."""


class CTReadError(VoxelFMError):
    """A CT source could not be read (missing, corrupt, truncated, not CT)."""


class GeometryError(VoxelFMError):
    """The geometry of a scan is inconsistent or unusable (tilt, mixed orientations, ...)."""


class InputValidationError(VoxelFMError):
    """Values are unusable: NaN/inf, wrong dimensionality, not HU, absurd sizes or spacing."""


class ConfigError(VoxelFMError):
    """A configuration, spec or CLI option is invalid."""


class CheckpointError(VoxelFMError):
    """A checkpoint or model directory cannot be loaded into the requested architecture."""


class StoreError(VoxelFMError):
    """The embedding store is missing, inconsistent, or an entry is absent."""


class DataError(VoxelFMError):
    """Labels, splits or manifests are unusable (missing columns, constant labels, ...)."""


def located(source: object, problem: str) -> str:
    """Format ``"<source>: <problem>"`` with a readable source name."""
    if source is None:
        return problem
    if isinstance(source, os.PathLike | str):
        return f"{os.fspath(source)}: {problem}"
    return f"{source}: {problem}"
