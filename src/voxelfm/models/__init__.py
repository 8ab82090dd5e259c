"""voxelfm.models: the VoxelFM 3D ViT backbone, its DINO head, presets and model directories.

* :class:`ViTConfig`, :data:`PRESETS` (``vit-tiny`` 216/6/3, ``vit-small`` 432/12/6,
  ``vit-base`` 864/12/12 = the original, ``vit-large`` 1152/24/16; all patch 14, 4 registers).
* :class:`VisionTransformer3D` — ``forward(x (B,D,H,W), masks=None) -> dict`` with keys
  ``x_norm_clstoken``, ``x_norm_regtokens``, ``x_norm_patchtokens``, ``x_prenorm``, ``masks``;
  ``forward_features(x, autocast_dtype=None)``; ``grid_shape(D,H,W)``; ``.spec``, ``.model_id``.
* :func:`build_model(preset | ViTConfig | dict, seed=None, spec=None)`, :class:`DINOHead`.
* :func:`save_model(model, dir, spec=..., card=...)`, :func:`load_model(dir, device=None)`.
* :func:`convert_checkpoint(ckpt, config_yaml, out_dir)` for original VoxelFM checkpoints.
* Comparator backbones (M3D-CLIP, CT-CLIP, Merlin, RadFM) and the backbone interface all five
  implement: :mod:`voxelfm.models.backbones` (:func:`build_backbone`, :func:`backbone_names`,
  :func:`convert_native_checkpoint`). ``load_model`` returns whichever backbone a directory holds.
"""

from voxelfm.models.backbones import backbone_class, backbone_names, build_backbone
from voxelfm.models.backbones.convert import convert_native_checkpoint
from voxelfm.models.build import build_model
from voxelfm.models.config import PRESETS, ViTConfig, resolve_config
from voxelfm.models.convert import (
    backbone_state_from_checkpoint,
    convert_checkpoint,
    load_original_checkpoint,
    read_original_config,
)
from voxelfm.models.head import DINOHead
from voxelfm.models.rope import RopePositionEmbedding3D, apply_rope, patch_coords, rope_periods
from voxelfm.models.vit import VisionTransformer3D
from voxelfm.models.weights import compute_model_id, load_model, read_model_config, save_model

__all__ = [
    "PRESETS",
    "DINOHead",
    "RopePositionEmbedding3D",
    "ViTConfig",
    "VisionTransformer3D",
    "apply_rope",
    "backbone_class",
    "backbone_names",
    "backbone_state_from_checkpoint",
    "build_backbone",
    "build_model",
    "compute_model_id",
    "convert_checkpoint",
    "convert_native_checkpoint",
    "load_model",
    "load_original_checkpoint",
    "patch_coords",
    "read_model_config",
    "read_original_config",
    "resolve_config",
    "rope_periods",
    "save_model",
]
