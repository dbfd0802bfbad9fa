"""Running per-row top-k over distance blocks: exact, ties to the lower index.

A top-k state is a pair of (n, k) arrays, `values` and `indices`; each row is sorted ascending by
(value, index) compared lexicographically; empty slots hold (+inf, -1). `merge_block` folds one distance block
into the rows it covers. The CUDA kernel (`topk.cu`) and its NumPy twin (`merge_block_numpy`) have one contract:

    state row r  <-  the k smallest (value, index) pairs of
                     state row r  U  {(block[r - row_start, c], col_start + c) : block[...] <= bound[r]}

`bound` lets a caller that already knows an upper bound on a row's k-th distance skip the rest early. Blocks may
arrive in any order (ties are settled by comparing (value, index) pairs, not by arrival), so a rank or a thread can
merge any subset of a row's blocks, and partial states merge exactly (`merge_states`).

On the CPU the merge runs in C where the C kernels are built (`merge_rows_*` / `merge_columns_*` in
cpu_kernels.c, see `xfd.kernels.cpu_source`: one pass over the block, inserting each candidate into its row as it
meets it). Without them, float32 states are worked on as one sorted 64-bit key per entry (`PackedTopK`, from
`working_state`): a merge then packs only the block's candidates and merges them into the kept keys, instead of
re-packing and re-sorting every kept entry each time. `settled()` turns any state into plain (values, indices).

The NumPy twin bounds a row it has not filled yet by the k-th smallest of a slice of the block's row (an upper bound
on the k-th of the merged result, so nothing the contract keeps is lost) before it collects candidates: the first
block a row meets then passes about k·(width / slice) candidates, not the whole row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import array_module
from .cpu_source import address, kernel
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


PACKED_ROW_BITS, PACKED_COLUMN_BITS = 11, 21  # + 32 value bits = one 64-bit key
PACKED_MAX_ROWS = 1 << PACKED_ROW_BITS  # block rows merged at once (the row sits in the key's top bits)
NO_COLUMN = (1 << PACKED_COLUMN_BITS) - 1  # stands for index -1 (an empty slot) in a packed key
ENTRY_MASK = np.uint64((1 << (32 + PACKED_COLUMN_BITS)) - 1)  # a key without its row bits


@dataclass
class PackedTopK:
    """A float32 top-k state as keys (order-preserving value bits) << 21 | column, ascending per row; an empty slot
    is (+inf, NO_COLUMN). The same contract as `TopKState`; `values` and `indices` are decoded copies."""

    keys: np.ndarray  # (n, k) uint64

    @property
    def k(self) -> int:
        return self.keys.shape[1]

    @property
    def values(self) -> np.ndarray:
        return _unpack(self.keys)[0]

    @property
    def indices(self) -> np.ndarray:
        return _unpack(self.keys)[1]

    def kth_values(self, rows: slice) -> np.ndarray:
        """(rows,) float32 k-th value of each row (+inf while the row is not full)."""
        return _unpack(self.keys[rows, -1])[0]

    def settled(self) -> TopKState:
        values, indices = _unpack(self.keys)
        return TopKState(values, indices)


def working_state(n: int, k: int, dtype, xp=np):
    """The state to merge blocks into: a `TopKState`, or packed keys for float32 on a CPU without the C kernels
    (when the columns fit the key). Call `settled(state)` for the plain form."""
    if (xp is np and np.dtype(dtype) == np.float32 and n < NO_COLUMN
            and kernel("merge_rows", dtype) is None):
        return packed_state(n, k)
    return empty_state(n, k, dtype, xp)


def packed_state(n: int, k: int) -> PackedTopK:
    """An empty float32 state as packed keys (n < NO_COLUMN columns), merged by the NumPy twin."""
    empty = _pack(np.zeros(1, dtype=np.int64), np.array([np.inf], dtype=np.float32), np.array([-1]))
    return PackedTopK(np.full((n, k), empty[0], dtype=np.uint64))


def settled(state) -> TopKState:
    """The plain (values, indices) form of a working state."""
    return state.settled() if isinstance(state, PackedTopK) else state


def merge_block(state: TopKState, block, row_start: int, col_start: int, bound=None) -> None:
    """Fold `block` (rows row_start.., columns col_start..) into `state` in place; NumPy (in C where it can) or
    CuPy by `block`."""
    if array_module(block) is not np:
        merge_block_cuda(state, block, row_start, col_start, bound)
    elif not merge_block_c(state, block, row_start, col_start, bound):
        merge_block_numpy(state, block, row_start, col_start, bound)


def merge_block_c(state: TopKState, block: np.ndarray, row_start: int, col_start: int, bound=None) -> bool:
    """`merge_block_numpy` by the C kernels, reading the block in its memory order (a transposed view is merged
    by `merge_columns_*`); False, having done nothing, where they do not apply (no C kernels, a packed state, other
    dtypes or layouts)."""
    if isinstance(state, PackedTopK) or block.dtype != state.values.dtype or block.size == 0:
        return False
    if not (state.values.flags.c_contiguous and state.indices.flags.c_contiguous
            and state.indices.dtype == np.int64):
        return False
    if bound is not None and (bound.dtype != block.dtype or not bound.flags.c_contiguous):
        bound = np.ascontiguousarray(bound, dtype=block.dtype)
    n_rows, n_cols = block.shape
    item = block.itemsize
    if block.strides[1] == item and block.strides[0] % item == 0:
        merge = kernel("merge_rows", block.dtype)
        if merge is None:
            return False
        merge(address(block), n_rows, n_cols, block.strides[0] // item, address(state.values),
              address(state.indices), state.k, row_start, col_start, address(bound))
        return True
    if block.strides[0] == item and block.strides[1] % item == 0:  # a transposed view: scan its base row-major
        merge = kernel("merge_columns", block.dtype)
        if merge is None:
            return False
        thresholds = np.empty(n_rows, dtype=block.dtype)
        merge(address(block), n_cols, n_rows, block.strides[1] // item, address(state.values),
              address(state.indices), state.k, row_start, col_start, address(bound), address(thresholds))
        return True
    return False


FIRST_BOUND_COLUMNS = 256  # slice of a block row whose k-th value bounds a row that is not full yet


def merge_block_numpy(state: TopKState, block: np.ndarray, row_start: int, col_start: int, bound=None) -> None:
    """NumPy twin of `topk_merge_*` in topk.cu (see the module docstring for the contract)."""
    n_rows, n_cols = block.shape
    k = state.k
    packed = isinstance(state, PackedTopK)
    if packed and n_rows > PACKED_MAX_ROWS:  # the row must fit the key's row bits: merge in row slices
        for first in range(0, n_rows, PACKED_MAX_ROWS):
            merge_block_numpy(state, block[first : first + PACKED_MAX_ROWS], row_start + first, col_start, bound)
        return
    rows = slice(row_start, row_start + n_rows)
    # (n_rows,) current k-th value (+inf while not full)
    threshold = state.kth_values(rows) if packed else state.values[rows, k - 1].copy()
    if bound is not None:
        np.minimum(threshold, bound[rows], out=threshold)
    open_rows = np.flatnonzero(threshold == np.inf)
    if open_rows.size and n_cols >= k:
        width = min(n_cols, max(FIRST_BOUND_COLUMNS, 2 * k))
        head = block[open_rows, :width]  # (o, width): the k-th of a subset bounds the k-th of the whole row
        threshold[open_rows] = np.partition(head, k - 1, axis=1)[:, k - 1]
    cand_rows, cand_cols = _candidates(block, threshold, grouped=not packed)
    if cand_rows.size == 0:
        return
    if packed:
        _merge_packed(state, block, row_start, col_start, cand_rows, cand_cols)
        return
    counts = np.bincount(cand_rows, minlength=n_rows)
    touched = np.flatnonzero(counts)
    # Table per touched row: its k kept entries, then its candidates, padded with (+inf, -1); the k smallest
    # (value, index) pairs of each table row replace the state row.
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
    order = lexicographic_order(table_values, table_indices)[:, :k]
    state.values[row_start + touched] = np.take_along_axis(table_values, order, axis=1)
    state.indices[row_start + touched] = np.take_along_axis(table_indices, order, axis=1)


def _merge_packed(state: PackedTopK, block: np.ndarray, row_start: int, col_start: int, cand_rows: np.ndarray,
                  cand_cols: np.ndarray) -> None:
    """Merge the candidates into the kept keys of the rows they touch: both sides are sorted runs of keys
    (row, value bits, column), so one merge of two runs orders every touched row by (value, index), and the first k
    of each row are its new keys."""
    k = state.k
    counts = np.bincount(cand_rows, minlength=block.shape[0])
    touched = np.flatnonzero(counts)
    compact = np.zeros(block.shape[0], dtype=np.int64)
    compact[touched] = np.arange(touched.size)
    row_bits = np.uint64(32 + PACKED_COLUMN_BITS)
    kept = state.keys[row_start + touched]  # (t, k) ascending per row
    kept |= np.arange(touched.size, dtype=np.uint64)[:, None] << row_bits  # ... and from row to row
    fresh = _pack(compact[cand_rows], block[cand_rows, cand_cols], col_start + cand_cols)  # (c,)
    fresh.sort()
    keys = np.sort(np.concatenate([kept.reshape(-1), fresh]), kind="stable")  # two sorted runs: one merge pass
    sizes = k + counts[touched]
    first = np.cumsum(sizes) - sizes  # where each touched row begins in the merged keys
    state.keys[row_start + touched] = keys[first[:, None] + np.arange(k)] & ENTRY_MASK


def _pack(rows: np.ndarray, values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    bits = (values + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into +0.0, which compares equal
    ordered = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
    columns = np.where(indices < 0, NO_COLUMN, indices).astype(np.uint64)
    return ((rows.astype(np.uint64) << np.uint64(32 + PACKED_COLUMN_BITS))
            | (ordered << np.uint64(PACKED_COLUMN_BITS)) | columns)


def _unpack(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    indices = (keys & np.uint64(NO_COLUMN)).astype(np.int64)
    indices[indices == NO_COLUMN] = -1
    ordered = ((keys >> np.uint64(PACKED_COLUMN_BITS)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    bits = np.where(ordered >> 31, ordered & np.uint32(0x7FFFFFFF), ~ordered)
    return bits.view(np.float32), indices


def lexicographic_order(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """(n, w) positions that sort each row by (value, index); padding (+inf, -1) sorts after real entries.

    float32: one unstable (SIMD) argsort of distinct 64-bit keys (order-preserving bits of the value, then the
    index as unsigned, so -1 ranks last); float64: a two-key lexsort.
    """
    if values.dtype == np.float32:
        bits = (values + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into +0.0, which compares equal
        ordered = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
        keys = (ordered << np.uint64(32)) | indices.astype(np.uint64) & np.uint64(0xFFFFFFFF)
        return np.argsort(keys, axis=1)
    return np.lexsort((indices.astype(np.uint64), values), axis=1)


def merge_states(parts: list[TopKState]) -> TopKState:
    """Exact merge of partial top-k states of the same rows, each computed from its own (disjoint) columns: the
    k smallest (value, index) pairs of every row's union."""
    if len(parts) == 1:
        return parts[0]
    xp = array_module(parts[0].values)
    values = xp.concatenate([p.values for p in parts], axis=1)  # (n, P·k)
    indices = xp.concatenate([p.indices for p in parts], axis=1)
    k = parts[0].k
    if xp is np:
        order = lexicographic_order(values, indices)[:, :k]
    else:  # CuPy's sorts are stable: by index, then by value
        by_index = indices.argsort(axis=1)
        by_value = xp.take_along_axis(values, by_index, axis=1).argsort(axis=1)
        order = xp.take_along_axis(by_index, by_value, axis=1)[:, :k]
    return TopKState(values=xp.take_along_axis(values, order, axis=1),
                     indices=xp.take_along_axis(indices, order, axis=1))


def _candidates(block: np.ndarray, threshold: np.ndarray, grouped: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the entries block[r, c] <= threshold[r]; `grouped`: sorted by row, then column.

    A transposed view (the symmetric graph pass hands one in) is scanned in its memory order, which avoids a
    transposing copy of the whole mask, and only the few candidates are re-sorted (when `grouped`).
    """
    if block.flags.f_contiguous and not block.flags.c_contiguous:
        base = block.T  # C-contiguous (n_cols, n_rows)
        flat = np.flatnonzero(base <= threshold[None, :])
        cols, rows = np.divmod(flat, base.shape[1])
        if not grouped:
            return rows, cols
        # Group by row: a stable sort of small integers is a radix sort (one pass) for 16-bit keys.
        keys = rows.astype(np.int16) if base.shape[1] <= np.iinfo(np.int16).max else rows
        order = np.argsort(keys, kind="stable")  # columns stay ascending within a row
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
