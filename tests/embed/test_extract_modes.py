"""extract_features: sources, spec handling, geometry of patches, and 2.5D slabs vs full 3D."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SPEC, phantom
from voxelfm.core.errors import ConfigError
from voxelfm.embed import extract_features, plan_slabs, stitch_patches
from voxelfm.io import write_nifti
from voxelfm.preprocess import preprocess


def test_3d_features_shapes_provenance_and_patch_world_positions(model) -> None:
    vol = phantom(0)
    feats = extract_features(model, vol)
    pre = preprocess(vol, SPEC)
    d, h, w = (n // 8 for n in pre.shape)
    assert feats.cls.shape == (48,) and feats.registers.shape == (2, 48)
    assert feats.patch.shape == (d, h, w, 48) and feats.patch.dtype == np.float32
    assert d * h * w <= SPEC.max_patches
    assert feats.mode == "3d" and feats.model_id == model.model_id and feats.spec == SPEC
    assert feats.input_geometry.to_dict() == pre.geometry.to_dict()
    # Patch (1, 2, 0) covers voxels 8..15, 16..23, 0..7: its centre is the mean of their centres.
    voxel_world = pre.geometry.voxel_centres_world()
    expected = voxel_world[8:16, 16:24, 0:8].reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(feats.patch_world[1, 2, 0], expected, atol=1e-6)


def test_sources_path_volume_and_preprocessed_agree(model, tmp_path: Path) -> None:
    vol = phantom(1)
    path = tmp_path / "scan.nii.gz"
    write_nifti(vol.array, vol.geometry, path)
    from_path = extract_features(model, path)
    from_volume = extract_features(model, vol)
    from_pre = extract_features(model, preprocess(vol, SPEC))
    np.testing.assert_allclose(from_path.cls, from_volume.cls, atol=1e-4)
    np.testing.assert_array_equal(from_volume.patch, from_pre.patch)
    np.testing.assert_allclose(from_path.patch_world, from_volume.patch_world, atol=1e-3)


def test_spec_override_and_mismatch(model) -> None:
    small = extract_features(model, phantom(0), spec=SPEC.replace(max_patches=20))
    assert np.prod(small.grid_shape) <= 20
    with pytest.raises(ConfigError, match="patch size"):
        extract_features(model, phantom(0), spec=SPEC.replace(patch_size=14))
    with pytest.raises(ConfigError, match="mode"):
        extract_features(model, phantom(0), mode="2d")


def test_slab_plan_covers_every_row_with_equal_slabs() -> None:
    assert plan_slabs(10, 4, 1).starts == (0, 3, 6)
    assert plan_slabs(9, 4, 1).starts == (0, 3, 5)  # last slab shifted back, not padded
    assert plan_slabs(9, 4, 0).starts == (0, 4, 5)
    assert plan_slabs(3, 4, 1).starts == (0,) and plan_slabs(3, 4, 1).thickness == 3
    plan = plan_slabs(9, 4, 1)
    assert plan.coverage().tolist() == [1, 1, 1, 2, 1, 2, 2, 1, 1]
    with pytest.raises(ConfigError):
        plan_slabs(9, 4, 4)


def test_stitching_averages_overlaps() -> None:
    plan = plan_slabs(9, 4, 1)
    slabs = [np.full((4, 2, 2, 3), float(i), dtype=np.float32) for i in range(len(plan.starts))]
    grid = stitch_patches(plan, slabs)
    # starts 0, 3, 5: rows 0-2 slab 0; row 3 slabs 0+1; row 4 slab 1; rows 5-6 slabs 1+2; rows 7-8 slab 2
    assert grid[:, 0, 0, 0].tolist() == [0, 0, 0, 0.5, 1, 1.5, 1.5, 2, 2]


def _stitch_float64(plan, slabs):  # the float64 stitching used before the float32 stitcher
    total = np.zeros((plan.depth, *slabs[0].shape[1:]), dtype=np.float64)
    for start, patch in zip(plan.starts, slabs, strict=True):
        total[start:start + plan.thickness] += patch
    return (total / plan.coverage().reshape(-1, 1, 1, 1)).astype(np.float32)


@pytest.mark.parametrize(("depth", "thickness", "overlap"), [(9, 4, 1), (8, 4, 1), (13, 5, 3), (7, 4, 3)])
def test_float32_stitching_matches_float64_within_ulps(depth, thickness, overlap) -> None:
    plan = plan_slabs(depth, thickness, overlap)
    rng = np.random.default_rng(depth)
    slabs = [rng.standard_normal((plan.thickness, 3, 2, 16), dtype=np.float32) * 5 for _ in plan.starts]
    got, ref = stitch_patches(plan, slabs), _stitch_float64(plan, slabs)
    assert got.dtype == np.float32 and got.shape == ref.shape
    coverage = plan.coverage()
    # Rows covered once or twice are bit-identical (x + 0, and (a + b) / 2 rounds once)...
    np.testing.assert_array_equal(got[coverage <= 2], ref[coverage <= 2])
    # ...deeper rows sum k float32 values: within (k - 1) ulps of the largest slab value.
    bound = (coverage.max() - 1) * np.finfo(np.float32).eps * max(float(np.abs(s).max()) for s in slabs)
    assert float(np.abs(got - ref).max()) <= bound


def test_stitcher_rejects_wrong_slab_count_or_shape() -> None:
    from voxelfm.embed.slabs import PatchStitcher

    plan = plan_slabs(9, 4, 1)
    stitcher = PatchStitcher(plan)
    with pytest.raises(ValueError, match="rows"):
        stitcher.add(np.zeros((3, 2, 2, 3), np.float32))
    stitcher.add(np.zeros((4, 2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="slab grids added"):
        stitcher.result()


def test_2p5d_equals_manual_slab_inference(model) -> None:
    vol = phantom(2)
    pre = preprocess(vol, SPEC)
    d = pre.shape[0] // 8
    feats = extract_features(model, pre, mode="2.5d", slab_thickness=2, slab_overlap=1)
    plan = plan_slabs(d, 2, 1)
    assert len(plan.starts) > 1
    outs = [model.forward_features(torch.from_numpy(pre.array[None, s * 8:(s + 2) * 8].copy())) for s in plan.starts]
    expected_patch = _stitch_float64(plan, [o["patch"][0].numpy() for o in outs])
    expected_cls = np.mean([o["cls"][0].numpy() for o in outs], axis=0)
    np.testing.assert_allclose(feats.patch, expected_patch, atol=1e-5)
    np.testing.assert_allclose(feats.cls, expected_cls, atol=1e-5)
    assert feats.mode == "2.5d" and feats.patch.shape == extract_features(model, pre).patch.shape


def test_2p5d_differs_from_3d_but_one_thick_slab_is_3d(model) -> None:
    pre = preprocess(phantom(0), SPEC)
    full = extract_features(model, pre)
    slabs = extract_features(model, pre, mode="2.5d", slab_thickness=1, slab_overlap=0)
    assert float(np.abs(full.patch - slabs.patch).max()) > 1e-2
    thick = extract_features(model, pre, mode="2.5d", slab_thickness=100)
    np.testing.assert_allclose(thick.patch, full.patch, atol=1e-6)
    np.testing.assert_allclose(thick.cls, full.cls, atol=1e-6)


def test_bf16_and_model_mode_is_restored(model) -> None:
    model.train()
    feats = extract_features(model, phantom(0), dtype="bf16")
    assert model.training and feats.cls.dtype == np.float32
    ref = extract_features(model, phantom(0))
    assert float(np.abs(feats.cls - ref.cls).mean()) < 0.1
