"""Store and retrieval at scale: a simulated cohort of ``--n`` scans (default 1,000,000, 864-d).

Stages, each timed (wall and CPU seconds) with the process's memory after it:

1. **entries** — a small run through the real write path (``EmbeddingStore.write``: one
   safetensors entry + one fsync'd manifest line per scan) and an in-place ``compact``, to give
   scans/s for both at ``--entry-n`` scans.
2. **ranks** — ``--ranks`` rank stores, each written directly as a consolidated generation
   (what ``voxelfm store compact`` of each rank's entries would produce; writing a million entry
   files through stage 1's path is what the consolidated layout exists to avoid). Every
   ``--grid-every``-th scan carries a small patch grid (1, 2, 2); the others none. ``--dups`` ids are
   written identically by two ranks (as a re-run after a crash would) and must be kept once.
3. **compact** — ``compact(OUT, ranks)``: merge, check duplicates and the one-model rule.
4. **cls_matrix** — ``EmbeddingStore(OUT).cls_matrix()``: must be one memory map; plus a patch grid
   looked up by id.
   **feature_set** — the probes' loader ``FeatureSet.from_store(patches=False)`` for every scan and
   for ``--label-ids`` of them, against the per-record way it read them before (same run).
   **patch_set** (``--patch-ids K``) — ``FeatureSet.from_store(patches=True)`` for K scans (CLS, patch
   grids, geometries): the bulk path against ``get()`` scan by scan as before (same run, results equal).
5. **index** — ``RetrievalIndex.build(kind=--index)`` over the memory-mapped CLS matrix.
6. **query** — single-query latency (one vector per call, FAISS on 1 thread and on all threads),
   and recall@10 against exact search for ``--queries`` new vectors (half fresh draws, half
   near-duplicates of indexed scans).

Vectors: a mixture of 2,000 Gaussian clusters (within-cluster spread ``--spread`` × the spread of
the centres; at 1 neighbouring clusters overlap) in a 64-d latent space mapped linearly to 864-d plus
isotropic noise (embeddings have a low intrinsic dimension; isotropic random 864-d vectors have no
neighbour structure at all), and 1 % planted near-duplicates (a copy of another scan + small
noise). Seeded: the same arguments give the same vectors.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_scale.py --n 1000000 --json scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MODEL_ID = "bench-scale-model"


def memory() -> dict[str, float]:
    """Current anonymous and file-backed resident memory and the peak RSS so far (GB)."""
    out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmRSS"):
                out[key] = int(value.split()[0]) / 2**20
    except OSError:
        pass
    return {k: round(v, 3) for k, v in out.items()}


class Stage:
    """Time a stage (wall + CPU) and record its memory."""

    def __init__(self, results: dict, name: str) -> None:
        self.results, self.name = results, name

    def __enter__(self) -> Stage:
        # the stage's own peaks: anonymous and file-backed resident memory sampled every 50 ms by a thread
        # (ru_maxrss is the whole process's peak so far, not this stage's)
        self.before = memory()
        self.peak = {"RssAnon": self.before.get("RssAnon", 0.0), "RssFile": self.before.get("RssFile", 0.0),
                     "VmRSS": self.before.get("VmRSS", 0.0)}
        self.stop = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def _sample(self) -> None:
        while not self.stop.wait(0.05):
            for key, value in memory().items():
                if key in self.peak:
                    self.peak[key] = max(self.peak[key], value)

    def __exit__(self, *exc: object) -> None:
        wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
        self.stop.set()
        self.sampler.join()
        end = memory()
        for key in self.peak:
            self.peak[key] = max(self.peak[key], end.get(key, 0.0))
        entry = self.results.setdefault(self.name, {})
        entry.update(wall_s=round(wall, 3), cpu_s=round(cpu, 3), **end,
                     stage_peak_gb={"anon": round(self.peak["RssAnon"], 3), "file": round(self.peak["RssFile"], 3),
                                    "rss": round(self.peak["VmRSS"], 3)},
                     stage_start_gb={"anon": self.before.get("RssAnon"), "file": self.before.get("RssFile")})
        print(f"[{self.name}] {json.dumps(entry)}", flush=True)


class Generator:
    """Seeded clustered vectors with planted near-duplicates, generated block by block."""

    def __init__(self, dim: int, seed: int, clusters: int = 2000, latent: int = 64, spread: float = 0.6) -> None:
        rng = np.random.default_rng(seed)
        self.seed, self.dim, self.latent, self.spread = seed, dim, latent, spread
        self.centres = rng.normal(size=(clusters, latent)).astype(np.float32)
        self.mix = (rng.normal(size=(latent, dim)) / np.sqrt(latent)).astype(np.float32)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        z = self.centres[rng.integers(0, len(self.centres), n)] + self.spread * rng.normal(size=(n, self.latent)).astype(np.float32)
        return (z @ self.mix + 0.15 * rng.normal(size=(n, self.dim)).astype(np.float32)).astype(np.float32)

    def block(self, start: int, n: int) -> np.ndarray:
        """Rows ``start .. start+n``; 1 % of them are near-duplicates of the row 7 before them."""
        rng = np.random.default_rng([self.seed, start])
        x = self.draw(n, rng)
        dup = np.flatnonzero(rng.random(n) < 0.01)
        dup = dup[dup >= 7]
        x[dup] = x[dup - 7] + 0.02 * rng.normal(size=(len(dup), self.dim)).astype(np.float32)
        return x


def scan_id(i: int) -> str:
    return f"scan{i:07d}"


def write_rank_stores(root: Path, n: int, ranks: int, dup_rows: np.ndarray, gen: Generator, block: int,
                      grid_every: int) -> None:
    """``ranks`` consolidated stores: rank r holds every ``ranks``-th scan from r (as ``--shard r/ranks``)
    plus the ``dup_rows`` of its neighbour rank. Vectors are generated once, block by block."""
    from voxelfm.embed.shards import GenerationWriter

    rank_rows = []
    for r in range(ranks):
        extra = dup_rows[dup_rows % ranks == (r + 1) % ranks]
        rank_rows.append(np.unique(np.concatenate([np.arange(r, n, ranks), extra])))
    writers = [GenerationWriter(root / f"rank{r}", len(rows), gen.dim, 0) for r, rows in enumerate(rank_rows)]
    done = [0] * ranks
    empty, no_grid = np.zeros((0, gen.dim), np.float32), np.zeros((0, 0, 0, gen.dim), np.float32)
    now = time.time()
    try:
        for start in range(0, n, block):
            x = gen.block(start, min(block, n - start))
            for r, rows in enumerate(rank_rows):
                for i in rows[(rows >= start) & (rows < start + block)].tolist():
                    v = x[i - start]
                    patch = np.broadcast_to(v, (1, 2, 2, gen.dim)) if i % grid_every == 0 else no_grid
                    record = {"scan_id": scan_id(i), "source": f"/archive/{scan_id(i)}", "status": "ok",
                              "model_id": MODEL_ID, "spec_fingerprint": "bench", "mode": "3d", "embed_dim": gen.dim,
                              "time": now}
                    writers[r].add(done[r], record, v, empty, patch=patch, meta={})
                    done[r] += 1
        for r, writer in enumerate(writers):
            writer.commit([], {"models": {MODEL_ID: int(len(rank_rows[r]))}, "sources": ["bench_scale"]})
    except BaseException:
        for writer in writers:
            writer.abort()
        raise


def bench_entries(root: Path, n: int, dim: int, results: dict) -> None:
    """Stage 1: the per-scan write path and an in-place compaction, at small scale."""
    from voxelfm.core import VoxelFeatures
    from voxelfm.embed import EmbeddingStore
    from voxelfm.embed.shards import compact

    rng = np.random.default_rng(1)
    store = EmbeddingStore(root / "entries_store")
    with Stage(results, "entries_write"):
        for i in range(n):
            v = rng.normal(size=dim).astype(np.float32)
            store.write(scan_id(i), VoxelFeatures(cls=v, patch=np.broadcast_to(v, (1, 2, 2, dim)).copy(),
                                                  registers=np.zeros((4, dim), np.float32), model_id=MODEL_ID))
    with Stage(results, "entries_compact"):
        report = compact(root / "entries_store")
    results["entries_write"]["scans_per_s"] = round(n / results["entries_write"]["wall_s"], 1)
    results["entries_compact"]["scans_per_s"] = round(n / results["entries_compact"]["wall_s"], 1)
    results["entries_compact"]["n"] = report.scans
    shutil.rmtree(root / "entries_store")


def per_record_cls(store, ids: list[str]) -> tuple[np.ndarray, set]:
    """``FeatureSet.from_store(patches=False)`` as it read CLS vectors before ``cls_features`` (kept
    here as the baseline): an id -> row look-up and a row copy per scan, then every record of the
    store parsed (``latest()``) for the one-model check."""
    cons = store.consolidated()
    live = store._live_latest()
    out = np.empty((len(ids), cons.dim), dtype=np.float32)
    for i, sid in enumerate(ids):
        row = cons.serves(sid, live.get(sid))
        out[i] = cons.cls[row] if row is not None else store.get(sid).cls.reshape(-1)
    latest = store.latest()
    return out, {latest.get(i, {}).get("model_id") for i in ids} - {None}


def bench_feature_set(root: Path, n: int, subset: int, seed: int, results: dict) -> None:
    """Stage 4b: CLS features of every scan (and of ``subset`` label ids) for the probes, per-record
    baseline against the bulk path, each from a freshly opened store (no warm id index)."""
    from voxelfm.embed import EmbeddingStore
    from voxelfm.probes.data import FeatureSet

    wanted = sorted(scan_id(int(i)) for i in np.random.default_rng(seed + 3).choice(n, size=min(subset, n), replace=False))
    for label, ids in (("all", None), (f"subset_{len(wanted)}", wanted)):
        store = EmbeddingStore(root / "out")
        with Stage(results, f"feature_set_{label}_per_record"):
            old, models = per_record_cls(store, list(store.ids()) if ids is None else ids)
        assert models == {MODEL_ID}
        with Stage(results, f"feature_set_{label}_bulk"):
            feats = FeatureSet.from_store(root / "out", ids, patches=False)
        assert feats.model_id == MODEL_ID and len(feats) == len(old)
        np.testing.assert_array_equal(feats.cls[:: max(1, len(old) // 1000)], old[:: max(1, len(old) // 1000)])
        base, bulk = results[f"feature_set_{label}_per_record"], results[f"feature_set_{label}_bulk"]
        bulk.update(n=len(feats), memmap=isinstance(feats.cls, np.memmap) or isinstance(feats.cls.base, np.memmap),
                    cpu_speedup=round(base["cpu_s"] / max(bulk["cpu_s"], 1e-3), 1))
        del old, feats


def per_scan_patches(store, ids: list[str]) -> tuple[np.ndarray, list[np.ndarray], set]:
    """``FeatureSet.from_store(patches=True)`` as it read scans before ``patch_features`` (kept here
    as the baseline): ``store.get`` scan by scan (manifest stamps, one record read, every array
    copied, per call)."""
    rows, grids, models = [], [], set()
    for sid in ids:
        f = store.get(sid)
        rows.append(np.asarray(f.cls, dtype=np.float32).reshape(-1))
        grids.append(np.asarray(f.patch, dtype=np.float32))
        models.add(f.model_id)
    return np.stack(rows), grids, models


def bench_patch_set(root: Path, n: int, subset: int, seed: int, results: dict) -> None:
    """Stage 4c: CLS + patch grids + geometries of ``subset`` scans (``FeatureSet.from_store(patches=True)``),
    scan by scan against the bulk path, each from a freshly opened store; results compared."""
    from voxelfm.embed import EmbeddingStore
    from voxelfm.probes.data import FeatureSet

    ids = sorted(scan_id(int(i)) for i in np.random.default_rng(seed + 4).choice(n, size=min(subset, n), replace=False))
    store = EmbeddingStore(root / "out")
    with Stage(results, "patch_set_per_scan"):
        old_cls, old_grids, models = per_scan_patches(store, ids)
    assert models == {MODEL_ID}
    with Stage(results, "patch_set_bulk"):
        feats = FeatureSet.from_store(root / "out", ids, patches=True)
    assert feats.ids == ids and feats.model_id == MODEL_ID
    np.testing.assert_array_equal(feats.cls, old_cls)
    assert all(np.array_equal(a, b) for a, b in zip(feats.patches, old_grids, strict=True))
    base, bulk = results["patch_set_per_scan"], results["patch_set_bulk"]
    bulk.update(n=len(ids), grids=sum(int(g.size > 0) for g in old_grids), identical=True,
                cpu_speedup=round(base["cpu_s"] / max(bulk["cpu_s"], 1e-3), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=864)
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--dups", type=int, default=1000, help="ids written (identically) by two ranks")
    parser.add_argument("--grid-every", type=int, default=100)
    parser.add_argument("--entry-n", type=int, default=1000, help="scans for the per-scan write-path stage (0: skip)")
    parser.add_argument("--index", default="auto", choices=["flat", "ivf", "hnsw", "auto"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--block", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spread", type=float, default=0.6,
                        help="within-cluster spread relative to the spread of cluster centres (1: clusters overlap)")
    parser.add_argument("--label-ids", type=int, default=100_000, help="ids of the subset read by FeatureSet.from_store")
    parser.add_argument("--patch-ids", type=int, default=0,
                        help="also read this many scans with their patch grids (FeatureSet.from_store(patches=True)), "
                             "scan by scan against the bulk path (0: skip)")
    parser.add_argument("--no-index", action="store_true", help="stop after the store stages (no index, no queries)")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one, removed)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import faiss

    from voxelfm.embed import EmbeddingStore
    from voxelfm.embed.shards import compact
    from voxelfm.probes.retrieval import RetrievalIndex, exact_neighbours, recall_at_k

    root = Path(tempfile.mkdtemp(prefix="bench_scale_")) if args.dir is None else args.dir
    root.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(),
                     "faiss_threads": faiss.omp_get_max_threads()}
    gen = Generator(args.dim, args.seed, spread=args.spread)
    try:
        if args.entry_n:
            bench_entries(root, args.entry_n, args.dim, results)
        # 2. rank stores (shard i/n takes every n-th scan) plus duplicated ids
        dup_rows = np.random.default_rng(args.seed + 5).choice(args.n, size=min(args.dups, args.n), replace=False)
        with Stage(results, "ranks_write"):
            write_rank_stores(root, args.n, args.ranks, dup_rows, gen, args.block, args.grid_every)
        # 3. merge
        with Stage(results, "compact"):
            report = compact(root / "out", [root / f"rank{r}" for r in range(args.ranks)])
        results["compact"].update(scans=report.scans, identical_duplicates=report.identical_duplicates,
                                  scans_per_s=round(report.scans / results["compact"]["wall_s"], 1))
        assert report.scans == args.n and report.identical_duplicates == len(dup_rows), report
        for r in range(args.ranks):
            shutil.rmtree(root / f"rank{r}")  # free the disk; OUT's packs are hard links
        # 4. the CLS matrix: one memory map
        with Stage(results, "cls_matrix"):
            store = EmbeddingStore(root / "out")
            ids, matrix = store.cls_matrix()
        results["cls_matrix"].update(n=len(ids), memmap=isinstance(matrix, np.memmap), shape=list(matrix.shape))
        probe = (args.n // args.grid_every // 2) * args.grid_every
        t0 = time.perf_counter()
        feats = store.get(scan_id(probe))
        results["cls_matrix"]["get_one_scan_s"] = round(time.perf_counter() - t0, 4)
        assert feats.patch.shape == (1, 2, 2, args.dim)
        start = probe - probe % args.block
        np.testing.assert_array_equal(feats.cls, gen.block(start, min(args.block, args.n - start))[probe - start])
        # 4b. probe features: the CLS matrix and the one-model check, per record vs in bulk
        bench_feature_set(root, args.n, args.label_ids, args.seed, results)
        if args.patch_ids:
            bench_patch_set(root, args.n, args.patch_ids, args.seed, results)
        if args.no_index:
            return _finish(results, args, root)
        # 5. index
        with Stage(results, "index_build"):
            index = RetrievalIndex.build(ids, matrix, kind=args.index, model_id=MODEL_ID)
        results["index_build"].update(kind=index.kind, stats=index.stats)
        # 6. queries: fresh draws and near-duplicates of indexed scans
        rng = np.random.default_rng(args.seed + 9)
        half = args.queries // 2
        near = matrix[np.sort(rng.choice(args.n, size=args.queries - half, replace=False))]
        queries = np.concatenate([gen.draw(half, rng), near + 0.05 * rng.normal(size=near.shape).astype(np.float32)])
        with Stage(results, "exact_search"):
            exact = exact_neighbours(matrix, queries, 10)
        rows = {sid: i for i, sid in enumerate(ids)}
        found = np.array([[rows[h[0]] for h in hits] + [-1] * (10 - len(hits)) for hits in index.search(queries, 10)])
        results["recall_at_10_vs_exact"] = {
            "all": round(recall_at_k(found, exact), 4), "fresh": round(recall_at_k(found[:half], exact[:half]), 4),
            "near_duplicates": round(recall_at_k(found[half:], exact[half:]), 4)}
        print(f"[recall] {json.dumps(results['recall_at_10_vs_exact'])}", flush=True)
        lat_q = gen.draw(args.latency_queries, np.random.default_rng(args.seed + 11))
        for threads in (1, faiss.omp_get_max_threads()):
            faiss.omp_set_num_threads(threads)
            times = []
            for q in lat_q:
                t0 = time.perf_counter()
                index.search(q[None], 10)
                times.append(time.perf_counter() - t0)
            ms = np.asarray(times[10:]) * 1e3  # the first calls warm caches
            results[f"latency_ms_{threads}_threads"] = {"median": round(float(np.median(ms)), 3),
                                                        "p95": round(float(np.percentile(ms, 95)), 3)}
            print(f"[latency {threads} threads] {json.dumps(results[f'latency_ms_{threads}_threads'])}", flush=True)
        index.save(root / "index")
        results["index_bytes"] = sum(p.stat().st_size for p in (root / "index").iterdir())
        _finish(results, args, root)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


def _finish(results: dict, args: argparse.Namespace, root: Path) -> None:
    results["store_bytes"] = sum(p.stat().st_size for p in (root / "out").rglob("*") if p.is_file())
    results["final_memory"] = memory()
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
