"""The two objects that travel through the pipeline: a CT volume and the features of one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from voxelfm.core.geometry import Geometry


@dataclass
class CTVolume:
    """A CT scan in Hounsfield units, in voxelfm's canonical orientation.

    ``array[k, j, i]`` is float32 HU with i toward the patient's left, j toward posterior and k
    toward superior (LPS), whatever the orientation of the file it came from. ``geometry`` maps
    indices to LPS world millimetres (see :mod:`voxelfm.core.geometry`).
    """

    array: np.ndarray
    geometry: Geometry
    source: str | None = None
    series_uid: str | None = None
    modality: str | None = "CT"
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing (z, y, x) in mm."""
        return self.geometry.spacing

    @property
    def origin(self) -> tuple[float, float, float]:
        """LPS (x, y, z) world position of the centre of voxel [0, 0, 0], in mm."""
        return self.geometry.origin

    @property
    def direction(self) -> np.ndarray:
        """ITK direction matrix (columns: index axes i, j, k in LPS)."""
        return self.geometry.direction

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (used by ``voxelfm info``)."""
        finite = self.array[np.isfinite(self.array)]
        return {
            "source": self.source,
            "series_uid": self.series_uid,
            "modality": self.modality,
            "shape": list(self.shape),
            "spacing": [round(s, 6) for s in self.spacing],
            "origin": [round(o, 4) for o in self.origin],
            "direction": np.round(self.direction, 6).reshape(-1).tolist(),
            "orientation": self.geometry.orientation_code(),
            "hu_min": float(finite.min()) if finite.size else None,
            "hu_max": float(finite.max()) if finite.size else None,
            "warnings": list(self.warnings),
        }


@runtime_checkable
class FeatureSpec(Protocol):
    """What features keep of the preprocessing that made them: a ``PreprocessSpec`` or a comparator's
    ``NativeSpec`` (``voxelfm.preprocess``, ``voxelfm.models.backbones``; core names neither)."""

    def to_dict(self) -> dict[str, Any]: ...

    def fingerprint(self) -> str: ...


@dataclass
class VoxelFeatures:
    """Frozen-backbone features of one scan.

    * ``cls`` (C,), ``patch`` (d, h, w, C), ``registers`` (R, C): float32 numpy arrays.
    * ``patch_geometry``: geometry of the patch grid (shape (d, h, w); voxel n = centre of patch
      n in world space), so ``patch_geometry.voxel_centres_world()`` gives every patch centre.
    * ``input_geometry``: geometry of the preprocessed volume the backbone saw.
    * ``spec``: the preprocessing spec itself (a :class:`FeatureSpec`: ``PreprocessSpec`` or a
      comparator's ``NativeSpec``), the same object from the model or ``--spec`` file to the store,
      which writes its ``to_dict()`` beside the features and reads it back as a spec object;
      ``spec_fingerprint``: its ``fingerprint()``, taken where the features are made and carried
      unchanged into the store's records (``None``: taken from ``spec`` when stored).
      ``model_id``: identity of the backbone.
    """

    cls: np.ndarray
    patch: np.ndarray
    registers: np.ndarray
    patch_geometry: Geometry | None = None
    input_geometry: Geometry | None = None
    spec: FeatureSpec | None = None
    model_id: str | None = None
    mode: str = "3d"
    spec_fingerprint: str | None = None

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(self.patch.shape[:3])  # type: ignore[return-value]

    @property
    def patch_world(self) -> np.ndarray:
        """LPS world (x, y, z) mm of every patch centre, shape (d, h, w, 3)."""
        if self.patch_geometry is None:
            raise ValueError("these features carry no patch geometry")
        return self.patch_geometry.voxel_centres_world()
