"""The sparse V matrix of k-reciprocal re-ranking (docs/reranking.md, steps 5-6) and its inverted index.

- V[i, j] = exp(-d_norm[i, j]) for j in R*(i), divided by the row sum, where d_norm[i, j] = d[i, j] / colmax[i]
  (the column-max normalisation, then transpose, of step 1; d is symmetric).
- Local query expansion (k2 != 1): V[i] <- mean of V over rank[i, :k2].
- The inverted index lists, for every column t, the gallery rows j with V[j, t] != 0, so Jaccard only visits
  pairs that share a non-zero.

Distances for V are read from the top-k lists where the pair is there (most are) and otherwise computed from the
features by the same expression as the blocked distances.
"""

from __future__ import annotations

from .backend import array_module, stable_argsort
from .csr import SparseRows, concatenate_rows, expand_segments, from_lengths
from .distance import pair_distances
from .graph import NeighbourLists

GATHER_BYTES = 1 << 26  # feature rows gathered at once for pairs outside the top-k lists


def reciprocal_weights(sets: SparseRows, graph: NeighbourLists, features, sq_norms,
                       metric: str = "sqeuclidean") -> SparseRows:
    """V: `sets` (R*(i) per row) with values exp(-d_norm) normalised to sum 1 per row."""
    xp = array_module(features)
    n = graph.indices.shape[0]
    rows = sets.row_ids()  # (nnz,)
    dist, found = _lookup(graph, rows * n + sets.indices, n)
    # Pairs outside row i's kept list (an expansion brought them in): compute them, a bounded batch at a time.
    missing = xp.flatnonzero(~found)
    batch = max(1024, GATHER_BYTES // (2 * features.shape[1] * features.itemsize))
    for start in range(0, missing.shape[0], batch):
        sel = missing[start : start + batch]
        r, c = rows[sel], sets.indices[sel]
        dist[sel] = pair_distances(features[r], features[c], metric, sq_norms[r], sq_norms[c])
    weights = xp.exp(-(dist / graph.column_max[rows]))
    sums = xp.bincount(rows, weights=weights, minlength=sets.n_rows)  # float64
    data = (weights / sums[rows]).astype(features.dtype)
    return SparseRows(sets.indptr, sets.indices, data)


def _lookup(graph: NeighbourLists, keys, n: int):
    """Distances of the pairs keys = i·n + j that are in row i's kept list, and which ones were found."""
    xp = array_module(keys)
    k = graph.indices.shape[1]
    edge_keys = (xp.arange(n, dtype=xp.int64)[:, None] * n + graph.indices).reshape(-1)  # (N·K,)
    order = stable_argsort(edge_keys)
    sorted_keys = edge_keys[order]
    at = xp.minimum(xp.searchsorted(sorted_keys, keys), n * k - 1)
    found = sorted_keys[at] == keys
    return graph.distances.reshape(-1)[order[at]], found  # entries not found hold an arbitrary value


def local_query_expansion(v: SparseRows, rank, k2: int, chunk_rows: int = 4096) -> SparseRows:
    """V_qe[i] = mean of V rows rank[i, :k2] (identity for k2 == 1)."""
    if k2 == 1:
        return v
    xp = array_module(rank)
    n = v.n_rows
    parts = []
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        neighbours = rank[start:stop, :k2].reshape(-1)  # (c·k2,) pair p belongs to local row p // k2
        first = v.indptr[neighbours]
        pair, position = expand_segments(first, v.indptr[neighbours + 1] - first)
        key = (pair // k2) * n + v.indices[position]
        unique_keys, inverse = xp.unique(key, return_inverse=True)
        sums = xp.bincount(inverse.reshape(-1), weights=v.data[position], minlength=unique_keys.shape[0])
        local_rows = unique_keys // n
        lengths = xp.bincount(local_rows, minlength=stop - start)
        parts.append(from_lengths(lengths, unique_keys % n, (sums / k2).astype(v.data.dtype)))
    return concatenate_rows(parts, xp)


def inverted_index(v: SparseRows, first_row: int, n_cols: int) -> SparseRows:
    """For each column t, the rows j >= first_row (numbered from 0 = first_row) with V[j, t] != 0, and V[j, t]."""
    xp = array_module(v.indices)
    lo = int(v.indptr[first_row])
    cols = v.indices[lo:]
    rows = v.row_ids()[lo:] - first_row
    order = stable_argsort(cols)  # rows stay ascending within each column
    lengths = xp.bincount(cols, minlength=n_cols)
    return from_lengths(lengths, rows[order], v.data[lo:][order])

