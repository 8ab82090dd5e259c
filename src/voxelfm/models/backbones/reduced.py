"""Named reduced configurations of the comparator backbones: the same architecture, small enough
for a CPU (``cpu``: a few CPU-seconds per scan at most) or for a test (``test``).

At random init they exercise a comparison harness end to end (``voxelfm demo --backbones``); they
say nothing of the published models' quality. Each is ``(sets, spec)``: hyper-parameters as
:func:`~voxelfm.models.backbones.build_backbone` and ``--set`` name them (the original constructor's
names), and parameters of the backbone's own recipe (:class:`NativeSpec`) that fit the reduced input.
The field of view stays the original's where the recipe has one (spacing x size), so the reduced
network sees the same anatomy at a coarser resolution: CT-CLIP 360 mm (its 480 x 0.75 mm), Merlin
336 x 336 x 480 mm (224 x 1.5, 160 x 3 mm); M3D and RadFM resize the whole volume.
"""

from __future__ import annotations

import copy
from typing import Any

from voxelfm.core.errors import ConfigError

Reduced = tuple[dict[str, Any], dict[str, Any]]  # (build_backbone overrides, NativeSpec params)

_PRESETS: dict[str, dict[str, Reduced]] = {
    "cpu": {
        "m3d-clip": ({"img_size": [32, 128, 128], "hidden_size": 96, "mlp_dim": 192, "num_layers": 2, "num_heads": 4},
                     {"size": [32, 128, 128]}),
        "ct-clip": ({"dim": 64, "codebook_size": 256, "image_size": 120, "patch_size": 20, "temporal_patch_size": 10,
                     "frames": 60, "spatial_depth": 1, "temporal_depth": 1, "dim_head": 16, "heads": 4,
                     "dim_latent": 64}, {"size_dhw": [60, 120, 120], "spacing_zyx": [6.0, 3.0, 3.0]}),
        "merlin": ({"layers": [1, 1, 1, 1], "width": 8, "class_nb": 8, "contrastive_dim": 32, "input_size": [96, 96, 64]},
                   {"size_xyz": [96, 96, 64], "spacing_xyz": [3.5, 3.5, 7.5]}),
        "radfm": ({"image_size": 128, "image_patch_size": 16, "frames": 64, "dim": 96, "depth": 2, "heads": 4,
                   "dim_head": 24, "mlp_dim": 192}, {"size_hw": [128, 128], "max_depth": 32}),
    },
    "test": {
        "m3d-clip": ({"img_size": [8, 32, 32], "hidden_size": 24, "mlp_dim": 32, "num_layers": 1, "num_heads": 2},
                     {"size": [8, 32, 32]}),
        "ct-clip": ({"dim": 16, "codebook_size": 32, "image_size": 40, "patch_size": 10, "temporal_patch_size": 4,
                     "frames": 16, "spatial_depth": 1, "temporal_depth": 1, "dim_head": 8, "heads": 2,
                     "dim_latent": 8}, {"size_dhw": [16, 40, 40], "spacing_zyx": [22.5, 9.0, 9.0]}),
        "merlin": ({"layers": [1, 1, 1, 1], "width": 4, "class_nb": 3, "contrastive_dim": 5, "input_size": [64, 64, 32]},
                   {"size_xyz": [64, 64, 32], "spacing_xyz": [5.25, 5.25, 15.0]}),
        "radfm": ({"image_size": 64, "image_patch_size": 16, "frames": 64, "dim": 24, "depth": 1, "heads": 2,
                   "dim_head": 8, "mlp_dim": 32}, {"size_hw": [64, 64], "max_depth": 16}),
    },
}

REDUCED_PRESETS = tuple(_PRESETS)


def reduced_names(preset: str) -> tuple[str, ...]:
    """The comparators that have a ``preset`` reduced configuration."""
    return tuple(_presets(preset))


def reduced_config(name: str, preset: str) -> Reduced:
    """``(sets, spec)`` of comparator ``name`` reduced as ``preset`` (copies: callers may change them)."""
    known = _presets(preset)
    if name not in known:
        raise ConfigError(f"no reduced {preset!r} configuration of {name!r}; known: {', '.join(known)}")
    return copy.deepcopy(known[name])


def _presets(preset: str) -> dict[str, Reduced]:
    if preset not in _PRESETS:
        raise ConfigError(f"unknown reduced preset {preset!r}; choose one of {', '.join(_PRESETS)}")
    return _PRESETS[preset]
