"""Batch embedding: inputs, corrupt scans, resume, workers, shards, and the ``voxelfm embed`` CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import SPEC
from voxelfm.cli.main import app
from voxelfm.core.errors import ConfigError, DataError
from voxelfm.embed import (
    EmbeddingStore,
    collect_jobs,
    parse_shard,
    read_manifest_csv,
    run_embedding,
    shard_jobs,
)


def test_corrupt_scan_is_recorded_and_the_batch_goes_on(model, scans_dir: Path, tmp_path: Path) -> None:
    jobs = collect_jobs([scans_dir])
    assert [j.scan_id for j in jobs] == ["broken", "case0", "case1", "case2"]
    summary = run_embedding(model, jobs, tmp_path / "store", workers=0)
    assert (summary.done, summary.skipped, summary.failed) == (3, 0, 1)
    store = EmbeddingStore(tmp_path / "store")
    assert store.ids() == ["case0", "case1", "case2"] and store.ids("failed") == ["broken"]
    reason = store.records().set_index("scan_id").loc["broken", "error"]
    assert "broken.nii.gz" in reason
    # Resume: finished scans are skipped, the failed one is tried again.
    again = run_embedding(model, jobs, tmp_path / "store", workers=0)
    assert (again.done, again.skipped, again.failed) == (0, 3, 1)
    # Another spec (or model) is not "done": everything is recomputed.
    other = run_embedding(model, jobs, tmp_path / "store", spec=SPEC.replace(max_patches=27), workers=0)
    assert other.done == 3 and np.prod(store.get("case0").grid_shape) <= 27


def test_worker_processes_give_identical_results(model, scans_dir: Path, tmp_path: Path) -> None:
    jobs = collect_jobs([scans_dir])
    run_embedding(model, jobs, tmp_path / "w0", workers=0)
    summary = run_embedding(model, jobs, tmp_path / "w2", workers=2)
    assert (summary.done, summary.failed) == (3, 1)
    a, b = EmbeddingStore(tmp_path / "w0"), EmbeddingStore(tmp_path / "w2")
    for scan_id in a.ids():
        np.testing.assert_array_equal(a.get(scan_id).patch, b.get(scan_id).patch)


def test_csv_manifests_resolve_relative_paths(scans_dir: Path, tmp_path: Path) -> None:
    manifest = scans_dir / "labels.csv"  # phantom-style: extra columns, paths relative to the CSV
    manifest.write_text("patient_id,scan_id,split,path,lung_nodule\np0,A,train,case0.nii.gz,1\np1,B,test,case1.nii.gz,0\n")
    jobs = read_manifest_csv(manifest)
    assert [(j.scan_id, Path(j.source)) for j in jobs] == [("A", scans_dir / "case0.nii.gz"), ("B", scans_dir / "case1.nii.gz")]
    assert [j.scan_id for j in collect_jobs([manifest])] == ["A", "B"]
    (tmp_path / "bad.csv").write_text("id,file\nx,y\n")
    with pytest.raises(DataError, match="bad.csv: a manifest needs columns 'scan_id' and 'path'"):
        read_manifest_csv(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text(f"scan_id,path\nA,{scans_dir / 'case2.nii.gz'}\n")
    with pytest.raises(DataError, match="duplicate scan ids"):
        collect_jobs([manifest, tmp_path / "dup.csv"])


def test_shards_are_disjoint_and_cover_everything(scans_dir: Path) -> None:
    jobs = collect_jobs([scans_dir])
    parts = [shard_jobs(jobs, (i, 3)) for i in range(3)]
    assert sorted(j.scan_id for part in parts for j in part) == sorted(j.scan_id for j in jobs)
    assert parse_shard("1/3") == (1, 3)
    assert parse_shard(None, env={"RANK": "2", "WORLD_SIZE": "4"}) == (2, 4)
    assert parse_shard(None, env={}) is None
    with pytest.raises(ConfigError):
        parse_shard("3/3")


def test_cli_embed_end_to_end_with_shards(model_dir: Path, scans_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    store = tmp_path / "store"
    codes = {}
    for shard in ("0/2", "1/2"):
        result = runner.invoke(app, ["embed", str(scans_dir), "--model", str(model_dir), "--out", str(store),
                                     "--workers", "0", "--shard", shard, "--no-progress", "--device", "cpu"])
        codes[shard] = result.exit_code
        assert result.exit_code in (0, 2), result.output
    # Shard 0 holds the corrupt scan: it finishes the others and exits 2 ("finished, with failures").
    assert codes == {"0/2": 2, "1/2": 0}
    reader = EmbeddingStore(store)
    assert reader.ids() == ["case0", "case1", "case2"] and reader.ids("failed") == ["broken"]
    assert len(list(store.glob("manifest-*-of-2.jsonl"))) == 2
    resumed = runner.invoke(app, ["embed", str(scans_dir), "--model", str(model_dir), "--out", str(store),
                                  "--workers", "0", "--no-progress", "--mode", "2.5d", "--slab-thickness", "2"])
    assert resumed.exit_code == 2 and "1 input(s) failed" in resumed.output, resumed.output
    assert EmbeddingStore(store).get("case0").mode == "2.5d"
    bad = runner.invoke(app, ["embed", str(scans_dir), "--model", str(tmp_path / "nope"), "--out", str(store)])
    assert bad.exit_code == 1 and "model directory not found" in " ".join(bad.output.split())
