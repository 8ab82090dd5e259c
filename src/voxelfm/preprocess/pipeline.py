"""``preprocess(volume, spec)``: the full pipeline, keeping the voxel-to-world mapping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxelfm.core.geometry import Geometry
from voxelfm.core.types import CTVolume
from voxelfm.preprocess import steps
from voxelfm.preprocess.spec import PreprocessSpec


@dataclass
class PreprocessedVolume:
    """What the backbone sees, and where it sits in the scan.

    ``array``: float32 normalised (D, H, W); ``hu``: the same grid in HU (clipped);
    ``geometry``: that grid in world LPS (voxel n of a resample step sits at old continuous index
    ``(n + 0.5) * old / new - 0.5``, crops shift the origin); ``source_geometry``: the input scan's.
    ``steps``: a record of what each step did (boxes, sizes), for provenance.
    """

    array: np.ndarray
    geometry: Geometry
    spec: PreprocessSpec
    source_geometry: Geometry
    hu: np.ndarray
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: The input volume's warnings (e.g. a constant volume, missing slices), for batch logs.
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def grid_shape(self) -> tuple[int, int, int]:
        """Patch grid (d, h, w) for the spec's patch size."""
        p = self.spec.patch_size
        return tuple(n // p for n in self.array.shape)  # type: ignore[return-value]

    def patch_geometry(self) -> Geometry:
        """Geometry whose voxel n is the centre of patch n (for VoxelFeatures.patch_geometry)."""
        p = self.spec.patch_size
        start = ((p - 1) / 2.0,) * 3
        return self.geometry.subgrid(start, (p, p, p), self.grid_shape())


def _crop_geometry(geometry: Geometry, box: steps.Box) -> Geometry:
    start = tuple(float(a) for a, _ in box)
    shape = tuple(b - a for a, b in box)
    return geometry.subgrid(start, (1.0, 1.0, 1.0), shape)


def _resize_geometry(geometry: Geometry, new_shape: tuple[int, int, int]) -> Geometry:
    # align_corners=False: new voxel n sits at old continuous index (n + 0.5) * old/new - 0.5.
    step = tuple(o / n for o, n in zip(geometry.shape, new_shape, strict=True))
    start = tuple((s - 1.0) / 2.0 for s in step)
    return geometry.subgrid(start, step, tuple(new_shape))


def preprocess(volume: CTVolume, spec: PreprocessSpec | None = None) -> PreprocessedVolume:
    """HU clip -> background crop -> isotropic resample -> patch budget -> patch-multiple crop -> normalise."""
    spec = spec or PreprocessSpec()
    source = volume.source
    geometry = volume.geometry
    record: list[dict[str, Any]] = []
    steps.check_finite_hu(volume.array, source)  # a CTVolume built by hand has not been through load_ct
    steps.check_large_enough(volume.array.shape, geometry.spacing, patch_size=spec.patch_size,
                             min_spacing=spec.min_spacing_mm, isotropic=spec.isotropic,
                             crop_kernel=spec.background_kernel if spec.crop_background else None, source=source)
    hu = steps.clip_hu(volume.array, spec.hu_min, spec.hu_max)
    record.append({"step": "clip_hu", "range": [spec.hu_min, spec.hu_max]})

    if spec.crop_background:
        hu, box = steps.crop_background(hu, spec.background_threshold_hu, spec.background_kernel, source=source)
        geometry = _crop_geometry(geometry, box)
        record.append({"step": "crop_background", "box": [list(b) for b in box]})

    if spec.isotropic:
        size, _ = steps.isotropic_size(hu.shape, geometry.spacing, spec.min_spacing_mm)
        hu = steps.resize_trilinear(hu, size)
        geometry = _resize_geometry(geometry, size)
        record.append({"step": "resample_isotropic", "shape": list(size), "spacing": list(geometry.spacing)})

    if spec.max_patches is not None:
        size = steps.patch_budget_size(hu.shape, spec.patch_size, spec.max_patches)
        if tuple(size) != tuple(hu.shape):
            hu = steps.resize_trilinear(hu, size)
            geometry = _resize_geometry(geometry, size)
        record.append({"step": "fit_patch_budget", "shape": list(size), "spacing": list(geometry.spacing)})

    hu, box = steps.crop_to_patch_multiple(hu, spec.patch_size, source=source)
    geometry = _crop_geometry(geometry, box)
    record.append({"step": "crop_to_patch_multiple", "box": [list(b) for b in box]})

    hu = np.ascontiguousarray(hu, dtype=np.float32)
    array = steps.normalise(hu, spec.norm_mean, spec.norm_std)
    record.append({"step": "normalise", "mean": spec.norm_mean, "std": spec.norm_std})
    return PreprocessedVolume(array=array, geometry=geometry, spec=spec, source_geometry=volume.geometry,
                              hu=hu, steps=record, warnings=list(volume.warnings))
