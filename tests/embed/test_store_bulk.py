"""Bulk CLS reads (``EmbeddingStore.cls_features``): compacted rows by id, newer entries on top."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from test_embedding_store import _features

from voxelfm.core.errors import StoreError
from voxelfm.embed import EmbeddingStore
from voxelfm.embed.shards import Consolidated, GenerationWriter, compact
from voxelfm.probes.data import FeatureSet


def _cls(*seeds: int) -> np.ndarray:
    return np.stack([_features(s).cls for s in seeds])


def test_compacted_store_reads_rows_by_id_without_records(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "s")
    for i in range(5):
        store.write(f"s{i}", _features(i))
    compact(tmp_path / "s")
    store = EmbeddingStore(tmp_path / "s")
    whole = store.cls_features()
    assert isinstance(whole.cls, np.memmap) and whole.ids == [f"s{i}" for i in range(5)]
    assert whole.models == {"m1": 5}
    np.testing.assert_array_equal(whole.cls, _cls(0, 1, 2, 3, 4))
    part = store.cls_features(["s4", "s0", "s2"])  # the caller's order, not the store's
    assert part.ids == ["s4", "s0", "s2"] and part.models == {"m1": 3}
    np.testing.assert_array_equal(part.cls, _cls(4, 0, 2))
    with pytest.raises(StoreError, match=r"no embedding for scan 'nope'"):
        store.cls_features(["s1", "nope"])


def test_newer_entries_and_failures_win_over_the_generation(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "s")
    for i in range(4):
        store.write(f"s{i}", _features(i))
    compact(tmp_path / "s")
    time.sleep(0.01)  # records are ordered by time
    store.write("s1", _features(11))  # re-embedded after the compaction
    store.write("s9", _features(9))  # new since
    store.record_failure("s2", None, "failed on re-run")
    table = store.cls_features()
    assert table.ids == ["s0", "s1", "s3", "s9"] == store.ids()
    np.testing.assert_array_equal(table.cls, _cls(0, 11, 3, 9))
    assert table.models == {"m1": 4}
    np.testing.assert_array_equal(store.cls_features(["s9", "s1", "s0"]).cls, _cls(9, 11, 0))
    # the probes' loader takes the bulk path and agrees with reading every scan in full
    fast = FeatureSet.from_store(tmp_path / "s", patches=False)
    full = FeatureSet.from_store(tmp_path / "s", patches=True)
    assert fast.ids == full.ids and fast.model_id == full.model_id == "m1"
    np.testing.assert_array_equal(fast.cls, full.cls)
    sub = FeatureSet.from_store(store, ["s3", "s1", "absent"], patches=False)
    assert sub.ids == ["s3", "s1"]
    np.testing.assert_array_equal(sub.cls, _cls(3, 11))


def test_uncompacted_store_reads_entries(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "s")
    for i in (2, 0, 1):
        store.write(f"s{i}", _features(i))
    table = store.cls_features()
    assert table.ids == ["s0", "s1", "s2"] and table.models == {"m1": 3}
    np.testing.assert_array_equal(table.cls, _cls(0, 1, 2))
    assert EmbeddingStore(tmp_path / "empty").cls_features().cls.shape == (0, 0)


def test_rows_of_an_unsorted_generation(tmp_path: Path) -> None:
    writer = GenerationWriter(tmp_path / "g", 3, 6, 0)
    for row, sid in enumerate(["b", "c", "a"]):  # written out of order
        f = _features(row)
        writer.add(row, {"scan_id": sid, "model_id": "m1", "time": 1.0}, f.cls, np.zeros((0, 6), np.float32),
                   patch=f.patch)
    writer.commit([], {"models": {"m1": 3}})
    cons = Consolidated.open(tmp_path / "g")
    assert cons.rows_of(["a", "b", "zz", "c", ""]).tolist() == [2, 0, -1, 1, -1]
    np.testing.assert_array_equal(EmbeddingStore(tmp_path / "g").cls_features(["a", "c"]).cls, _cls(2, 1))


def _assert_same_as_get(store: EmbeddingStore, ids: list[str]) -> None:
    bulk = store.patch_features(ids)
    assert bulk.ids == ids and bulk.cls.dtype == np.float32 and bulk.cls.shape[0] == len(ids)
    for i, sid in enumerate(ids):
        one = store.get(sid)
        np.testing.assert_array_equal(bulk.cls[i], one.cls.reshape(-1))
        assert bulk.patches[i].dtype == np.float32
        np.testing.assert_array_equal(bulk.patches[i], one.patch)
        assert bulk.patch_geometry[i].to_dict() == one.patch_geometry.to_dict()
        assert bulk.input_geometry[i].to_dict() == one.input_geometry.to_dict()
        assert bulk.model_ids[i] == one.model_id


def test_patch_features_equal_scan_by_scan_reads_across_packs_and_newer_entries(tmp_path: Path) -> None:
    grids = [(2, 3, 4), (1, 2, 2), (3, 1, 2)]
    store = EmbeddingStore(tmp_path / "s")
    for i in range(0, 10, 2):
        store.write(f"s{i}", _features(i, grids[i % 3]))
    compact(tmp_path / "s")  # pack 1: even ids
    for i in range(1, 10, 2):
        store.write(f"s{i}", _features(i, grids[i % 3]))
    compact(tmp_path / "s")  # pack 2: odd ids, interleaved with pack 1 in id order
    time.sleep(0.01)
    store.write("s4", _features(44, (2, 2, 2)))  # re-embedded after the compaction: its entry wins
    store.write("s10", _features(10))  # new since
    store = EmbeddingStore(tmp_path / "s")
    every = store.ids()
    assert len(every) == 11
    _assert_same_as_get(store, every)
    assert store.patch_features().ids == every
    _assert_same_as_get(store, ["s7", "s4", "s10", "s0", "s3", "s1"])  # any order, generation and entries mixed
    with pytest.raises(StoreError, match=r"no embedding for scan 'nope'"):
        store.patch_features(["s1", "nope"])
    # the probes' loader (bulk) gives what it gave reading scan by scan
    loaded = FeatureSet.from_store(tmp_path / "s", ["s3", "s4", "absent", "s10"], patches=True)
    assert loaded.ids == ["s3", "s4", "s10"] and loaded.model_id == "m1"
    np.testing.assert_array_equal(loaded.patches[1], _features(44, (2, 2, 2)).patch)
    np.testing.assert_array_equal(loaded.cls, _cls(3, 44, 10))


def test_patch_features_of_a_compacted_store_and_of_entries_only(tmp_path: Path) -> None:
    for name, compacted in (("c", True), ("e", False)):
        store = EmbeddingStore(tmp_path / name)
        for i in (3, 0, 2, 1):
            store.write(f"s{i}", _features(i, (1 + i % 2, 2, 3)))
        if compacted:
            compact(tmp_path / name)
            store = EmbeddingStore(tmp_path / name)
        _assert_same_as_get(store, store.ids())
        _assert_same_as_get(store, ["s2", "s0"])
    assert EmbeddingStore(tmp_path / "empty").patch_features().cls.shape == (0, 0)
