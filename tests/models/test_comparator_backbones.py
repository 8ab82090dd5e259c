"""Comparator backbones end to end: model init, load_model, extract_features, voxelfm embed, the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from voxelfm.cli.main import app
from voxelfm.core.errors import ConfigError
from voxelfm.core.geometry import Geometry
from voxelfm.embed import EmbeddingStore, extract_features
from voxelfm.io import load_ct, write_nifti
from voxelfm.models import load_model
from voxelfm.models.backbones import NativeSpec, build_backbone

# reduced architectures (same --set path as convert-checkpoint) and inputs that fit them
REDUCED = {
    "m3d-clip": ({"img_size": "[8,32,32]", "hidden_size": "24", "mlp_dim": "32", "num_layers": "1", "num_heads": "2"},
                 {"size": [8, 32, 32]}),
    "ct-clip": ({"dim": "16", "codebook_size": "32", "image_size": "40", "patch_size": "10", "temporal_patch_size": "4",
                 "frames": "16", "spatial_depth": "1", "temporal_depth": "1", "dim_head": "8", "heads": "2",
                 "dim_latent": "8"}, {"size_dhw": [16, 40, 40]}),
    "merlin": ({"layers": "[1,1,1,1]", "width": "4", "class_nb": "3", "contrastive_dim": "5"},
               {"size_xyz": [64, 64, 32]}),
    "radfm": ({"image_size": "64", "image_patch_size": "16", "frames": "64", "dim": "24", "depth": "1", "heads": "2",
               "dim_head": "8", "mlp_dim": "32"}, {"size_hw": [64, 64], "max_depth": 16}),
}


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(tmp_path_factory.mktemp("scans"))
    rng = np.random.default_rng(0)
    array = (rng.normal(0, 150, (24, 40, 44)) - 200).astype(np.float32)
    array[:, :, :4] = -1000
    write_nifti(array, Geometry(shape=array.shape, spacing=(2.5, 0.9, 0.8), origin=(-30.0, 12.0, 400.0)),
                folder / "case1.nii.gz")
    return folder


def _init(tmp_path: Path, name: str) -> Path:
    sets, params = REDUCED[name]
    spec_path = tmp_path / "spec.json"
    NativeSpec(name, params).save(spec_path)
    args = ["model", "init", str(tmp_path / name), "--preset", name, "--seed", "0", "--spec", str(spec_path)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return tmp_path / name


@pytest.mark.parametrize("name", list(REDUCED))
def test_init_embed_store_round_trip(tmp_path: Path, scan_dir: Path, name: str) -> None:
    model_dir = _init(tmp_path, name)
    model = load_model(model_dir)
    assert model.name == name and model.spec.recipe == name
    card = (model_dir / "README.md").read_text()
    assert f"Architecture ({name})" in card and "Licence" in card
    result = CliRunner().invoke(app, ["embed", str(scan_dir), "--model", str(model_dir), "--out", str(tmp_path / "store"),
                                      "--workers", "0", "--no-progress"])
    assert result.exit_code == 0, result.output
    store = EmbeddingStore(tmp_path / "store")
    assert store.ids() == ["case1"]
    feats = store.get("case1")
    assert feats.model_id == model.model_id and feats.spec.recipe == name
    assert feats.cls.shape == (model.embed_dim,) and feats.patch.shape[-1] > 0
    # every stored grid is canonical (z up, y posterior, x left) and sits inside the scan
    assert feats.patch_geometry.orientation_code() == "LPS"
    scan = load_ct(scan_dir / "case1.nii.gz").geometry
    corners = scan.index_to_world(np.array([[0, 0, 0], np.array(scan.shape) - 1]))
    lo, hi = corners.min(0) - 40.0, corners.max(0) + 40.0  # crop/pad may reach past the scan by < one cell
    world = feats.patch_world.reshape(-1, 3)
    assert (world >= lo).all() and (world <= hi).all()
    # same as a direct extract_features call
    direct = extract_features(model, scan_dir / "case1.nii.gz")
    assert np.allclose(direct.cls, feats.cls, atol=1e-5)
    assert np.allclose(direct.patch, feats.patch, atol=1e-5)


def test_model_info_reports_the_backbone(tmp_path: Path) -> None:
    model_dir = _init(tmp_path, "merlin")
    result = CliRunner().invoke(app, ["model", "info", str(model_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["backbone"] == "merlin" and data["embed_dim"] == 4 * 8 * 4
    assert data["spec"]["recipe"] == "merlin"


def test_prepare_input_is_the_native_tensor(scan_dir: Path) -> None:
    volume = load_ct(scan_dir / "case1.nii.gz")
    sets, params = REDUCED["merlin"]
    model = build_backbone("merlin", sets, seed=1)
    model.spec = NativeSpec("merlin", params)
    x = model.prepare_input(volume)
    assert tuple(x.shape) == (1, 1, 64, 64, 32)
    out = model.forward_features(x)
    assert out["cls"].shape == (1, 128) and out["contrastive"].shape == (1, 5) and out["grid"] == (2, 2, 2)


def test_comparators_refuse_slabs_and_foreign_specs(scan_dir: Path) -> None:
    sets, params = REDUCED["radfm"]
    model = build_backbone("radfm", sets, seed=0)
    model.spec = NativeSpec("radfm", params)
    with pytest.raises(ConfigError, match="use mode '3d'"):
        extract_features(model, scan_dir / "case1.nii.gz", mode="2.5d")
    with pytest.raises(ConfigError, match="needs its own preprocessing recipe"):
        extract_features(model, scan_dir / "case1.nii.gz", spec=NativeSpec("merlin"))
    from voxelfm.preprocess import PreprocessSpec

    with pytest.raises(ConfigError, match="needs its own preprocessing recipe"):
        extract_features(model, scan_dir / "case1.nii.gz", spec=PreprocessSpec())


def test_unknown_preset_and_bad_set_are_one_line_errors(tmp_path: Path) -> None:
    bad = CliRunner().invoke(app, ["model", "init", str(tmp_path / "a"), "--preset", "nope"])
    assert bad.exit_code == 1 and "unknown preset" in bad.output
    bad = CliRunner().invoke(app, ["model", "init", str(tmp_path / "b"), "--preset", "merlin", "--set", "depth=3"])
    assert bad.exit_code == 1 and "unknown MerlinConfig key 'depth'" in " ".join(bad.output.split())
    bad = CliRunner().invoke(app, ["model", "init", str(tmp_path / "c"), "--preset", "merlin", "--set", "width"])
    assert bad.exit_code == 1 and "key=value" in bad.output


@pytest.mark.parametrize("name", ["m3d-clip", "merlin", "radfm", "ct-clip"])
def test_bf16_autocast_runs_and_stays_close(scan_dir: Path, name: str) -> None:
    sets, params = REDUCED[name]
    model = build_backbone(name, sets, seed=2)
    model.spec = NativeSpec(name, params)
    fp32 = extract_features(model, scan_dir / "case1.nii.gz")
    bf16 = extract_features(model, scan_dir / "case1.nii.gz", dtype="bf16")
    assert bf16.cls.dtype == np.float32 and np.isfinite(bf16.patch).all()
    cos = float(fp32.cls @ bf16.cls / (np.linalg.norm(fp32.cls) * np.linalg.norm(bf16.cls)))
    assert cos > 0.98, cos
