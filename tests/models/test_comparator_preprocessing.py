"""Golden tests of each comparator's native preprocessing on a synthetic NIfTI with known geometry.

The phantom (air, a soft-tissue block, one dense sphere off-centre on every axis) is written as
NIfTI with anisotropic spacing and an arbitrary origin, read back with ``load_ct``, and prepared
by each recipe. Checked: exact native shape, value levels of the original's intensity mapping,
the LPS direction and spacing of every native axis, and that the sphere lands where it is in the
world (so axis order and flips are right, not only shapes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxelfm.core.geometry import Geometry
from voxelfm.io import load_ct, write_nifti
from voxelfm.models.backbones import NativeSpec, prepare_volume

SPACING = (2.0, 0.9, 0.8)  # z, y, x
ORIGIN = (-20.0, 35.0, -110.0)
SPHERE_INDEX = (8.0, 12.0, 35.0)  # z, y, x: off-centre on every axis
SPHERE_HU = 800.0


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    shape = (30, 40, 50)
    geometry = Geometry(shape=shape, spacing=SPACING, origin=ORIGIN)
    array = np.full(shape, -1000.0, dtype=np.float32)
    array[3:27, 5:36, 6:45] = 0.0
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    mm = ((zz - SPHERE_INDEX[0]) * SPACING[0]) ** 2 + ((yy - SPHERE_INDEX[1]) * SPACING[1]) ** 2 + (
        (xx - SPHERE_INDEX[2]) * SPACING[2]) ** 2
    array[mm <= 6.0 ** 2] = SPHERE_HU
    path = write_nifti(array, geometry, Path(tmp_path_factory.mktemp("nii")) / "phantom.nii.gz")
    volume = load_ct(path)
    centre = volume.geometry.index_to_world(np.array(SPHERE_INDEX))
    return volume, centre


def _axes(geometry: Geometry) -> np.ndarray:
    """Unit LPS vector of each native array axis (rows)."""
    cols = geometry.affine_zyx[:3, :3]
    return (cols / np.linalg.norm(cols, axis=0)).T


def _sphere_world(pre) -> np.ndarray:  # type: ignore[no-untyped-def]
    idx = np.argwhere(pre.hu > 400.0).mean(axis=0)
    return pre.geometry.index_to_world(idx)


def test_phantom_reads_back_canonical(phantom) -> None:  # type: ignore[no-untyped-def]
    volume, centre = phantom
    assert volume.geometry.orientation_code() == "LPS"
    assert np.allclose(volume.spacing, SPACING)
    assert np.allclose(centre, (ORIGIN[0] + 35 * 0.8, ORIGIN[1] + 12 * 0.9, ORIGIN[2] + 8 * 2.0))


def test_m3d_clip_minmax_foreground_crop_area_resize(phantom) -> None:  # type: ignore[no-untyped-def]
    volume, centre = phantom
    pre = prepare_volume(volume, NativeSpec("m3d-clip"))
    assert pre.array.shape == (1, 32, 256, 256)
    assert pre.array.min() >= 0.0 and np.isclose(pre.array.max(), 1.0, atol=1e-6)
    # D, H, W = z (inferior → superior), y (anterior → posterior), x (right → left)
    assert np.allclose(_axes(pre.geometry), np.eye(3)[::-1], atol=1e-9)
    # the foreground (> min) is the soft-tissue block: 24 x 31 x 39 voxels resized to 32 x 256 x 256
    assert np.allclose(pre.geometry.spacing, (24 * 2.0 / 32, 31 * 0.9 / 256, 39 * 0.8 / 256))
    assert np.allclose(_sphere_world(pre), centre, atol=1.0)


def test_ct_clip_clip_resample_scale_crop_pad(phantom) -> None:  # type: ignore[no-untyped-def]
    volume, centre = phantom
    spec = NativeSpec("ct-clip", {"size_dhw": [48, 64, 64]})
    pre = prepare_volume(volume, spec)
    assert pre.array.shape == (1, 48, 64, 64)
    # floor(n * old / new) voxels (the spacing read back from NIfTI is float32: 0.9 -> 0.89999998)
    new = [int(n * s / t) for n, s, t in zip((30, 40, 50), volume.spacing, (1.5, 0.75, 0.75), strict=True)]
    assert new == [40, 47, 53]
    assert np.allclose(pre.geometry.spacing, (30 * volume.spacing[0] / 40, 50 * volume.spacing[2] / 53,
                                              40 * volume.spacing[1] / 47))
    # (D, H, W) = (z, x, y): H runs along LPS x (the NIfTI's first voxel axis), W along y
    assert np.allclose(_axes(pre.geometry), [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-9)
    x = pre.array[0]
    assert x.min() == -1.0 and np.isclose(x.max(), SPHERE_HU / 1000.0, atol=1e-5)
    assert (x[:4] == -1.0).all()  # 40 slices padded to 48: 4 before (pad value -1)
    assert np.isclose(x[24, 32, 30], 0.0)  # soft tissue, 0 HU / 1000
    assert np.allclose(_sphere_world(pre), centre, atol=1.0)


def test_ct_clip_default_size_and_layout_option(phantom) -> None:  # type: ignore[no-untyped-def]
    volume, centre = phantom
    pre = prepare_volume(volume, NativeSpec("ct-clip", {"layout": "zyx", "size_dhw": [40, 48, 56]}))
    assert pre.array.shape == (1, 40, 48, 56)
    assert np.allclose(_axes(pre.geometry), np.eye(3)[::-1], atol=1e-9)
    assert np.allclose(_sphere_world(pre), centre, atol=1.0)


def test_merlin_ras_spacing_scale_pad_crop(phantom) -> None:  # type: ignore[no-untyped-def]
    volume, centre = phantom
    pre = prepare_volume(volume, NativeSpec("merlin"))
    assert pre.array.shape == (1, 224, 224, 160)
    # RAS: X toward the patient's right, Y anterior, Z superior; spacing exactly 1.5, 1.5, 3
    assert np.allclose(_axes(pre.geometry), [[-1, 0, 0], [0, -1, 0], [0, 0, 1]], atol=1e-9)
    assert np.allclose(pre.geometry.spacing, (1.5, 1.5, 3.0))
    x = pre.array[0]
    assert x.min() == 0.0 and np.isclose(x.max(), (SPHERE_HU + 1000) / 2000, atol=1e-5)
    assert x[0, 0, 0] == 0.0  # symmetric zero padding
    assert np.isclose(np.median(x[x > 0.3]), 0.5, atol=1e-6)  # 0 HU -> 0.5
    assert np.allclose(_sphere_world(pre), centre, atol=1.5)
    # MONAI Spacing keeps the corner voxel centres: round((n - 1) * old / new + 1) voxels
    assert pre.steps[1]["shape"] == [int(np.round(49 * 0.8 / 1.5 + 1)), int(np.round(39 * 0.9 / 1.5 + 1)),
                                     int(np.round(29 * 2.0 / 3.0 + 1))]


def test_radfm_inplane_minmax_depth_multiple_three_channels(phantom) -> None:  # type: ignore[no-untyped-def]
    volume, centre = phantom
    pre = prepare_volume(volume, NativeSpec("radfm", {"size_hw": [128, 96]}))
    assert pre.array.shape == (3, 128, 96, 28)  # 30 slices: 28 and 32 tie, the original keeps the smaller
    assert np.array_equal(pre.array[0], pre.array[2])
    assert pre.array.min() == 0.0 and pre.array.max() == 1.0
    # (H, W, D) = (y, x, z)
    assert np.allclose(_axes(pre.geometry), [[0, 1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-9)
    assert np.allclose(pre.geometry.spacing[:2], (40 * 0.9 / 128, 50 * 0.8 / 96))
    assert np.allclose(_sphere_world(pre), centre, atol=2.5)


def test_radfm_long_scans_are_zoomed_to_64_slices() -> None:
    from voxelfm.core.types import CTVolume

    arr = np.linspace(-1000, 1000, 100 * 8 * 8, dtype=np.float32).reshape(100, 8, 8)
    vol = CTVolume(array=arr, geometry=Geometry(shape=arr.shape, spacing=(1.0, 1.0, 1.0)), source="long")
    pre = prepare_volume(vol, NativeSpec("radfm", {"size_hw": [32, 32]}))
    assert pre.array.shape == (3, 32, 32, 64)
    first, last = pre.geometry.index_to_world(np.zeros(3)), pre.geometry.index_to_world(np.array([0, 0, 63]))
    assert 98.0 < last[2] - first[2] < 100.0  # still spans the scan's 99 mm


def test_unknown_recipe_parameter_is_refused() -> None:
    from voxelfm.core.errors import ConfigError

    with pytest.raises(ConfigError, match="recipe 'merlin': unknown recipe parameter 'spacing'"):
        NativeSpec("merlin", {"spacing": [1, 1, 1]})
    with pytest.raises(ConfigError, match="unknown preprocessing recipe"):
        NativeSpec("nope")
