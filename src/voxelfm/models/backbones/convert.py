"""``convert_native_checkpoint``: a comparator model's released weights → a voxelfm model directory.

The file is read with ``torch.load(weights_only=True)`` (nothing in it is executed); the image
encoder's tensors are picked out by key (text encoders, language models, decoders and codebook
statistics are dropped), cast to float32 (M3D's release is bf16), and must load strictly into the
architecture given by the defaults plus ``--set`` overrides.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from voxelfm.core.errors import CheckpointError, ConfigError, located
from voxelfm.models.backbones.registry import (
    LICENCES,
    SOURCE_ALIASES,
    SOURCES,
    backbone_class,
    detect_source,
    native_converter,
)

TITLES = {"m3d-clip": "M3D-CLIP image encoder (3D ViT)", "ct-clip": "CT-CLIP image encoder (CTViT + visual latent)",
          "merlin": "Merlin image encoder (I3D ResNet-152)", "radfm": "RadFM vision encoder (3D ViT)"}


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(located(path, "checkpoint file not found"))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(located(path, f"cannot be read with torch.load(weights_only=True): {first}")) from exc


def flat_state(obj: Any, source: object) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded checkpoint (a bare state dict or ``{"state_dict"|"model": ...}``)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(located(source, f"expected a dict checkpoint, found {type(obj).__name__}"))
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(key), Mapping) and not isinstance(obj.get(key), torch.Tensor):
            obj = obj[key]
            break
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def resolve_source(name: str | None, obj: Any, source: object) -> str:
    """Canonical backbone name from ``--from`` or, when omitted, from the checkpoint's keys."""
    if name is not None:
        if name not in SOURCE_ALIASES:
            raise ConfigError(f"--from must be one of {', '.join(sorted(set(SOURCE_ALIASES)))}, got {name!r}")
        return SOURCE_ALIASES[name]
    if isinstance(obj, Mapping) and (isinstance(obj.get("teacher"), Mapping) or isinstance(obj.get("model"), Mapping)
                                     and any(str(k).startswith("teacher.") for k in obj["model"])):
        return "voxelfm"
    keys = list(flat_state(obj, source)) if isinstance(obj, Mapping) else []
    found = detect_source(keys)
    if found is None:
        raise CheckpointError(located(source, "cannot tell which model these weights belong to; pass --from "
                                              "voxelfm|m3d|ct-clip|merlin|radfm"))
    return found


def convert_native_checkpoint(src: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                              source: str | None = None, overrides: Mapping[str, Any] | None = None,
                              obj: Any = None, card: Mapping[str, Any] | None = None) -> Any:
    """Convert a comparator checkpoint into a model directory; returns the loaded backbone."""
    from voxelfm.models.weights import load_state_dict_strict, save_model

    src = Path(src)
    obj = read_checkpoint(src) if obj is None else obj
    name = resolve_source(source, obj, src)
    if name == "voxelfm":
        raise ConfigError(located(src, "a VoxelFM checkpoint needs its config.yaml (convert-checkpoint SRC CONFIG OUT)"))
    state = native_converter(name)(flat_state(obj, src))
    if not state:
        raise CheckpointError(located(src, f"no {name} image-encoder tensors found"))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    cls = backbone_class(name)
    try:
        config = cls.config_class().with_overrides(dict(overrides or {}))
    except ConfigError as exc:
        raise ConfigError(f"--set: {exc}") from exc
    model = cls(config)
    load_state_dict_strict(model, state, src)
    model.eval()
    fields: dict[str, Any] = {
        "title": f"{TITLES[name]} converted from {src.name}",
        "description": f"The image encoder of {name}, converted by `voxelfm convert-checkpoint` "
                       f"(outputs match the original formulation; see docs/backbones.md).",
        "training_data": "See the original release.",
        "licence": LICENCES[name],
        "source": f"checkpoint `{src.name}` ({SOURCES[name]})"
                  + (f"; architecture overrides {dict(overrides)}" if overrides else ""),
    }
    fields.update(card or {})
    save_model(model, out_dir, card=fields)
    return model
