"""Blocked distance fused with top-k selection: exact k-nearest-neighbour lists without an N×N matrix.

`knn_graph` builds, for every row of X (N, d), its k nearest rows of X (itself included) sorted by
(distance, index), plus the maximum of every column of the N×N distance matrix. The matrix is cut into a fixed grid
of square tiles; each tile of the upper triangle (the matrix is symmetric) is computed once by GEMM and fed to both
its row set and, transposed, its column set (a diagonal tile by 3/4 of its GEMM, mirrored: `self_dots`), so
a full pass costs little more than half the GEMM of N×N. The grid depends only on N
and the tile size, never on how many ranks or threads share the tiles: every distance is computed by the same GEMM
call whoever computes it, and top-k merges are exact and order-free, so any split of the tiles gives the same
lists bit for bit once the partial results are merged (`xfd.kernels.topk.merge_states`, `merge_lists`).
`knn_rows` does the same for query rows against a separate set of columns.

Memory: the top-k state, O(N·k), plus one tile per thread (and on GPU its transpose).

`knn_rows` prunes with an upper bound on each row's k-th distance (its k-th distance to an evenly spaced sample of
the columns, plus a rounding margin): the bound is safe by construction (the k-th smallest of a subset is >= the
k-th smallest of all), and the result certifies it: a row that ends with fewer than k entries would reveal a bound
that was too tight, and such rows are redone without a bound. `knn_graph` needs no such bound: the NumPy merge
bounds a row by its first tile (see `xfd.kernels.topk`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import threading

import numpy as np

from .backend import array_module
from .distance import (PreparedRows, check_metric, distance_block, finish_dots_with_maxima, prepare_rows, self_dots,
                       squared_norms)
from .topk import TopKState, is_full, merge_block, merge_states, settled, working_state
from .workers import run_all

DEFAULT_BLOCK = {"numpy": 1024, "cupy": 16384}
DEFAULT_SAMPLE = 1024
LARGE_N = 40_000

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class NeighbourLists:
    """k nearest columns of each row, ascending by (distance, index), and the column maxima of the distances."""

    indices: object  # (n, k) int64
    distances: object  # (n, k)
    column_max: object  # (m,) max over all rows of each column's distance


def default_block_size(xp, n: int = 0) -> int:
    """Tile side: on CPU 1024 below N = 40k (the diagonal tiles cost N·B/4 extra products) and
    2048 above (fewer, larger merges; measured 10 % faster at N = 40k); on GPU one large tile."""
    if xp is np:
        return DEFAULT_BLOCK["numpy"] * (2 if n >= LARGE_N else 1)
    return DEFAULT_BLOCK["cupy"]


def rounding_margin(dim: int, dtype, max_sq_norm: float, metric: str) -> float:
    """Upper bound on how far two GEMM evaluations of one distance can differ (other blocking, other order of
    summation): a worst-case dot-product error of dim·eps times the size of the terms, with a factor 4 to spare."""
    magnitude = 4.0 * max_sq_norm if metric == "sqeuclidean" else 1.0 + max_sq_norm
    return float(np.finfo(np.dtype(dtype)).eps) * (dim + 4) * magnitude * 4.0


def kth_distance_bound(prepared: PreparedRows, columns, column_sq, k: int, metric: str, sample_size: int,
                       block_size: int, margin_scale: float = 1.0):
    """(n,) upper bound on each row's k-th smallest distance to `columns`: its k-th distance to an evenly spaced
    column sample, plus the rounding margin (`margin_scale` < 1 only in tests that force the fallback)."""
    xp = array_module(columns)
    m = columns.shape[0]
    s = min(m, max(sample_size, k))
    picks = (xp.arange(s, dtype=xp.int64) * m) // s  # evenly spaced, distinct
    sample, sample_sq = columns[picks], column_sq[picks]
    n = prepared.scaled.shape[0]
    bound = xp.empty(n, dtype=columns.dtype)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        rows = PreparedRows(prepared.scaled[start:stop], prepared.sq_norms[start:stop])
        block = distance_block(rows, sample, sample_sq, metric)  # (b, s)
        bound[start:stop] = xp.partition(block, k - 1, axis=1)[:, k - 1]
    max_sq = float(xp.maximum(prepared.sq_norms.max(), column_sq.max()))
    margin = rounding_margin(columns.shape[1], columns.dtype, max_sq, metric) * margin_scale
    return bound + bound.dtype.type(margin)


def graph_tiles(n: int, block_size: int) -> list[tuple[int, int]]:
    """The tiles (row start, column start) of the upper triangle, row-major: the global grid every split uses."""
    starts = range(0, n, block_size)
    return [(row, col) for row in starts for col in starts if col >= row]


def knn_graph(features, k: int, metric: str = "sqeuclidean", block_size: int | None = None,
              on_block: ProgressCallback | None = None, tiles: list[tuple[int, int]] | None = None,
              workers: int = 1, sq_norms=None, on_tile: Callable | None = None) -> NeighbourLists:
    """k nearest rows of `features` (N, d) for every row (self included) and the N column maxima, in one
    symmetric pass over `tiles` (default: all of `graph_tiles`; a subset gives partial lists and maxima, to be
    merged with those of the other tiles). `workers` threads share the tiles (NumPy only; each calls a
    single-threaded BLAS, see `xfd.kernels.workers`). `on_block(1)` is called after each tile (progress);
    `on_tile(row_start, col_start, distances)` with each tile's distances, from the thread that computed them (to
    keep some: the array is reused once the call returns)."""
    check_metric(metric)
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] for {n} columns, got {k}")
    xp = array_module(features)
    block_size = block_size or default_block_size(xp, n)
    tiles = graph_tiles(n, block_size) if tiles is None else tiles
    sq_norms = squared_norms(features) if sq_norms is None else sq_norms
    state = working_state(n, k, features.dtype, xp)
    column_max = xp.full(n, -xp.inf, dtype=features.dtype)
    locks = {start: threading.Lock() for start in range(0, n, block_size)}  # one per row block of the state
    local = threading.local()
    progress = threading.Lock()

    def tile(position: tuple[int, int]) -> None:
        row_start, col_start = position
        row_stop, col_stop = min(row_start + block_size, n), min(col_start + block_size, n)
        if getattr(local, "buffer", None) is None:
            local.buffer = xp.empty(min(block_size, n) ** 2, dtype=features.dtype)
        out = local.buffer[: (row_stop - row_start) * (col_stop - col_start)].reshape(row_stop - row_start, -1)
        diagonal = col_start == row_start
        if diagonal:  # symmetric: three quarters of the GEMM
            dots = self_dots(features[row_start:row_stop], out=out)
        else:
            dots = xp.matmul(features[row_start:row_stop], features[col_start:col_stop].T, out=out)  # (bi, bj)
        block, row_side, column_side = finish_dots_with_maxima(dots, sq_norms[row_start:row_stop],
                                                               sq_norms[col_start:col_stop], metric, not diagonal)
        if on_tile is not None:
            on_tile(row_start, col_start, block)
        with locks[row_start]:
            merge_block(state, block, row_start, col_start)
            # The maxima of columns I: their own columns on the diagonal, else (symmetry) the rows of this tile.
            row_side = column_side if diagonal else row_side
            column_max[row_start:row_stop] = xp.maximum(column_max[row_start:row_stop], row_side)
        if not diagonal:
            with locks[col_start]:
                merge_block(state, block.T, col_start, row_start)
                column_max[col_start:col_stop] = xp.maximum(column_max[col_start:col_stop], column_side)
        if on_block is not None:
            with progress:
                on_block(1)

    run_all(tile, tiles, workers if xp is np else 1)
    state = settled(state)
    return NeighbourLists(indices=state.indices, distances=state.values, column_max=column_max)


def merge_lists(parts: list[NeighbourLists]) -> NeighbourLists:
    """Exact merge of partial lists of the same rows computed from disjoint tiles (or column sets)."""
    xp = array_module(parts[0].indices)
    merged = merge_states([TopKState(p.distances, p.indices) for p in parts])
    column_max = parts[0].column_max
    for part in parts[1:]:
        column_max = xp.maximum(column_max, part.column_max)
    return NeighbourLists(indices=merged.indices, distances=merged.values, column_max=column_max)


def graph_block_pairs(n: int, block_size: int) -> int:
    """Number of `on_block` calls a full `knn_graph` makes (for progress bars)."""
    blocks = -(-n // block_size)
    return blocks * (blocks + 1) // 2


def knn_rows(queries, columns, k: int, metric: str = "sqeuclidean", block_size: int | None = None,
             sample_size: int = DEFAULT_SAMPLE, on_block: ProgressCallback | None = None,
             margin_scale: float = 1.0) -> NeighbourLists:
    """k nearest rows of `columns` (m, d) for each row of `queries` (n, d), and the column maxima (m,)."""
    _, block_size, prepared = _set_up(queries, columns, k, metric, block_size)
    column_sq = squared_norms(columns)
    bound = kth_distance_bound(prepared, columns, column_sq, k, metric, sample_size, block_size, margin_scale)
    state, column_max = _rows_pass(prepared, columns, column_sq, k, metric, block_size, bound, on_block)
    _redo_short_rows(state, prepared, columns, column_sq, metric, block_size)
    return NeighbourLists(indices=state.indices, distances=state.values, column_max=column_max)


def _set_up(rows, columns, k: int, metric: str, block_size: int | None):
    """Checks and set-up of the query-rows pass: (array module, block size, prepared rows)."""
    check_metric(metric)
    m = columns.shape[0]
    if not 1 <= k <= m:
        raise ValueError(f"k must be in [1, {m}] for {m} columns, got {k}")
    xp = array_module(columns)
    return xp, block_size or default_block_size(xp), prepare_rows(rows, metric)


def _rows_pass(prepared: PreparedRows, columns, column_sq, k: int, metric: str, block_size: int, bound,
               on_block: ProgressCallback | None = None) -> tuple[TopKState, object]:
    """Row blocks × column blocks, columns ascending: the non-symmetric blocked top-k and column maxima."""
    xp = array_module(columns)
    n, m = prepared.scaled.shape[0], columns.shape[0]
    state = working_state(n, k, columns.dtype, xp)
    column_max = xp.full(m, -xp.inf, dtype=columns.dtype)
    buffer = xp.empty(min(block_size, n) * min(block_size, m), dtype=columns.dtype)
    for row_start in range(0, n, block_size):
        row_stop = min(row_start + block_size, n)
        rows = PreparedRows(prepared.scaled[row_start:row_stop], prepared.sq_norms[row_start:row_stop])
        for col_start in range(0, m, block_size):
            col_stop = min(col_start + block_size, m)
            out = buffer[: (row_stop - row_start) * (col_stop - col_start)].reshape(row_stop - row_start, -1)
            block = distance_block(rows, columns[col_start:col_stop], column_sq[col_start:col_stop], metric,
                                   out=out)  # (bi, bj)
            merge_block(state, block, row_start, col_start, bound)
            column_max[col_start:col_stop] = xp.maximum(column_max[col_start:col_stop], block.max(axis=0))
            if on_block is not None:
                on_block(1)
    return settled(state), column_max


def _redo_short_rows(state: TopKState, prepared: PreparedRows, columns, column_sq, metric: str,
                     block_size: int) -> None:
    """Rows left with fewer than k entries had a bound below their true k-th distance: redo them, unbounded."""
    xp = array_module(columns)
    short = xp.flatnonzero(~is_full(state))
    if short.size == 0:
        return
    sub = PreparedRows(prepared.scaled[short], prepared.sq_norms[short])
    redone, _ = _rows_pass(sub, columns, column_sq, state.k, metric, block_size, bound=None)
    state.values[short] = redone.values
    state.indices[short] = redone.indices
