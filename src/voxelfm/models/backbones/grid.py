"""Geometry of native input grids and patch grids of any backbone.

A backbone's native tensor may order and flip its spatial axes differently from the canonical
``(z, y, x)`` volume (Merlin feeds RAS ``(X, Y, Z)``, RadFM ``(H, W, D)``). Every grid here is a
:class:`~voxelfm.core.geometry.Geometry` whose array axes are the tensor's spatial axes, built by
composing *index maps*: 4×4 affine matrices from a grid's homogeneous index ``(a0, a1, a2, 1)`` to
the continuous ``(z, y, x)`` index of the grid it came from. Resampling, cropping, padding,
permuting and flipping are all such maps, so the world position of every native voxel and of
every patch follows exactly from the source scan's geometry.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxelfm.core.geometry import Geometry


def axis_map(starts: Sequence[float], steps: Sequence[float], axes: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """Index map where output axis ``n`` samples input axis ``axes[n]`` at ``starts[n] + steps[n] * a_n``."""
    m = np.zeros((4, 4))
    for n, axis in enumerate(axes):
        m[axis, n] = float(steps[n])
        m[axis, 3] = float(starts[n])
    m[3, 3] = 1.0
    return m


def resize_map(old: Sequence[int], new: Sequence[int]) -> np.ndarray:
    """Index map of a half-pixel (``align_corners=False``) resize: new n ↦ old ``(n + ½)·old/new − ½``."""
    steps = [o / n for o, n in zip(old, new, strict=True)]
    return axis_map([(s - 1.0) / 2.0 for s in steps], steps)


def geometry_from_affine(affine_zyx: np.ndarray, shape: Sequence[int]) -> Geometry:
    """Geometry whose ``affine_zyx`` is ``affine_zyx`` (columns must be orthogonal, as for permutes/flips/scales)."""
    cols = np.asarray(affine_zyx, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    unit = cols / spacing[None, :]
    direction = unit[:, ::-1]  # ITK order: columns for index axes i, j, k = array axes 2, 1, 0
    return Geometry(shape=tuple(int(s) for s in shape), spacing=tuple(spacing),
                    origin=tuple(np.asarray(affine_zyx)[:3, 3]), direction=direction)


def compose(geometry: Geometry, index_map: np.ndarray, shape: Sequence[int]) -> Geometry:
    """Geometry of a grid of ``shape`` whose index ``a`` sits at index ``index_map @ a`` of ``geometry``."""
    return geometry_from_affine(geometry.affine_zyx @ index_map, shape)


def patch_grid(geometry: Geometry, steps: Sequence[int], grid_shape: Sequence[int],
               axes: Sequence[int] = (0, 1, 2)) -> Geometry:
    """Geometry of patch centres: grid axis ``n`` runs along input axis ``axes[n]`` in cells of ``steps[n]`` voxels."""
    starts = [(s - 1) / 2.0 for s in steps]
    return compose(geometry, axis_map(starts, steps, axes), grid_shape)


def canonical_grid(values: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, Geometry]:
    """Permute/flip a ``(d, h, w, ...)`` grid so its axes run inferior→superior, anterior→posterior, right→left.

    This is the orientation of every canonical :class:`~voxelfm.core.types.CTVolume`, so stored
    patch grids of all backbones share one layout (a grid already canonical is returned unchanged).
    """
    cols = geometry.affine_zyx[:3, :3]  # column a: LPS direction of array axis a
    lps_axis = [int(np.argmax(np.abs(cols[:, a]))) for a in range(3)]
    if sorted(lps_axis) != [0, 1, 2]:
        return values, geometry  # strongly oblique grid: leave as is rather than guess
    # canonical array axis n runs along LPS axis 2 - n (z, y, x)
    perm = [lps_axis.index(2 - n) for n in range(3)]
    flips = [cols[2 - n, perm[n]] < 0 for n in range(3)]
    out = np.transpose(values, (*perm, *range(3, values.ndim)))
    for n, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=n)
    shape = out.shape[:3]
    starts = [shape[n] - 1.0 if flips[n] else 0.0 for n in range(3)]
    steps = [-1.0 if flips[n] else 1.0 for n in range(3)]
    new_geometry = compose(geometry, axis_map(starts, steps, perm), shape)
    return np.ascontiguousarray(out), new_geometry
