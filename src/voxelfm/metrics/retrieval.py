"""Retrieval metrics: Recall@K and average precision from rankings, and the CT-RATE protocol.

``label_match_trials`` implements the label-match protocol of docs/original.md §4.5: for a label L, every ordered
pair (query q, target t) of distinct volumes that both carry L is one trial; the target is ranked
against 99 negatives (volumes without L) drawn uniformly without replacement; a stable descending
sort places the target before negatives of equal similarity. Only the number of drawn negatives
that beat the target matters, and that count is hypergeometric (population = all negatives,
successes = negatives more similar than the target, draws = 99), so each trial is simulated
exactly in distribution with one seeded hypergeometric draw instead of materialising 100-item
pools. Recall@K = P(rank <= K); AP of a one-positive pool = 1 / rank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxelfm.core.errors import InputValidationError


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of queries whose first relevant item has 1-based rank <= k."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no ranks")
    return float(np.mean(r <= k))


def average_precision_from_relevance(relevance: np.ndarray) -> float:
    """AP of one ranked list given its 0/1 relevance in ranked order (all relevant items listed)."""
    rel = np.asarray(relevance, dtype=bool)
    n_rel = int(rel.sum())
    if n_rel == 0:
        raise ValueError("no relevant item")
    hits = np.cumsum(rel)
    return float(np.sum(hits[rel] / (np.flatnonzero(rel) + 1)) / n_rel)


def ranking_metrics(ranks: np.ndarray, ap: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``recall@k`` for each k and ``map`` from per-query first-hit ranks and average precisions."""
    out = {f"recall@{k}": recall_at_k(ranks, k) for k in ks}
    out["map"] = float(np.mean(ap))
    return out


def cosine_similarity_matrix(vectors: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Cosine similarities of all rows (L2-normalised dot products)."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), eps)
    return v @ v.T


def label_match_trials(
    similarity: np.ndarray, has_label: np.ndarray, *, n_negatives: int = 99, seed: int = 4,
) -> np.ndarray:
    """1-based rank of the target in each trial of the label-match protocol for one label.

    ``similarity`` is the (N, N) query-gallery similarity; ``has_label`` (N,) marks volumes with
    the label. Returns ``(n_trials,)`` ranks (trials ordered by query, then target). When fewer than
    ``n_negatives`` negatives exist, all of them form the pool.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    pos = np.flatnonzero(np.asarray(has_label, dtype=bool))
    neg = np.flatnonzero(~np.asarray(has_label, dtype=bool))
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1] or sim.shape[0] != len(has_label):
        raise InputValidationError(f"similarity must be (N, N) for N={len(has_label)} volumes; got {sim.shape}")
    if len(pos) < 2:
        raise ValueError("a label needs at least two positives for the label-match protocol")
    if len(neg) == 0:
        raise ValueError("a label needs at least one negative for the label-match protocol")
    draws = min(n_negatives, len(neg))
    rng = np.random.default_rng(seed)
    neg_sorted = np.sort(sim[np.ix_(pos, neg)], axis=1)  # per query, similarities to all negatives
    ranks = []
    for qi, q in enumerate(pos):
        targets = pos[pos != q]
        s_target = sim[q, targets]
        # Negatives strictly more similar than the target outrank it (stable sort keeps ties behind).
        n_better = len(neg) - np.searchsorted(neg_sorted[qi], s_target, side="right")
        if draws == len(neg):
            drawn_better = n_better
        else:
            drawn_better = rng.hypergeometric(n_better, len(neg) - n_better, draws)
        ranks.append(1 + drawn_better)
    return np.concatenate(ranks).astype(np.int64)


def same_patient_retrieval(similarity: np.ndarray, patient_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-query first-hit rank and AP when the other scans of the same patient are relevant.

    Each scan queries all other scans (itself excluded); queries whose patient has no other scan
    are skipped. Returns ``(ranks, ap)`` over the remaining queries.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    pid = np.asarray(patient_ids)
    if sim.shape != (len(pid), len(pid)):
        raise InputValidationError(f"similarity must be (N, N) for N={len(pid)} scans; got {sim.shape}")
    ranks, aps = [], []
    for q in range(len(pid)):
        others = np.flatnonzero(np.arange(len(pid)) != q)
        rel = pid[others] == pid[q]
        if not rel.any():
            continue
        order = np.argsort(-sim[q, others], kind="stable")
        rel_sorted = rel[order]
        ranks.append(int(np.argmax(rel_sorted)) + 1)
        aps.append(average_precision_from_relevance(rel_sorted))
    if not ranks:
        raise ValueError("no patient has more than one scan")
    return np.asarray(ranks), np.asarray(aps)


__all__ = [
    "average_precision_from_relevance",
    "cosine_similarity_matrix",
    "label_match_trials",
    "ranking_metrics",
    "recall_at_k",
    "same_patient_retrieval",
]
