"""Jaccard distance over inverted-index candidates, and the final blend (docs/reranking.md, steps 7-8).

For query row i and gallery row j, s(i, j) = Σ_t min(V[i, t], V[j, t]) is non-zero only if the rows share a
column, so `min_intersection` walks, for every non-zero V[i, t], the gallery rows listed under t in the inverted
index; every other pair has s = 0, i.e. Jaccard 1. `blend` then forms
    final = (1 - λ)·(1 - s / (2 - s)) + λ·d / colmax[i]
for a block of query rows against the whole gallery.

`min_intersection_numpy` and the CUDA kernel (`jaccard.cu`) share one contract; the GPU tests compare them.
"""

from __future__ import annotations

import numpy as np

from .backend import array_module
from .csr import SparseRows, expand_segments
from .cuda_source import cuda_module

PAIRS_PER_CHUNK = 1 << 21  # (entry, gallery row) pairs expanded at once by the NumPy twin (~40 bytes each)
CUDA_THREADS = 128


def min_intersection(query_rows: SparseRows, inverted: SparseRows, n_gallery: int):
    """(n_query_rows, n_gallery) s(i, j); NumPy or CuPy by the arrays' module."""
    if array_module(query_rows.indices) is np:
        return min_intersection_numpy(query_rows, inverted, n_gallery)
    return min_intersection_cuda(query_rows, inverted, n_gallery)


def min_intersection_numpy(query_rows: SparseRows, inverted: SparseRows, n_gallery: int,
                           pairs_per_chunk: int = PAIRS_PER_CHUNK) -> np.ndarray:
    """NumPy twin of `min_intersection_*` in jaccard.cu, processed in row chunks of bounded expansion."""
    n = query_rows.n_rows
    out = np.zeros((n, n_gallery), dtype=query_rows.data.dtype)
    column_lengths = inverted.row_lengths()
    per_row = np.bincount(query_rows.row_ids(), weights=column_lengths[query_rows.indices], minlength=n)
    bounds = _chunk_bounds(np.cumsum(per_row), pairs_per_chunk)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        chunk = query_rows.rows(start, stop)
        cols = chunk.indices
        entry, position = expand_segments(inverted.indptr[cols], column_lengths[cols])
        smaller = np.minimum(chunk.data[entry], inverted.data[position])
        flat = chunk.row_ids()[entry] * n_gallery + inverted.indices[position]
        sums = np.bincount(flat, weights=smaller, minlength=(stop - start) * n_gallery)
        out[start:stop] = sums.reshape(stop - start, n_gallery)
    return out


def _chunk_bounds(cumulative: np.ndarray, limit: int) -> list[int]:
    """Row boundaries such that each chunk's total stays under `limit` (a single row may exceed it)."""
    bounds, start, base = [0], 0, 0.0
    n = cumulative.shape[0]
    while start < n:
        stop = int(np.searchsorted(cumulative, base + limit, side="right"))
        stop = max(stop, start + 1)
        bounds.append(stop)
        base = float(cumulative[stop - 1])
        start = stop
    return bounds


def min_intersection_cuda(query_rows: SparseRows, inverted: SparseRows, n_gallery: int):
    """Launch `min_intersection_f32/_f64` (jaccard.cu): one thread block per query row."""
    import cupy

    n = query_rows.n_rows
    dtype = np.dtype(query_rows.data.dtype)
    out = cupy.zeros((n, n_gallery), dtype=dtype)
    if n == 0:
        return out
    name = {np.dtype(np.float32): "min_intersection_f32", np.dtype(np.float64): "min_intersection_f64"}[dtype]
    kernel = cuda_module("jaccard.cu").get_function(name)
    kernel(
        (n,),
        (CUDA_THREADS,),
        (query_rows.indptr, query_rows.indices, query_rows.data, inverted.indptr, inverted.indices,
         inverted.data.astype(dtype, copy=False), out, np.int64(n_gallery)),
    )
    return out


def blend(min_sums, distances, row_max, lam: float):
    """final = (1 - λ)·(1 - s/(2 - s)) + λ·distances/row_max[:, None], written into `distances` and returned.

    min_sums, distances: (b, g); row_max: (b,) the column maxima of the query rows (docs/reranking.md step 1).
    """
    xp = array_module(distances)
    one = distances.dtype.type(1)
    jaccard = (distances.dtype.type(2) - min_sums).astype(distances.dtype, copy=False)  # (b, g) 2 - s
    xp.divide(min_sums, jaccard, out=jaccard)
    xp.subtract(one, jaccard, out=jaccard)  # 1 - s/(2 - s)
    jaccard *= distances.dtype.type(1 - lam)
    distances /= row_max[:, None]
    distances *= distances.dtype.type(lam)
    distances += jaccard
    return distances
