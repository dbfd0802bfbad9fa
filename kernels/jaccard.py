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
from .cpu_source import address, kernel
from .csr import SparseRows
from .cuda_source import cuda_module

PAIRS_PER_CHUNK = 1 << 21  # (entry, gallery row) pairs expanded at once by the NumPy twin (~40 bytes each)
SCRATCH_BYTES = 2 << 20  # float64 sums of one chunk's rows against the whole gallery: small enough to stay in
# cache and be reused by the allocator (32 MiB cost 1.5x as much at N = 20k: page faults and cache misses)
CUDA_THREADS = 128


def min_intersection(query_rows: SparseRows, inverted: SparseRows, n_gallery: int):
    """(n_query_rows, n_gallery) s(i, j); NumPy or CuPy by the arrays' module."""
    if array_module(query_rows.indices) is np:
        return min_intersection_numpy(query_rows, inverted, n_gallery)
    return min_intersection_cuda(query_rows, inverted, n_gallery)


def min_intersection_numpy(query_rows: SparseRows, inverted: SparseRows, n_gallery: int,
                           pairs_per_chunk: int = PAIRS_PER_CHUNK) -> np.ndarray:
    """NumPy twin of `min_intersection_*` in jaccard.cu: the dense form of `shared_pairs`."""
    keys, sums = shared_pairs(query_rows, inverted, n_gallery, pairs_per_chunk)
    out = np.zeros((query_rows.n_rows, n_gallery), dtype=query_rows.data.dtype)
    out.reshape(-1)[keys] = sums
    return out


def shared_pairs(query_rows: SparseRows, inverted: SparseRows, n_gallery: int,
                 pairs_per_chunk: int = PAIRS_PER_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero s(i, j) only (NumPy): keys r·n_gallery + j, ascending, and their sums (the rows' dtype).

    Each sum adds its terms in column order, in float64, then rounds once: the same numbers whatever the rows
    are chunked with. Row chunks bound the expanded pairs held at once.
    """
    n = query_rows.n_rows
    column_lengths = inverted.row_lengths()
    per_row = np.bincount(query_rows.row_ids(), weights=column_lengths[query_rows.indices], minlength=n)
    bounds = _chunk_bounds(np.cumsum(per_row), pairs_per_chunk, max(1, SCRATCH_BYTES // (8 * n_gallery)))
    all_keys, all_sums = [], []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        chunk = query_rows.rows(start, stop)
        cols = chunk.indices
        # Every (entry, gallery row) pair: entry e of the chunk meets the lengths[e] rows listed under its column,
        # at positions indptr[col] .. indptr[col] + lengths[e] - 1 of the index, laid end to end.
        lengths = column_lengths[cols]
        first = np.cumsum(lengths) - lengths
        position = np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(inverted.indptr[cols] - first, lengths)
        smaller = np.minimum(np.repeat(chunk.data, lengths), inverted.data[position])
        flat = np.repeat(chunk.row_ids() * n_gallery, lengths)
        flat += inverted.indices[position]
        sums = np.bincount(flat, weights=smaller, minlength=(stop - start) * n_gallery)  # float64
        keys = np.flatnonzero(sums != 0)  # (a float array's own nonzero() is several times slower)
        all_keys.append(keys + start * n_gallery)
        all_sums.append(sums[keys].astype(query_rows.data.dtype))
    if not all_keys:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=query_rows.data.dtype)
    return np.concatenate(all_keys), np.concatenate(all_sums)


def _chunk_bounds(cumulative: np.ndarray, limit: int, max_rows: int) -> list[int]:
    """Row boundaries such that each chunk's total stays under `limit` (a single row may exceed it) and no chunk
    has more than `max_rows` rows."""
    bounds, start, base = [0], 0, 0.0
    n = cumulative.shape[0]
    while start < n:
        stop = int(np.searchsorted(cumulative, base + limit, side="right"))
        stop = min(max(stop, start + 1), start + max_rows)
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

    min_sums, distances: (b, g); row_max: (b,) the column maxima of the query rows (docs/reranking.md, step 1).
    """
    distances /= row_max[:, None]
    distances *= distances.dtype.type(lam)
    distances += _jaccard_term(min_sums, distances.dtype, lam)
    return distances


def blend_pairs(keys, sums, distances, row_max, lam: float):
    """`blend` with s given as its non-zero entries (`shared_pairs`): the same numbers, bit for bit, without a
    dense (b, g) array of s — every other pair has Jaccard 1."""
    xp = array_module(distances)
    flat = distances.reshape(-1)
    near = flat[keys]  # distances of the pairs with s > 0, before the dense update
    distances /= row_max[:, None]
    distances *= distances.dtype.type(lam)
    distances += _jaccard_term(xp.zeros(1, dtype=distances.dtype), distances.dtype, lam)
    near /= row_max[keys // distances.shape[1]]
    near *= distances.dtype.type(lam)
    near += _jaccard_term(sums, distances.dtype, lam)
    flat[keys] = near
    return distances


def jaccard_blend(query_rows: SparseRows, inverted: SparseRows, distances: np.ndarray, row_max: np.ndarray,
                  lam: float) -> np.ndarray:
    """`blend_pairs(*shared_pairs(query_rows, inverted, g), distances, row_max, lam)` on the CPU, in place on
    `distances` (b, g): by the C kernel `jaccard_blend_*` (`xfd.kernels.cpu_source`: one dense row of float64
    sums at a time, then the row's blend, in the twin's order of operations) where it is built, else by the NumPy
    twin. The same numbers bit for bit either way."""
    b, g = distances.shape
    dtype = distances.dtype
    run = kernel("jaccard_blend", dtype)
    if run is None or distances.strides[1] != dtype.itemsize or query_rows.data.dtype != dtype:
        keys, sums = shared_pairs(query_rows, inverted, g)
        return blend_pairs(keys, sums, distances, row_max, lam)
    arrays = [np.ascontiguousarray(a, dtype=np.int64) for a in (query_rows.indptr, query_rows.indices,
                                                                 inverted.indptr, inverted.indices)]
    q_indptr, q_indices, inv_indptr, inv_indices = arrays
    q_data = np.ascontiguousarray(query_rows.data)
    inv_data = np.ascontiguousarray(inverted.data, dtype=dtype)
    row_max = np.ascontiguousarray(row_max, dtype=dtype)
    sums = np.zeros(g, dtype=np.float64)  # the kernel leaves it all zero
    run(address(q_indptr), address(q_indices), address(q_data), b, address(inv_indptr), address(inv_indices),
        address(inv_data), address(distances), distances.strides[0] // dtype.itemsize, g, address(row_max),
        dtype.type(lam).item(), dtype.type(1 - lam).item(), address(sums))
    return distances


def _jaccard_term(min_sums, dtype, lam: float):
    """(1 - λ)·(1 - s/(2 - s)) in `dtype`, in that order of operations."""
    xp = array_module(min_sums)
    one = dtype.type(1)
    jaccard = (dtype.type(2) - min_sums).astype(dtype, copy=False)  # 2 - s
    xp.divide(min_sums, jaccard, out=jaccard)
    xp.subtract(one, jaccard, out=jaccard)  # 1 - s/(2 - s)
    jaccard *= dtype.type(1 - lam)
    return jaccard
