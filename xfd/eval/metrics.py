"""Exact ReID ranking metrics (mAP, CMC, mINP) computed per block of queries, without a Q×G index matrix.

Conventions (docs/protocol.md):
- Smaller distance ranks first; equal distances rank by lower gallery index.
- Junk: gallery items with the query's pid AND camid are removed from that query's ranking.
- Matches: same pid, other camid. A query with no match is skipped and counted (`num_skipped`).
- AP "noninterpolated" (default, torchreid's evaluate_rank): mean over matches of precision at the match.
  AP "trapezoid" (Market-1501 MATLAB): mean over matches of (precision just before + precision at the match) / 2,
  the precision before the first item being 1.
- INP = (number of matches) / (rank of the last match); mINP is its mean over valid queries.
- CMC[k-1] = fraction of valid queries whose first match ranks at or above k.

Why no full sort: only items at or below a query's farthest match can precede a match, so only those are sorted
(found with one vectorised comparison per block, sorted for the whole block at once) and each query's matches are
ranked among its valid ones.

Besides the summary (`RankMetrics`) the accumulator keeps per-query values (`QueryScores`: AP, INP, first-match
rank, every match's gallery row and rank, and the best `top` gallery rows, which the submission and the rank list
use), so that confidence intervals, per-condition analysis and paired comparisons need no second pass, and so
that parts scored on different ranks merge exactly (`QueryScores.merge`). An unlabelled protocol (identities
unknown) keeps only the best rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xfd.eval.validate import check_labels

AP_MODES = ("noninterpolated", "trapezoid")
DEFAULT_MAX_RANK = 50


@dataclass(frozen=True)
class RankMetrics:
    """Metrics of one protocol; CMC holds ranks 1..max_rank."""

    mAP: float
    mINP: float
    cmc: np.ndarray = field(repr=False)
    num_queries: int
    num_valid: int
    num_skipped: int
    ap_mode: str = "noninterpolated"

    def rank(self, k: int) -> float:
        """CMC at rank k (1-based)."""
        return float(self.cmc[k - 1])

    def to_dict(self, ranks=(1, 5, 10)) -> dict:
        out = {"mAP": self.mAP, "mINP": self.mINP}
        out.update({f"rank{k}": self.rank(k) for k in ranks if k <= self.cmc.shape[0]})
        out.update({"num_queries": self.num_queries, "num_valid": self.num_valid,
                    "num_skipped": self.num_skipped, "ap_mode": self.ap_mode, "cmc": self.cmc.tolist()})
        return out


def average_precision(ranks: np.ndarray, mode: str = "noninterpolated") -> float:
    """AP from the 1-based ranks (ascending, among valid items) of all matches of one query."""
    ranks = np.asarray(ranks, dtype=np.float64)
    found = np.arange(1, ranks.size + 1, dtype=np.float64)  # matches seen up to and including each one
    if mode == "noninterpolated":
        return float(np.sum(found / ranks) / ranks.size)
    if mode == "trapezoid":
        before = np.where(ranks > 1, (found - 1) / np.maximum(ranks - 1, 1), 1.0)
        return float(np.sum((before + found / ranks) / 2) / ranks.size)
    raise ValueError(f"ap_mode must be one of {AP_MODES}, got {mode!r}")


class GalleryLabels:
    """Gallery pids/camids indexed by pid, so a query's matches and junk are found without a pass over G."""

    def __init__(self, pids, camids):
        self.pids = np.asarray(pids)
        self.camids = np.asarray(camids)
        self._order = np.argsort(self.pids, kind="stable")  # gallery indices grouped by pid, ascending within
        sorted_pids = self.pids[self._order]
        self._keys, self._starts = np.unique(sorted_pids, return_index=True)
        self._stops = np.append(self._starts[1:], sorted_pids.size)

    def matches_and_junk(self, pid, camid) -> tuple[np.ndarray, np.ndarray]:
        """Gallery indices (ascending) with this pid and another camid (matches), and the same camid (junk)."""
        at = np.searchsorted(self._keys, pid)
        if at == self._keys.size or self._keys[at] != pid:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty
        same_pid = self._order[self._starts[at] : self._stops[at]]
        same_cam = self.camids[same_pid] == camid
        return same_pid[~same_cam], same_pid[same_cam]


