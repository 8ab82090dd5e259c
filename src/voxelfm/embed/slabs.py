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


class PatchStitcher:
    """Running average of slab patch grids into one ``(depth, h, w, C)`` float32 grid.

    Slabs are added as their forward passes finish, so only the running sum is kept, never
    every slab's grid (at 25,000 patches of 864 channels that list was ~0.1 GiB). The sum is
    float32: a row is covered by at most ``thickness`` slabs, so each output value is a sum of a
    few float32 numbers divided by a small integer, within a few float32 ulps of the float64
    average (tests/embed/test_extract_modes.py bounds the difference).
    """

    def __init__(self, plan: SlabPlan) -> None:
        self.plan = plan
        self._total: np.ndarray | None = None
        self._added = 0

    def add(self, patch: np.ndarray) -> None:
        """Add the next slab's grid ``(thickness, h, w, C)`` (slabs in the order of ``plan.starts``)."""
        plan = self.plan
        if self._added >= len(plan.starts):
            raise ValueError(f"more slab grids than the plan's {len(plan.starts)} slabs")
        if patch.shape[0] != plan.thickness:
            raise ValueError(f"slab grid has {patch.shape[0]} rows, the plan's slabs have {plan.thickness}")
        if self._total is None:
            self._total = np.zeros((plan.depth, *patch.shape[1:]), dtype=np.float32)
        start = plan.starts[self._added]
        self._total[start:start + plan.thickness] += patch
        self._added += 1

    def result(self) -> np.ndarray:
        """The stitched grid: every row's sum divided, in place, by how many slabs covered it."""
        if self._total is None or self._added != len(self.plan.starts):
            raise ValueError(f"{self._added} slab grids added, the plan has {len(self.plan.starts)}")
        total = self._total
        for row, count in enumerate(self.plan.coverage()):
            if count > 1:  # rows seen once are already their own average
                total[row] /= np.float32(count)
        return total


def stitch_patches(plan: SlabPlan, slab_patches: list[np.ndarray]) -> np.ndarray:
    """Average overlapping slab grids ``(thickness, h, w, C)`` into one ``(depth, h, w, C)`` grid."""
    stitcher = PatchStitcher(plan)
    for patch in slab_patches:
        stitcher.add(patch)
    return stitcher.result()
