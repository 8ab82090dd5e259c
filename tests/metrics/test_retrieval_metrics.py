import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from voxelfm.metrics.retrieval import (
    cosine_similarity_matrix,
    label_match_trials,
    ranking_metrics,
    same_patient_retrieval,
)


def _explicit_protocol(sim, has, n_neg, rng):
    """The protocol exactly as described: materialise each 100-item pool and sort it."""
    pos = np.flatnonzero(has)
    neg = np.flatnonzero(~has)
    ranks = []
    for q in pos:
        for t in pos[pos != q]:
            pool = np.r_[t, rng.choice(neg, size=n_neg, replace=False)]
            order = np.argsort(-sim[q, pool], kind="stable")
            ranks.append(int(np.flatnonzero(pool[order] == t)[0]) + 1)
    return np.array(ranks)


def test_label_match_protocol_matches_explicit_pools_in_distribution():
    rng = np.random.default_rng(0)
    n = 160
    has = rng.random(n) < 0.25
    emb = rng.normal(size=(n, 8)) + 0.8 * has[:, None]
    sim = np.round(cosine_similarity_matrix(emb), 2)  # ties included on purpose
    fast = label_match_trials(sim, has, n_negatives=20, seed=1)
    slow = _explicit_protocol(sim, has, 20, np.random.default_rng(2))
    assert fast.shape == slow.shape
    for k in (1, 5, 10):
        assert np.mean(fast <= k) == pytest.approx(np.mean(slow <= k), abs=0.03)
    # With all negatives in the pool the rank is deterministic and must equal the explicit sort.
    n_all = int((~has).sum())
    np.testing.assert_array_equal(
        label_match_trials(sim, has, n_negatives=10_000, seed=0),
        _explicit_protocol(sim, has, n_all, np.random.default_rng(0)),
    )


def test_random_embeddings_give_chance_recall():
    rng = np.random.default_rng(3)
    has = rng.random(300) < 0.3
    sim = cosine_similarity_matrix(rng.normal(size=(300, 16)))
    ranks = label_match_trials(sim, has, seed=0)
    m = ranking_metrics(ranks, 1.0 / ranks)
    assert m["recall@10"] == pytest.approx(0.10, abs=0.02)


def test_same_patient_retrieval_ap_matches_sklearn():
    rng = np.random.default_rng(4)
    pid = np.repeat(np.arange(20), 3)[:50]
    emb = rng.normal(size=(20, 6))[pid] + rng.normal(0, 1.0, (50, 6))
    sim = cosine_similarity_matrix(emb)
    ranks, ap = same_patient_retrieval(sim, pid.astype(str))
    expected = []
    for q in range(50):
        others = np.arange(50) != q
        rel = pid[others] == pid[q]
        if rel.any():
            expected.append(average_precision_score(rel, sim[q, others]))
    np.testing.assert_allclose(ap, expected)
    assert ranks.min() >= 1