def ranked_matches(distances: np.ndarray, labels: list[tuple[np.ndarray, np.ndarray]]) -> list:
    """For each row of a (b, G) distance block with its (matches, junk) gallery indices (ascending): (gallery rows
    of the matches, their 1-based ranks among non-junk items), best first, in that query's ranking (ascending by
    distance, then index); None for a row without matches.

    Only items at or below a row's farthest match can precede one of its matches, so those are found by one
    comparison over the block; then whole rows at a time, about SORT_ENTRIES candidates together (arrays that stay
    in cache), are ordered by (row, distance, index) in one sort and ranked by one running count of the non-junk
    items.
    """
    b, g = distances.shape
    m_rows, m_cols = _flat_labels([m for m, _ in labels])
    j_rows, j_cols = _flat_labels([j for _, j in labels])
    farthest = np.full(b, -np.inf, dtype=distances.dtype)  # rows without matches take no candidates
    np.maximum.at(farthest, m_rows, distances[m_rows, m_cols])
    every = np.flatnonzero(distances <= farthest[:, None])  # ascending: every candidate of every row
    match_keys, junk_keys = m_rows * g + m_cols, j_rows * g + j_cols  # ascending
    ranked: list = [None] * b
    for part in _row_groups(np.searchsorted(every, np.arange(1, b + 1) * g), SORT_ENTRIES):
        flat = every[part]  # ascending
        is_match = _members(flat, match_keys)
        is_valid = ~_members(flat, junk_keys)
        rows = flat // g
        order = _order_by_row_distance_index(rows, distances.reshape(-1)[flat], flat - rows * g, b, g)
        flat, rows, count = flat[order], rows[order], np.cumsum(is_valid[order])  # non-junk items so far
        lo, hi = int(rows[0]), int(rows[-1]) + 1  # the group's rows
        first = np.searchsorted(rows, np.arange(lo, hi))  # where each row begins (its end if it has none)
        before = np.where(first > 0, count[np.maximum(first - 1, 0)], 0)  # non-junk items of the rows above
        at = np.flatnonzero(is_match[order])
        match_rows = rows[at]
        ranks = count[at] - before[match_rows - lo]  # rank among its own row's non-junk items
        cols = flat[at] - match_rows * g
        bounds = np.searchsorted(match_rows, np.arange(lo, hi + 1))
        for row in range(lo, hi):
            if bounds[row - lo + 1] > bounds[row - lo]:
                ranked[row] = (cols[bounds[row - lo] : bounds[row - lo + 1]], ranks[bounds[row - lo] : bounds[row - lo + 1]])
    return ranked


def _row_groups(ends: np.ndarray, size: int) -> list[slice]:
    """Slices of whole rows, given where each row's entries end (ascending), each of about `size` entries (one
    row may exceed it)."""
    groups, start = [], 0
    total = int(ends[-1]) if ends.size else 0
    while start < total:
        stop = int(ends[np.searchsorted(ends, start + size, side="right") - 1]) if start + size < total else total
        if stop <= start:  # one row larger than `size`: that row alone
            stop = int(ends[np.searchsorted(ends, start, side="right")])
        groups.append(slice(start, stop))
        start = stop
    return groups


