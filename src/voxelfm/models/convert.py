"""Import original VoxelFM checkpoints (docs/original.md §1.8) into a voxelfm model directory.

Accepted files (read with ``torch.load(weights_only=True, map_location="cpu")``):

* an evaluation/teacher checkpoint ``{"teacher": {"backbone.…", "dino_head.…"}}``;
* a training checkpoint ``{"model": {"teacher.backbone.…", "student.…", …}}`` (teacher backbone taken);
* a bare backbone state dict.

``module.`` segments and ``teacher.``/``backbone.`` prefixes are stripped, head keys dropped, and
the result must load strictly into the architecture of the original ``config.yaml``.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from voxelfm.core.config_check import read_yaml_mapping
from voxelfm.core.errors import CheckpointError, ConfigError, located
from voxelfm.models.config import ViTConfig
from voxelfm.models.vit import VisionTransformer3D
from voxelfm.models.weights import load_state_dict_strict, save_model
from voxelfm.preprocess.spec import PreprocessSpec

_HEAD_PREFIXES = ("dino_head", "ibot_head", "dino_loss", "ibot_patch_loss", "koleo")
# Original `student` keys we map onto ViTConfig (docs/original.md §1.1); others (arch, block_chunks,
# pretrained_weights, drop_path_uniform, ...) do not change the backbone's forward pass.
_STUDENT_KEYS = ("embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio", "num_register_tokens",
                 "layerscale", "rope_base", "ffn_layer", "qkv_bias", "proj_bias", "ffn_bias",
                 "rope_rescale_coords")


def _clean_key(key: str) -> str:
    parts = [p for p in key.split(".") if p != "module"]
    while parts and parts[0] in ("teacher", "backbone"):
        parts = parts[1:]
    return ".".join(parts)


def backbone_state_from_checkpoint(obj: Any, source: object = "checkpoint") -> dict[str, torch.Tensor]:
    """Backbone tensors (float32, original key names) from any accepted checkpoint layout."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(located(source, f"expected a dict checkpoint, found {type(obj).__name__}"))
    if isinstance(obj.get("teacher"), Mapping):
        state = dict(obj["teacher"])
    elif isinstance(obj.get("model"), Mapping):
        model = obj["model"]
        state = {k: v for k, v in model.items() if k.startswith("teacher.backbone.")}
        if not state:
            raise CheckpointError(located(source, "training checkpoint has no 'teacher.backbone.*' keys"))
    else:
        state = dict(obj)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _clean_key(str(key))
        if name.startswith(_HEAD_PREFIXES):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(located(source, f"entry {key!r} is a {type(value).__name__}, not a tensor"))
        out[name] = value.float() if value.is_floating_point() else value
    if not out:
        raise CheckpointError(located(source, "no backbone tensors found"))
    return out


def load_original_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` safely (``weights_only=True``) and return its backbone state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(located(path, "checkpoint file not found"))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(located(path, f"cannot be read with torch.load(weights_only=True): {first}")) from exc
    return backbone_state_from_checkpoint(obj, path)


def _norm_params(dataset: Mapping[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    norm = dataset.get("norm")
    if isinstance(norm, Mapping):
        if "mean" in norm:
            out["norm_mean"] = float(norm["mean"])
        if "std" in norm:
            out["norm_std"] = float(norm["std"])
    rng = dataset.get("pixel_range")
    if isinstance(rng, Mapping) and "lower" in rng and "upper" in rng:
        out["hu_min"], out["hu_max"] = float(rng["lower"]), float(rng["upper"])
    elif isinstance(rng, list | tuple) and len(rng) == 2:
        out["hu_min"], out["hu_max"] = float(rng[0]), float(rng[1])
    return out


def read_original_config(path: str | os.PathLike[str], *, max_patches: int | None = 25000) -> tuple[ViTConfig, PreprocessSpec, dict[str, Any]]:
    """``(ViTConfig, PreprocessSpec, crops)`` from an original run ``config.yaml``.

    Missing ``student`` keys take the defaults of ``ssl_default_config.yaml`` (docs/original.md §1.1);
    drop path is set to 0 (a teacher never drops paths). The spec takes HU range and
    normalisation from ``datasets[0]`` and the paper's 25,000-patch budget.
    """
    path = Path(path)
    data = read_yaml_mapping(path)  # missing, invalid or not a mapping: one line naming the file
    student = data.get("student") or {}
    if not isinstance(student, Mapping):
        raise ConfigError(located(path, "'student' must be a mapping"))
    arch = {k: student[k] for k in _STUDENT_KEYS if k in student and student[k] is not None}
    if "layerscale" in student and not student["layerscale"]:
        arch["layerscale"] = None
    arch["drop_path_rate"] = 0.0
    try:
        config = ViTConfig.from_dict(arch)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(located(path, str(exc))) from exc
    datasets = data.get("datasets") or []
    first = datasets[0] if isinstance(datasets, list) and datasets and isinstance(datasets[0], Mapping) else {}
    try:
        spec = PreprocessSpec(patch_size=config.patch_size, max_patches=max_patches, **_norm_params(first))
    except (ConfigError, ValueError) as exc:
        raise ConfigError(located(path, f"datasets[0]: {exc}")) from exc
    crops = dict(data.get("crops") or {})
    return config, spec, crops


def convert_checkpoint(ckpt: str | os.PathLike[str], config_yaml: str | os.PathLike[str],
                       out_dir: str | os.PathLike[str], *, max_patches: int | None = 25000,
                       card: Mapping[str, Any] | None = None) -> VisionTransformer3D:
    """Convert an original checkpoint + its ``config.yaml`` into a model directory; returns the model."""
    config, spec, crops = read_original_config(config_yaml, max_patches=max_patches)
    state = load_original_checkpoint(ckpt)
    model = VisionTransformer3D(config)
    load_state_dict_strict(model, state, ckpt)
    model.eval()
    fields: dict[str, Any] = {
        "title": f"VoxelFM backbone converted from {Path(ckpt).name}",
        "description": "Teacher backbone of an original VoxelFM checkpoint, converted by "
                       "`voxelfm convert-checkpoint` (outputs match the original implementation).",
        "source": f"checkpoint `{Path(ckpt).name}`, config `{Path(config_yaml).name}`"
                  + (f"; training crops {crops}" if crops else ""),
        "training_data": "See the original VoxelFM release (over 137,000 CT studies per the paper).",
        "licence": "As released with the original weights.",
    }
    fields.update(card or {})
    save_model(model, out_dir, spec=spec, card=fields)
    return model
