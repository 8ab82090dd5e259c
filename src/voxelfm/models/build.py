"""``build_model``: a randomly initialised backbone from a preset name, dict or ViTConfig."""

from __future__ import annotations

from typing import Any

import torch

from voxelfm.models.config import ViTConfig, resolve_config
from voxelfm.models.vit import VisionTransformer3D
from voxelfm.models.weights import compute_model_id
from voxelfm.preprocess.spec import PreprocessSpec


def build_model(preset_or_config: str | ViTConfig | dict[str, Any], *, seed: int | None = None,
                spec: PreprocessSpec | None = None) -> VisionTransformer3D:
    """Build a backbone (initialised as in docs/original.md §1.6; deterministic when ``seed`` is given).

    ``spec`` defaults to the original preprocessing with the config's patch size; ``model_id`` is
    the hash of the initial weights.
    """
    config = resolve_config(preset_or_config)
    if seed is None:
        model = VisionTransformer3D(config)
    else:
        # fork_rng: seeding must not disturb the caller's global random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = VisionTransformer3D(config)
    model.spec = spec if spec is not None else PreprocessSpec(patch_size=config.patch_size)
    model.model_id = compute_model_id(model.state_dict())
    return model
