"""Dense reference implementations, for tests and benchmarks only: docs/reranking.md re-ranking and
docs/protocol.md metrics, written step by step over full matrices so that each line can be checked against the
text.

They hold N×N (re-ranking) or Q×G (metrics) arrays, so they are slow and memory-hungry by design; the streaming
implementations in `xfd.eval.rerank` and `xfd.eval.metrics` must agree with them.
"""

from __future__ import annotations

import numpy as np

from xfd.kernels.distance import pairwise_distances


def dense_normalised_distances(features: np.ndarray) -> np.ndarray:
    """docs/reranking.md step 1: squared Euclidean over all pairs; each column divided by its maximum, then
    transposed."""
    dist = pairwise_distances(features, features, "sqeuclidean")  # (N, N)
    return np.transpose(dist / dist.max(axis=0))


def dense_initial_rank(dist: np.ndarray) -> np.ndarray:
    """docs/reranking.md step 2: each row's indices by ascending distance, ties to the lower index."""
    return np.argsort(dist, axis=1, kind="stable")


def dense_expanded_set(rank: np.ndarray, i: int, k1: int) -> np.ndarray:
    """docs/reranking.md steps 3-4: R*(i), ascending."""
    reciprocal = _reciprocal(rank, i, k1 + 1)
    half = int(np.around(k1 / 2.0)) + 1
    expansion = [reciprocal]
    for c in reciprocal:
        candidate = _reciprocal(rank, c, half)
        if len(np.intersect1d(candidate, reciprocal)) > 2.0 / 3.0 * len(candidate):
            expansion.append(candidate)
    return np.unique(np.concatenate(expansion))


def _reciprocal(rank: np.ndarray, i: int, length: int) -> np.ndarray:
    """Entries of rank[i, :length] whose own first `length` entries contain i."""
    forward = rank[i, :length]
    backward = rank[forward, :length]
    return forward[(backward == i).any(axis=1)]


def dense_k_reciprocal(query: np.ndarray, gallery: np.ndarray, k1: int = 28, k2: int = 6,
                       lam: float = 0.28) -> np.ndarray:
    """(q, g) k-reciprocal re-ranked distances, docs/reranking.md literally (dtype of the features)."""
    features = np.concatenate([query, gallery])  # (N, d)
    q, n = query.shape[0], features.shape[0]
    dtype = features.dtype
    dist = dense_normalised_distances(features)  # 1. (N, N)
    rank = dense_initial_rank(dist)  # 2. (N, N)
    v = np.zeros((n, n), dtype=dtype)
    for i in range(n):
        members = dense_expanded_set(rank, i, k1)  # 3-4. R*(i)
        weight = np.exp(-dist[i, members])  # 5. Gaussian weights, row-normalised
        v[i, members] = weight / np.sum(weight)
    # 6. local query expansion.
    if k2 != 1:
        v_qe = np.zeros_like(v)
        for i in range(n):
            v_qe[i] = np.mean(v[rank[i, :k2]], axis=0)
        v = v_qe
    del rank
    # 7. Jaccard over the query rows, via an inverted index of V's non-zeros.
    rows_using = [np.flatnonzero(v[:, t]) for t in range(n)]
    jaccard = np.zeros((q, n), dtype=dtype)
    for i in range(q):
        shared = np.zeros(n, dtype=dtype)
        for t in np.flatnonzero(v[i]):
            others = rows_using[t]
            shared[others] += np.minimum(v[i, t], v[others, t])
        jaccard[i] = 1 - shared / (2 - shared)
    # 8. blend, then keep query rows × gallery columns.
    final = jaccard * dtype.type(1 - lam) + dist[:q] * dtype.type(lam)
    return final[:, q:]


def dense_rank_metrics(distmat: np.ndarray, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50,
                       ap_mode: str = "noninterpolated") -> dict:
    """mAP, mINP and CMC from a full argsort of the (Q, G) distance matrix (ties to the lower gallery index).

    Junk (same pid and same camid as the query) is removed from each query's ranking; queries with no remaining
    match are skipped and counted. Returns plain floats and a CMC array of length max_rank.
    """
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    order = np.argsort(distmat, axis=1, kind="stable")  # (Q, G)
    matches = g_pids[order] == q_pids[:, None]  # (Q, G)
    aps, inps, cmc_sum, valid = [], [], np.zeros(max_rank), 0
    for qi in range(distmat.shape[0]):
        keep = ~((g_pids[order[qi]] == q_pids[qi]) & (g_camids[order[qi]] == q_camids[qi]))
        hits = matches[qi][keep].astype(np.float64)  # (G',) 1 where the ranked item matches
        if not hits.any():
            continue
        valid += 1
        first = np.flatnonzero(hits)[0]
        cmc = np.zeros(max_rank)
        cmc[first:] = 1.0
        cmc_sum += cmc[:max_rank]
        positions = np.flatnonzero(hits) + 1.0  # 1-based ranks of the matches
        found = np.arange(1, positions.size + 1, dtype=np.float64)
        if ap_mode == "noninterpolated":
            aps.append(np.sum(found / positions) / positions.size)
        else:  # Market-1501 trapezoid: average of precision before and at each hit, times the recall step
            before = np.where(positions > 1, (found - 1) / np.maximum(positions - 1, 1), 1.0)
            aps.append(np.sum((before + found / positions) / 2) / positions.size)
        inps.append(positions.size / positions[-1])
    q = distmat.shape[0]
    return {
        "mAP": float(np.mean(aps)) if aps else float("nan"),
        "mINP": float(np.mean(inps)) if inps else float("nan"),
        "cmc": cmc_sum / valid if valid else np.full(max_rank, np.nan),
        "num_valid": valid,
        "num_skipped": q - valid,
    }
