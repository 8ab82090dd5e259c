"""Approximate retrieval indexes (IVF, HNSW, auto) and building them from a compacted store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from voxelfm.core.errors import ConfigError, DataError
from voxelfm.probes.retrieval import RetrievalIndex, exact_neighbours, recall_at_k


def _clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, d))
    return (centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, d))).astype(np.float32)


def test_exact_neighbours_blockwise_equal_brute_force(monkeypatch) -> None:
    from voxelfm.probes import retrieval

    monkeypatch.setattr(retrieval, "_CHUNK", 64)  # several blocks
    x = _clustered(300)
    q = x[:5] + 0.01
    found = exact_neighbours(x, q, 7)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    np.testing.assert_array_equal(found, np.argsort(-(qn @ xn.T), axis=1)[:, :7])
    assert recall_at_k(found, found) == 1.0 and recall_at_k(found[:, ::-1][:, :3], found[:, :6]) == pytest.approx(2 / 6)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_reaches_its_recall_and_round_trips(kind: str, tmp_path: Path) -> None:
    x = _clustered(3000)
    ids = [f"s{i}" for i in range(len(x))]
    index = RetrievalIndex.build(ids, x, kind=kind, target_recall=0.95, n_check=100)
    assert index.kind == kind and index.stats["recall_at_10_vs_exact"] >= 0.95
    # the recall it reports is what an independent check measures
    queries = x[:50] + 0.05 * np.random.default_rng(1).normal(size=(50, x.shape[1])).astype(np.float32)
    exact = exact_neighbours(x, queries, 10)
    got = index.search(queries, 10)
    rows = np.array([[int(h[0][1:]) for h in hits] for hits in got])
    assert recall_at_k(rows, exact) >= 0.9
    index.save(tmp_path / "idx")
    back = RetrievalIndex.load(tmp_path / "idx")
    assert back.kind == kind and back.stats == index.stats
    assert back.search(queries[:3], 5) == index.search(queries[:3], 5)
    np.testing.assert_allclose(back.vector("s9"), x[9] / np.linalg.norm(x[9]), atol=1e-5)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["kind"] == kind and "recall_at_10_vs_exact" in meta["stats"]


def test_auto_is_flat_for_small_collections_and_unknown_kinds_are_refused() -> None:
    x = _clustered(200)
    assert RetrievalIndex.build([str(i) for i in range(200)], x, kind="auto").kind == "flat"
    with pytest.raises(DataError, match="unknown index kind 'lsh'"):
        RetrievalIndex.build([str(i) for i in range(200)], x, kind="lsh")


def test_cli_builds_an_ivf_index_from_a_compacted_store(tmp_path: Path) -> None:
    from voxelfm.cli.main import app
    from voxelfm.core import VoxelFeatures
    from voxelfm.embed import EmbeddingStore
    from voxelfm.embed.shards import compact

    x = _clustered(200, d=16)
    store = EmbeddingStore(tmp_path / "store")
    for i, v in enumerate(x):
        store.write(f"s{i:04d}", VoxelFeatures(cls=v, patch=np.tile(v, (1, 1, 2, 1)), registers=np.zeros((0, 16), np.float32),
                                               model_id="m", mode="3d"))
    compact(tmp_path / "store")
    runner = CliRunner()
    res = runner.invoke(app, ["retrieve", "build", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "idx"),
                              "--index", "ivf", "--feature", "mean_patch"])
    assert res.exit_code == 0, res.output
    assert "200 scans (mean_patch, 16 dims, ivf)" in res.output and "recall@10 vs exact search" in res.output
    index = RetrievalIndex.load(tmp_path / "idx")
    assert index.model_id == "m" and index.ids[:2] == ["s0000", "s0001"]
    res = runner.invoke(app, ["retrieve", "query", "--index", str(tmp_path / "idx"), "--id", "s0003", "--k", "3", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)["s0003"]) == 3
    bad = runner.invoke(app, ["retrieve", "build", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "x"),
                              "--index", "lsh"])
    assert bad.exit_code == 1 and "--index must be one of" in bad.output


def test_query_threads_sets_faiss_threads_for_the_search_only(tmp_path: Path, monkeypatch) -> None:
    import faiss

    from voxelfm.cli.main import app
    from voxelfm.probes.retrieval import search_threads

    x = _clustered(60, d=8)
    RetrievalIndex.build([f"s{i:03d}" for i in range(60)], x, kind="flat").save(tmp_path / "idx")
    before = faiss.omp_get_max_threads()
    seen: list[int] = []
    search = RetrievalIndex.search

    def spy(self, *args, **kwargs):  # the thread count FAISS runs the query with
        seen.append(faiss.omp_get_max_threads())
        return search(self, *args, **kwargs)

    monkeypatch.setattr(RetrievalIndex, "search", spy)
    runner = CliRunner()
    query = ["retrieve", "query", "--index", str(tmp_path / "idx"), "--id", "s007", "--k", "4", "--json"]
    one = runner.invoke(app, [*query, "--threads", "1"])
    default = runner.invoke(app, query)
    assert one.exit_code == 0 == default.exit_code, one.output + default.output
    assert seen == [1, before] and faiss.omp_get_max_threads() == before  # restored after the query
    assert json.loads(one.output) == json.loads(default.output)
    bad = runner.invoke(app, [*query, "--threads", "0"])
    assert bad.exit_code == 1 and "--threads must be >= 1, got 0" in bad.output
    with pytest.raises(ConfigError, match="threads must be >= 1"), search_threads(-2):
        pass
