"""``voxelfm pretrain prepare / CONFIG / export`` and the prepared-volume cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import make_volume, single_thread, tiny_overrides  # noqa: E402

from voxelfm.cli.main import app  # noqa: E402
from voxelfm.core import Geometry  # noqa: E402
from voxelfm.io import write_nifti  # noqa: E402
from voxelfm.ssl.prepare import PrepareSettings, prepare_volumes  # noqa: E402


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    for i in range(3):
        geometry = Geometry(shape=(20, 48, 44), spacing=(2.0, 1.0, 1.0))
        write_nifti(make_volume(rng, (20, 48, 44)), geometry, folder / f"scan{i}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not a nifti file")
    return folder


def test_prepare_caches_isotropic_int16_volumes_and_skips_bad_scans(scans, tmp_path) -> None:
    counts = prepare_volumes([scans], tmp_path / "out", settings=PrepareSettings())
    assert counts == {"found": 4, "prepared": 3, "skipped": 0, "failed": 1, "earlier_failed": 0, "retried": 0,
                      "changed": 0, "indexed": 3}
    index = pd.read_csv(tmp_path / "out" / "index.csv")
    assert list(index.columns[:2]) == ["path", "shape_final"]
    row = index.iloc[0]
    volume = np.load(tmp_path / "out" / row["path"], mmap_mode="r")
    assert volume.dtype == np.int16 and json.loads(row["shape_final"]) == list(volume.shape)
    assert volume.shape == (40, 48, 44) and row["spacing_mm"] == pytest.approx(1.0)  # 2 mm z -> 1 mm
    log = [json.loads(line) for line in (tmp_path / "out" / "prepare_log.jsonl").read_text().splitlines()]
    failed = [r for r in log if r["status"] == "failed"]
    assert len(failed) == 1 and "broken" in failed[0]["source"] and failed[0]["error"]
    again = prepare_volumes([scans], tmp_path / "out", settings=PrepareSettings())  # resumable
    assert again["prepared"] == 0 and again["skipped"] == 3 and again["indexed"] == 3
    assert again["earlier_failed"] == 1 and again["failed"] == 0  # reported, not hidden as "done"


def test_prepare_refuses_a_folder_made_with_other_settings(scans, tmp_path) -> None:
    from voxelfm.core.errors import DataError

    prepare_volumes([scans / "scan0.nii.gz"], tmp_path / "out", settings=PrepareSettings(spacing_mm=2.0))
    with pytest.raises(DataError, match="other settings"):
        prepare_volumes([scans / "scan0.nii.gz"], tmp_path / "out", settings=PrepareSettings())


def test_cli_prepare_train_export(scans, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "prepared"
    result = runner.invoke(app, ["pretrain", "prepare", str(scans), "--out", str(out), "--spacing", "1.5"])
    # The broken scan is skipped and the others prepared; exit status 2 says "finished, with failures".
    assert result.exit_code == 2, result.output
    assert "1 input(s) failed" in result.output
    again = runner.invoke(app, ["pretrain", "prepare", str(scans), "--out", str(out), "--spacing", "1.5"])
    # the earlier failure (file unchanged) is not retried but reported: still exit status 2
    assert again.exit_code == 2 and "1 scan(s) failed in an earlier run" in again.output, again.output
    assert len(pd.read_csv(out / "index.csv")) == 3
    config = tmp_path / "tiny.yaml"
    config.write_text("train:\n  seed: 1\n")
    overrides = tiny_overrides(out / "index.csv", **{"train.max_steps": 2})
    with single_thread():
        result = runner.invoke(app, ["pretrain", str(config), *overrides, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "checkpoints" / "step_0000002.pt").is_file()
    result = runner.invoke(app, ["pretrain", "export", str(tmp_path / "run"), str(tmp_path / "model"), "--max-patches", "216"])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "model" / "preprocess.json").read_text())
    assert spec["max_patches"] == 216 and spec["min_spacing_mm"] == 1.5  # the cache's spacing


def test_cli_errors_are_one_line(tmp_path) -> None:
    result = CliRunner().invoke(app, ["pretrain", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "missing.yaml: config file not found" in result.output
    result = CliRunner().invoke(app, ["pretrain", "export", str(tmp_path), str(tmp_path / "m")])
    assert result.exit_code == 1 and "no config.yaml" in result.output


def test_prepare_rerun_retries_changed_failures_and_redoes_changed_sources(tmp_path) -> None:
    import os

    folder = tmp_path / "scans"
    rng = np.random.default_rng(1)
    geometry = Geometry(shape=(20, 48, 44), spacing=(2.0, 1.0, 1.0))
    write_nifti(make_volume(rng, (20, 48, 44)), geometry, folder / "a.nii.gz")
    (folder / "b.nii.gz").write_bytes(b"not yet a nifti file")
    first = prepare_volumes([folder], tmp_path / "out")
    assert (first["prepared"], first["failed"]) == (1, 1)
    # Fix the broken file and replace a.nii.gz by other data: both are done again on a re-run.
    write_nifti(make_volume(rng, (20, 48, 44)), geometry, folder / "b.nii.gz")
    write_nifti(make_volume(rng, (10, 48, 44)), Geometry(shape=(10, 48, 44), spacing=(4.0, 1.0, 1.0)), folder / "a.nii.gz")
    os.utime(folder / "a.nii.gz", ns=(1, 1))  # a new mtime even on a coarse-clock file system
    again = prepare_volumes([folder], tmp_path / "out")
    assert (again["prepared"], again["retried"], again["changed"], again["earlier_failed"]) == (2, 1, 1, 0)
    index = pd.read_csv(tmp_path / "out" / "index.csv")
    assert list(index.scan_id) == ["a", "b"]
    log = [json.loads(line) for line in (tmp_path / "out" / "prepare_log.jsonl").read_text().splitlines()]
    assert all(r["source_fingerprint"] for r in log)
    assert prepare_volumes([folder], tmp_path / "out")["skipped"] == 2
