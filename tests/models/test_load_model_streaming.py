"""``load_model`` reads the weights straight into the parameters: exact values, casts, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from vit_helpers import SMALL, perturb_

from voxelfm.core.errors import CheckpointError
from voxelfm.models import build_model, compute_model_id, load_model, save_model
from voxelfm.preprocess import PreprocessSpec


def _saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model = perturb_(build_model(SMALL, seed=3)).eval()
    save_model(model, tmp_path / "m", spec=PreprocessSpec(patch_size=4, max_patches=300))
    return model, tmp_path / "m"


def test_every_parameter_is_read_exactly(tmp_path: Path) -> None:
    model, folder = _saved(tmp_path)
    loaded = load_model(folder)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_bf16_file_is_cast_and_a_missing_id_is_the_file_hash(tmp_path: Path) -> None:
    _, folder = _saved(tmp_path)
    weights = folder / "model.safetensors"
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
    save_file(state, str(weights))
    config = json.loads((folder / "config.json").read_text())
    del config["model_id"]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_model(folder)
    for name, value in loaded.state_dict().items():
        if name in state:
            assert value.dtype == torch.float32 and torch.equal(value, state[name].float()), name
    assert loaded.model_id == compute_model_id(state)


def test_a_truncated_weights_file_is_refused(tmp_path: Path) -> None:
    _, folder = _saved(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        load_model(folder)


def test_a_model_without_register_tokens_saves_and_loads(tmp_path: Path) -> None:
    """A zero-size parameter (``register_tokens`` of shape (1, 0, C)) reads as nothing, not a crash."""
    import dataclasses

    model = perturb_(build_model(dataclasses.replace(SMALL, num_register_tokens=0), seed=1)).eval()
    save_model(model, tmp_path / "m0", spec=PreprocessSpec(patch_size=4, max_patches=300))
    loaded = load_model(tmp_path / "m0")
    assert loaded.state_dict()["register_tokens"].shape[1] == 0
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
