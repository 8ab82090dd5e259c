"""Chunked 2.5D inference: slabs along z, one forward pass each, stitched back (docs/extraction.md).

All sizes here are in *patches* along z. A volume of ``d`` patch rows is cut into slabs of
``thickness`` rows starting every ``thickness - overlap`` rows; the last slab is shifted back so
it ends exactly at ``d`` (no padding, every slab the same shape, every row covered).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxelfm.core.errors import ConfigError

DEFAULT_SLAB_THICKNESS = 4  # patches along z (56 voxels = 42 mm at patch 14 and 0.75 mm)
DEFAULT_SLAB_OVERLAP = 1


@dataclass(frozen=True)
class SlabPlan:
    """Start row (in patches) of every slab, all of the same ``thickness``, over ``depth`` rows."""

    depth: int
    thickness: int
    starts: tuple[int, ...]

    def coverage(self) -> np.ndarray:
        """How many slabs cover each patch row (``(depth,)`` int), the stitching denominator."""
        counts = np.zeros(self.depth, dtype=np.int64)
        for s in self.starts:
            counts[s:s + self.thickness] += 1
        return counts


def plan_slabs(depth: int, thickness: int | None = None, overlap: int | None = None) -> SlabPlan:
    """Slab starts for ``depth`` patch rows; ``thickness >= depth`` gives one slab (full 3D)."""
    thickness = DEFAULT_SLAB_THICKNESS if thickness is None else int(thickness)
    overlap = DEFAULT_SLAB_OVERLAP if overlap is None else int(overlap)
    if thickness < 1:
        raise ConfigError(f"slab_thickness must be >= 1 patch, got {thickness}")
    if not 0 <= overlap < thickness:
        raise ConfigError(f"slab_overlap must be in [0, slab_thickness), got {overlap} with thickness {thickness}")
    if thickness >= depth:
        return SlabPlan(depth=depth, thickness=depth, starts=(0,))
    stride = thickness - overlap
    starts = list(range(0, depth - thickness + 1, stride))
    if starts[-1] + thickness < depth:
        starts.append(depth - thickness)
    return SlabPlan(depth=depth, thickness=thickness, starts=tuple(starts))


def stitch_patches(plan: SlabPlan, slab_patches: list[np.ndarray]) -> np.ndarray:
    """Average overlapping slab grids ``(thickness, h, w, C)`` into one ``(depth, h, w, C)`` grid."""
    first = slab_patches[0]
    total = np.zeros((plan.depth, *first.shape[1:]), dtype=np.float64)
    for start, patch in zip(plan.starts, slab_patches, strict=True):
        total[start:start + plan.thickness] += patch
    counts = plan.coverage().reshape(-1, *([1] * (first.ndim - 1)))
    return (total / counts).astype(np.float32)
