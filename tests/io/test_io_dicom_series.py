"""DICOM series discovery, ordering and geometry checks, on written and real (pydicom) files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from voxelfm.core import CTReadError, CTVolume, Geometry, GeometryError
from voxelfm.io import list_series, load_ct, write_dicom_series

PYDICOM_DATA = Path(get_testdata_file("CT_small.dcm")).parent


def _edit(paths, **tags):
    for p in paths:
        ds = pydicom.dcmread(p)
        for name, value in tags.items():
            setattr(ds, name, value)
        ds.save_as(p)


def test_oblique_series_keeps_world_positions(tmp_path, make_volume, rotation, assert_same_physical):
    oblique = make_volume(direction=rotation("z", 20) @ rotation("x", 10))
    write_dicom_series(oblique, tmp_path / "dcm")
    loaded = load_ct(tmp_path / "dcm")
    assert loaded.geometry.orientation_code() == "LPS"
    np.testing.assert_allclose(loaded.direction, oblique.direction, atol=1e-5)
    assert_same_physical(oblique, loaded)


@pytest.mark.parametrize("flip", [(1, 1, -1), (-1, -1, 1), (1, -1, -1)])
def test_reversed_axes_are_canonicalised(tmp_path, make_volume, assert_same_physical, flip):
    """Slices stacked toward the feet, or rows running anterior: loaded array is LPS."""
    # (1, 1, -1): positions run against the slice normal (row x column), files numbered top-down.
    direction = np.diag(np.array(flip, dtype=float))
    source = make_volume(direction=direction)
    write_dicom_series(source, tmp_path / "dcm", slice_order="descending")
    loaded = load_ct(tmp_path / "dcm")
    assert loaded.geometry.orientation_code() == "LPS"
    assert_same_physical(source, loaded)


def test_sagittal_series_is_reoriented(tmp_path, make_volume, assert_same_physical):
    # Rows along posterior (j -> +y), columns toward the feet (-z), slices along +x.
    direction = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], dtype=float)
    source = make_volume(direction=direction)
    write_dicom_series(source, tmp_path / "dcm")
    loaded = load_ct(tmp_path / "dcm")
    assert loaded.geometry.orientation_code() == "LPS"
    assert loaded.shape == (source.shape[1], source.shape[2], source.shape[0])
    assert_same_physical(source, loaded)


def test_several_series_choose_largest_or_named(tmp_path, make_volume):
    big, small = make_volume(shape=(7, 10, 12), seed=1), make_volume(shape=(4, 10, 12), seed=2)
    write_dicom_series(big, tmp_path / "study", series_uid="1.2.7", instance_prefix="a")
    write_dicom_series(small, tmp_path / "study" / "sub", series_uid="1.2.4", instance_prefix="b")
    loaded = load_ct(tmp_path / "study")
    assert loaded.series_uid == "1.2.7" and loaded.shape == (7, 10, 12)
    assert any("2 series found" in w for w in loaded.warnings)
    named = load_ct(tmp_path / "study", series_uid="1.2.4")
    np.testing.assert_array_equal(named.array, small.array)
    with pytest.raises(CTReadError, match="1.2.999 not found"):
        load_ct(tmp_path / "study", series_uid="1.2.999")
    infos = {s.uid: s for s in list_series(tmp_path / "study")}
    assert infos["1.2.7"].chosen and infos["1.2.7"].n_slices == 7
    assert not infos["1.2.4"].chosen and "fewer slices" in infos["1.2.4"].skipped


def test_localizer_secondary_capture_and_other_modalities_are_skipped(tmp_path, make_volume):
    ct = make_volume(shape=(3, 10, 12))
    write_dicom_series(ct, tmp_path / "d" / "ct", series_uid="1.1")
    many = make_volume(shape=(8, 10, 12))
    _edit(write_dicom_series(many, tmp_path / "d" / "scout", series_uid="1.2"), ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    _edit(write_dicom_series(many, tmp_path / "d" / "mr", series_uid="1.3", modality="MR"))
    sc_paths = write_dicom_series(many, tmp_path / "d" / "sc", series_uid="1.4")
    _edit(sc_paths, SOPClassUID="1.2.840.10008.5.1.4.1.1.7")
    (tmp_path / "d" / "notes.txt").write_text("not dicom")
    infos = {s.uid: s for s in list_series(tmp_path / "d")}
    assert infos["1.2"].skipped == "localizer"
    assert "MR is not CT" in infos["1.3"].skipped
    assert infos["1.4"].skipped == "secondary capture"
    assert infos["1.1"].chosen
    assert load_ct(tmp_path / "d").series_uid == "1.1"


def test_missing_slice_is_interpolated_with_warning(tmp_path, make_volume):
    source = make_volume(shape=(8, 10, 12), spacing=(2.0, 0.8, 0.8))
    paths = write_dicom_series(source, tmp_path / "dcm")
    paths[4].unlink()
    loaded = load_ct(tmp_path / "dcm")
    assert loaded.shape == source.shape and loaded.spacing == pytest.approx(source.spacing)
    assert any("non-uniform slice spacing" in w for w in loaded.warnings)
    keep = [0, 1, 2, 3, 5, 6, 7]
    np.testing.assert_array_equal(loaded.array[keep], source.array[keep])
    np.testing.assert_allclose(loaded.array[4], 0.5 * (source.array[3] + source.array[5]), atol=1e-3)


def test_large_gap_is_refused(tmp_path, make_volume):
    paths = write_dicom_series(make_volume(shape=(9, 10, 12)), tmp_path / "dcm")
    for p in paths[2:7]:
        p.unlink()
    with pytest.raises(GeometryError, match="incomplete: a gap of 15 mm"):
        load_ct(tmp_path / "dcm")


def test_mixed_orientation_and_matrix_size_are_refused(tmp_path, make_volume):
    paths = write_dicom_series(make_volume(), tmp_path / "a")
    _edit(paths[2:3], ImageOrientationPatient=[0.9848, 0.1736, 0, -0.1736, 0.9848, 0])
    with pytest.raises(GeometryError, match="mixes slice orientations"):
        load_ct(tmp_path / "a")
    paths = write_dicom_series(make_volume(), tmp_path / "b")
    other = make_volume(shape=(6, 10, 14))
    replacement = write_dicom_series(other, tmp_path / "tmp", series_uid=str(pydicom.dcmread(paths[0]).SeriesInstanceUID))
    replacement[3].replace(paths[3])
    with pytest.raises(GeometryError, match="mixes matrix sizes"):
        load_ct(tmp_path / "b")


def test_duplicate_positions_are_refused(tmp_path, make_volume):
    paths = write_dicom_series(make_volume(), tmp_path / "dcm")
    _edit(paths[1:2], ImagePositionPatient=pydicom.dcmread(paths[0]).ImagePositionPatient)
    with pytest.raises(GeometryError, match="same position"):
        load_ct(tmp_path / "dcm")


def test_gantry_tilt_is_resampled_onto_orthogonal_grid(tmp_path):
    """Slices whose origins drift along y by one pixel per slice (45 deg would be 1 mm per mm)."""
    shape, spacing = (5, 16, 12), (2.0, 1.0, 1.0)
    rng = np.random.default_rng(3)
    base = np.full(shape, -1000.0, dtype=np.float32)
    base[:, 4:12, 3:9] = 60.0 + rng.normal(0, 1, (shape[0], 8, 6)).round()
    volume = CTVolume(array=base, geometry=Geometry(shape=shape, spacing=spacing))
    paths = write_dicom_series(volume, tmp_path / "dcm")
    for k, p in enumerate(paths):  # shift slice k's origin by +k mm in y (a tilted acquisition)
        _edit([p], ImagePositionPatient=[0.0, float(k), 2.0 * k])
    loaded = load_ct(tmp_path / "dcm")
    assert any("gantry tilt" in w for w in loaded.warnings)
    # Structure at world y in [4+k, 12+k) of slice k now sits at index j = y on the orthogonal grid.
    for k in range(1, shape[0]):
        np.testing.assert_allclose(loaded.array[k, 4 + k + 1: 12 + k - 1, 3:9], base[k, 5:11, 3:9], atol=1e-3)
        assert np.all(loaded.array[k, : 4 + k - 1] <= -999)


def test_real_ct_small_single_slice():
    loaded = load_ct(get_testdata_file("CT_small.dcm"))
    assert loaded.shape == (1, 128, 128)
    assert loaded.spacing == pytest.approx((5.0, 0.661468, 0.661468), rel=1e-5)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(loaded.array[0], expected)
    assert any("single slice" in w for w in loaded.warnings)


def test_real_ct5n_series_sorted_along_normal():
    folder = PYDICOM_DATA / "dicomdirtests" / "98892001" / "CT5N"
    loaded = load_ct(folder)
    assert loaded.shape == (5, 16, 16)
    assert loaded.spacing == pytest.approx((2.5, 0.488281, 0.488281))
    z_sorted = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    for k, path in enumerate(z_sorted):
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(loaded.array[k], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert loaded.origin == pytest.approx((-72.2, -143.0, -1.2375), abs=1e-4)


def test_real_ct2_with_a_202mm_gap_is_refused():
    with pytest.raises(GeometryError, match="gap of 202.5 mm"):
        load_ct(PYDICOM_DATA / "dicomdirtests" / "77654033" / "CT2")


def test_real_dicomdir_tree_lists_every_series():
    series = list_series(PYDICOM_DATA / "dicomdirtests")
    assert sum(s.chosen for s in series) == 1
    assert {s.modality for s in series} >= {"CT", "MR"}
    assert all(s.skipped for s in series if s.modality != "CT")


def test_rounded_positions_count_as_uniform(tmp_path, make_volume):
    """Scanners round positions (here to 0.01 mm): that is not a missing slice or a tilt."""
    source = make_volume(shape=(9, 10, 12), spacing=(0.625, 0.7, 0.7), origin=(-10.003, 4.004, 50.0))
    paths = write_dicom_series(source, tmp_path / "dcm")
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [f"{float(v):.2f}" for v in ds.ImagePositionPatient]
        ds.save_as(p)
    loaded = load_ct(tmp_path / "dcm")
    assert loaded.warnings == []
    np.testing.assert_array_equal(loaded.array, source.array)
    assert loaded.spacing[0] == pytest.approx(0.625, abs=2e-3)


def test_rescale_is_applied_per_slice(tmp_path, make_volume):
    source = make_volume(shape=(4, 10, 12))
    paths = write_dicom_series(source, tmp_path / "dcm", pixel_dtype="int16")
    ds = pydicom.dcmread(paths[2])
    stored = ds.pixel_array.astype(np.int32)
    # Re-encode slice 2 with slope 2, intercept -1000: same HU (even values), different encoding.
    even = (stored // 2) * 2
    ds.PixelData = ((even + 1000) // 2).astype(np.int16).tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-1000"
    ds.save_as(paths[2])
    loaded = load_ct(tmp_path / "dcm")
    np.testing.assert_array_equal(loaded.array[2], even)
    np.testing.assert_array_equal(loaded.array[[0, 1, 3]], source.array[[0, 1, 3]])
    assert loaded.metadata["stored_orientation"] == "LPS"
