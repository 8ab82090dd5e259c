"""PCA feature maps: fitting, colour scaling, and world-space placement on slices."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.core.errors import InputValidationError
from voxelfm.core.geometry import Geometry
from voxelfm.viz.pca import body_mask, fit_patch_pca, patch_foreground, sample_grid_on_slice


def _two_tissue_grid(rng: np.random.Generator) -> np.ndarray:
    """A (4, 6, 6, 16) grid whose left half and right half have different feature means."""
    grid = rng.normal(0, 0.05, size=(4, 6, 6, 16))
    grid[..., :3, 0] += 3.0
    grid[..., 3:, 1] += 3.0
    return grid


def test_first_component_separates_tissues() -> None:
    grid = _two_tissue_grid(np.random.default_rng(0))
    pca = fit_patch_pca([grid], n_components=3)
    rgb = pca.transform(grid)
    assert rgb.shape == (4, 6, 6, 3)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    left, right = rgb[..., :3, 0].mean(), rgb[..., 3:, 0].mean()
    assert abs(left - right) > 0.8
    assert pca.explained_variance_ratio[0] > 0.9


def test_foreground_mask_restricts_fit() -> None:
    rng = np.random.default_rng(1)
    grid = _two_tissue_grid(rng)
    fg = np.zeros(grid.shape[:3], dtype=bool)
    fg[..., :3] = True  # only one tissue: the dominant direction is no longer tissue contrast
    pca = fit_patch_pca([grid], foreground=[fg])
    assert pca.explained_variance_ratio[0] < 0.9
    with pytest.raises(InputValidationError, match="foreground mask"):
        fit_patch_pca([grid], foreground=[fg[:2]])
    with pytest.raises(InputValidationError, match="too few"):
        fit_patch_pca([grid], foreground=[np.zeros_like(fg)])


def test_sampling_follows_world_coordinates() -> None:
    # A 2x2x2 patch grid of patch size 4 over an 8x8x8 volume (1 mm voxels, origin 0).
    volume = Geometry(shape=(8, 8, 8), spacing=(1.0, 1.0, 1.0))
    patches = volume.subgrid((1.5, 1.5, 1.5), (4.0, 4.0, 4.0), (2, 2, 2))
    values = np.zeros((2, 2, 2, 1), dtype=np.float32)
    values[:, :, 1, 0] = 1.0  # patches on the patient's left (high i)
    out = sample_grid_on_slice(values, patches, volume, axis="axial", index=3, order=0)
    assert out.shape == (8, 8, 1)
    assert np.all(out[:, :4, 0] == 0.0) and np.all(out[:, 4:, 0] == 1.0)
    # A shifted volume geometry moves the map with it.
    shifted = Geometry(shape=(8, 8, 8), spacing=(1.0, 1.0, 1.0), origin=(2.0, 0.0, 0.0))
    out2 = sample_grid_on_slice(values, patches, shifted, axis="axial", index=3, order=0)
    assert np.all(out2[:, :2, 0] == 0.0) and np.all(out2[:, 2:, 0] == 1.0)


def test_body_mask_and_patch_foreground() -> None:
    hu = np.full((8, 16, 16), -1000.0, dtype=np.float32)
    hu[:, 4:12, 4:12] = 40.0  # body
    hu[:, 6:10, 6:10] = -850.0  # lungs inside the body are still body
    hu[:, 15, :] = 300.0  # a table line, not connected
    mask = body_mask(hu[4])
    assert mask[8, 8] and mask[4, 4] and not mask[15, 3] and not mask[0, 0]
    geom = Geometry(shape=hu.shape, spacing=(1.0, 1.0, 1.0))
    patches = geom.subgrid((1.5, 1.5, 1.5), (4.0, 4.0, 4.0), (2, 4, 4))
    fg = patch_foreground(hu, geom, patches)
    assert fg.shape == (2, 4, 4)
    # Patch centres sit at voxel 1.5, 5.5, 9.5, 13.5: only the middle two lie in the body.
    assert fg[:, 1:3, 1:3].all() and not fg[:, 0, :].any() and not fg[:, :, 3].any()


def test_pca_maps_and_segmentation_overlay_of_volumes() -> None:
    from types import SimpleNamespace

    from voxelfm.viz.panels import most_informative_slice, pca_maps, segmentation_overlay

    rng = np.random.default_rng(2)
    volume = Geometry(shape=(8, 24, 24), spacing=(1.0, 1.0, 1.0))
    patches = volume.subgrid((1.5, 3.5, 3.5), (4.0, 4.0, 4.0), (2, 6, 6))
    hu = np.full((8, 24, 24), -1000.0, dtype=np.float32)
    hu[:, 4:20, 4:20] = 40.0  # a body in air
    vol = SimpleNamespace(hu=hu, geometry=volume)
    feats = SimpleNamespace(patch=rng.normal(size=(2, 6, 6, 8)).astype(np.float32), patch_geometry=patches)
    maps = pca_maps({"s1": vol}, {"a": {"s1": feats}, "b": {"s1": feats}})
    assert list(maps) == ["axial", "coronal"] and all(png.startswith(b"\x89PNG") for png in maps.values())
    truth = np.zeros((8, 24, 24), dtype=np.int16)
    truth[5, 4:10, 4:10], truth[5, 12:18, 12:18], truth[2, 4:20, 4:20] = 1, 2, 1
    assert most_informative_slice(truth) == 5  # two structures beat one larger one
    assert segmentation_overlay(hu, truth, truth, {1: "lung", 2: "heart"}, name="s1").startswith(b"\x89PNG")
    with pytest.raises(InputValidationError, match="s1: prediction"):
        segmentation_overlay(hu, truth, truth[:4], {1: "lung"}, name="s1")
