"""Writers and readers agree on arrays and world geometry, whatever the file's orientation."""

from __future__ import annotations

import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch

from voxelfm.core import CTVolume, Geometry, InputValidationError
from voxelfm.io import load_ct, load_label_map, write_dicom_series, write_nifti


def test_nifti_roundtrip_keeps_array_and_geometry(tmp_path, volume):
    path = write_nifti(volume.array, volume.geometry, tmp_path / "scan.nii.gz")
    loaded = load_ct(path)
    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.spacing, volume.spacing, rtol=1e-6)
    np.testing.assert_allclose(loaded.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(loaded.direction, np.eye(3), atol=1e-6)
    assert loaded.array.dtype == np.float32 and loaded.source == str(path)


def test_written_nifti_affine_is_ras(tmp_path, volume):
    path = write_nifti(volume.array, volume.geometry, tmp_path / "scan.nii")
    affine = nib.load(path).affine
    # NIfTI stores RAS: LPS x and y flip sign, and (i, j, k) index axes map to x, y, z.
    dz, dy, dx = volume.spacing
    np.testing.assert_allclose(np.diag(affine)[:3], [-dx, -dy, dz], rtol=1e-6)
    ox, oy, oz = volume.origin
    np.testing.assert_allclose(affine[:3, 3], [-ox, -oy, oz], atol=1e-4)


@pytest.mark.parametrize("code", ["RAS", "LAS", "LPS", "RPI", "SLP"])
def test_nifti_orientations_give_the_same_canonical_volume(tmp_path, volume, assert_same_physical, code):
    """Store the same scan with differently ordered/flipped axes; all load identically."""
    import SimpleITK as sitk

    from voxelfm.io.itk import array_to_image, image_to_array

    image = sitk.DICOMOrient(array_to_image(volume.array, volume.geometry), code)
    array, geometry = image_to_array(image)
    assert geometry.orientation_code() == code
    path = write_nifti(array, geometry, tmp_path / f"{code}.nii.gz")
    loaded = load_ct(path)
    assert loaded.geometry.orientation_code() == "LPS"
    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.spacing, volume.spacing, rtol=1e-6)
    np.testing.assert_allclose(loaded.origin, volume.origin, atol=1e-4)
    assert_same_physical(volume, loaded)


def test_nibabel_ras_nifti_with_hand_written_affine(tmp_path, volume, assert_same_physical):
    """A NIfTI written by nibabel in plain RAS voxel order (x runs right -> left reversed)."""
    dz, dy, dx = volume.spacing
    xyz = np.transpose(volume.array, (2, 1, 0))[::-1, ::-1, :]  # (i, j, k) with i -> R, j -> A
    ox, oy, oz = volume.geometry.index_to_world([0, volume.shape[1] - 1, volume.shape[2] - 1])
    affine = np.array([[dx, 0, 0, -ox], [0, dy, 0, -oy], [0, 0, dz, oz], [0, 0, 0, 1.0]])
    img = nib.Nifti1Image(np.ascontiguousarray(xyz), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, tmp_path / "ras.nii.gz")
    loaded = load_ct(tmp_path / "ras.nii.gz")
    np.testing.assert_array_equal(loaded.array, volume.array)
    assert_same_physical(volume, loaded)


@pytest.mark.parametrize("pixel_dtype", ["uint16", "int16"])
@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_dicom_roundtrip(tmp_path, volume, pixel_dtype, order):
    paths = write_dicom_series(volume, tmp_path / "dcm", slice_order=order, pixel_dtype=pixel_dtype,
                               series_uid="1.2.3.4", series_description="test")
    assert len(paths) == volume.shape[0]
    loaded = load_ct(tmp_path / "dcm")
    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.spacing, volume.spacing, rtol=1e-6)
    np.testing.assert_allclose(loaded.origin, volume.origin, atol=1e-5)
    assert loaded.series_uid == "1.2.3.4" and loaded.modality == "CT"
    assert loaded.warnings == []


def test_dicom_tags_are_real(tmp_path, volume):
    import pydicom

    path = write_dicom_series(volume, tmp_path / "dcm")[2]
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
    dz, dy, dx = volume.spacing
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([dy, dx])
    assert float(ds.SliceThickness) == pytest.approx(dz)
    expected = volume.geometry.index_to_world(np.array([2, 0, 0]))
    assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(expected.tolist())
    assert [float(v) for v in ds.ImageOrientationPatient] == pytest.approx([1, 0, 0, 0, 1, 0])
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(hu, volume.array[2])


