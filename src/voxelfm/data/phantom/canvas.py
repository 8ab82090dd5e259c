"""The scan grid being painted: HU and label arrays plus every voxel's patient-frame position.

Anatomy is described in a *patient frame* (mm; x → patient's left, y → posterior, z → superior,
origin at the carina on the midline). The patient lies rotated and shifted on the table, so
``world = R @ p + t``. The canvas stores the patient-frame coordinates of every voxel centre
(float32) so that shapes are evaluated as signed distance functions (SDFs) inside bounding boxes.

Partial volume: a shape's occupancy is ``clip(0.5 - sdf / h, 0, 1)`` with ``h`` the in-plane voxel
size, i.e. the fraction of a voxel-wide box-filtered edge; the acquisition point-spread function
is applied later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxelfm.core.geometry import Geometry

Slices = tuple[slice, slice, slice]


def rotation_matrix(roll_deg: float, pitch_deg: float, yaw_deg: float) -> np.ndarray:
    """Roll about z (the body's long axis), pitch about x, yaw about y (AP axis); degrees."""
    r, p, y = np.deg2rad([roll_deg, pitch_deg, yaw_deg])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    return rz @ rx @ ry


@dataclass
class Pose:
    """Rigid placement of the patient frame in LPS world: ``world = rotation @ p + translation``."""

    rotation: np.ndarray
    translation: np.ndarray

    def to_world(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(p, dtype=np.float64) @ self.rotation.T + self.translation

    def to_patient(self, w: np.ndarray) -> np.ndarray:
        return (np.asarray(w, dtype=np.float64) - self.translation) @ self.rotation


class Canvas:
    """HU (float32) and label (int16) arrays on ``geometry`` with patient-frame voxel coordinates."""

    def __init__(self, geometry: Geometry, pose: Pose, background: float = -1000.0) -> None:
        self.geometry = geometry
        self.pose = pose
        self.shape = geometry.shape
        self.h = float(min(geometry.spacing[1:]))  # in-plane voxel size: partial-volume width
        self.hu = np.full(self.shape, background, dtype=np.float32)
        self.labels = np.zeros(self.shape, dtype=np.int16)
        # World coordinates of voxel centres along each axis (direction is identity: axial scans).
        nz, ny, nx = self.shape
        sz, sy, sx = geometry.spacing
        ox, oy, oz = geometry.origin
        wx = (ox + sx * np.arange(nx) - pose.translation[0]).astype(np.float32)
        wy = (oy + sy * np.arange(ny) - pose.translation[1]).astype(np.float32)
        wz = (oz + sz * np.arange(nz) - pose.translation[2]).astype(np.float32)
        rt = pose.rotation.T.astype(np.float32)  # p = R^T (w - t)
        self.world_axes = (wx, wy, wz)
        self.X, self.Y, self.Z = (
            rt[a, 0] * wx[None, None, :] + rt[a, 1] * wy[None, :, None] + rt[a, 2] * wz[:, None, None]
            for a in range(3)
        )
        self._inv_affine = np.linalg.inv(geometry.affine_zyx)

    # -- bounding boxes ---------------------------------------------------------------------
    def bbox(self, lo: np.ndarray, hi: np.ndarray, pad_mm: float = 0.0) -> Slices | None:
        """Index-space box covering the patient-frame box [lo, hi] (+pad); None if off-grid."""
        lo = np.asarray(lo, dtype=np.float64) - pad_mm - 2 * self.h
        hi = np.asarray(hi, dtype=np.float64) + pad_mm + 2 * self.h
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        world = self.pose.to_world(corners)
        idx = world @ self._inv_affine[:3, :3].T + self._inv_affine[:3, 3]  # (k, j, i)
        start = np.floor(idx.min(axis=0)).astype(int)
        stop = np.ceil(idx.max(axis=0)).astype(int) + 1
        start = np.maximum(start, 0)
        stop = np.minimum(stop, self.shape)
        if np.any(stop <= start):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))  # type: ignore[return-value]

    def bboxes(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :meth:`bbox` for boxes (N, 3): start and stop index arrays (N, 3) in (k, j, i).

        Empty boxes have ``stop <= start`` on some axis.
        """
        lo = np.asarray(lo, dtype=np.float64) - 2 * self.h
        hi = np.asarray(hi, dtype=np.float64) + 2 * self.h
        sel = np.array([[(c >> a) & 1 for a in range(3)] for c in range(8)], dtype=bool)  # (8, 3)
        corners = np.where(sel[None, :, :], hi[:, None, :], lo[:, None, :])  # (N, 8, 3)
        world = self.pose.to_world(corners.reshape(-1, 3))
        idx = (world @ self._inv_affine[:3, :3].T + self._inv_affine[:3, 3]).reshape(-1, 8, 3)
        start = np.maximum(np.floor(idx.min(axis=1)).astype(int), 0)
        stop = np.minimum(np.ceil(idx.max(axis=1)).astype(int) + 1, np.array(self.shape))
        return start, stop

    def coords(self, sl: Slices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient-frame (x, y, z) of the voxels in ``sl`` (views, do not modify)."""
        return self.X[sl], self.Y[sl], self.Z[sl]

    # -- painting ---------------------------------------------------------------------------
    def occupancy(self, sdf: np.ndarray, inplace: bool = False) -> np.ndarray:
        """Partial-volume fraction inside a shape from its SDF (mm, negative inside)."""
        out = sdf if inplace else sdf.copy()
        out *= -1.0 / self.h
        out += 0.5
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def paint(self, sl: Slices, occ: np.ndarray, value: float | np.ndarray, label: int | None = None) -> None:
        """Blend ``value`` into the HU array with weight ``occ``; set ``label`` where occ > 0.5."""
        view = self.hu[sl]
        delta = np.subtract(value, view, dtype=np.float32)
        delta *= occ
        view += delta
        if label is not None:
            self.labels[sl][occ > 0.5] = label

    def add(self, sl: Slices, occ: np.ndarray, delta: float | np.ndarray) -> None:
        """Add ``delta`` HU weighted by ``occ`` (texture and density changes that keep structure)."""
        self.hu[sl] += np.multiply(occ, delta, dtype=np.float32)
