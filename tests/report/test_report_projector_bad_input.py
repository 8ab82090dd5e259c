"""Bad projector files give one-line VoxelFMErrors naming the file, never a safetensors traceback."""

from __future__ import annotations

import json

import pytest
import torch

from voxelfm.core.errors import CheckpointError, ConfigError
from voxelfm.report.projector import FeatureProjector, ProjectorConfig


def _saved(tmp_path):
    FeatureProjector(ProjectorConfig(in_dim=6, out_dim=4, hidden_dim=8, num_queries=2, num_heads=2)).save(tmp_path)
    return tmp_path / "projector.safetensors"


def test_pickle_in_place_of_weights_is_refused_unread(tmp_path):
    weights = _saved(tmp_path)
    torch.save({"queries": torch.zeros(2, 8)}, weights)  # a torch.save zip under the .safetensors name
    with pytest.raises(CheckpointError) as err:
        FeatureProjector.load(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(weights) in message
    assert "not a readable safetensors file" in message and "torch.save" in message


def test_truncated_weights_name_the_file(tmp_path):
    weights = _saved(tmp_path)
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CheckpointError) as err:
        FeatureProjector.load(tmp_path)
    assert "\n" not in str(err.value)
    assert str(weights) in str(err.value) and "not a readable safetensors file" in str(err.value)


def test_weights_of_another_shape_list_the_mismatch(tmp_path):
    weights = _saved(tmp_path)
    FeatureProjector(ProjectorConfig(in_dim=6, out_dim=5, hidden_dim=8, num_queries=2, num_heads=2)).save(tmp_path / "b")
    (tmp_path / "b" / "projector.safetensors").replace(weights)
    with pytest.raises(CheckpointError) as err:
        FeatureProjector.load(tmp_path)
    assert "\n" not in str(err.value)
    assert str(weights) in str(err.value) and "shape mismatches" in str(err.value)


@pytest.mark.parametrize("text", ["{not json", json.dumps({"in_dim": 6, "colour": 1}),
                                  json.dumps({"in_dim": 0, "out_dim": 4})])
def test_bad_config_names_the_json(tmp_path, text):
    _saved(tmp_path)
    (tmp_path / "projector.json").write_text(text)
    with pytest.raises(ConfigError) as err:
        FeatureProjector.load(tmp_path)
    assert "\n" not in str(err.value)
    assert str(tmp_path / "projector.json") in str(err.value) and "not a projector config" in str(err.value)
