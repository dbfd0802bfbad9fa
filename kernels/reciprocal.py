"""k-reciprocal neighbour sets and their expansion (docs/reranking.md, steps 3-4), from top-k lists only.

`rank` is the (N, K) array of each row's first K neighbours in the initial ranking (ascending distance, ties to the
lower index, the row itself normally first), K >= k1 + 1.

- R(i): the first k1 + 1 entries of rank[i] whose own first k1 + 1 entries contain i.
- R½(c): the same with lists of length int(numpy.around(k1 / 2)) + 1 (banker's rounding: k1 = 5 gives 3, not 4).
- R*(i): R(i) plus every R½(c), c in R(i), with |R½(c) ∩ R(i)| > 2/3·|R½(c)|, deduplicated.
  The strict float test count > 2/3·size is evaluated as 3·count > 2·size, which is the same for every integer
  size (2/3·size rounds to the exact value whenever 2·size/3 is an integer).

Everything is vectorised over blocks of rows, with O(rows·k1²) temporaries, on NumPy or CuPy; on the CPU the C kernel
`reciprocal_sets` (cpu_kernels.c, see `xfd.kernels.cpu_source`) builds the same sets one row at a time where it
is built.
"""

from __future__ import annotations

import threading

import numpy as np

from .backend import array_module
from .cpu_source import address, kernel
from .csr import SparseRows, concatenate_rows, from_lengths
from .workers import even_chunks, run_all

ROWS_PER_CHUNK = 2048
MARK_BYTES = {"numpy": 1 << 25, "cupy": 1 << 30}  # budget of the (rows, N + 1) membership flags


def half_length(k1: int) -> int:
    """Length of the candidate lists in the expansion step: int(numpy.around(k1 / 2)) + 1."""
    return int(np.around(k1 / 2.0)) + 1


def reciprocal_mask(rank, length: int, chunk_rows: int = ROWS_PER_CHUNK, rows: tuple[int, int] | None = None,
                    workers: int = 1):
    """(r, length) bool for rows start..stop-1 (default all): mask[i, m] is True when row i appears in the first
    `length` entries of row rank[i, m]. `workers` threads share the row chunks (NumPy)."""
    xp = array_module(rank)
    first, last = rows or (0, rank.shape[0])
    heads = rank[:, :length]
    mask = xp.empty((last - first, length), dtype=bool)

    def chunk(bounds: tuple[int, int]) -> None:
        start, stop = bounds
        back = heads[heads[start:stop]]  # (c, length, length): the neighbours' own lists
        own = xp.arange(start, stop, dtype=rank.dtype)[:, None, None]
        mask[start - first : stop - first] = (back == own).any(axis=2)

    run_all(chunk, even_chunks(first, last, workers if xp is np else 1, chunk_rows), workers if xp is np else 1)
    return mask


