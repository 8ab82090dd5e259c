"""voxelfm: a toolkit for 3D CT foundation models in the VoxelFM style.

Public API (imported lazily so ``import voxelfm`` stays fast):

* ``load_ct(source, ...) -> CTVolume`` — read DICOM/NIfTI/MHA/NRRD/NumPy with correct geometry.
* ``PreprocessSpec``, ``preprocess(volume, spec)`` — the exact VoxelFM preprocessing.
* ``load_model(dir)``, ``save_model(model, dir)`` — backbones as safetensors model directories
  (VoxelFM or a comparator: ``backbone_names()``, ``build_backbone(name)``; docs/backbones.md).
* ``extract_features(model, source, ...) -> VoxelFeatures`` — frozen features of one scan.
* ``EmbeddingStore(path)`` — the on-disk store written by ``voxelfm embed``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "CTVolume": "voxelfm.core.types",
    "VoxelFeatures": "voxelfm.core.types",
    "Geometry": "voxelfm.core.geometry",
    "VoxelFMError": "voxelfm.core.errors",
    "PreprocessSpec": "voxelfm.preprocess.spec",
    "load_ct": "voxelfm.io",
    "preprocess": "voxelfm.preprocess",
    "load_model": "voxelfm.models",
    "save_model": "voxelfm.models",
    "build_model": "voxelfm.models",
    "build_backbone": "voxelfm.models",
    "backbone_names": "voxelfm.models",
    "extract_features": "voxelfm.embed",
    "EmbeddingStore": "voxelfm.embed",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'voxelfm' has no attribute {name!r}")
    return getattr(import_module(module), name)
