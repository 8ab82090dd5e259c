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
