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

import threading

import numpy as np

from .backend import array_module, sparse_module, stable_argsort
from .cpu_source import address, kernel
from .csr import SparseRows, concatenate_rows, from_lengths
from .distance import pair_distances
from .graph import NeighbourLists
from .workers import even_chunks, run_all

# Feature rows gathered at once, per side, for the pairs outside the top-k lists. On the CPU a small batch stays in
# cache and its arrays are reused by the allocator (batches of tens of MB cost a page fault per 4 KiB, every batch:
# at N = 20k, d = 1024 that tripled the step); on the GPU a large one saves kernel launches.
GATHER_BYTES = {"numpy": 1 << 21, "cupy": 1 << 26}


def reciprocal_weights(sets: SparseRows, graph: NeighbourLists, features, sq_norms, metric: str = "sqeuclidean",
                       first_row: int = 0) -> SparseRows:
    """V: `sets` (R*(i) per row) with values exp(-d_norm) normalised to sum 1 per row.

    The rows are rows first_row.. of the whole set: `sets` and `graph.indices` / `graph.distances` hold those
    rows only, `graph.column_max` and `features` all N. Each row's values depend on that row alone.
    """
    xp = array_module(features)
    n_rows, n = sets.n_rows, features.shape[0]
    local = sets.row_ids()  # (nnz,)
    rows = local + first_row
    dist, found = _lookup(graph, local * n + sets.indices, n)
    # Pairs outside row i's kept list (an expansion brought them in): compute them, a bounded batch at a time.
    missing = xp.flatnonzero(~found)
    batch = max(64, GATHER_BYTES[xp.__name__] // (features.shape[1] * features.itemsize))
    for start in range(0, missing.shape[0], batch):
        sel = missing[start : start + batch]
        r, c = rows[sel], sets.indices[sel]
        dist[sel] = pair_distances(features[r], features[c], metric, sq_norms[r], sq_norms[c])
    weights = xp.exp(-(dist / graph.column_max[rows]))
    sums = xp.bincount(local, weights=weights, minlength=n_rows)  # float64
    data = (weights / sums[local]).astype(features.dtype)
    return SparseRows(sets.indptr, sets.indices, data)


def _lookup(graph: NeighbourLists, keys, n: int):
    """Distances of the pairs keys = i·n + j that are in (local) row i's kept list, and which ones were found."""
    xp = array_module(keys)
    n_rows, k = graph.indices.shape
    edge_keys = (xp.arange(n_rows, dtype=xp.int64)[:, None] * n + graph.indices).reshape(-1)  # (rows·K,) distinct
    order = stable_argsort(edge_keys)  # keys ascend from row to row: the stable (merge) sort uses those runs
    sorted_keys = edge_keys[order]
    at = xp.minimum(xp.searchsorted(sorted_keys, keys), n_rows * k - 1)
    found = sorted_keys[at] == keys
    return graph.distances.reshape(-1)[order[at]], found  # entries not found hold an arbitrary value


def local_query_expansion(v: SparseRows, rank, k2: int, chunk_rows: int = 4096,
                          rows: tuple[int, int] | None = None, workers: int = 1) -> SparseRows:
    """V_qe[i] = mean of V rows rank[i, :k2] for rows start..stop-1 (default all; identity for k2 == 1).

    A sparse product: (c, N) 0/1 rows selecting each row's k2 neighbours, times V (N, N), summed in float64 in
    ascending neighbour order (scipy.sparse / cupyx.scipy.sparse), then divided by k2 and rounded to V's dtype.
    `v` holds all N rows; V is made a sparse matrix once and `workers` threads share the row chunks (NumPy). Each
    output row depends on its neighbours' V rows alone, not on the range or chunks.
    """
    first, last = rows or (0, v.n_rows)
    if k2 == 1:
        return v if (first, last) == (0, v.n_rows) else v.rows(first, last)
    xp = array_module(rank)
    if xp is np and k2 <= MAX_K2_IN_C and kernel("query_expansion", v.data.dtype) is not None:
        return _query_expansion_in_c(v, rank, k2, first, last, chunk_rows, workers)
    sparse = sparse_module(xp)
    n = v.n_rows
    v_matrix = sparse.csr_matrix((v.data.astype(xp.float64), v.indices, v.indptr), shape=(n, n))
    workers = workers if xp is np else 1

    def chunk(bounds: tuple[int, int]) -> SparseRows:
        start, stop = bounds
        c = stop - start
        neighbours = xp.sort(rank[start:stop, :k2], axis=1).reshape(-1)  # (c·k2,) sorted rows: what cuSPARSE needs
        select = sparse.csr_matrix((xp.ones(c * k2), neighbours, xp.arange(0, c * k2 + 1, k2)), shape=(c, n))
        sums = select @ v_matrix  # (c, N) float64
        sums.sort_indices()
        return SparseRows(sums.indptr.astype(xp.int64), sums.indices.astype(xp.int64),
                          (sums.data / k2).astype(v.data.dtype))

    return concatenate_rows(run_all(chunk, even_chunks(first, last, workers, chunk_rows), workers), xp)


MAX_K2_IN_C = 64  # neighbours the C kernel sorts on its stack


def _query_expansion_in_c(v: SparseRows, rank, k2: int, first: int, last: int, chunk_rows: int,
                          workers: int) -> SparseRows:
    """`local_query_expansion` by the C kernel `query_expansion_*` (cpu_kernels.c): the same sums in the same
    order, one row at a time into a dense row of float64, without building the sparse product."""
    run = kernel("query_expansion", v.data.dtype)
    rank = np.ascontiguousarray(rank, dtype=np.int64)
    indptr, indices = np.ascontiguousarray(v.indptr, dtype=np.int64), np.ascontiguousarray(v.indices, dtype=np.int64)
    data = np.ascontiguousarray(v.data)
    lengths = v.row_lengths()
    n = v.n_rows
    local = threading.local()

    def chunk(bounds: tuple[int, int]) -> SparseRows:
        start, stop = bounds
        if getattr(local, "sums", None) is None:
            local.sums, local.touched = np.zeros(n, dtype=np.float64), np.empty(n, dtype=np.int64)
        capacity = int(lengths[rank[start:stop, :k2]].sum())  # at most the neighbours' entries
        out_indices = np.empty(capacity, dtype=np.int64)
        out_data = np.empty(capacity, dtype=data.dtype)
        counts = np.empty(stop - start, dtype=np.int64)
        run(address(indptr), address(indices), address(data), address(rank), rank.shape[1], k2, start, stop,
            address(out_indices), address(out_data), address(counts), address(local.sums), address(local.touched))
        total = int(counts.sum())
        return from_lengths(counts, out_indices[:total], out_data[:total])

    return concatenate_rows(run_all(chunk, even_chunks(first, last, workers, chunk_rows), workers), np)


def inverted_index(v: SparseRows, first_row: int, n_cols: int) -> SparseRows:
    """For each column t, the rows j >= first_row (numbered from 0 = first_row) with V[j, t] != 0, and V[j, t]:
    the transpose of those rows, by the sparse module's counting sort (rows ascending within a column)."""
    xp = array_module(v.indices)
    gallery = v.rows(first_row, v.n_rows)
    by_column = sparse_module(xp).csr_matrix((gallery.data, gallery.indices, gallery.indptr),
                                             shape=(gallery.n_rows, n_cols)).tocsc()
    return SparseRows(by_column.indptr.astype(xp.int64), by_column.indices.astype(xp.int64), by_column.data)
