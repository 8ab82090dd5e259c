"""Bad input gives one-line VoxelFMError messages that name the source and the problem."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.core import CTReadError, CTVolume, Geometry, InputValidationError, VoxelFMError
from voxelfm.io import load_ct, write_dicom_series, write_nifti


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_and_empty_paths(tmp_path):
    with pytest.raises(CTReadError, match="no such file or folder") as exc:
        load_ct(tmp_path / "nope.nii.gz")
    assert str(tmp_path / "nope.nii.gz") in _one_line(exc)
    with pytest.raises(CTReadError, match="empty path"):
        load_ct("")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(CTReadError, match="file is empty"):
        load_ct(tmp_path / "empty.nii.gz")


def test_junk_files(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"this is not an image" * 10)
    with pytest.raises(CTReadError, match="cannot read image") as exc:
        load_ct(tmp_path / "junk.nii.gz")
    _one_line(exc)
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01" * 50)
    with pytest.raises(CTReadError, match="not a supported CT source"):
        load_ct(tmp_path / "junk.bin")
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(CTReadError, match="zip"):
        load_ct(tmp_path / "bad.zip")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(CTReadError, match="cannot read array file"):
        load_ct(tmp_path / "bad.npy", spacing=(1, 1, 1))


def test_folder_without_ct(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CTReadError, match="no DICOM files found"):
        load_ct(tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    with pytest.raises(CTReadError, match="no DICOM files found"):
        load_ct(tmp_path / "docs")


def test_truncated_dicom_pixel_data(tmp_path, volume):
    paths = write_dicom_series(volume, tmp_path / "dcm")
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) - 60])
    with pytest.raises(CTReadError, match="pixel data") as exc:
        load_ct(tmp_path / "dcm")
    assert paths[3].name in _one_line(exc)


def test_truncated_nifti(tmp_path, volume):
    path = write_nifti(volume.array, volume.geometry, tmp_path / "scan.nii")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CTReadError, match="scan.nii"):
        load_ct(path)


@pytest.mark.parametrize(
    ("array", "spacing", "match"),
    [
        (np.full((4, 5, 6), np.nan, dtype=np.float32), (1, 1, 1), "NaN/inf"),
        (np.zeros((5, 6), dtype=np.float32), (1, 1, 1), "3D volume"),
        (np.zeros((2, 3, 4, 5), dtype=np.float32), (1, 1, 1), "3D volume"),
        (np.zeros((4, 5, 6), dtype=np.float32), (1, 0, 1), "positive"),
        (np.zeros((4, 5, 6), dtype=np.float32), (1, -2, 1), "positive"),
        (np.zeros((4, 5, 6), dtype=np.float32), (80, 1, 1), "absurd spacing"),
        (np.zeros((4, 5, 6), dtype=np.float32), (1, 1), "three numbers"),
    ],
)
def test_invalid_arrays(array, spacing, match):
    with pytest.raises(InputValidationError, match=match) as exc:
        load_ct(array, spacing=spacing)
    _one_line(exc)


def test_absurd_size_is_refused_before_allocation():
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=np.float32), shape=(3000, 4, 4), strides=(0, 0, 0))
    with pytest.raises(InputValidationError, match="absurd volume size"):
        load_ct(huge, spacing=(1, 1, 1))


@pytest.mark.parametrize("scale", ["unit", "zscore", "normalised"])
def test_non_hu_volumes_are_refused(volume, scale):
    hu = volume.array
    data = {
        "unit": (hu - hu.min()) / (hu.max() - hu.min()),
        "zscore": (hu - hu.mean()) / hu.std(),
        "normalised": (hu + 573.8) / 461.3,
    }[scale]
    with pytest.raises(InputValidationError, match="Hounsfield") as exc:
        load_ct(data, spacing=volume.spacing)
    assert "allow_non_hu" in _one_line(exc)
    assert load_ct(data, spacing=volume.spacing, allow_non_hu=True).shape == volume.shape


def test_unrescaled_values_give_a_warning(volume):
    loaded = load_ct(volume.array + 1024.0, spacing=volume.spacing)
    assert any("below -100 HU" in w for w in loaded.warnings)


def test_wrong_source_type():
    with pytest.raises(InputValidationError, match="type list"):
        load_ct([1, 2, 3])


def test_every_error_is_a_voxelfm_error(tmp_path):
    volume = CTVolume(np.zeros((2, 2, 2), np.float32), Geometry((2, 2, 2), (1, 1, 1)))
    with pytest.raises(VoxelFMError):
        write_nifti(volume.array, volume.geometry, tmp_path / "x.png")
    with pytest.raises(VoxelFMError):
        write_dicom_series(volume, tmp_path / "d", slice_order="sideways")


def test_geometry_overrides_are_refused_for_files_with_geometry(tmp_path, volume):
    path = write_nifti(volume.array, volume.geometry, tmp_path / "scan.nii.gz")
    with pytest.raises(InputValidationError, match="apply only to array sources"):
        load_ct(path, spacing=(1, 1, 1))