def expanded_reciprocal_sets(rank, k1: int, chunk_rows: int | None = None, rows: tuple[int, int] | None = None,
                             workers: int = 1) -> SparseRows:
    """R*(i) for rows start..stop-1 of `rank` (default all), as SparseRows of column indices (ascending, no
    values). Each row's set depends on the rank lists alone, not on the range or the chunking it was computed in.
    `workers` threads share the chunks (NumPy)."""
    xp = array_module(rank)
    n = rank.shape[0]
    first, last = rows or (0, n)
    full, half = k1 + 1, half_length(k1)
    if rank.shape[1] < full:
        raise ValueError(f"rank holds {rank.shape[1]} neighbours per row; k1 = {k1} needs {full}")
    if xp is not np:
        workers = 1
    elif kernel("reciprocal_sets") is not None:
        return _sets_in_c(rank, k1, first, last, chunk_rows or ROWS_PER_CHUNK, workers)
    mutual = reciprocal_mask(rank, full, rows=(first, last), workers=workers)  # (r, k1+1)
    half_mutual = reciprocal_mask(rank, half, workers=workers)  # (N, h): R½(c) for any neighbour c
    lonely = xp.flatnonzero(~mutual.any(axis=1))
    if lonely.size:
        _refuse_lonely(first + int(lonely[0]), int(lonely.size), k1)
    # Marks: one row of N+1 flags per row of a chunk; column N is the padding slot and always reads False.
    budget = MARK_BYTES["numpy" if xp is np else "cupy"]
    chunk_rows = chunk_rows or max(1, min(ROWS_PER_CHUNK, budget // (n + 1)))

    half_lists = xp.ascontiguousarray(rank[:, :half])  # (N, h): rows gathered whole below
    local = threading.local()  # one flag array per thread, cleared after each chunk (a fresh one costs page faults)

    def chunk(bounds: tuple[int, int]) -> SparseRows:
        start, stop = bounds
        if getattr(local, "marks", None) is None:
            local.marks = xp.zeros((min(chunk_rows, last - first), n + 1), dtype=bool)
        return _expand_chunk(rank, half_lists, mutual[start - first : stop - first], half_mutual, start, stop,
                             local.marks)

    return concatenate_rows(run_all(chunk, even_chunks(first, last, workers, chunk_rows), workers), xp)


def _refuse_lonely(row: int, count: int, k1: int) -> None:
    raise ValueError(
        f"row {row} (and {count - 1} more) has no k-reciprocal neighbour: it is not among its own {k1 + 1} nearest "
        f"rows, which takes more than k1 = {k1} exact duplicates of it; re-ranking is undefined there (deduplicate "
        "the features or raise k1)")


def _sets_in_c(rank: np.ndarray, k1: int, first: int, last: int, chunk_rows: int, workers: int) -> SparseRows:
    """`expanded_reciprocal_sets` by the C kernel `reciprocal_sets` (cpu_kernels.c), one row at a time: the same
    sets, without the (rows, k1 + 1, h) arrays of the NumPy twin."""
    rank = np.ascontiguousarray(rank, dtype=np.int64)
    n, width = rank.shape
    full, half = k1 + 1, half_length(k1)
    capacity = full * (half + 1)  # R(i) and every accepted R½(c), at most
    half_mask = np.empty((n, half), dtype=np.uint8)  # R½(c) membership, for any neighbour c

    def mask_chunk(bounds: tuple[int, int]) -> None:
        start, stop = bounds
        kernel("reciprocal_mask")(address(rank), width, half, start, stop, address(half_mask[start:stop]))

    run_all(mask_chunk, even_chunks(0, n, workers, ROWS_PER_CHUNK), workers)
    local = threading.local()

    def chunk(bounds: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        start, stop = bounds
        if getattr(local, "marks", None) is None:
            local.marks = np.zeros(n, dtype=np.uint8)  # left all zero by the kernel
        lengths = np.empty(stop - start, dtype=np.int64)
        out = np.empty((stop - start, capacity), dtype=np.int64)
        kernel("reciprocal_sets")(address(rank), address(half_mask), width, full, half, start, stop,
                                  address(lengths), address(out), capacity, address(local.marks))
        return lengths, out

    parts = run_all(chunk, even_chunks(first, last, workers, chunk_rows), workers)
    lengths = np.concatenate([p[0] for p in parts])
    lonely = np.flatnonzero(lengths < 0)
    if lonely.size:
        _refuse_lonely(first + int(lonely[0]), int(lonely.size), k1)
    indices = np.concatenate([out[np.arange(capacity) < counts[:, None]] for counts, out in parts])
    return from_lengths(lengths, indices)


def _expand_chunk(rank, half_lists, mutual, half_mutual, start: int, stop: int, marks) -> SparseRows:
    xp = array_module(rank)
    n = rank.shape[0]
    c = stop - start
    local = xp.arange(c)[:, None]  # (c, 1)
    reciprocal = xp.where(mutual, rank[start:stop, : mutual.shape[1]], n)  # (c, L) R(i), padded with n
    safe = xp.where(mutual, reciprocal, 0)
    candidate_valid = half_mutual[safe] & mutual[:, :, None]  # (c, L, h) membership of R½(c)
    candidate = xp.where(candidate_valid, half_lists[safe], n)  # (c, L, h) R½(c), padded with n
    candidate_size = candidate_valid.sum(axis=2)  # (c, L)
    flags = marks.reshape(-1)  # one row of n + 1 flags per row of the chunk: flat indices are cheap to gather
    row_base = local * (n + 1)  # (c, 1) where each row's flags begin
    flags[row_base + reciprocal] = True
    marks[:c, n] = False
    in_reciprocal = flags[row_base[:, :, None] + candidate]  # (c, L, h) members of R½(c) already in R(i)
    flags[row_base + reciprocal] = False  # all clear again for the next chunk
    overlap = in_reciprocal.sum(axis=2)  # (c, L) |R½(c) ∩ R(i)|
    accepted = mutual & (3 * overlap > 2 * candidate_size)  # (c, L)
    # R*(i) = R(i) plus what accepted candidate lists add: 1-D keys (row, column), sorted and deduplicated once
    # (accepted lists overlap R(i) by more than 2/3, so few of their entries are new).
    added = accepted[:, :, None] & candidate_valid & ~in_reciprocal  # (c, L, h)
    keys = xp.concatenate([(row_base + reciprocal)[mutual], (row_base[:, :, None] + candidate)[added]])
    keys = xp.sort(keys)  # ascending: by row, then column (a plain sort: numpy 2's unique() is far slower)
    keys = keys[xp.concatenate([xp.ones(min(1, keys.size), dtype=bool), keys[1:] != keys[:-1]])]
    rows = keys // (n + 1)
    return from_lengths(xp.bincount(rows, minlength=c), keys - rows * (n + 1))
