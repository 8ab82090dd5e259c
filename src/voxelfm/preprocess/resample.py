"""Put an array defined on one grid onto another (e.g. a label map onto a preprocessed grid)."""

from __future__ import annotations

import numpy as np

from voxelfm.core.errors import InputValidationError
from voxelfm.core.geometry import Geometry


def resample_to_geometry(
    array: np.ndarray, src: Geometry, dst: Geometry, *, nearest: bool = True, default: float = 0.0,
) -> np.ndarray:
    """Sample ``array`` (on grid ``src``) at every voxel centre of ``dst`` in world space.

    ``nearest=True`` (label maps) keeps the dtype and labels; otherwise linear interpolation in
    float32. Points outside ``src`` get ``default``. Uses SimpleITK's Resample (identity transform).
    """
    import SimpleITK as sitk

    from voxelfm.io.itk import array_to_image

    array = np.asarray(array)
    if tuple(array.shape) != tuple(src.shape):
        raise InputValidationError(f"array shape {array.shape} does not match its geometry {src.shape}")
    lo_src, hi_src = _world_box(src)
    lo_dst, hi_dst = _world_box(dst)
    if np.any(hi_src <= lo_dst) or np.any(hi_dst <= lo_src):
        raise InputValidationError(
            f"the grids do not overlap in world space (source {np.round(lo_src, 1).tolist()}..{np.round(hi_src, 1).tolist()} mm, "
            f"target {np.round(lo_dst, 1).tolist()}..{np.round(hi_dst, 1).tolist()} mm): is this array from another scan?"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    work = array if nearest else array.astype(np.float32)
    image = array_to_image(work, src)
    size = [int(n) for n in dst.shape[::-1]]
    out = sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
        [float(o) for o in dst.origin], [float(s) for s in dst.spacing[::-1]],
        [float(d) for d in dst.direction.reshape(-1)], float(default), image.GetPixelID(),
    )
    result = sitk.GetArrayFromImage(out)
    return result.astype(array.dtype, copy=False) if nearest else result.astype(np.float32, copy=False)


def _world_box(geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned LPS bounding box (mm) of a grid, voxel edges included."""
    corners = np.array([[k, j, i] for k in (0, 1) for j in (0, 1) for i in (0, 1)], dtype=np.float64)
    corners = corners * np.asarray(geometry.shape, dtype=np.float64) - 0.5
    world = geometry.index_to_world(corners)
    return world.min(axis=0), world.max(axis=0)
