"""Instance retrieval with a FAISS inner-product index over L2-normalised vectors (cosine).

:class:`RetrievalIndex` is built once from a store (CLS or mean-pooled patch tokens), saved to a
directory (``index.faiss`` + ``index.json`` with ids and provenance) and queried later
(``voxelfm retrieve build|query``). :func:`fit` runs the evaluation protocols on one split: the
CT-RATE label-match protocol (docs/original.md §4.5; one positive vs 99 random negatives, per label and macro) and
same-patient retrieval (other scans of the query's patient are relevant).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.core.atomic import atomic_save, atomic_write_text
from voxelfm.core.errors import ConfigError, DataError, StoreError, located
from voxelfm.metrics.retrieval import label_match_trials, ranking_metrics, same_patient_retrieval
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import FeatureSet, ProbeData, read_labels
from voxelfm.probes.tasks.common import TaskOutput, binary_column

INDEX_FILE = "index.faiss"
META_FILE = "index.json"


def _normalise(vectors: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if v.ndim != 2:
        raise DataError(f"retrieval vectors must be (N, C); got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-8))


def feature_vectors(features: FeatureSet, feature: str = "cls") -> np.ndarray:
    """(N, C) vectors to index: CLS tokens or mean-pooled patch tokens."""
    if feature == "cls":
        return features.cls
    if feature == "mean_patch":
        return features.mean_patch()
    raise DataError(f"unknown retrieval feature {feature!r} (use 'cls' or 'mean_patch')")


#: Above this many vectors ``kind="auto"`` builds an approximate (IVF) index instead of a flat one.
AUTO_FLAT_MAX = 100_000
INDEX_KINDS = ("flat", "ivf", "hnsw", "auto")
_CHUNK = 65_536


def _normalised_chunks(vectors: np.ndarray) -> Any:
    """L2-normalised float32 row blocks of ``vectors`` (which may be a memory map): no full copy."""
    from voxelfm.embed.shards import release_pages

    for start in range(0, len(vectors), _CHUNK):
        block = _normalise(vectors[start:start + _CHUNK])
        release_pages(vectors)  # a memory map's pages would otherwise stay resident: ~3.5 GB at 1M × 864
        yield block


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the exact top-``k`` cosine neighbours of each query (blockwise, no full copy)."""
    q = _normalise(queries)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    offset = 0
    for block in _normalised_chunks(vectors):
        scores = q @ block.T
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        best_s = np.concatenate([best_s, np.take_along_axis(scores, part, axis=1)], axis=1)
        best_i = np.concatenate([best_i, part + offset], axis=1)
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, axis=1), np.take_along_axis(best_i, keep, axis=1)
        offset += len(block)
    return best_i


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k (recall@k against exact search)."""
    k = exact.shape[1]
    scores = []
    for f, e in zip(found, exact, strict=True):
        truth = set(e.tolist()) - {-1}
        if truth:
            scores.append(len(set(f[:k].tolist()) & truth) / len(truth))
    return float(np.mean(scores)) if scores else 1.0


def _drop_self(found: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each row's neighbour list without the row itself, cut to ``k`` (padded with -1)."""
    out = np.full((len(found), k), -1, dtype=np.int64)
    for i, (hits, row) in enumerate(zip(found, rows, strict=True)):
        kept = [h for h in hits.tolist() if h != row][:k]
        out[i, :len(kept)] = kept
    return out