def _flat_labels(per_row: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(row, gallery index) of every entry of per-row index arrays."""
    sizes = np.array([a.size for a in per_row], dtype=np.int64)
    cols = np.concatenate(per_row).astype(np.int64, copy=False) if per_row else np.zeros(0, dtype=np.int64)
    return np.repeat(np.arange(len(per_row), dtype=np.int64), sizes), cols


def _members(entries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(n,) bool: which of `entries` (ascending, distinct) are among `keys` (ascending)."""
    out = np.zeros(entries.size, dtype=bool)
    if keys.size and entries.size:
        keys = keys[(keys >= entries[0]) & (keys <= entries[-1])]  # those that can be there
        at = np.searchsorted(entries, keys)
        out[at[entries[at] == keys]] = True
    return out


def _order_by_row_distance_index(rows: np.ndarray, values: np.ndarray, cols: np.ndarray, b: int,
                                 g: int) -> np.ndarray:
    """Positions that sort the entries by (row, value, column).

    float32 when row and column fit 32 bits together: one unstable (SIMD) sort of distinct 64-bit keys (row, then
    the value's order-preserving bits, then the column), several times faster than a stable multi-key sort; else
    a lexsort.
    """
    row_bits, col_bits = max(1, int(b - 1).bit_length()), max(1, int(g - 1).bit_length())
    if values.dtype == np.float32 and row_bits + col_bits <= 32:
        bits = (values + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into +0.0, which compares equal
        ordered = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
        keys = ((rows.astype(np.uint64) << np.uint64(32 + col_bits)) | (ordered << np.uint64(col_bits))
                | cols.astype(np.uint64))
        return np.argsort(keys)
    return np.lexsort((cols, values, rows))


_NO_ROWS = np.zeros(0, dtype=np.int64)
SORT_ENTRIES = 1 << 16  # candidates ranked together: arrays that stay in cache (the whole block's did not)


@dataclass(frozen=True)
class QueryScores:
    """Per-query results of one protocol's ranking; a part (one rank's queries) or the whole (`seen` all True)."""

    ap: np.ndarray  # (q,) float64, NaN: no valid match, unlabelled, or not in this part
    inp: np.ndarray  # (q,) float64, NaN likewise
    first_match: np.ndarray  # (q,) int64: 1-based rank among valid items of the first match; 0 = none
    top: np.ndarray  # (q, T) int64: best gallery rows, best first; -1 where the gallery has fewer than T
    seen: np.ndarray  # (q,) bool: this part holds the query
    match_rows: tuple = field(repr=False)  # q entries: (m,) gallery rows of the query's matches, best first
    match_ranks: tuple = field(repr=False)  # q entries: (m,) their 1-based ranks among valid (non-junk) items

    @property
    def num_queries(self) -> int:
        return int(self.seen.shape[0])

    @property
    def valid(self) -> np.ndarray:
        """(q,) bool: queries with at least one valid match (they count in mAP, CMC and mINP)."""
        return self.first_match > 0

    def check_complete(self, what: str = "ranking") -> None:
        if not self.seen.all():
            missing = np.flatnonzero(~self.seen)
            raise ValueError(f"{what}: {missing.size} queries were never given distances (first: {int(missing[0])})")

    def metrics(self, max_rank: int = DEFAULT_MAX_RANK, ap_mode: str = "noninterpolated") -> RankMetrics:
        """The summary over valid queries (NaN metrics when none is valid); every query must have been seen."""
        self.check_complete()
        valid = self.valid
        n_valid = int(valid.sum())
        hits = np.bincount(np.minimum(self.first_match[valid], max_rank + 1), minlength=max_rank + 2)
        cmc = np.cumsum(hits[1 : max_rank + 1]) / n_valid if n_valid else np.full(max_rank, np.nan)
        return RankMetrics(
            mAP=float(np.mean(self.ap[valid])) if n_valid else float("nan"),
            mINP=float(np.mean(self.inp[valid])) if n_valid else float("nan"),
            cmc=cmc, num_queries=self.num_queries, num_valid=n_valid, num_skipped=self.num_queries - n_valid,
            ap_mode=ap_mode)

    @staticmethod
    def merge(parts: list["QueryScores"]) -> "QueryScores":
        """One QueryScores from parts that hold disjoint queries of the same protocol (e.g. one per rank)."""
        if not parts:
            raise ValueError("no query scores to merge")
        shapes = {(p.num_queries, p.top.shape[1]) for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"query scores of different protocols or top lengths: {sorted(shapes)}")
        owner = np.full(parts[0].num_queries, -1)
        for i, part in enumerate(parts):
            twice = np.flatnonzero(part.seen & (owner >= 0))
            if twice.size:
                raise ValueError(f"query {int(twice[0])} was scored in two parts")
            owner[part.seen] = i

        def pick(name: str) -> np.ndarray:
            out = getattr(parts[0], name).copy()
            for i, part in enumerate(parts[1:], start=1):
                out[owner == i] = getattr(part, name)[owner == i]
            return out

        rows = tuple(parts[o].match_rows[q] if o >= 0 else _NO_ROWS for q, o in enumerate(owner.tolist()))
        ranks = tuple(parts[o].match_ranks[q] if o >= 0 else _NO_ROWS for q, o in enumerate(owner.tolist()))
        return QueryScores(pick("ap"), pick("inp"), pick("first_match"), pick("top"), owner >= 0, rows, ranks)


def best_rows(distances: np.ndarray, k: int) -> np.ndarray:
    """(b, k) column indices of each row's k smallest values, ordered by (value, index) as the metrics rank them;
    -1 pads rows when there are fewer than k columns."""
    b, g = distances.shape
    out = np.full((b, k), -1, dtype=np.int64)
    n = min(k, g)
    if n == 0 or b == 0:
        return out
    if n == g:
        out[:, :n] = np.argsort(distances, axis=1, kind="stable")
        return out
    part = np.argpartition(distances, n - 1, axis=1)[:, :n]  # (b, n) the n smallest, in no order
    kth = np.take_along_axis(distances, part, axis=1).max(axis=1)  # (b,)
    rows, cols = np.nonzero(distances <= kth[:, None])  # n or more a row (ties at the n-th value)
    order = np.lexsort((cols, distances[rows, cols], rows))  # by row, then value, then index
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, np.arange(b))  # (b,)
    out[:, :n] = cols[starts[:, None] + np.arange(n)]
    return out


class RankingAccumulator:
    """Streaming metrics: feed (query indices, (b, G) distances) blocks in any order, each query at most once.

    `top` > 0 also keeps each query's best `top` gallery rows. `RankingAccumulator.unlabelled(q, g, top)` keeps
    only those (a split without identities). `queries()` gives the per-query values of the queries seen so far
    (a part, when the blocks were shared out between ranks); `result()` the summary of a complete pass.
    """

    def __init__(self, q_pids, q_camids, g_pids, g_camids, max_rank: int = DEFAULT_MAX_RANK,
                 ap_mode: str = "noninterpolated", top: int = 0):
        if ap_mode not in AP_MODES:
            raise ValueError(f"ap_mode must be one of {AP_MODES}, got {ap_mode!r}")
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        if top < 0:
            raise ValueError(f"top must be >= 0, got {top}")
        self.max_rank = max_rank
        self.ap_mode = ap_mode
        self.top = top
        if q_pids is None:  # unlabelled: sizes come as the camid arguments' lengths (see `unlabelled`)
            self.gallery = None
            n, n_gallery = len(q_camids), len(g_camids)
        else:
            self.q_pids = check_labels("query pids", q_pids)
            self.q_camids = check_labels("query camids", q_camids, len(self.q_pids))
            g_pids = check_labels("gallery pids", g_pids)
            self.gallery = GalleryLabels(g_pids, check_labels("gallery camids", g_camids, len(g_pids)))
            n, n_gallery = len(self.q_pids), len(g_pids)
        if n == 0 or n_gallery == 0:
            raise ValueError("metrics need at least one query and one gallery item")
        self._n_gallery = n_gallery
        self._ap = np.full(n, np.nan)
        self._inp = np.full(n, np.nan)
        self._first_hit = np.zeros(n, dtype=np.int64)  # rank of the first match; 0 = no match (skipped)
        self._top = np.full((n, top), -1, dtype=np.int64)
        self._seen = np.zeros(n, dtype=bool)
        self._match_rows: list[np.ndarray] = [_NO_ROWS] * n
        self._match_ranks: list[np.ndarray] = [_NO_ROWS] * n

    @classmethod
    def unlabelled(cls, num_queries: int, num_gallery: int, top: int) -> "RankingAccumulator":
        """An accumulator of best rows only, for a split whose identities are unknown."""
        return cls(None, np.zeros(num_queries), None, np.zeros(num_gallery), top=top)

    @property
    def labelled(self) -> bool:
        return self.gallery is not None

    def update(self, query_indices, distances: np.ndarray) -> None:
        query_indices = np.asarray(query_indices, dtype=np.int64)
        distances = np.asarray(distances)
        if distances.shape != (query_indices.shape[0], self._n_gallery):
            raise ValueError(f"distance block has shape {distances.shape}, expected ({query_indices.shape[0]}, "
                             f"{self._n_gallery})")
        if not np.isfinite(distances).all():
            raise ValueError("distance block contains NaN or inf")
        if query_indices.size and (query_indices.min() < 0 or query_indices.max() >= self._seen.size):
            raise ValueError("query index out of range")
        if self._seen[query_indices].any() or np.unique(query_indices).size != query_indices.size:
            raise ValueError("a query was given twice")
        self._seen[query_indices] = True
        if self.top:
            self._top[query_indices] = best_rows(distances, self.top)
        if self.gallery is None:
            return
        labels = [self.gallery.matches_and_junk(self.q_pids[q], self.q_camids[q]) for q in query_indices]
        for q, ranked in zip(query_indices.tolist(), ranked_matches(distances, labels)):
            if ranked is None:
                continue
            rows, ranks = ranked
            self._ap[q] = average_precision(ranks, self.ap_mode)
            self._inp[q] = ranks.size / ranks[-1]
            self._first_hit[q] = ranks[0]
            self._match_rows[q], self._match_ranks[q] = rows, ranks

    def queries(self) -> QueryScores:
        """Per-query values of the queries given so far (`seen`)."""
        return QueryScores(self._ap.copy(), self._inp.copy(), self._first_hit.copy(), self._top.copy(),
                           self._seen.copy(), tuple(self._match_rows), tuple(self._match_ranks))

    def result(self) -> RankMetrics:
        if self.gallery is None:
            raise ValueError("an unlabelled protocol has no metrics (identities unknown)")
        return self.queries().metrics(self.max_rank, self.ap_mode)


def evaluate_blocks(blocks, q_pids, q_camids, g_pids, g_camids, max_rank: int = DEFAULT_MAX_RANK,
                    ap_mode: str = "noninterpolated") -> RankMetrics:
    """Metrics from an iterable of (query indices, distance block) pairs."""
    acc = RankingAccumulator(q_pids, q_camids, g_pids, g_camids, max_rank, ap_mode)
    for indices, block in blocks:
        acc.update(indices, block)
    return acc.result()


def evaluate_distances(distmat: np.ndarray, q_pids, q_camids, g_pids, g_camids, max_rank: int = DEFAULT_MAX_RANK,
                       ap_mode: str = "noninterpolated", block_rows: int = 256) -> RankMetrics:
    """Metrics of a dense (Q, G) distance matrix, processed in blocks of rows."""
    distmat = np.asarray(distmat)
    blocks = ((np.arange(s, min(s + block_rows, distmat.shape[0])), distmat[s : s + block_rows])
              for s in range(0, distmat.shape[0], block_rows))
    return evaluate_blocks(blocks, q_pids, q_camids, g_pids, g_camids, max_rank, ap_mode)
