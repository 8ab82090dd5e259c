"""Model directories: safetensors + config + spec + card; ids; errors; ``voxelfm model``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner
from vit_helpers import SMALL, perturb_, smooth_volume

from voxelfm.cli.main import app
from voxelfm.core.errors import CheckpointError, ConfigError
from voxelfm.models import build_model, compute_model_id, load_model, save_model
from voxelfm.preprocess import PreprocessSpec


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = perturb_(build_model(SMALL, seed=0)).eval()
    spec = PreprocessSpec(patch_size=4, max_patches=300)
    model_id = save_model(model, tmp_path / "m", spec=spec, card={"licence": "CC-BY-4.0", "metrics": {"AUROC": 0.9}})
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config == model.config and loaded.spec == spec and loaded.model_id == model_id
    assert not loaded.training
    x = smooth_volume((8, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["x_prenorm"], model(x)["x_prenorm"], rtol=0, atol=0)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert set(config) == {"backbone", "architecture", "model_id", "voxelfm_version"}
    assert config["backbone"] == "voxelfm"
    card = (tmp_path / "m" / "README.md").read_text()
    for text in ("Intended use", "Training data", "CC-BY-4.0", "AUROC: 0.9", model_id, spec.fingerprint()):
        assert text in card


def test_model_id_is_a_hash_of_the_weights(tmp_path: Path) -> None:
    model = build_model(SMALL, seed=0)
    first = save_model(model, tmp_path / "a", spec=PreprocessSpec(patch_size=4))
    assert first == compute_model_id(model.state_dict())
    assert save_model(model, tmp_path / "b", spec=PreprocessSpec(patch_size=4)) == first
    with torch.no_grad():
        model.norm.bias.add_(1e-3)
    assert save_model(model, tmp_path / "c", spec=PreprocessSpec(patch_size=4)) != first


def test_spec_patch_size_must_match(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="patch_size"):
        save_model(build_model(SMALL), tmp_path / "m", spec=PreprocessSpec(patch_size=14))


def test_broken_directories_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="model directory not found"):
        load_model(tmp_path / "absent")
    save_model(build_model(SMALL, seed=0), tmp_path / "m", spec=PreprocessSpec(patch_size=4))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="config.json: unreadable"):
        load_model(tmp_path / "m")


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    save_model(build_model(SMALL, seed=0), tmp_path / "m", spec=PreprocessSpec(patch_size=4))
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["architecture"]["depth"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.2\."):
        load_model(tmp_path / "m")


def test_cli_model_init_and_info(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "random"
    result = runner.invoke(app, ["model", "init", str(out), "--preset", "vit-tiny", "--seed", "3", "--max-patches", "216"])
    assert result.exit_code == 0, result.output
    model = load_model(out)
    assert model.config.embed_dim == 216 and model.spec.max_patches == 216
    assert model.model_id == build_model("vit-tiny", seed=3).model_id  # seeded: reproducible
    again = runner.invoke(app, ["model", "init", str(out)])
    assert again.exit_code == 1 and "--overwrite" in " ".join(again.output.split())
    info = runner.invoke(app, ["model", "info", str(out), "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["model_id"] == model.model_id
