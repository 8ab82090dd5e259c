"""Voxel-grid geometry: how array indices map to world coordinates.

Conventions (used everywhere in voxelfm):

* Arrays are indexed ``array[k, j, i]`` = (z, y, x). ``spacing`` is given in the same (z, y, x)
  order, in millimetres.
* World coordinates are DICOM/ITK **LPS** millimetres, written as (x, y, z): x grows toward the
  patient's left, y toward posterior, z toward superior.
* ``origin`` is the LPS (x, y, z) position of the *centre* of voxel ``array[0, 0, 0]``.
* ``direction`` is the 3x3 ITK direction matrix: column ``c`` is the LPS unit vector along index
  axis ``c`` in ITK order (i, j, k) = (x, y, z) array axes 2, 1, 0.

So ``world = origin + direction @ (spacing_xyz * [i, j, k])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _as_tuple3(values: Any) -> tuple[float, float, float]:
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise ValueError(f"expected 3 values, got {len(out)}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class Geometry:
    """Shape, spacing (z, y, x), origin (LPS x, y, z) and ITK direction of a voxel grid."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing", _as_tuple3(self.spacing))
        object.__setattr__(self, "origin", _as_tuple3(self.origin))
        direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        object.__setattr__(self, "direction", direction)

    # -- affine forms -------------------------------------------------------------------------
    @property
    def affine_zyx(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous array indices (k, j, i, 1) to LPS (x, y, z, 1)."""
        spacing_xyz = np.array(self.spacing[::-1])
        m_ijk = self.direction * spacing_xyz[None, :]  # columns scaled: i, j, k
        affine = np.eye(4)
        affine[:3, :3] = m_ijk[:, ::-1]  # reorder columns to (k, j, i)
        affine[:3, 3] = self.origin
        return affine

    def index_to_world(self, index_zyx: np.ndarray) -> np.ndarray:
        """Map (..., 3) continuous (z, y, x) indices to LPS (x, y, z) millimetres."""
        idx = np.asarray(index_zyx, dtype=np.float64)
        affine = self.affine_zyx
        return idx @ affine[:3, :3].T + affine[:3, 3]

    def world_to_index(self, world_xyz: np.ndarray) -> np.ndarray:
        """Map (..., 3) LPS (x, y, z) millimetres to continuous (z, y, x) indices."""
        pts = np.asarray(world_xyz, dtype=np.float64)
        affine = self.affine_zyx
        return (pts - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T

    def voxel_centres_world(self) -> np.ndarray:
        """LPS world coordinates of every voxel centre, shape (*shape, 3)."""
        grids = np.meshgrid(*[np.arange(n) for n in self.shape], indexing="ij")
        idx = np.stack(grids, axis=-1).astype(np.float64)
        return self.index_to_world(idx)

    def subgrid(
        self, start_zyx: tuple[float, float, float], step_zyx: tuple[float, float, float],
        shape: tuple[int, int, int],
    ) -> Geometry:
        """Geometry of a grid whose voxel n sits at continuous index ``start + n * step`` of this one.

        Covers crops (step 1), resampling (step = old/new size ratio, start = (step - 1) / 2 for
        ``align_corners=False``) and patch grids (step = p, start = (p - 1) / 2).
        """
        origin = self.index_to_world(np.asarray(start_zyx, dtype=np.float64))
        spacing = tuple(s * st for s, st in zip(self.spacing, step_zyx, strict=True))
        return Geometry(shape=shape, spacing=spacing, origin=tuple(origin), direction=self.direction)

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": self.direction.reshape(-1).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        return cls(
            shape=tuple(data["shape"]),
            spacing=tuple(data["spacing"]),
            origin=tuple(data["origin"]),
            direction=np.asarray(data["direction"], dtype=np.float64).reshape(3, 3),
        )

    def orientation_code(self) -> str:
        """Three-letter code of where index axes (i, j, k) point, e.g. ``"LPS"`` (ITK style)."""
        letters = (("L", "R"), ("P", "A"), ("S", "I"))
        code = []
        for col in range(3):
            vec = self.direction[:, col]
            axis = int(np.argmax(np.abs(vec)))
            code.append(letters[axis][0] if vec[axis] > 0 else letters[axis][1])
        return "".join(code)
