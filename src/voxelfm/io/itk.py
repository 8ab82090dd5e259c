"""Conversions between SimpleITK images and (array, Geometry) pairs, and canonical orientation.

voxelfm keeps every volume in ITK's LPS canonical layout: ``array[k, j, i]`` with i toward the
patient's left, j toward posterior and k toward superior. SimpleITK's ``DICOMOrient(img, "LPS")``
permutes and flips axes (no interpolation) so the direction matrix is as close to identity as
the acquisition allows; an oblique scan keeps its (small) obliquity in ``direction``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from voxelfm.core.geometry import Geometry

if TYPE_CHECKING:
    import SimpleITK as sitk

CANONICAL = "LPS"


def array_to_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """Wrap a (z, y, x) array and its geometry as a SimpleITK image (no copy of semantics)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in geometry.spacing[::-1]])
    image.SetOrigin([float(o) for o in geometry.origin])
    image.SetDirection([float(d) for d in geometry.direction.reshape(-1)])
    return image


def image_geometry(image: sitk.Image) -> Geometry:
    """Geometry of a 3D SimpleITK image, in voxelfm's (z, y, x) conventions."""
    size = image.GetSize()
    return Geometry(
        shape=(size[2], size[1], size[0]),
        spacing=tuple(image.GetSpacing())[::-1],
        origin=tuple(image.GetOrigin()),
        direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
    )


def image_to_array(image: sitk.Image) -> tuple[np.ndarray, Geometry]:
    """(z, y, x) numpy array (a copy) and geometry of a SimpleITK image."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image), image_geometry(image)


def orient_image(image: sitk.Image) -> sitk.Image:
    """Permute/flip ``image`` into the canonical LPS layout (exact: no resampling)."""
    import SimpleITK as sitk

    return sitk.DICOMOrient(image, CANONICAL)


def is_canonical(geometry: Geometry) -> bool:
    """True when every index axis already points along its LPS world axis (positive)."""
    d = geometry.direction
    return bool(np.all(np.argmax(np.abs(d), axis=0) == np.arange(3)) and np.all(np.diag(d) > 0))


def to_canonical(array: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """Return ``array`` and ``geometry`` in the canonical LPS layout (no-op when already there)."""
    if is_canonical(geometry):
        return array, geometry
    return image_to_array(orient_image(array_to_image(array, geometry)))