@contextlib.contextmanager
def search_threads(threads: int | None) -> Iterator[None]:
    """Run FAISS with ``threads`` OpenMP threads inside the block (``None``: FAISS's default, one per core).

    One thread answers single queries fastest on a busy machine: OpenMP hand-offs between cores
    cost more than the search itself (benchmarks/README.md, store and retrieval at scale).
    """
    if threads is None:
        yield
        return
    if int(threads) < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _ivf_lists(n: int) -> int:
    # ~sqrt(N) lists (each scanned list holds ~sqrt(N) vectors); FAISS wants >= 39 training points per list
    return int(min(max(16, 2 ** round(np.log2(max(np.sqrt(n), 1.0)))), max(16, n // 39)))


def store_vectors(store_path: str | os.PathLike[str], feature: str = "cls", ids: Sequence[str] | None = None
                  ) -> tuple[list[str], np.ndarray, str | None] | None:
    """``(ids, vectors, model_id)`` straight from a compacted store's memory maps (CLS or pooled patch),
    or ``None`` when the store has records newer than its consolidated generation (read it the usual way)."""
    from voxelfm.embed.store import EmbeddingStore

    path = Path(store_path)
    if not path.is_dir():
        raise StoreError(located(path, "embedding store does not exist"))
    store = EmbeddingStore(path)
    cons = store.consolidated()
    if cons is None or store._live_latest():
        return None
    if feature not in ("cls", "mean_patch"):
        raise DataError(f"unknown retrieval feature {feature!r} (use 'cls' or 'mean_patch')")
    models = cons.info.get("models") or {}
    if len(models) > 1:
        raise StoreError(located(path, f"entries come from several models: {sorted(models)}"))
    matrix = cons.array(feature)
    if ids is None:
        return list(cons.ids), matrix, next(iter(models), None)
    rows = cons.rows_of([str(i) for i in ids])
    rows = rows[rows >= 0]
    if not len(rows):
        raise StoreError(located(path, f"none of the {len(ids)} requested ids are in the store"))
    return [cons.ids[r] for r in rows.tolist()], np.asarray(matrix[rows]), next(iter(models), None)


@dataclass
class RetrievalIndex:
    """A FAISS inner-product index over L2-normalised vectors with the scan id of every row.

    ``kind``: ``flat`` (exact), ``ivf`` (inverted lists over k-means cells with 8-bit scalar
    quantised vectors, trained on a sample), ``hnsw`` (a graph over the full vectors), or
    ``auto`` (flat up to :data:`AUTO_FLAT_MAX` vectors, ivf above). For approximate kinds the
    search breadth (``nprobe`` / ``efSearch``) is the smallest that reaches ``target_recall``
    recall@10 against exact search on a sample of indexed vectors; the reached recall is kept in
    ``stats`` and in ``index.json``.
    """

    index: Any
    ids: list[str]
    feature: str = "cls"
    model_id: str | None = None
    kind: str = "flat"
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, ids: Sequence[str], vectors: np.ndarray, *, feature: str = "cls", model_id: str | None = None,
              kind: str = "flat", target_recall: float = 0.97, seed: int = 0, n_check: int = 200) -> RetrievalIndex:
        import faiss

        if kind not in INDEX_KINDS:
            raise DataError(f"unknown index kind {kind!r} (use one of {', '.join(INDEX_KINDS)})")
        if getattr(vectors, "ndim", 0) != 2:
            raise DataError(f"retrieval vectors must be (N, C); got shape {np.shape(vectors)}")
        n, dim = vectors.shape
        if len(ids) != n:
            raise DataError(f"{len(ids)} ids for {n} vectors")
        if kind == "auto":
            kind = "flat" if n <= AUTO_FLAT_MAX else "ivf"
        rng = np.random.default_rng(seed)
        stats: dict[str, Any] = {"n": int(n), "dim": int(dim)}
        t0 = time.perf_counter()
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            nlist = _ivf_lists(n)
            # 8-bit codes find a shortlist fast; the full vectors re-rank it exactly (RFlat), so
            # near-ties among the top 10 are ordered as exact search orders them
            index = faiss.index_factory(dim, f"IVF{nlist},SQ8,RFlat", faiss.METRIC_INNER_PRODUCT)
            index.k_factor = 4
            sample = np.sort(rng.choice(n, size=min(n, max(50 * nlist, 20_000)), replace=False))
            index.train(_normalise(vectors[sample]))
            stats.update(nlist=nlist, train_sample=int(len(sample)))
        else:
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            stats.update(M=32, efConstruction=80)
        for block in _normalised_chunks(vectors):
            index.add(block)
        stats["build_seconds"] = round(time.perf_counter() - t0, 3)
        out = cls(index, [str(i) for i in ids], feature, model_id, kind, stats)
        if kind != "flat":
            out._tune(vectors, rng, target_recall, n_check)
        return out

    def _tune(self, vectors: np.ndarray, rng: np.random.Generator, target: float, n_check: int) -> None:
        """Pick the smallest search breadth whose recall@10 against exact search reaches ``target``."""
        n = len(vectors)
        rows = np.sort(rng.choice(n, size=min(n, n_check), replace=False))
        queries = _normalise(vectors[rows])
        k = min(10, n - 1)
        # the query's own row is a trivial hit: recall counts its 10 other exact neighbours
        exact = _drop_self(exact_neighbours(vectors, queries, k + 1), rows, k)
        name = "nprobe" if self.kind == "ivf" else "efSearch"
        limit = self.stats.get("nlist", 4096) if self.kind == "ivf" else 4096
        value, recall = 1 if self.kind == "ivf" else 16, 0.0
        while True:
            self._set_breadth(value)
            recall = recall_at_k(_drop_self(self.index.search(queries, k + 1)[1], rows, k), exact)
            if recall >= target or value >= limit:
                break
            value = min(value * 2, limit)
        self.stats.update({name: int(value), "recall_at_10_vs_exact": round(recall, 4),
                           "recall_queries": int(len(rows)), "target_recall": target})

    def _set_breadth(self, value: int) -> None:
        import faiss

        if self.kind == "ivf":
            faiss.extract_index_ivf(self.index).nprobe = int(value)
        elif self.kind == "hnsw":
            self.index.hnsw.efSearch = int(value)

    @classmethod
    def from_features(cls, features: FeatureSet, feature: str = "cls", *, kind: str = "flat") -> RetrievalIndex:
        return cls.build(features.ids, feature_vectors(features, feature), feature=feature, model_id=features.model_id,
                         kind=kind)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def save(self, directory: str | os.PathLike[str]) -> Path:
        import faiss

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        atomic_save(out / INDEX_FILE, lambda tmp: faiss.write_index(self.index, str(tmp)))
        meta = {"ids": self.ids, "feature": self.feature, "model_id": self.model_id, "dim": self.dim,
                "metric": "cosine (inner product of L2-normalised vectors)", "kind": self.kind, "stats": self.stats}
        atomic_write_text(out / META_FILE, json.dumps(meta, indent=1))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> RetrievalIndex:
        import faiss

        root = Path(directory)
        if not (root / INDEX_FILE).is_file() or not (root / META_FILE).is_file():
            raise StoreError(located(root, f"not a retrieval index (needs {INDEX_FILE} and {META_FILE})"))
        try:
            meta = json.loads((root / META_FILE).read_text())
            index = faiss.read_index(str(root / INDEX_FILE))
        except (json.JSONDecodeError, RuntimeError) as exc:
            raise StoreError(located(root, f"unreadable retrieval index ({exc})")) from None
        if index.ntotal != len(meta["ids"]):
            raise StoreError(located(root, f"index holds {index.ntotal} vectors but {len(meta['ids'])} ids"))
        out = cls(index, list(meta["ids"]), meta.get("feature", "cls"), meta.get("model_id"), meta.get("kind", "flat"),
                  meta.get("stats") or {})
        breadth = out.stats.get("nprobe", out.stats.get("efSearch"))
        if breadth:
            out._set_breadth(int(breadth))  # the tuned search breadth, whatever FAISS serialised
        return out

    def search(self, vectors: np.ndarray, k: int = 10, *, exclude: Sequence[str | None] | None = None
               ) -> list[list[tuple[str, float]]]:
        """Top-``k`` ``(scan_id, cosine)`` per query; ``exclude[i]`` drops that id from query i's list."""
        q = _normalise(vectors)
        if q.shape[1] != self.dim:
            raise DataError(f"query vectors have {q.shape[1]} dims; the index has {self.dim}")
        extra = 1 if exclude is not None else 0
        scores, rows = self.index.search(q, min(len(self), k + extra))
        out = []
        for i in range(len(q)):
            hits = [(self.ids[r], float(s)) for r, s in zip(rows[i], scores[i], strict=True) if r >= 0]
            if exclude is not None and exclude[i] is not None:
                hits = [h for h in hits if h[0] != exclude[i]]
            out.append(hits[:k])
        return out

    def vector(self, scan_id: str) -> np.ndarray:
        """The stored (normalised) vector of one indexed scan."""
        if getattr(self, "_rows", None) is None or len(self._rows) != len(self.ids):
            self._rows = {sid: i for i, sid in enumerate(self.ids)}
        row = self._rows.get(scan_id)
        if row is None:
            raise StoreError(f"scan {scan_id!r} is not in the index")
        return self.index.reconstruct(row)

    def similarity_matrix(self) -> np.ndarray:
        """(N, N) cosine similarities of all indexed scans, in index order (exhaustive FAISS search)."""
        n = len(self)
        scores, rows = self.index.search(self.index.reconstruct_n(0, n), n)
        sim = np.empty((n, n), dtype=np.float64)
        np.put_along_axis(sim, rows.astype(np.int64), scores.astype(np.float64), axis=1)
        return sim


def _label_match_fn(names: list[str], ks: Sequence[int]):
    def fn(label_idx: np.ndarray, ranks: np.ndarray) -> dict[str, float]:
        counts = np.bincount(label_idx, minlength=len(names)).astype(np.float64)
        present = counts > 0
        if not present.any():
            raise ValueError("no trials")
        out: dict[str, float] = {}
        for metric, values in [(f"recall@{k}", (ranks <= k).astype(np.float64)) for k in ks] + [("map", 1.0 / ranks)]:
            per = np.bincount(label_idx, weights=values, minlength=len(names))[present] / counts[present]
            for name, v in zip(np.asarray(names)[present], per, strict=True):
                out[f"{name}/{metric}"] = float(v)
            out[f"macro/{metric}"] = float(per.mean())
        return out

    return fn


def fit(data: ProbeData, targets: list[str], config: ProbeConfig) -> TaskOutput:
    """Retrieval on ``config.retrieval_split``: label match for ``targets``, same patient if possible."""
    rows = data.rows(config.retrieval_split)
    if len(rows) < 3:
        raise DataError(f"retrieval needs at least 3 scans in the {config.retrieval_split} split, got {len(rows)}")
    feats = data.features.subset([data.ids[r] for r in rows])
    index = RetrievalIndex.from_features(feats, config.feature)
    sim = index.similarity_matrix()
    ks = list(config.retrieval_ks)
    evaluations = []
    used_labels = []
    label_idx, ranks, trial_ids = [], [], []
    for j, t in enumerate(targets):
        has = binary_column(data, t)[rows].astype(bool)
        try:
            r = label_match_trials(sim, has, n_negatives=config.n_negatives, seed=config.bootstrap_seed + j)
        except ValueError:
            continue  # fewer than two positives or no negative: the label cannot be evaluated
        used_labels.append(t)
        label_idx.append(np.full(len(r), len(used_labels) - 1))
        ranks.append(r)
        trial_ids += [f"{t}#{i}" for i in range(len(r))]
    if used_labels:
        evaluations.append(("", _label_match_fn(used_labels, ks), trial_ids,
                            (np.concatenate(label_idx), np.concatenate(ranks))))
    if config.patient_column in data.labels.columns:
        pid = data.labels[config.patient_column].astype(str).to_numpy()[rows]
        try:
            pr, ap = same_patient_retrieval(sim, pid)
            query_ids = [feats.ids[i] for i in range(len(pid)) if (pid == pid[i]).sum() > 1]
            evaluations.append(("same_patient/", lambda r, a: ranking_metrics(r, a, ks), query_ids, (pr, ap)))
        except ValueError:
            pass
    if not evaluations:
        raise DataError(f"nothing to evaluate for retrieval: no label in {targets} has two positives and a negative "
                        f"in the {config.retrieval_split} split, and no patient has two scans")
    neighbours = index.search(index.index.reconstruct_n(0, len(index)), max(ks), exclude=index.ids)
    import pandas as pd

    preds = pd.DataFrame({
        "scan_id": index.ids, "split": config.retrieval_split,
        "neighbours": [";".join(h[0] for h in hits) for hits in neighbours],
        "similarities": [";".join(f"{h[1]:.4f}" for h in hits) for hits in neighbours],
    })
    first = evaluations[0]
    out = TaskOutput(predictions=preds, metric_fn=_prefixed(first[0], first[1]), eval_ids=first[2], eval_arrays=first[3],
                     extras={"labels": used_labels, "index": index})
    out.more_evaluations = [(p, f, i, a) for p, f, i, a in evaluations[1:]]
    return out


def read_neighbours(predictions: Any) -> dict[str, list[tuple[str, float]]]:
    """Each query's neighbours in retrieval predictions, nearest first, as ``(scan_id, similarity)``.

    The inverse of the ``neighbours`` / ``similarities`` columns (``;``-joined so the predictions
    stay one CSV row per query); a query without neighbours (an empty or missing cell) gets ``[]``.
    """
    out: dict[str, list[tuple[str, float]]] = {}
    for query, ids, sims in zip(predictions["scan_id"], predictions["neighbours"], predictions["similarities"],
                                strict=True):
        hits = ids.split(";") if isinstance(ids, str) and ids else []
        out[str(query)] = list(zip(hits, map(float, str(sims).split(";")), strict=True)) if hits else []
    return out


def neighbour_examples(predictions: Any, labels: Any, targets: Sequence[str], *, n: int,
                       k: int = 5) -> list[dict[str, Any]]:
    """Up to ``n`` queries with at least one positive target and their ``k`` nearest neighbours
    (:func:`read_neighbours`), each marked ``match`` when it shares a positive target with the query
    (the label-match criterion of the retrieval metric) and ``same_patient``."""
    table = read_labels(labels)

    def present(scan_id: str) -> set[str]:
        return {t for t in targets if int(table.loc[scan_id, t]) == 1}

    def patient(scan_id: str) -> str:
        return str(table.loc[scan_id, "patient_id"]) if "patient_id" in table.columns else scan_id

    out: list[dict[str, Any]] = []
    for query, hits in read_neighbours(predictions).items():
        if len(out) >= n:
            break
        if present(query) and hits:
            out.append({"query": query, "neighbours": [
                {"scan_id": sid, "similarity": sim, "match": bool(present(query) & present(sid)),
                 "same_patient": patient(sid) == patient(query)} for sid, sim in hits[:k]]})
    return out


def _prefixed(prefix: str, fn):
    if not prefix:
        return fn
    return lambda *a: {f"{prefix}{k}": v for k, v in fn(*a).items()}


__all__ = ["INDEX_KINDS", "RetrievalIndex", "exact_neighbours", "feature_vectors", "fit", "neighbour_examples", "read_neighbours",
           "recall_at_k", "search_threads"]
