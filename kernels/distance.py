"""Pairwise distance blocks from one GEMM plus an in-place epilogue.

Two metrics, each defined by the exact floating-point expression every caller uses (the streaming code, the dense
reference and the tests), so results agree to the rounding of the GEMM itself:

- "sqeuclidean": ((-2a)·b + |a|²) + |b|²   (docs/reranking.md step 1: 2 - 2·cos for L2-normalised features)
- "cosine":      (-a)·b + 1                 (1 - cos for L2-normalised features)

Rows are pre-scaled once (`prepare_rows`), because -2a·b is exactly -2·(a·b) in floating point (a power-of-two
scale), so the GEMM result needs no extra pass to scale it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import array_module
from .cpu_source import address, kernel

METRICS = ("sqeuclidean", "cosine")


@dataclass(frozen=True)
class PreparedRows:
    """Rows ready to be the left operand of `distance_block`."""

    scaled: object  # (n, d) rows times -2 (sqeuclidean) or -1 (cosine)
    sq_norms: object  # (n,) |row|², used by sqeuclidean (kept for cosine too: cheap, and callers may need it)


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def squared_norms(x):
    """(n,) |x_i|² of the rows of a (n, d) array."""
    xp = array_module(x)
    return xp.einsum("ij,ij->i", x, x)


def prepare_rows(x, metric: str) -> PreparedRows:
    check_metric(metric)
    scale = -2 if metric == "sqeuclidean" else -1
    return PreparedRows(scaled=x * x.dtype.type(scale), sq_norms=squared_norms(x))


def distance_block(left: PreparedRows, right, right_sq, metric: str, out=None):
    """(n, m) distances between prepared rows and the rows of `right` (m, d); `right_sq` is (m,) |right_j|².

    `out` may be a preallocated (n, m) buffer of the same dtype; it is returned.
    """
    xp = array_module(right)
    block = xp.matmul(left.scaled, right.T, out=out)  # (n, m) = -2·a·b or -a·b
    return _finish(block, left.sq_norms, right_sq, metric)


def distance_tile(rows, columns, rows_sq, columns_sq, metric: str, out=None):
    """`distance_block` without a prepared (scaled) copy of the rows: the GEMM of the raw rows, then the scale.

    Bit for bit the same numbers: scaling by -2 or -1 is exact, so (-2a)·b = -2·(a·b) in floating point. The
    all-vs-all graph uses it so that no scaled copy of all N features is ever held.
    """
    xp = array_module(columns)
    return finish_dots(xp.matmul(rows, columns.T, out=out), rows_sq, columns_sq, metric)  # (n, m)


def self_distance_tile(rows, rows_sq, metric: str, out=None):
    """`distance_tile(rows, rows, …)` by three quarters of its GEMM (`self_dots`). The diagonal tiles of the
    all-vs-all graph use it."""
    return finish_dots(self_dots(rows, out), rows_sq, rows_sq, metric)


def self_dots(rows, out=None):
    """(n, n) rows·rowsᵀ by three quarters of its GEMM: the first half of the rows against all rows, the second
    half against itself, and the remaining quarter from the mirrored dot products (a·b = b·a)."""
    xp = array_module(rows)
    n = rows.shape[0]
    half = n // 2
    out = xp.empty((n, n), dtype=rows.dtype) if out is None else out
    xp.matmul(rows[:half], rows.T, out=out[:half])  # (half, n)
    xp.matmul(rows[half:], rows[half:].T, out=out[half:, half:])  # (n - half, n - half)
    out[half:, :half] = out[:half, half:].T
    return out


def finish_dots(dots, rows_sq, columns_sq, metric: str):
    """In place: the distances of dot products a·b (n, m): their scale, then `_finish`."""
    dots *= dots.dtype.type(-2 if metric == "sqeuclidean" else -1)
    return _finish(dots, rows_sq, columns_sq, metric)


def finish_dots_with_maxima(dots, rows_sq, columns_sq, metric: str, row_maxima: bool = True):
    """`finish_dots`, and the maxima of the finished tile: (distances, (n,) row maxima or None, (m,) column maxima).

    On the CPU one pass of the C kernel `finish_tile_*` (`xfd.kernels.cpu_source`) does all three, the same
    numbers bit for bit; elsewhere (CuPy, or no C kernels) array operations do."""
    xp = array_module(dots)
    finish = kernel("finish_tile", dots.dtype) if xp is np and dots.flags.c_contiguous else None
    if finish is None:
        block = finish_dots(dots, rows_sq, columns_sq, metric)
        return block, (block.max(axis=1) if row_maxima else None), block.max(axis=0)
    n, m = dots.shape
    rows_sq = np.ascontiguousarray(rows_sq, dtype=dots.dtype)
    columns_sq = np.ascontiguousarray(columns_sq, dtype=dots.dtype)
    row_max = np.empty(n, dtype=dots.dtype) if row_maxima else None
    column_max = np.empty(m, dtype=dots.dtype)
    finish(address(dots), n, m, address(rows_sq), address(columns_sq), int(metric == "cosine"), address(row_max),
           address(column_max))
    return dots, row_max, column_max


def _finish(block, left_sq, right_sq, metric: str):
    """In place: ((-2a·b) + |a|²) + |b|² for sqeuclidean, (-a·b) + 1 for cosine."""
    if metric == "sqeuclidean":
        block += left_sq[:, None]
        block += right_sq[None, :]
    else:
        block += block.dtype.type(1)
    return block


def pairwise_distances(a, b, metric: str):
    """Dense (n, m) distances (small problems, references and tests)."""
    left = prepare_rows(a, metric)
    return distance_block(left, b, squared_norms(b), metric)


def pair_distances(a, b, metric: str, a_sq=None, b_sq=None):
    """(p,) distances between paired rows a[p] and b[p], by the same expression as `distance_block`.

    The scale is applied to the p dot products, not to a copy of the rows: (-2a)·b = -2·(a·b) bit for bit."""
    xp = array_module(a)
    check_metric(metric)
    dots = xp.einsum("ij,ij->i", a, b)  # (p,)
    dots *= dots.dtype.type(-2 if metric == "sqeuclidean" else -1)
    if metric == "sqeuclidean":
        a_sq = squared_norms(a) if a_sq is None else a_sq
        b_sq = squared_norms(b) if b_sq is None else b_sq
        return (dots + a_sq) + b_sq
    return dots + a.dtype.type(1)
