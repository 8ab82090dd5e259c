"""Instance retrieval with a FAISS inner-product index over L2-normalised vectors (cosine).

:class:`RetrievalIndex` is built once from a store (CLS or mean-pooled patch tokens), saved to a
directory (``index.faiss`` + ``index.json`` with ids and provenance) and queried later
(``voxelfm retrieve build|query``). :func:`fit` runs the evaluation protocols on one split: the
CT-RATE label-match protocol (§4.5; one positive vs 99 random negatives, per label and macro) and
same-patient retrieval (other scans of the query's patient are relevant).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxelfm.core.atomic import atomic_save, atomic_write_text
from voxelfm.core.errors import DataError, StoreError, located
from voxelfm.metrics.retrieval import label_match_trials, ranking_metrics, same_patient_retrieval
from voxelfm.probes.config import ProbeConfig
from voxelfm.probes.data import FeatureSet, ProbeData
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


@dataclass
class RetrievalIndex:
    """A FAISS ``IndexFlatIP`` over L2-normalised vectors with the scan id of every row."""

    index: Any
    ids: list[str]
    feature: str = "cls"
    model_id: str | None = None

    @classmethod
    def build(cls, ids: Sequence[str], vectors: np.ndarray, *, feature: str = "cls", model_id: str | None = None) -> RetrievalIndex:
        import faiss

        v = _normalise(vectors)
        if len(ids) != len(v):
            raise DataError(f"{len(ids)} ids for {len(v)} vectors")
        index = faiss.IndexFlatIP(v.shape[1])
        index.add(v)
        return cls(index, [str(i) for i in ids], feature, model_id)

    @classmethod
    def from_features(cls, features: FeatureSet, feature: str = "cls") -> RetrievalIndex:
        return cls.build(features.ids, feature_vectors(features, feature), feature=feature, model_id=features.model_id)

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
                "metric": "cosine (inner product of L2-normalised vectors)"}
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
        return cls(index, list(meta["ids"]), meta.get("feature", "cls"), meta.get("model_id"))

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
        try:
            row = self.ids.index(scan_id)
        except ValueError:
            raise StoreError(f"scan {scan_id!r} is not in the index") from None
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


def _prefixed(prefix: str, fn):
    if not prefix:
        return fn
    return lambda *a: {f"{prefix}{k}": v for k, v in fn(*a).items()}


__all__ = ["RetrievalIndex", "feature_vectors", "fit"]
