"""voxelfm.preprocess: the original VoxelFM preprocessing (docs/original.md §3.2), step by step.

* :class:`PreprocessSpec` — every pixel-relevant parameter (JSON/YAML, fingerprint).
* :func:`preprocess(volume, spec)` -> :class:`PreprocessedVolume` (normalised array, HU array,
  world geometry of the grid, source geometry, per-step record).
* Steps usable alone: :func:`clip_hu`, :func:`crop_background`, :func:`resample_isotropic`,
  :func:`fit_patch_budget`, :func:`crop_to_patch_multiple`, :func:`normalise`; size rules
  :func:`isotropic_size`, :func:`patch_budget_size`; :func:`resample_to_geometry` for label maps.
"""

import sys
import types

from voxelfm.core.types import CTVolume
from voxelfm.preprocess.pipeline import PreprocessedVolume, preprocess
from voxelfm.preprocess.resample import resample_to_geometry
from voxelfm.preprocess.spec import PreprocessSpec
from voxelfm.preprocess.steps import (
    check_large_enough,
    clip_hu,
    crop_background,
    crop_to_patch_multiple,
    fit_patch_budget,
    foreground_box,
    isotropic_size,
    n_patches,
    normalise,
    patch_budget_size,
    resample_isotropic,
    resize_trilinear,
)

__all__ = [
    "PreprocessSpec",
    "PreprocessedVolume",
    "check_large_enough",
    "clip_hu",
    "crop_background",
    "crop_to_patch_multiple",
    "fit_patch_budget",
    "foreground_box",
    "isotropic_size",
    "n_patches",
    "normalise",
    "patch_budget_size",
    "preprocess",
    "resample_isotropic",
    "resample_to_geometry",
    "resize_trilinear",
]


class _CallableModule(types.ModuleType):
    """``voxelfm.preprocess`` is both this subpackage and the documented function
    ``voxelfm.preprocess(volume, spec)``. Importing the subpackage binds the package attribute to
    the module, so the module itself forwards calls to :func:`preprocess`."""

    def __call__(self, volume: CTVolume, spec: PreprocessSpec | None = None) -> PreprocessedVolume:
        return preprocess(volume, spec)


sys.modules[__name__].__class__ = _CallableModule
