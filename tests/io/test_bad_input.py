"""Bad or unusual CT inputs (issue 13): each one gives a clear one-line error or a clear warning.

Every input is built with pydicom / nibabel / SimpleITK directly (``bad_input_builders``), never
with voxelfm's own writers, and checked through the ``voxelfm info`` command line: exit code 1
and one ``error:`` line naming the file and the problem, or exit code 0 with the warning.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from bad_input_builders import body, dicom_series, mha, nifti, patch_pixdim, set_raw
from typer.testing import CliRunner

from voxelfm.cli.main import app
from voxelfm.core.errors import CTReadError, InputValidationError
from voxelfm.io import discover_sources, load_ct
from voxelfm.preprocess import PreprocessSpec, preprocess

runner = CliRunner()


def info(path: Path, *extra: str) -> tuple[int, str]:
    """Exit code and whitespace-normalised output of ``voxelfm info PATH --json``."""
    result = runner.invoke(app, ["info", str(path), "--json", *extra])
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def refused(path: Path, *extra: str) -> str:
    """The one error line of a refused input (exit code 1)."""
    code, text = info(path, *extra)
    assert code == 1, text
    assert text.startswith("error:"), text
    return text


def loaded(path: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["info", str(path), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- DICOM rescale and other numeric attributes ---------------------------------------------------
def test_nan_rescale_slope_on_one_slice_is_refused_naming_the_slice(tmp_path):
    def edit(k, ds):
        if k == 2:
            set_raw(ds, "RescaleSlope", "NaN")

    dicom_series(tmp_path / "s", edit=edit)
    text = refused(tmp_path / "s")
    assert "IM0003: DICOM attribute RescaleSlope is nan" in text and "not be finite HU" in text


def test_nan_rescale_intercept_on_every_slice_is_refused_not_a_type_error(tmp_path):
    dicom_series(tmp_path / "s", edit=lambda k, ds: set_raw(ds, "RescaleIntercept", "nan"))
    text = refused(tmp_path / "s")
    assert "RescaleIntercept is nan" in text and "TypeError" not in text


@pytest.mark.parametrize(("keyword", "value", "expected"), [
    ("RescaleSlope", "abc", "DICOM attribute RescaleSlope = 'abc' is not a number"),
    ("RescaleIntercept", "-1O24", "RescaleIntercept = '-1O24' is not a number"),
    ("RescaleSlope", "0", "RescaleSlope is 0"),
    ("PixelSpacing", "0.8\\x", "unreadable PixelSpacing '0.8\\\\x': expected 2 numbers"),
    ("ImagePositionPatient", "0\\0\\z", "unreadable ImagePositionPatient"),
    ("ImageOrientationPatient", "1\\0\\0\\0\\1\\zz", "unreadable ImageOrientationPatient"),
])
def test_non_numeric_dicom_attributes_give_one_line(tmp_path, keyword, value, expected):
    dicom_series(tmp_path / "s", edit=lambda k, ds: set_raw(ds, keyword, value))
    text = refused(tmp_path / "s")
    assert expected in text, text
    assert "IM0001" in text or "IM000" in text


def test_non_numeric_informational_attribute_is_harmless(tmp_path):
    dicom_series(tmp_path / "s", edit=lambda k, ds: set_raw(ds, "SeriesNumber", "x"))
    data = loaded(tmp_path / "s")
    assert data["shape"] == [6, 24, 24] and data["series"][0]["series_number"] is None


def test_non_finite_hu_never_leaves_load_ct(tmp_path):
    # Float pixel values that overflow float32 after the rescale (no NaN in any header).
    dicom_series(tmp_path / "s", edit=lambda k, ds: set_raw(ds, "RescaleSlope", "1e38"))
    text = refused(tmp_path / "s")
    assert "voxels are not finite after the rescale" in text and "IM000" in text


# -- slices lost inside a series ------------------------------------------------------------------
def test_truncated_slice_in_the_middle_is_refused_then_interpolated_when_allowed(tmp_path):
    paths = dicom_series(tmp_path / "s")
    paths[3].write_bytes(paths[3].read_bytes()[:100])
    text = refused(tmp_path / "s")
    assert "1 file(s) that look like its slices cannot be read" in text and "IM0004" in text
    assert "--allow-missing-slices" in text
    data = loaded(tmp_path / "s", "--allow-missing-slices")
    assert data["shape"] == [6, 24, 24]  # the 4 mm gap is interpolated, and said so
    joined = " ".join(data["warnings"])
    assert "IM0004" in joined and "left out" in joined and "non-uniform slice spacing" in joined


def test_empty_slice_file_at_the_edge_is_refused_not_dropped(tmp_path):
    paths = dicom_series(tmp_path / "s")
    paths[-1].write_bytes(b"")
    text = refused(tmp_path / "s")
    assert "IM0006 (empty file)" in text
    data = loaded(tmp_path / "s", "--allow-missing-slices")
    assert data["shape"] == [5, 24, 24] and any("IM0006 (empty file)" in w for w in data["warnings"])
    assert data["series"][0]["unreadable_files"] == ["IM0006 (empty file)"]


@pytest.mark.parametrize("keep_bytes", [300, 500, 700])
def test_slice_with_a_header_cut_short_is_refused(tmp_path, keep_bytes):
    paths = dicom_series(tmp_path / "s")
    paths[0].write_bytes(paths[0].read_bytes()[:keep_bytes])
    text = refused(tmp_path / "s")
    assert "IM0001" in text and ("truncated" in text or "Rows/Columns" in text)


def test_undecodable_pixel_data_is_refused_then_left_out_when_allowed(tmp_path):
    paths = dicom_series(tmp_path / "s")
    paths[2].write_bytes(paths[2].read_bytes()[:-200])
    text = refused(tmp_path / "s")
    assert "IM0003: cannot decode pixel data" in text
    data = loaded(tmp_path / "s", "--allow-missing-slices")
    assert data["shape"] == [6, 24, 24] and any("IM0003 (pixel data" in w for w in data["warnings"])


def test_other_files_next_to_a_series_are_not_lost_slices(tmp_path):
    dicom_series(tmp_path / "s")
    (tmp_path / "s" / "README").write_text("exported by a PACS")
    (tmp_path / "s" / "notes.txt").write_text("")
    (tmp_path / "s" / "VERSION").write_bytes(b"")
    data = loaded(tmp_path / "s")
    assert data["shape"] == [6, 24, 24] and data["warnings"] == []


# -- discovery ------------------------------------------------------------------------------------
def test_discovery_does_not_depend_on_which_files_are_listed_first(tmp_path):
    folder = tmp_path / "cohort" / "patient"
    dicom_series(folder, names="zz{:04d}")
    for i in range(8):  # sorted before the slices, no suffix that marks them as non-DICOM
        (folder / f"a{i}_export_info").write_text("not dicom")
    (folder / "DICOMDIR_notes.bin").write_bytes(os.urandom(400))
    assert discover_sources(tmp_path / "cohort") == [("patient", folder)]


def test_discovery_skips_label_maps_with_one_info_line(tmp_path, caplog):
    root = tmp_path / "cohort"
    for name in ("case0", "case1"):
        nifti(root / "images" / f"{name}.nii.gz")
        nifti(root / "labels" / f"{name}.nii.gz", (body() > 0).astype(np.int16))
    nifti(root / "images" / "case2_seg.nii.gz", (body() > 0).astype(np.int16))
    nifti(root / "images" / "case3_mask.nii.gz", (body() > 0).astype(np.uint8))
    nifti(root / "other" / "mask8bit.nii.gz", (body() > 0).astype(np.uint8), dtype=np.uint8)
    (root / "labels.csv").write_text("scan_id,path\ncase0,images/case0.nii.gz\n")
    with caplog.at_level(logging.INFO, logger="voxelfm.io.discover"):
        found = discover_sources(root)
    assert [scan_id for scan_id, _ in found] == ["case0", "case1"]
    lines = [r.getMessage() for r in caplog.records]
    assert any("labels: skipped: a label-map folder (2 files)" in line for line in lines)
    assert any("skipped 2 label map(s)" in line and "case2_seg.nii.gz" in line for line in lines)
    assert any("mask8bit.nii.gz (stored as uint8" in line for line in lines)
    # Given directly, a label map is not skipped: loading it says what it is.
    text = refused(root / "labels" / "case0.nii.gz")
    assert "looks like a label map, not a CT: only 2 distinct integer values (0, 1)" in text


# -- NIfTI / MHA headers --------------------------------------------------------------------------
@pytest.mark.parametrize(("axis", "value", "expected"), [
    (3, 0.0, "pixdim[3] (voxel size along the file's k axis) is 0"),
    (1, float("nan"), "pixdim[1] (voxel size along the file's i axis) is nan"),
    (2, float("inf"), "pixdim[2] (voxel size along the file's j axis) is inf"),
])
def test_nifti_zero_or_non_finite_pixdim_is_refused(tmp_path, axis, value, expected):
    path = patch_pixdim(nifti(tmp_path / "scan.nii.gz"), axis, value)
    text = refused(path)
    assert f"scan.nii.gz: {expected}" in text and "never assumes 1 mm" in text


@pytest.mark.parametrize(("zooms", "expected"), [
    ((1e-6, 1e-6, 1e-6), "less than 0.01 mm"),
    ((0.8, 0.8, 80.0), "more than 50 mm"),
])
def test_absurd_spacing_is_refused_with_its_value(tmp_path, zooms, expected):
    text = refused(nifti(tmp_path / "scan.nii", zooms=zooms))
    assert "absurd spacing" in text and expected in text


def test_nifti2_is_read_like_nifti1(tmp_path):
    one = load_ct(nifti(tmp_path / "one.nii.gz", version=1))
    two = load_ct(nifti(tmp_path / "two.nii", version=2))
    np.testing.assert_array_equal(one.array, two.array)
    np.testing.assert_allclose(one.spacing, two.spacing, rtol=1e-6)
    np.testing.assert_allclose(one.origin, two.origin, atol=1e-4)
    np.testing.assert_allclose(one.direction, two.direction, atol=1e-6)
    assert loaded(tmp_path / "two.nii")["orientation"] == "LPS"


@pytest.mark.parametrize(("matrix", "expected"), [
    ([[0.8, 0, 0], [0, 0.8, 0], [0, 0, 0]], "degenerate affine: column 2 (the file's k axis) is zero"),
    ([[0.8, 0.8, 0], [0.8, 0.8, 0], [0, 0, 2]], "degenerate affine: singular, two voxel axes are parallel"),
    ([[0.8, 0.8, 0], [0, 0.8, 0], [0, 0, 2]], "sheared affine: voxel axes are 45.00 deg off perpendicular"),
])
def test_degenerate_affines_are_named(tmp_path, matrix, expected):
    affine = np.eye(4)
    affine[:3, :3] = matrix
    text = refused(nifti(tmp_path / "scan.nii", affine=affine))
    assert expected in text and "corrupt" not in text


def test_mhd_with_a_missing_data_file_names_it(tmp_path):
    header = mha(tmp_path / "scan.mhd")
    (tmp_path / "scan.raw").unlink()
    text = refused(header)
    assert "scan.mhd: the header names the data file 'scan.raw', which does not exist" in text


def test_nrrd_detached_header_with_a_missing_data_file_names_it(tmp_path):
    header = mha(tmp_path / "scan.nhdr")
    assert load_ct(header).shape == (6, 24, 24)
    (tmp_path / "scan.raw").unlink()
    assert "scan.nhdr: the header names the data file 'scan.raw', which does not exist" in refused(header)


def test_a_pickle_instead_of_a_tensor_file_is_named(tmp_path):
    import torch

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"volume": Payload()}, tmp_path / "scan.pt")
    text = refused(tmp_path / "scan.pt", "--spacing", "1,1,1")
    assert "scan.pt: not a weights-only tensor file: it pickles other objects" in text


def test_mha_with_zero_spacing_is_refused(tmp_path):
    path = mha(tmp_path / "scan.mha")
    raw = path.read_bytes()
    start = raw.index(b"ElementSpacing")
    end = raw.index(b"\n", start)
    path.write_bytes(raw[:start] + b"ElementSpacing = 0.8 0.8 0" + raw[end:])
    text = refused(path)
    assert "scan.mha" in text and "spacing" in text


def test_permission_denied_is_said_as_such(tmp_path, monkeypatch):
    path = nifti(tmp_path / "scan.nii.gz")
    real_access = os.access
    monkeypatch.setattr("voxelfm.io.validate.os.access",
                        lambda p, mode: False if Path(p) == path else real_access(p, mode))
    with pytest.raises(CTReadError) as exc:  # the CLI (click) refuses unreadable paths itself
        load_ct(path)
    assert str(exc.value) == f"{path}: permission denied: this file is not readable by the current user"


def test_permission_denied_on_one_slice_is_named(tmp_path, monkeypatch):
    import pydicom

    paths = dicom_series(tmp_path / "s")
    real_read = pydicom.dcmread

    def read(path, *args, **kwargs):
        if Path(path) == paths[2]:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", read)
    text = refused(tmp_path / "s")
    assert "IM0003 (permission denied)" in text and "corrupt" not in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_permission_denied_on_a_real_file(tmp_path):
    path = nifti(tmp_path / "scan.nii.gz")
    path.chmod(0)
    try:
        assert "permission denied" in refused(path)
    finally:
        path.chmod(0o644)


# -- whole-volume checks --------------------------------------------------------------------------
def test_constant_volume_is_loaded_with_a_warning(tmp_path):
    data = loaded(mha(tmp_path / "flat.mha", np.full((6, 24, 24), 300.0)))
    assert any(w.startswith("constant volume: all 3456 voxels are 300") for w in data["warnings"])


@pytest.mark.parametrize(("shape", "spacing", "expected"), [
    ((1, 64, 64), (5.0, 0.8, 0.8), "volume of (1, 64, 64) voxels (5 x 51.2 x 51.2 mm) is a single 2D slice"),
    ((2, 3, 3), (1.0, 1.0, 1.0), "volume of (2, 3, 3) voxels (2 x 3 x 3 mm) is too small"),
    ((6, 24, 24), (2.0, 0.8, 0.8), "too small for the background crop"),
])
def test_too_small_volumes_say_so_with_their_size(tmp_path, shape, spacing, expected):
    volume = load_ct(mha(tmp_path / "small.mha", body(shape), spacing=spacing))
    with pytest.raises(InputValidationError, match="small.mha") as exc:
        preprocess(volume, PreprocessSpec())
    assert expected in str(exc.value) and "found no body" not in str(exc.value)


def test_non_finite_voxels_never_reach_the_model_even_from_a_hand_made_volume():
    from voxelfm.core import CTVolume, Geometry

    hu = body((20, 40, 40))
    hu[3, 4, 5] = np.inf  # clipping alone would turn this into a plausible 1900 HU
    hu[4, 4, 5] = np.nan
    volume = CTVolume(hu, Geometry(hu.shape, (1.0, 1.0, 1.0)), source="by-hand")
    with pytest.raises(InputValidationError, match="by-hand: volume holds 2 NaN/inf voxels"):
        preprocess(volume, PreprocessSpec())


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("patch_size", "14", "patch_size='14': expected an integer"),
    ("crop_background", "yes", "crop_background='yes': expected true or false"),
    ("norm_std", float("nan"), "norm_std=nan: expected a finite number"),
    ("max_patches", 2.5, "max_patches=2.5: expected an integer or null"),
])
def test_a_spec_file_with_wrong_types_names_the_key(tmp_path, key, value, expected):
    from voxelfm.core.errors import ConfigError

    data = PreprocessSpec().to_dict()
    data[key] = value
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as exc:
        PreprocessSpec.load(path)
    assert str(exc.value) == f"{path}: invalid PreprocessSpec: {expected}"


def test_mha_with_a_non_finite_origin_is_refused(tmp_path):
    path = mha(tmp_path / "scan.mha")
    raw = path.read_bytes()
    start = raw.index(b"Offset")
    end = raw.index(b"\n", start)
    path.write_bytes(raw[:start] + b"Offset = nan 0 0" + raw[end:])
    text = refused(path)
    assert "scan.mha" in text and "not finite" in text


def test_a_label_map_from_another_scan_is_refused_when_resampled():
    from voxelfm.core import Geometry
    from voxelfm.preprocess import resample_to_geometry

    labels = np.ones((4, 5, 6), np.int16)
    here = Geometry((4, 5, 6), (1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    elsewhere = Geometry((4, 5, 6), (1.0, 1.0, 1.0), origin=(0.0, 0.0, 500.0))
    assert resample_to_geometry(labels, here, here).sum() == labels.sum()
    with pytest.raises(InputValidationError, match="do not overlap in world space"):
        resample_to_geometry(labels, here, elsewhere)


def test_a_folder_of_broken_slices_says_so(tmp_path):
    for path in dicom_series(tmp_path / "s"):
        path.write_bytes(b"")
    text = refused(tmp_path / "s")
    assert "no DICOM files found that can be read: 6 DICOM-looking file(s) are empty, truncated" in text


def test_a_folder_of_niftis_given_to_info_says_what_it_holds(tmp_path):
    nifti(tmp_path / "n" / "a.nii.gz")
    nifti(tmp_path / "n" / "b.nii.gz")
    text = refused(tmp_path / "n")
    assert "no DICOM files found (the folder holds 2 image file(s) such as a.nii.gz" in text
