"""EmbeddingStore: layout, metadata, last record wins, crash safety, shards, original .pth cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import phantom
from voxelfm.core import Geometry, VoxelFeatures
from voxelfm.core.errors import StoreError
from voxelfm.embed import EmbeddingStore, extract_features
from voxelfm.preprocess import PreprocessSpec


def _features(seed: int, grid: tuple[int, int, int] = (2, 3, 4), c: int = 6) -> VoxelFeatures:
    rng = np.random.default_rng(seed)
    geom = Geometry((16, 24, 32), (1.0, 1.0, 1.0), origin=(1.0, 2.0, 3.0))
    return VoxelFeatures(
        cls=rng.normal(size=c).astype(np.float32), patch=rng.normal(size=(*grid, c)).astype(np.float32),
        registers=rng.normal(size=(2, c)).astype(np.float32),
        patch_geometry=geom.subgrid((3.5,) * 3, (8, 8, 8), grid), input_geometry=geom,
        spec=PreprocessSpec(patch_size=8, max_patches=80), model_id="m1", mode="3d")


def test_write_and_read_back_with_metadata(tmp_path: Path, model) -> None:
    store = EmbeddingStore(tmp_path / "store")
    feats = extract_features(model, phantom(0))
    record = store.write("scan-1", feats, source="/data/scan-1.nii.gz", seconds=1.5)
    assert record["status"] == "ok" and record["grid_shape"] == list(feats.grid_shape) and record["embed_dim"] == 48
    back = store.get("scan-1")
    np.testing.assert_array_equal(back.cls, feats.cls)
    np.testing.assert_array_equal(back.patch, feats.patch)
    np.testing.assert_array_equal(back.registers, feats.registers)
    assert back.spec == feats.spec and back.model_id == model.model_id and back.mode == "3d"
    np.testing.assert_allclose(back.patch_world, feats.patch_world)
    assert back.input_geometry.to_dict() == feats.input_geometry.to_dict()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "store" / "entries" / "scan-1.safetensors"), framework="np") as handle:
        meta = handle.metadata()
    assert set(meta) >= {"scan_id", "model_id", "spec", "spec_fingerprint", "patch_geometry", "input_geometry", "mode"}
    assert meta["spec_fingerprint"] == record["spec_fingerprint"]
    assert "scan-1" in store and len(store) == 1 and list(store) == ["scan-1"]
    ids, matrix = store.cls_matrix()
    assert ids == ["scan-1"] and matrix.shape == (1, 48)
    frame = store.records()
    assert frame.loc[0, "source"] == "/data/scan-1.nii.gz" and frame.loc[0, "seconds"] == 1.5


def test_last_record_wins(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    store.write("a", _features(0))
    store.record_failure("a", "/x/a", "later attempt failed")
    store.record_failure("b", "/x/b", "unreadable")
    store.write("b", _features(1))
    assert store.ids() == ["b"] and store.ids("failed") == ["a"] and "a" not in store
    assert len(store.records(all_attempts=True)) == 4 and len(store.records()) == 2
    with pytest.raises(StoreError, match="no embedding for scan 'zzz'"):
        store.get("zzz")


def test_verify_names_what_keeps_scans_from_being_usable(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    for i, scan_id in enumerate(("a", "b", "c")):
        store.write(scan_id, _features(i))
    assert store.verify(["a", "b", "c"], model_id="m1") == []
    store.record_failure("b", "/x/b", "later attempt failed")
    (tmp_path / "entries" / "c.safetensors").unlink()
    assert store.verify(["a", "b", "c", "d"], model_id="m1") == [
        f"{tmp_path}: 2 scan(s) not embedded (e.g. ['b', 'd'])",
        f"{tmp_path}: 1 entries from another model or mode (e.g. ['b'])",  # a failure record names no model
        f"{tmp_path}: 2 entry files missing (e.g. ['c', 'd'])",
    ]
    assert store.verify(["a"], model_id="m2") == [f"{tmp_path}: 1 entries from another model or mode (e.g. ['a'])"]
    assert store.verify(["a"], model_id="m1", mode="2.5d")[0].endswith("another model or mode (e.g. ['a'])")


def test_resume_after_a_crash_mid_write(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    store.write("done", _features(0))
    # A run killed while writing "half": a stray temporary entry and a torn manifest line.
    (tmp_path / "entries" / ".half.safetensors.tmp-4242").write_bytes(b"\x00partial")
    with open(tmp_path / "manifest.jsonl", "a") as handle:
        handle.write('{"scan_id": "half", "status": "o')
    reader = EmbeddingStore(tmp_path)
    assert reader.ids(None) == ["done"] and "half" not in reader
    # The resumed run appends cleanly after the torn line, and both records are readable.
    reader.write("half", _features(1))
    reader.write("next", _features(2))
    assert EmbeddingStore(tmp_path).ids() == ["done", "half", "next"]
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert sum(1 for line in lines if line.startswith('{"scan_id": "half", "source"')) == 1
    np.testing.assert_array_equal(EmbeddingStore(tmp_path).get("half").cls, _features(1).cls)


def test_shards_write_their_own_manifest_and_read_as_one(tmp_path: Path) -> None:
    EmbeddingStore(tmp_path, shard=(0, 2)).write("a", _features(0))
    EmbeddingStore(tmp_path, shard=(1, 2)).write("b", _features(1))
    assert sorted(p.name for p in tmp_path.glob("manifest*.jsonl")) == ["manifest-0-of-2.jsonl", "manifest-1-of-2.jsonl"]
    assert EmbeddingStore(tmp_path).ids() == ["a", "b"]


def test_original_pth_cache_round_trip(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store")
    store.write("1.2.840.1", _features(0))
    store.write("1.2.840.2", _features(1, grid=(3, 3, 3)))
    assert store.export_pth_cache(tmp_path / "cache") == 2
    data = torch.load(tmp_path / "cache" / "1.2.840.2.pth", weights_only=True)
    assert set(data) == {"cls", "patch"} and data["cls"].shape == (1, 6) and data["patch"].shape == (3, 3, 3, 6)
    summary = [json.loads(line) for line in (tmp_path / "cache" / "summary.jsonl").read_text().splitlines()]
    assert [s["uid"] for s in summary] == ["1.2.840.1", "1.2.840.2"]
    other = EmbeddingStore(tmp_path / "imported")
    assert other.import_pth_cache(tmp_path / "cache") == 2
    np.testing.assert_array_equal(other.get("1.2.840.2").patch, store.get("1.2.840.2").patch)
    assert other.get("1.2.840.1").registers.shape == (0, 6)
    torch.save({"cls": torch.zeros(1, 6)}, tmp_path / "cache" / "bad.pth")
    with pytest.raises(StoreError, match="bad.pth: expected a dict with 'cls' and 'patch'"):
        EmbeddingStore(tmp_path / "again").import_pth_cache(tmp_path / "cache")


def test_unsafe_scan_ids_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="scan id"):
        EmbeddingStore(tmp_path).write("../escape", _features(0))
