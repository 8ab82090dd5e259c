"""``voxelfm info``: human and JSON output, one-line errors with exit code 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from voxelfm.cli.main import app
from voxelfm.core import CTVolume, Geometry
from voxelfm.io import write_dicom_series

runner = CliRunner()


def _series(tmp_path: Path) -> Path:
    shape = (5, 12, 14)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[:, 3:9, 3:11] = 60.0
    hu[:, 5:7, 6:8] = 900.0
    volume = CTVolume(hu, Geometry(shape, (3.0, 0.75, 0.75), (0.0, 0.0, -20.0)))
    write_dicom_series(volume, tmp_path / "scan", series_uid="1.2.3.55", series_description="chest")
    return tmp_path / "scan"


def test_info_json(tmp_path):
    result = runner.invoke(app, ["info", str(_series(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["shape"] == [5, 12, 14]
    assert data["spacing"] == [3.0, 0.75, 0.75]
    assert data["series_uid"] == "1.2.3.55" and data["modality"] == "CT"
    assert data["warnings"] == [] and data["orientation"] == "LPS"
    assert data["hu_min"] == -1000.0 and data["hu_max"] == 900.0
    assert data["series"][0]["chosen"] is True and data["series"][0]["description"] == "chest"


def test_info_human_readable_real_ct():
    result = runner.invoke(app, ["info", get_testdata_file("CT_small.dcm")])
    assert result.exit_code == 0, result.output
    for text in ("shape", "(1, 128, 128)", "spacing", "LPS", "HU range", "single slice"):
        assert text in result.output


def test_info_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "missing.nii.gz")])
    assert result.exit_code == 1
    text = " ".join(result.output.split())  # the error console may wrap long lines
    assert text.startswith("error:") and "missing.nii.gz: no such file or folder" in text
    assert "Traceback" not in result.output
    np.save(tmp_path / "a.npy", np.zeros((4, 4, 4), np.float32))
    result = runner.invoke(app, ["info", str(tmp_path / "a.npy")])
    assert result.exit_code == 1 and "spacing" in result.output


def test_info_array_with_spacing(tmp_path):
    hu = np.full((4, 6, 8), -1000.0, np.float32)
    hu[1:3, 2:4, 2:6] = 300.0
    np.save(tmp_path / "a.npy", hu)
    result = runner.invoke(app, ["info", str(tmp_path / "a.npy"), "--spacing", "2,1,1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["spacing"] == [2.0, 1.0, 1.0]
