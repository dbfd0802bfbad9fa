"""A minimal compressed-sparse-row container and the segment helpers the re-ranking kernels share (NumPy/CuPy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import array_module


@dataclass(frozen=True)
class SparseRows:
    """CSR: row r holds columns indices[indptr[r]:indptr[r+1]] (ascending) with values data[...] (or no values).

    The same container serves as an inverted index (one "row" per column, holding the rows that use it).
    """

    indptr: object  # (n_rows + 1,) int64
    indices: object  # (nnz,) int64
    data: object | None = None  # (nnz,)

    @property
    def n_rows(self) -> int:
        return self.indptr.shape[0] - 1

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def row_lengths(self):
        return self.indptr[1:] - self.indptr[:-1]

    def row_ids(self):
        """(nnz,) the row of every stored entry."""
        return segment_ids(self.row_lengths())

    def rows(self, start: int, stop: int) -> "SparseRows":
        """Rows start..stop-1 as their own SparseRows (indptr rebased to 0)."""
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        data = None if self.data is None else self.data[lo:hi]
        return SparseRows(self.indptr[start : stop + 1] - lo, self.indices[lo:hi], data)

    def to_dense(self, n_cols: int):
        """Dense (n_rows, n_cols) array, for tests and small problems."""
        xp = array_module(self.indices)
        dense = xp.zeros((self.n_rows, n_cols), dtype=np.float64 if self.data is None else self.data.dtype)
        dense[self.row_ids(), self.indices] = 1 if self.data is None else self.data
        return dense


def from_lengths(lengths, indices, data=None) -> SparseRows:
    """SparseRows from per-row entry counts and the row-major entries."""
    xp = array_module(indices)
    indptr = xp.zeros(lengths.shape[0] + 1, dtype=xp.int64)
    xp.cumsum(lengths, out=indptr[1:])
    return SparseRows(indptr, indices.astype(xp.int64, copy=False), data)


def concatenate_rows(parts: list[SparseRows], xp=np) -> SparseRows:
    """Stack row blocks (in order) into one SparseRows."""
    lengths = xp.concatenate([p.row_lengths() for p in parts])
    indices = xp.concatenate([p.indices for p in parts])
    data = None if parts[0].data is None else xp.concatenate([p.data for p in parts])
    return from_lengths(lengths, indices, data)


def segment_ids(lengths):
    """(sum(lengths),) segment number of each element when segments of `lengths` are laid end to end."""
    xp = array_module(lengths)
    if xp is np:
        return np.repeat(np.arange(lengths.shape[0], dtype=np.int64), lengths)
    # CuPy's repeat takes no device array of counts: locate each element's segment by binary search instead.
    ends = xp.cumsum(lengths)
    total = int(ends[-1]) if ends.size else 0
    return xp.searchsorted(ends, xp.arange(total, dtype=xp.int64), side="right")
