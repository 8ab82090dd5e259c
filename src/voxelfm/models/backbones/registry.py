"""Registry of backbone classes by name, presets for ``voxelfm model init``, and source detection."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from voxelfm.core.errors import ConfigError
from voxelfm.models.backbones import ctclip, m3d, merlin, radfm

# name -> (backbone class, converter of an original state dict to the class's keys)
_NATIVE: dict[str, tuple[type, Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]]] = {
    "m3d-clip": (m3d.M3DViT, m3d.convert_state),
    "ct-clip": (ctclip.CTCLIPViT, ctclip.convert_state),
    "merlin": (merlin.MerlinI3ResNet, merlin.convert_state),
    "radfm": (radfm.RadFMViT, radfm.convert_state),
}

# ``--from`` names accepted by convert-checkpoint (the short names included)
SOURCE_ALIASES = {"m3d": "m3d-clip", "m3d-clip": "m3d-clip", "ct-clip": "ct-clip", "ctclip": "ct-clip",
                  "merlin": "merlin", "radfm": "radfm", "voxelfm": "voxelfm"}

LICENCES = {
    "voxelfm": "As released with the original VoxelFM weights.",
    "m3d-clip": "Apache-2.0 (Hugging Face card of GoodBaiBai88/M3D-CLIP; code MIT).",
    "ct-clip": "CC-BY-NC-SA-4.0 (CT-RATE release: non-commercial, share-alike).",
    "merlin": "Not stated with the weights (code MIT); check stanfordmimi/Merlin before use.",
    "radfm": "No licence found for the RadFM weights (chaoyi-wu/RadFM); research use at your own risk.",
}

SOURCES = {
    "m3d-clip": "Hugging Face GoodBaiBai88/M3D-CLIP, file pretrained_ViT.bin",
    "ct-clip": "Hugging Face dataset ibrahimhamamci/CT-RATE, models/CT-CLIP-Related/CT-CLIP_v2.pt",
    "merlin": "Hugging Face stanfordmimi/Merlin (the released .pt)",
    "radfm": "Hugging Face chaoyi-wu/RadFM (pytorch_model.bin inside the split zip)",
}


def backbone_class(name: str) -> type:
    """The class registered as ``name`` (``voxelfm`` is the VoxelFM 3D ViT)."""
    if name == "voxelfm":
        from voxelfm.models.vit import VisionTransformer3D

        return VisionTransformer3D
    if name not in _NATIVE:
        raise ConfigError(f"unknown backbone {name!r}; known: voxelfm, {', '.join(_NATIVE)}")
    return _NATIVE[name][0]


def backbone_names() -> list[str]:
    return ["voxelfm", *_NATIVE]


def native_converter(name: str) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    return _NATIVE[name][1]


def build_backbone(name: str, overrides: Mapping[str, Any] | None = None, *, seed: int | None = None) -> Any:
    """A randomly initialised comparator backbone (``overrides`` as for ``--set``), deterministic with ``seed``."""
    from voxelfm.models.weights import compute_model_id

    cls = backbone_class(name)
    if name == "voxelfm":
        raise ConfigError("build VoxelFM backbones with build_model(preset)")
    config = cls.config_class().with_overrides(dict(overrides or {}))
    if seed is None:
        model = cls(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config)
    model.model_id = compute_model_id(model.state_dict())
    return model.eval()


def detect_source(keys: list[str]) -> str | None:
    """Which original a state dict comes from, judged by its key names (None when unclear)."""
    joined = set(keys)
    if any(k.startswith("visual_transformer.") or k.startswith("enc_spatial_transformer.") for k in joined):
        return "ct-clip"
    if any("i3_resnet." in k for k in joined) or ("conv1.weight" in joined and any(k.startswith("layer4.") for k in joined)):
        return "merlin"
    if any("vision_encoder.transformer.layers." in k or k.startswith("transformer.layers.") for k in joined) and any(
            "pos_embedding.dep_embed" in k for k in joined):
        return "radfm"
    if any(k.endswith("patch_embedding.position_embeddings") for k in joined) and any(".attn.qkv." in k for k in joined):
        return "m3d-clip"
    if any(k.startswith(("teacher", "backbone.", "rope_embed", "register_tokens", "model.teacher")) for k in joined) or (
            "cls_token" in joined and any(".ls1." in k or "rope" in k for k in joined)):
        return "voxelfm"
    return None
