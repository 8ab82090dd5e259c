"""verify_cohort: a complete cohort has no problems; each kind of damage is named, file first.
CohortReader reads it back by scan id."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from voxelfm.data.phantom import FINDINGS, CohortReader, verify_cohort, write_cohort
from voxelfm.data.phantom.verify import non_empty


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    write_cohort(root, n=6, seed=3, format="nifti", size="tiny", workers=1)
    return root


def test_a_written_cohort_is_complete(cohort: Path) -> None:
    assert verify_cohort(cohort) == []
    assert verify_cohort(cohort, n_scans=6) == []


def test_the_reader_gives_each_scan_its_volume_label_map_and_findings(cohort: Path) -> None:
    reader = CohortReader(cohort)
    table = pd.read_csv(cohort / "labels.csv")
    assert sorted(reader.ids("train") + reader.ids("val") + reader.ids("test")) == sorted(table["scan_id"])
    row = table.iloc[0]
    scan_id = str(row["scan_id"])
    assert reader.ct(scan_id) is reader.ct(scan_id)  # read once
    assert reader.label_map(scan_id).shape == reader.ct(scan_id).shape
    assert reader.findings(scan_id) == [f for f in FINDINGS if int(row[f]) == 1]
    assert 0 <= reader.axial_index(scan_id) < reader.ct(scan_id).shape[0]


def test_a_wrong_scan_count_is_named(cohort: Path) -> None:
    assert verify_cohort(cohort, n_scans=7) == [f"{cohort / 'labels.csv'}: 6 scans, expected 7"]


def test_every_kind_of_damage_is_reported_at_once(cohort: Path, tmp_path: Path) -> None:
    labels = pd.read_csv(cohort / "labels.csv")
    broken = labels.copy()
    broken.loc[0, "path"] = "scans/absent.nii.gz"
    broken.loc[1, "patient_id"] = broken.loc[0, "patient_id"]
    broken.loc[1, "split"] = "test" if broken.loc[0, "split"] != "test" else "train"
    broken.loc[2, "scan_id"] = broken.loc[3, "scan_id"]
    broken.to_csv(tmp_path / "labels.csv", index=False)
    for name in ("images", "labels"):
        (tmp_path / name).symlink_to(cohort / name)
    (tmp_path / "reports.jsonl").write_text((cohort / "reports.jsonl").read_text())
    problems = verify_cohort(tmp_path)
    assert f"{tmp_path / 'labels.csv'}: duplicate scan ids" in problems
    assert f"{tmp_path / 'labels.csv'}: patients in more than one split" in problems
    assert any(p.startswith(f"{tmp_path}: 1 path entries missing or empty") for p in problems)
    assert f"{tmp_path / 'reports.jsonl'}: scan ids differ from labels.csv" in problems


def test_unreadable_or_incomplete_tables_are_one_line(tmp_path: Path) -> None:
    assert verify_cohort(tmp_path)[0].startswith(f"{tmp_path / 'labels.csv'}: unreadable")
    pd.DataFrame({"scan_id": ["a"], "split": ["train"]}).to_csv(tmp_path / "labels.csv", index=False)
    assert verify_cohort(tmp_path) == [f"{tmp_path / 'labels.csv'}: missing columns ['label_path', 'path', 'patient_id']"]


def test_non_empty_accepts_a_file_with_bytes_or_a_folder_holding_one(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "series").mkdir()
    assert not non_empty(tmp_path / "empty") and not non_empty(tmp_path / "series")
    assert not non_empty(tmp_path / "absent")
    (tmp_path / "series" / "1.dcm").write_bytes(b"x")
    assert non_empty(tmp_path / "series")
