"""Running per-row top-k over distance blocks: exact, ties to the lower index.

A top-k state is a pair of (n, k) arrays, `values` and `indices`; each row is sorted ascending by
(value, index) compared lexicographically; empty slots hold (+inf, -1). `merge_block` folds one distance block
into the rows it covers. The CUDA kernel (`topk.cu`) and its NumPy twin (`merge_block_numpy`) have one contract:

    state row r  <-  the k smallest (value, index) pairs of
                     state row r  U  {(block[r - row_start, c], col_start + c) : block[...] <= bound[r]}

`bound` lets a caller that already knows an upper bound on a row's k-th distance skip the rest early. Callers
visit each row's columns in increasing index order (`check_ascending=True` verifies it on CPU), which lets the
NumPy twin settle ties with one stable sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import array_module
from .cuda_source import cuda_module

CUDA_MAX_K = 128  # TOPK_MAX_K in topk.cu
CUDA_THREADS = 128  # TOPK_THREADS in topk.cu


@dataclass
class TopKState:
    values: object  # (n, k) ascending per row; +inf in empty slots
    indices: object  # (n, k) int64 column indices; -1 in empty slots

    @property
    def k(self) -> int:
        return self.values.shape[1]


def empty_state(n: int, k: int, dtype, xp=np) -> TopKState:
    return TopKState(values=xp.full((n, k), xp.inf, dtype=dtype), indices=xp.full((n, k), -1, dtype=xp.int64))


def is_full(state: TopKState) -> object:
    """(n,) bool: rows that hold k real entries."""
    return state.indices[:, -1] >= 0


def merge_block(state: TopKState, block, row_start: int, col_start: int, bound=None, check_ascending=True) -> None:
    """Fold `block` (rows row_start.., columns col_start..) into `state` in place; NumPy or CuPy by `block`."""
    if array_module(block) is np:
        merge_block_numpy(state, block, row_start, col_start, bound, check_ascending)
    else:
        merge_block_cuda(state, block, row_start, col_start, bound)


def merge_block_numpy(state: TopKState, block: np.ndarray, row_start: int, col_start: int, bound=None,
                      check_ascending=True) -> None:
    """NumPy twin of `topk_merge_*` in topk.cu (see the module docstring for the contract)."""
    n_rows, n_cols = block.shape
    k = state.k
    rows = slice(row_start, row_start + n_rows)
    if check_ascending and n_rows and int(state.indices[rows].max()) >= col_start:
        raise ValueError("columns must reach each row in increasing index order (col_start <= an index already kept)")
    threshold = state.values[rows, k - 1]  # (n_rows,) current k-th value
    if bound is not None:
        threshold = np.minimum(threshold, bound[rows])
    cand_rows, cand_cols = _candidates(block, threshold)
    if cand_rows.size == 0:
        return
    counts = np.bincount(cand_rows, minlength=n_rows)
    touched = np.flatnonzero(counts)
    # Table per touched row: its k kept entries, then its candidates in ascending column order, padded with
    # (+inf, -1). Kept indices are all below col_start, so a stable sort by value alone orders by (value, index).
    width = k + int(counts.max())
    table_values = np.full((touched.size, width), np.inf, dtype=state.values.dtype)
    table_indices = np.full((touched.size, width), -1, dtype=np.int64)
    table_values[:, :k] = state.values[row_start + touched]
    table_indices[:, :k] = state.indices[row_start + touched]
    table_row = np.repeat(np.arange(touched.size), counts[touched])
    row_first = np.cumsum(counts) - counts  # first candidate of each block row in the candidate list
    slot = k + np.arange(cand_rows.size) - row_first[cand_rows]
    table_values[table_row, slot] = block[cand_rows, cand_cols]
    table_indices[table_row, slot] = col_start + cand_cols
    order = np.argsort(table_values, axis=1, kind="stable")[:, :k]
    state.values[row_start + touched] = np.take_along_axis(table_values, order, axis=1)
    state.indices[row_start + touched] = np.take_along_axis(table_indices, order, axis=1)


def _candidates(block: np.ndarray, threshold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the entries block[r, c] <= threshold[r], sorted by row, then column.

    A transposed view (the symmetric graph pass hands one in) is scanned in its memory order, which avoids a
    transposing copy of the whole mask, and only the few candidates are re-sorted.
    """
    if block.flags.f_contiguous and not block.flags.c_contiguous:
        base = block.T  # C-contiguous (n_cols, n_rows)
        flat = np.flatnonzero(base <= threshold[None, :])
        cols, rows = np.divmod(flat, base.shape[1])
        order = np.argsort(rows, kind="stable")  # columns stay ascending within a row
        return rows[order], cols[order]
    flat = np.flatnonzero(block <= threshold[:, None])  # row-major: per row, ascending column
    return np.divmod(flat, block.shape[1])


def merge_block_cuda(state: TopKState, block, row_start: int, col_start: int, bound=None) -> None:
    """Launch `topk_merge_f32/_f64` (topk.cu): one thread block per block row."""
    import cupy

    n_rows, n_cols = block.shape
    k = state.k
    if k > CUDA_MAX_K:
        raise ValueError(f"the CUDA top-k kernel keeps at most {CUDA_MAX_K} neighbours per row, asked for {k}")
    if n_rows == 0:
        return
    if block.dtype != state.values.dtype:
        raise TypeError(f"block dtype {block.dtype} differs from the state's {state.values.dtype}")
    if block.strides[1] != block.itemsize or not block.flags.c_contiguous:
        block = cupy.ascontiguousarray(block)
    if bound is None:
        bound = cupy.full(state.values.shape[0], cupy.inf, dtype=state.values.dtype)
    name = {np.dtype(np.float32): "topk_merge_f32", np.dtype(np.float64): "topk_merge_f64"}[np.dtype(block.dtype)]
    kernel = cuda_module("topk.cu").get_function(name)
    kernel(
        (n_rows,),
        (CUDA_THREADS,),
        (block, np.int64(n_cols), np.int32(n_cols), np.int64(col_start), state.values, state.indices,
         np.int64(row_start), np.int32(k), bound.astype(state.values.dtype, copy=False)),
    )
