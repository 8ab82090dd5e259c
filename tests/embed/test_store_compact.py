"""Consolidated store generations: compaction, merging rank stores, duplicates, crash safety."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_embedding_store import _features
from typer.testing import CliRunner

from voxelfm.cli.main import app
from voxelfm.core.errors import StoreError
from voxelfm.embed import EmbeddingStore
from voxelfm.embed.shards import Consolidated, compact


def _assert_same(store: EmbeddingStore, scan_id: str, seed: int) -> None:
    got, want = store.get(scan_id), _features(seed)
    np.testing.assert_array_equal(got.cls, want.cls)
    np.testing.assert_array_equal(got.patch, want.patch)
    np.testing.assert_array_equal(got.registers, want.registers)
    assert got.spec == want.spec and got.model_id == want.model_id and got.mode == want.mode
    assert got.patch_geometry.to_dict() == want.patch_geometry.to_dict()
    assert got.input_geometry.to_dict() == want.input_geometry.to_dict()


def test_compact_merges_rank_stores_into_one_memory_map(tmp_path: Path) -> None:
    rank0, rank1 = EmbeddingStore(tmp_path / "r0"), EmbeddingStore(tmp_path / "r1")
    for i in range(4):
        rank0.write(f"s{i}", _features(i))
    for i in range(3, 6):  # s3 twice, identical: kept once
        rank1.write(f"s{i}", _features(i))
    rank1.record_failure("bad", "/data/bad.nii.gz", "unreadable")
    report = compact(tmp_path / "out", [tmp_path / "r0", tmp_path / "r1"])
    assert report.scans == 6 and report.identical_duplicates == 1 and report.failed == 1
    out = EmbeddingStore(tmp_path / "out")
    assert out.ids() == [f"s{i}" for i in range(6)] and out.ids("failed") == ["bad"]
    ids, matrix = out.cls_matrix()
    assert isinstance(matrix, np.memmap) and matrix.shape == (6, 6)  # one map, no per-scan opens
    np.testing.assert_array_equal(matrix, np.stack([_features(i).cls for i in range(6)]))
    for i in range(6):
        _assert_same(out, f"s{i}", i)
    sub_ids, sub = out.cls_matrix(["s5", "s1"])
    np.testing.assert_array_equal(sub, np.stack([_features(5).cls, _features(1).cls]))
    assert rank0.ids() == [f"s{i}" for i in range(4)]  # sources are only read
    # the pooled patch vector is stored beside the CLS
    cons = Consolidated.open(tmp_path / "out")
    np.testing.assert_allclose(cons.array("mean_patch")[2], _features(2).patch.reshape(-1, 6).mean(0), rtol=1e-6)


def test_different_embeddings_under_one_id_are_refused_or_newest_wins(tmp_path: Path) -> None:
    EmbeddingStore(tmp_path / "a").write("x", _features(0))
    EmbeddingStore(tmp_path / "b").write("x", _features(1))
    with pytest.raises(StoreError, match=r"1 scan id\(s\) have different embeddings.*x \("):
        compact(tmp_path / "out", [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "out" / "consolidated" / "CURRENT").exists()
    report = compact(tmp_path / "out", [tmp_path / "a", tmp_path / "b"], on_conflict="newest")
    assert report.replaced_duplicates == ["x"]
    np.testing.assert_array_equal(EmbeddingStore(tmp_path / "out").get("x").cls, _features(1).cls)


def test_one_model_per_store(tmp_path: Path) -> None:
    EmbeddingStore(tmp_path / "a").write("x", _features(0))
    other = _features(1)
    other.model_id = "m2"
    EmbeddingStore(tmp_path / "b").write("y", other)
    with pytest.raises(StoreError, match="several models: m1 \\(1 scans\\), m2"):
        compact(tmp_path / "out", [tmp_path / "a", tmp_path / "b"])
    assert compact(tmp_path / "out", [tmp_path / "a", tmp_path / "b"], allow_mixed_models=True).scans == 2


def test_in_place_compaction_then_newer_records_win_and_resume_skips(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path, shard=(0, 2))
    store.write("a", _features(0))
    EmbeddingStore(tmp_path, shard=(1, 2)).write("b", _features(1))
    report = compact(tmp_path)
    assert report.scans == 2 and report.removed_entries == 2
    assert not list(tmp_path.glob("manifest*.jsonl")) and not list((tmp_path / "entries").glob("*"))
    reader = EmbeddingStore(tmp_path)
    fp = reader.latest()["a"]["spec_fingerprint"]
    assert reader.done("m1", fp) == {"a", "b"} and "a" in reader and len(reader) == 2
    # a later run re-embeds "a" and adds "c": its records are newer than the generation's
    reader.write("a", _features(5))
    reader.write("c", _features(2))
    assert reader.ids() == ["a", "b", "c"]
    _assert_same(reader, "a", 5)
    np.testing.assert_array_equal(reader.cls_matrix()[1], np.stack([_features(s).cls for s in (5, 1, 2)]))
    compact(tmp_path)
    final = EmbeddingStore(tmp_path)
    _assert_same(final, "a", 5)
    _assert_same(final, "c", 2)
    assert isinstance(final.cls_matrix()[1], np.memmap)
    assert [p.name for p in (tmp_path / "consolidated").glob("gen-*")] == ["gen-000002"]


def test_a_compaction_killed_at_any_point_leaves_a_readable_store(tmp_path: Path, monkeypatch) -> None:
    store = EmbeddingStore(tmp_path)
    for i in range(3):
        store.write(f"s{i}", _features(i))
    # killed before the commit: a half-written generation and pack are ignored, then cleaned
    from voxelfm.embed import shards

    calls = {"n": 0}
    real_add = shards.GenerationWriter.add

    def dying_add(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_add(self, *args, **kwargs)

    monkeypatch.setattr(shards.GenerationWriter, "add", dying_add)
    with pytest.raises(KeyboardInterrupt):
        compact(tmp_path)
    monkeypatch.undo()
    (tmp_path / "consolidated" / ".gen-000009.tmp-4242").mkdir()  # as if killed by SIGKILL (no abort)
    (tmp_path / "packs" / "pack-gen-000009-4242-1.f32").write_bytes(b"\0" * 24)
    assert EmbeddingStore(tmp_path).ids() == ["s0", "s1", "s2"]
    # killed after the commit, before the cleanup: entries and manifests are held twice, identically
    compact(tmp_path, keep_entries=True)
    both = EmbeddingStore(tmp_path)
    assert both.ids() == ["s0", "s1", "s2"] and both.consolidated() is not None
    _assert_same(both, "s1", 1)
    compact(tmp_path)
    clean = EmbeddingStore(tmp_path)
    assert clean.ids() == ["s0", "s1", "s2"] and not list(tmp_path.glob("manifest*.jsonl"))
    assert not list((tmp_path / "consolidated").glob(".gen-*")) and len(list((tmp_path / "packs").glob("*"))) == 1
    _assert_same(clean, "s2", 2)


def test_cli_store_compact_and_info(tmp_path: Path) -> None:
    EmbeddingStore(tmp_path / "r0").write("a", _features(0))
    EmbeddingStore(tmp_path / "r1").write("b", _features(1))
    runner = CliRunner()
    result = runner.invoke(app, ["store", "compact", str(tmp_path / "out"), str(tmp_path / "r0"), str(tmp_path / "r1")])
    assert result.exit_code == 0, result.output
    assert "gen-000001 holds 2 scans" in " ".join(result.output.split())
    info = runner.invoke(app, ["store", "info", str(tmp_path / "out")])
    assert info.exit_code == 0 and "2 scans ok" in info.output and "consolidated gen-000001" in info.output
    missing = runner.invoke(app, ["store", "compact", str(tmp_path / "out"), str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "embedding store does not exist" in missing.output


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_with_shards_equal_one_process(model_dir: Path, scans_dir: Path, tmp_path: Path) -> None:
    """`--shard 0/2` and `--shard 1/2` in two processes (as on two nodes with their own disks), merged
    by `store compact OUT node0 node1`, and a 2-rank `torchrun` writing one shared store, compacted
    in place, give the same ids and bit-identical features as one process."""
    common = [str(scans_dir), "--model", str(model_dir), "--workers", "0", "--no-progress", "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    embed = [sys.executable, "-m", "voxelfm.cli.main", "embed", *common]
    commands = [[*embed, "--out", str(tmp_path / f"node{i}"), "--shard", f"{i}/2"] for i in range(2)]
    commands.append([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                     "voxelfm.cli.main", "embed", *common, "--out", str(tmp_path / "torchrun")])
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    single = subprocess.run([*embed, "--out", str(tmp_path / "single")], env=env, capture_output=True, text=True)
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert single.returncode == 2, single.stdout + single.stderr  # the corrupt scan fails in every layout
    assert sorted(p.returncode for p in procs[:2]) == [0, 2], outputs
    assert procs[2].returncode != 0 and "1 input(s) failed" in outputs[2], outputs[2]  # rank 0 holds the bad scan
    assert sorted(p.name for p in (tmp_path / "torchrun").glob("manifest*")) == [
        "manifest-0-of-2.jsonl", "manifest-1-of-2.jsonl"]
    compact(tmp_path / "merged", [tmp_path / "node0", tmp_path / "node1"])
    compact(tmp_path / "torchrun")
    one = EmbeddingStore(tmp_path / "single")
    for other in (EmbeddingStore(tmp_path / "merged"), EmbeddingStore(tmp_path / "torchrun")):
        assert other.ids() == one.ids() == ["case0", "case1", "case2"] and other.ids("failed") == ["broken"]
        np.testing.assert_array_equal(other.cls_matrix()[1], one.cls_matrix()[1])
        for scan_id in one.ids():
            a, b = other.get(scan_id), one.get(scan_id)
            np.testing.assert_array_equal(a.patch, b.patch)
            np.testing.assert_array_equal(a.registers, b.registers)
            assert a.patch_geometry.to_dict() == b.patch_geometry.to_dict() and a.spec == b.spec
