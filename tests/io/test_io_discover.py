"""discover_sources finds DICOM folders and image files and gives unique, safe scan ids."""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.core import CTReadError
from voxelfm.io import discover_sources, load_ct, write_dicom_series, write_nifti


def test_mixed_tree(tmp_path, make_volume):
    root = tmp_path / "cohort"
    v = make_volume(shape=(3, 8, 8))
    write_dicom_series(v, root / "patient1" / "series A")
    write_dicom_series(v, root / "patient2" / "ct")
    write_nifti(v.array, v.geometry, root / "niftis" / "scan3.nii.gz")
    write_nifti(v.array, v.geometry, root / "niftis" / "sub" / "ct.nii")  # 'ct' collides with patient2/ct
    (root / "niftis" / "notes.txt").write_text("not a scan")
    write_nifti((v.array > 0).astype(np.uint8), v.geometry, root / "labels" / "scan3.nii.gz")
    found = discover_sources(root, exclude=["labels"])
    ids = [scan_id for scan_id, _ in found]
    assert len(ids) == len(set(ids)) == 4
    assert "series_A" in ids and "scan3" in ids
    assert {"cohort_patient2_ct", "cohort_niftis_sub_ct"} <= set(ids)
    for _, path in found:
        assert load_ct(path).shape == (3, 8, 8)
    assert len(discover_sources(root)) == 4  # a labels/ folder is skipped by default (label maps)
    assert len(discover_sources(root, skip_label_maps=False)) == 5


def test_single_file_and_missing(tmp_path, make_volume):
    v = make_volume(shape=(3, 8, 8))
    path = write_nifti(v.array, v.geometry, tmp_path / "one.nii.gz")
    assert discover_sources(path) == [("one", path)]
    with pytest.raises(CTReadError, match="no such file"):
        discover_sources(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CTReadError, match="no CT sources found"):
        discover_sources(tmp_path / "empty")
