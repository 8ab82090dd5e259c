"""The full pipeline: shapes, budgets, and the grid-to-world mapping of every output voxel."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.core import CTVolume, Geometry
from voxelfm.preprocess import PreprocessSpec, preprocess, resample_to_geometry


def _body(shape, spacing, origin=(-50.0, -40.0, 200.0), direction=None, seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = ((y / 0.7) ** 2 + (x / 0.8) ** 2 < 1) & (np.abs(z) < 0.9)
    hu[body] = 40.0 + rng.normal(0, 10, int(body.sum()))
    hu[body & ((y - 0.4) ** 2 + x**2 < 0.03)] = 800.0
    hu[0, 0, 0] = -3024.0  # padding value far outside the training window
    geometry = Geometry(shape=shape, spacing=spacing, origin=origin,
                        direction=np.eye(3) if direction is None else direction)
    return CTVolume(array=hu, geometry=geometry, source="phantom")


def test_default_pipeline_shapes_and_range():
    volume = _body((40, 96, 96), (2.5, 0.7, 0.7))
    out = preprocess(volume, PreprocessSpec())
    d, h, w = out.shape
    assert d % 14 == 0 and h % 14 == 0 and w % 14 == 0
    assert out.array.dtype == np.float32 and out.hu.dtype == np.float32
    assert out.hu.min() >= -1000.0 and out.hu.max() <= 1900.0
    np.testing.assert_allclose(out.array, (out.hu + 573.8) / 461.3, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.geometry.spacing, [0.75] * 3, rtol=0.02)  # isotropic target
    assert [s["step"] for s in out.steps] == ["clip_hu", "crop_background", "resample_isotropic",
                                             "fit_patch_budget", "crop_to_patch_multiple", "normalise"]
    assert out.source_geometry == volume.geometry or out.source_geometry is volume.geometry


def test_patch_budget_is_respected():
    volume = _body((60, 120, 120), (1.0, 1.0, 1.0))
    spec = PreprocessSpec(max_patches=100, crop_background=False)
    out = preprocess(volume, spec)
    assert np.prod(out.grid_shape()) <= 100
    assert out.patch_geometry().shape == out.grid_shape()


def test_crop_only_grid_maps_exactly_to_source_voxels():
    """Isotropic input, no budget: every output voxel is a source voxel; geometry says which."""
    volume = _body((40, 60, 64), (1.0, 1.0, 1.0), direction=np.diag([1.0, 1.0, 1.0]))
    out = preprocess(volume, PreprocessSpec(max_patches=None, patch_size=8))
    idx = volume.geometry.world_to_index(out.geometry.voxel_centres_world())
    rounded = np.rint(idx)
    np.testing.assert_allclose(idx, rounded, atol=1e-9)
    k, j, i = rounded.astype(int).reshape(-1, 3).T
    expected = np.clip(volume.array[k, j, i], -1000, 1900).reshape(out.shape)
    np.testing.assert_array_equal(out.hu, expected)


@pytest.mark.parametrize("budget", [None, 30])
def test_resampled_grid_world_positions_are_exact(budget):
    """Trilinear resampling reproduces a linear function of world position exactly (away from
    the borders), so the HU at each output voxel must equal that function at the voxel's world
    position given by ``out.geometry``. This pins align_corners=False and every crop offset."""
    shape, spacing, origin = (12, 30, 26), (2.0, 0.9, 0.8), (-10.0, 5.0, 30.0)
    geometry = Geometry(shape=shape, spacing=spacing, origin=origin)
    world = geometry.voxel_centres_world()
    coeffs = np.array([3.0, -2.0, 5.0])
    hu = (world @ coeffs).astype(np.float32) + 200.0  # within [-1000, 1900]
    volume = CTVolume(array=hu, geometry=geometry)
    spec = PreprocessSpec(crop_background=False, max_patches=budget, patch_size=4)
    out = preprocess(volume, spec)
    predicted = out.geometry.voxel_centres_world() @ coeffs + 200.0
    inner = (slice(2, -2),) * 3  # trilinear clamps at the borders
    np.testing.assert_allclose(out.hu[inner], predicted[inner], atol=2e-3)
    if budget is not None:
        assert np.prod(out.grid_shape()) <= budget


def test_label_map_onto_preprocessed_grid():
    volume = _body((30, 50, 50), (2.0, 0.8, 0.8))
    labels = (volume.array > 500).astype(np.int16) * 3 + (volume.array > -500)
    out = preprocess(volume, PreprocessSpec(patch_size=4))
    on_grid = resample_to_geometry(labels, volume.geometry, out.geometry, nearest=True)
    assert on_grid.shape == out.shape and on_grid.dtype == np.int16
    assert set(np.unique(on_grid)) <= {0, 1, 4}
    # Labels follow the anatomy: dense label where HU is high, background where HU is air.
    assert np.mean(out.hu[on_grid == 4] > 300) > 0.9
    assert np.mean(out.hu[on_grid == 0] < -500) > 0.9
    # Linear mode on the HU array approximates the pipeline's own trilinear output.
    hu_linear = resample_to_geometry(np.clip(volume.array, -1000, 1900), volume.geometry, out.geometry, nearest=False)
    assert np.median(np.abs(hu_linear - out.hu)) < 5.0


def test_resample_to_geometry_identity_and_outside():
    g = Geometry(shape=(4, 5, 6), spacing=(2.0, 1.0, 1.0), origin=(1.0, 2.0, 3.0))
    labels = np.arange(120, dtype=np.int16).reshape(4, 5, 6)
    np.testing.assert_array_equal(resample_to_geometry(labels, g, g), labels)
    shifted = g.subgrid((0.0, 0.0, 3.0), (1.0, 1.0, 1.0), (4, 5, 6))
    out = resample_to_geometry(labels, g, shifted, default=-1)
    np.testing.assert_array_equal(out[..., :3], labels[..., 3:])
    assert np.all(out[..., 3:] == -1)


def test_spec_roundtrip_and_fingerprint(tmp_path):
    spec = PreprocessSpec(max_patches=1000)
    assert PreprocessSpec.from_json(spec.to_json()) == spec
    assert PreprocessSpec.from_yaml(spec.to_yaml()) == spec
    assert spec.fingerprint() != PreprocessSpec().fingerprint()
    spec.save(tmp_path / "spec.yaml")
    assert PreprocessSpec.load(tmp_path / "spec.yaml").fingerprint() == spec.fingerprint()


def test_package_level_preprocess_is_callable_repeatedly():
    import voxelfm

    volume = _body((20, 40, 40), (1.0, 1.0, 1.0))
    first = voxelfm.preprocess(volume, PreprocessSpec(patch_size=4, background_kernel=5))
    import voxelfm.preprocess.steps  # noqa: F401  (binds the subpackage as a package attribute)

    second = voxelfm.preprocess(volume, PreprocessSpec(patch_size=4, background_kernel=5))
    np.testing.assert_array_equal(first.array, second.array)
