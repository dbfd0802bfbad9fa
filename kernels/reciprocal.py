"""k-reciprocal neighbour sets and their expansion (docs/reranking.md, steps 3-4), from top-k lists only.

`rank` is the (N, K) array of each row's first K neighbours in the initial ranking (ascending distance, ties to the
lower index, the row itself normally first), K >= k1 + 1.

- R(i): the first k1 + 1 entries of rank[i] whose own first k1 + 1 entries contain i.
- R½(c): the same with lists of length int(numpy.around(k1 / 2)) + 1 (banker's rounding: k1 = 5 gives 3, not 4).
- R*(i): R(i) plus every R½(c), c in R(i), with |R½(c) ∩ R(i)| > 2/3·|R½(c)|, deduplicated.
  The strict float test count > 2/3·size is evaluated as 3·count > 2·size, which is the same for every integer
  size (2/3·size rounds to the exact value whenever 2·size/3 is an integer).

Everything is vectorised over blocks of rows, with O(rows·k1²) temporaries, on NumPy or CuPy.
"""

from __future__ import annotations

import numpy as np

from .backend import array_module
from .csr import SparseRows, concatenate_rows, from_lengths

ROWS_PER_CHUNK = 2048
MARK_BYTES = {"numpy": 1 << 25, "cupy": 1 << 30}  # budget of the (rows, N + 1) membership flags


def half_length(k1: int) -> int:
    """Length of the candidate lists in the expansion step: int(numpy.around(k1 / 2)) + 1."""
    return int(np.around(k1 / 2.0)) + 1


def reciprocal_mask(rank, length: int, chunk_rows: int = ROWS_PER_CHUNK):
    """(N, length) bool: mask[i, m] is True when row i appears in the first `length` entries of row rank[i, m]."""
    xp = array_module(rank)
    n = rank.shape[0]
    heads = rank[:, :length]
    mask = xp.empty((n, length), dtype=bool)
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        back = heads[heads[start:stop]]  # (c, length, length): the neighbours' own lists
        own = xp.arange(start, stop, dtype=rank.dtype)[:, None, None]
        mask[start:stop] = (back == own).any(axis=2)
    return mask


def expanded_reciprocal_sets(rank, k1: int, chunk_rows: int | None = None) -> SparseRows:
    """R*(i) for every row, as SparseRows of column indices (ascending, no values)."""
    xp = array_module(rank)
    n = rank.shape[0]
    full, half = k1 + 1, half_length(k1)
    if rank.shape[1] < full:
        raise ValueError(f"rank holds {rank.shape[1]} neighbours per row; k1 = {k1} needs {full}")
    mutual = reciprocal_mask(rank, full)  # (N, k1+1)
    half_mutual = reciprocal_mask(rank, half)  # (N, h)
    lonely = xp.flatnonzero(~mutual.any(axis=1))
    if lonely.size:
        raise ValueError(
            f"row {int(lonely[0])} (and {lonely.size - 1} more) has no k-reciprocal neighbour: it is not among its "
            f"own {full} nearest rows, which takes more than k1 = {k1} exact duplicates of it; re-ranking is "
            "undefined there (deduplicate the features or raise k1)")
    # Marks: one row of N+1 flags per row of the chunk; column N is the padding slot and always reads False.
    budget = MARK_BYTES["numpy" if xp is np else "cupy"]
    chunk_rows = chunk_rows or max(1, min(ROWS_PER_CHUNK, budget // (n + 1)))
    marks = xp.zeros((min(chunk_rows, n), n + 1), dtype=bool)
    parts = []
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        parts.append(_expand_chunk(rank, mutual[start:stop], half_mutual, start, stop, half, marks))
    return concatenate_rows(parts, xp)


def _expand_chunk(rank, mutual, half_mutual, start: int, stop: int, half: int, marks) -> SparseRows:
    xp = array_module(rank)
    n = rank.shape[0]
    c = stop - start
    local = xp.arange(c)[:, None]  # (c, 1)
    reciprocal = xp.where(mutual, rank[start:stop, : mutual.shape[1]], n)  # (c, L) R(i), padded with n
    safe = xp.where(mutual, reciprocal, 0)
    candidate_valid = half_mutual[safe] & mutual[:, :, None]  # (c, L, h) membership of R½(c)
    candidate = xp.where(candidate_valid, rank[safe, :half], n)  # (c, L, h) R½(c), padded with n
    candidate_size = candidate_valid.sum(axis=2)  # (c, L)
    marks[local, reciprocal] = True
    marks[:c, n] = False
    overlap = marks[local[:, :, None], candidate].sum(axis=2)  # (c, L) |R½(c) ∩ R(i)|
    marks[local, reciprocal] = False
    accepted = mutual & (3 * overlap > 2 * candidate_size)  # (c, L)
    members = xp.concatenate([reciprocal, xp.where(accepted[:, :, None], candidate, n).reshape(c, -1)], axis=1)
    members = xp.sort(members, axis=1)  # (c, L + L·h), padding last
    fresh = members != n
    fresh[:, 1:] &= members[:, 1:] != members[:, :-1]
    return from_lengths(fresh.sum(axis=1), members[fresh])
