"""Writing a cohort: files load back through voxelfm.io unchanged; resume; CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from voxelfm.core.errors import ConfigError
from voxelfm.data.phantom import FINDINGS, REGRESSION_TARGETS, generate_scan, write_cohort
from voxelfm.data.phantom.cohort import plan_cohort
from voxelfm.io import load_ct, load_label_map


@pytest.mark.parametrize("fmt", ["nifti", "dicom"])
def test_written_scans_load_back_identically(tmp_path, fmt):
    out = tmp_path / fmt
    n = 3 if fmt == "nifti" else 2
    labels_csv = write_cohort(out, n=n, seed=4, format=fmt, size="tiny", workers=1)
    table = pd.read_csv(labels_csv)
    assert len(table) == n and table["scan_id"].is_unique
    for col in ("patient_id", "scan_id", "split", "path", "label_path", *FINDINGS, "sex", "smoker",
                *REGRESSION_TARGETS, "time", "event", "nodule_x_mm", "nodule_z_norm"):
        assert col in table.columns, col
    plans = {p.scan_id: p for p in plan_cohort(n, seed=4)}
    for row in table.itertuples():
        plan = plans[row.scan_id]
        expected = generate_scan(plan.patient_index, plan.scan_index, seed=4, size="tiny")
        volume = load_ct(out / row.path)
        # Both formats store integer HU, and the generator already rounds: identical arrays.
        np.testing.assert_array_equal(volume.array, expected.volume.array)
        np.testing.assert_allclose(volume.geometry.origin, expected.volume.geometry.origin, atol=1e-3)
        np.testing.assert_allclose(volume.geometry.spacing, expected.volume.geometry.spacing, atol=1e-5)
        np.testing.assert_allclose(volume.geometry.direction, np.eye(3), atol=1e-6)
        labels, geometry = load_label_map(out / row.label_path)
        np.testing.assert_array_equal(labels, expected.labels)
        np.testing.assert_allclose(geometry.origin, expected.volume.geometry.origin, atol=1e-3)
    reports = [json.loads(line) for line in (out / "reports.jsonl").read_text().splitlines()]
    assert [r["scan_id"] for r in reports] == list(table["scan_id"])
    assert all({"scan_id", "patient_id", "split", "findings", "impression", "report"} <= set(r) for r in reports)
    card = (out / "dataset.md").read_text()
    assert "Survival model" in card and "lung_nodule" in card


def test_resume_regenerates_only_missing_scans(tmp_path):
    out = tmp_path / "c"
    write_cohort(out, n=3, seed=1, size="tiny", workers=1)
    images = sorted((out / "images").glob("*.nii.gz"))
    victim = images[0]
    scan_id = victim.name.removesuffix(".nii.gz")
    victim.unlink()
    untouched = {p: p.stat().st_mtime_ns for p in images[1:]}
    before = (out / "labels.csv").read_text()
    calls = []
    write_cohort(out, n=3, seed=1, size="tiny", workers=1, progress=lambda d, t: calls.append(d))
    assert (out / "images" / f"{scan_id}.nii.gz").exists()
    assert calls[0] == 2 and calls[-1] == 3  # two scans were already done
    assert all(p.stat().st_mtime_ns == m for p, m in untouched.items())
    assert (out / "labels.csv").read_text() == before
    with pytest.raises(ConfigError, match="other settings"):
        write_cohort(out, n=4, seed=1, size="tiny", workers=1)


def test_parallel_workers_give_the_same_cohort(tmp_path):
    a = write_cohort(tmp_path / "a", n=4, seed=2, size="tiny", workers=1)
    b = write_cohort(tmp_path / "b", n=4, seed=2, size="tiny", workers=2)
    assert a.read_text() == b.read_text()


def test_cli_phantom(tmp_path):
    from voxelfm.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["phantom", str(tmp_path / "cli"), "--n", "2", "--size", "tiny", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "cli" / "labels.csv")) == 2
    bad = runner.invoke(app, ["phantom", str(tmp_path / "bad"), "--n", "2", "--format", "png"])
    assert bad.exit_code == 1 and "format" in bad.output