def test_dicom_writer_clips_instead_of_wrapping(tmp_path, volume):
    array = volume.array.copy()
    array[0, 0, 0], array[0, 0, 1], array[0, 0, 2] = -3024.0, 70000.0, 0.4
    written = CTVolume(array=array, geometry=volume.geometry)
    write_dicom_series(written, tmp_path / "dcm")
    loaded = load_ct(tmp_path / "dcm")
    assert loaded.array[0, 0, 0] == -1024.0  # uint16 with intercept -1024: air clipped, not wrapped
    assert loaded.array[0, 0, 1] == 65535 - 1024
    assert loaded.array[0, 0, 2] == 0.0


def test_other_itk_formats(tmp_path, volume):
    import SimpleITK as sitk

    from voxelfm.io.itk import array_to_image

    image = array_to_image(volume.array, volume.geometry)
    for name in ("scan.mha", "scan.mhd", "scan.nrrd"):
        sitk.WriteImage(image, str(tmp_path / name))
        loaded = load_ct(tmp_path / name)
        np.testing.assert_array_equal(loaded.array, volume.array)
        np.testing.assert_allclose(loaded.origin, volume.origin, atol=1e-5)


def test_arrays_need_spacing_and_are_reoriented(tmp_path, volume):
    with pytest.raises(InputValidationError, match="spacing"):
        load_ct(volume.array)
    loaded = load_ct(volume.array, spacing=volume.spacing)
    assert loaded.spacing == volume.spacing and loaded.origin == (0.0, 0.0, 0.0)
    # Same data stored with flipped axes and the matching direction: canonical result is identical.
    flipped = volume.array[:, ::-1, ::-1]
    origin = volume.geometry.index_to_world([0, volume.shape[1] - 1, volume.shape[2] - 1])
    back = load_ct(flipped, spacing=volume.spacing, origin=origin, direction=np.diag([-1.0, -1.0, 1.0]))
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-9)


def test_array_files_and_tensors(tmp_path, volume):
    np.save(tmp_path / "a.npy", volume.array)
    np.savez(tmp_path / "b.npz", array=volume.array)
    torch.save(torch.from_numpy(volume.array.astype(np.int16)), tmp_path / "c.pt")
    for source in (tmp_path / "a.npy", tmp_path / "b.npz", tmp_path / "c.pt", torch.from_numpy(volume.array)):
        loaded = load_ct(source, spacing=(2.5, 0.8, 0.7))
        np.testing.assert_array_equal(loaded.array, volume.array)
        assert loaded.array.dtype == np.float32
    with pytest.raises(InputValidationError, match="spacing"):
        load_ct(tmp_path / "a.npy")


def test_dicom_zip(tmp_path, volume):
    paths = write_dicom_series(volume, tmp_path / "dcm", series_uid="1.2.3.9")
    with zipfile.ZipFile(tmp_path / "scan.zip", "w") as archive:
        for p in paths:
            archive.write(p, f"study/series/{p.name}")
    loaded = load_ct(tmp_path / "scan.zip")
    np.testing.assert_array_equal(loaded.array, volume.array)
    assert loaded.series_uid == "1.2.3.9" and loaded.source == str(tmp_path / "scan.zip")


def test_label_map_roundtrip_in_canonical_orientation(tmp_path, volume):
    labels = (volume.array > 0).astype(np.int16) + (volume.array > 500)
    # Stored with j flipped (pointing anterior) and the matching geometry.
    stored_geometry = Geometry(
        shape=volume.shape, spacing=volume.spacing,
        origin=volume.geometry.index_to_world([0, volume.shape[1] - 1, 0]),
        direction=np.diag([1.0, -1.0, 1.0]),
    )
    write_nifti(labels[:, ::-1, :].astype(np.uint8), stored_geometry, tmp_path / "labels.nii.gz")
    loaded, geometry = load_label_map(tmp_path / "labels.nii.gz")
    assert loaded.dtype == np.int16
    np.testing.assert_array_equal(loaded, labels)
    np.testing.assert_allclose(geometry.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(geometry.direction, np.eye(3), atol=1e-9)


def test_nifti_scaling_is_applied(tmp_path, volume):
    import nibabel as nib

    stored = np.rint((volume.array + 1024) / 2).astype(np.int16)
    affine = np.diag([-0.7, -0.8, 2.5, 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(stored.transpose(2, 1, 0)), affine)
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    loaded = load_ct(tmp_path / "scaled.nii.gz")
    np.testing.assert_array_equal(loaded.array, stored.astype(np.float32) * 2 - 1024)


def test_stored_orientation_is_reported(tmp_path, volume):
    flipped = Geometry(shape=volume.shape, spacing=volume.spacing,
                       origin=volume.geometry.index_to_world([0, volume.shape[1] - 1, volume.shape[2] - 1]),
                       direction=np.diag([-1.0, -1.0, 1.0]))
    path = write_nifti(volume.array[:, ::-1, ::-1], flipped, tmp_path / "ras.nii.gz")
    loaded = load_ct(path)
    assert loaded.metadata["stored_orientation"] == "RAS"
    assert loaded.geometry.orientation_code() == "LPS"
