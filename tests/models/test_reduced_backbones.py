"""Named reduced configurations of the comparators (``voxelfm.models.backbones.reduced_config``):
every one builds, its recipe parameters are valid, and the reduced network embeds its own recipe's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxelfm.core.errors import ConfigError
from voxelfm.core.geometry import Geometry
from voxelfm.core.types import CTVolume
from voxelfm.models.backbones import (
    REDUCED_PRESETS,
    NativeSpec,
    backbone_names,
    build_backbone,
    prepare_volume,
    reduced_config,
    reduced_names,
)
from voxelfm.models.backbones.recipes import validate_params


@pytest.mark.parametrize("preset", REDUCED_PRESETS)
def test_every_comparator_has_each_reduced_preset_and_it_builds(preset: str) -> None:
    assert set(reduced_names(preset)) == set(backbone_names()) - {"voxelfm"}
    for name in reduced_names(preset):
        sets, params = reduced_config(name, preset)
        validate_params(name, params)
        assert build_backbone(name, sets, seed=0).name == name


@pytest.mark.parametrize("name", ["m3d-clip", "ct-clip", "merlin", "radfm"])
def test_a_test_sized_comparator_embeds_its_recipes_output(name: str) -> None:
    sets, params = reduced_config(name, "test")
    model = build_backbone(name, sets, seed=0)
    rng = np.random.default_rng(0)
    array = (rng.normal(0, 150, (20, 36, 40)) - 300).astype(np.float32)
    volume = CTVolume(array, Geometry(array.shape, (6.0, 5.0, 5.0)))
    pre = prepare_volume(volume, NativeSpec(name, params))
    out = model.forward_features(model.input_tensor(pre))
    assert out["cls"].shape[0] == 1 and torch.isfinite(out["patch"]).all()


def test_reduced_configs_are_copies_and_unknown_names_fail() -> None:
    sets, _ = reduced_config("radfm", "test")
    sets["dim"] = 1
    assert reduced_config("radfm", "test")[0]["dim"] != 1
    with pytest.raises(ConfigError, match="unknown reduced preset"):
        reduced_config("radfm", "gpu")
    with pytest.raises(ConfigError, match="no reduced"):
        reduced_config("voxelfm", "cpu")
