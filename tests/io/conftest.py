"""Fixtures for io tests: small synthetic CT volumes (``synthetic_ct``) with known geometry."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic_ct import ct_volume
from voxelfm.core import CTVolume


def rotation(axis: str, degrees: float) -> np.ndarray:
    """Right-handed rotation matrix about a world axis."""
    t = np.radians(degrees)
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def make_volume(
    shape: tuple[int, int, int] = (6, 10, 12),
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.7),
    origin: tuple[float, float, float] = (-40.0, -30.0, 100.0),
    direction: np.ndarray | None = None,
    seed: int = 0,
) -> CTVolume:
    """The shared body phantom (whole HU >= -1024: exact in DICOM and int16 NIfTI) on a small grid."""
    return ct_volume(shape, spacing, origin, direction, seed)


def assert_same_physical(a: CTVolume, b: CTVolume, atol: float = 1e-3) -> None:
    """Every voxel of ``a`` has the same value as the voxel of ``b`` at the same LPS position."""
    world = a.geometry.voxel_centres_world().reshape(-1, 3)
    idx = b.geometry.world_to_index(world)
    rounded = np.rint(idx)
    np.testing.assert_allclose(idx, rounded, atol=atol)
    k, j, i = rounded.astype(int).T
    assert np.all((k >= 0) & (k < b.shape[0]) & (j >= 0) & (j < b.shape[1]) & (i >= 0) & (i < b.shape[2]))
    np.testing.assert_array_equal(b.array[k, j, i], a.array.reshape(-1))


@pytest.fixture
def volume() -> CTVolume:
    return make_volume()


@pytest.fixture(name="make_volume")
def _make_volume_fixture():
    return make_volume


@pytest.fixture(name="assert_same_physical")
def _assert_same_physical_fixture():
    return assert_same_physical


@pytest.fixture(name="rotation")
def _rotation_fixture():
    return rotation
