"""Core types shared by every module: errors, geometry, CT volumes and features."""

from voxelfm.core.errors import (
    CheckpointError,
    ConfigError,
    CTReadError,
    DataError,
    GeometryError,
    InputValidationError,
    StoreError,
    VoxelFMError,
)
from voxelfm.core.geometry import Geometry
from voxelfm.core.types import CTVolume, VoxelFeatures

__all__ = [
    "CTReadError",
    "CTVolume",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Geometry",
    "GeometryError",
    "InputValidationError",
    "StoreError",
    "VoxelFMError",
    "VoxelFeatures",
]
