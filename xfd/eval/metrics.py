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

Why no full sort: only items at or below a query's farthest match can precede a match, so each query sorts just
those (found with one vectorised comparison per block) and ranks its matches among the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xfd.eval.validate import check_labels

AP_MODES = ("noninterpolated", "trapezoid")
DEFAULT_MAX_RANK = 50
MATCH, JUNK = 1, 2  # item kinds in match_ranks' scratch array


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


def match_ranks(distances: np.ndarray, matches: np.ndarray, junk: np.ndarray,
                candidates: np.ndarray | None = None, scratch: np.ndarray | None = None) -> np.ndarray:
    """1-based ranks, among non-junk items, of `matches` in one query's ranking (ascending by distance, index).

    matches, junk: gallery indices. `candidates`: ascending gallery indices of the items with distance <= the
    farthest match's (computed here if not given); nothing beyond them can precede a match. `scratch`: an all-zero
    int8 array of length G to reuse (left all-zero again).
    """
    if candidates is None:
        candidates = np.flatnonzero(distances <= distances[matches].max())
    ordered = order_by_distance(distances[candidates], candidates)
    kind = np.zeros(distances.shape[0], dtype=np.int8) if scratch is None else scratch
    kind[junk] = JUNK
    kind[matches] = MATCH
    kinds = kind[ordered]
    kind[junk] = 0
    kind[matches] = 0
    valid_position = np.cumsum(kinds != JUNK)  # rank of each item among non-junk items
    return valid_position[kinds == MATCH]


def order_by_distance(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """`indices` (ascending) reordered by (value, index).

    float32: one unstable (SIMD) sort of distinct 64-bit keys (order-preserving bits of the value, then the index),
    several times faster than a stable sort of the values; other dtypes: stable sort.
    """
    if values.dtype == np.float32 and (indices.size == 0 or indices[-1] < 2**32):
        bits = (values + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into +0.0, which compares equal
        ordered_bits = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
        return indices[np.argsort((ordered_bits << np.uint64(32)) | indices.astype(np.uint64))]
    return indices[np.argsort(values, kind="stable")]


class RankingAccumulator:
    """Streaming metrics: feed (query indices, (b, G) distances) blocks in any order, each query exactly once."""

    def __init__(self, q_pids, q_camids, g_pids, g_camids, max_rank: int = DEFAULT_MAX_RANK,
                 ap_mode: str = "noninterpolated"):
        if ap_mode not in AP_MODES:
            raise ValueError(f"ap_mode must be one of {AP_MODES}, got {ap_mode!r}")
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        self.q_pids = check_labels("query pids", q_pids)
        self.q_camids = check_labels("query camids", q_camids, len(self.q_pids))
        g_pids = check_labels("gallery pids", g_pids)
        self.gallery = GalleryLabels(g_pids, check_labels("gallery camids", g_camids, len(g_pids)))
        if len(self.q_pids) == 0 or len(g_pids) == 0:
            raise ValueError("metrics need at least one query and one gallery item")
        self.max_rank = max_rank
        self.ap_mode = ap_mode
        n = len(self.q_pids)
        self._ap = np.full(n, np.nan)
        self._inp = np.full(n, np.nan)
        self._first_hit = np.zeros(n, dtype=np.int64)  # rank of the first match; 0 = no match (skipped)
        self._seen = np.zeros(n, dtype=bool)
        self._scratch = np.zeros(len(g_pids), dtype=np.int8)  # match/junk flags, all-zero between queries

    def update(self, query_indices, distances: np.ndarray) -> None:
        query_indices = np.asarray(query_indices, dtype=np.int64)
        distances = np.asarray(distances)
        n_gallery = self.gallery.pids.shape[0]
        if distances.shape != (query_indices.shape[0], n_gallery):
            raise ValueError(f"distance block has shape {distances.shape}, expected ({query_indices.shape[0]}, "
                             f"{n_gallery})")
        if not np.isfinite(distances).all():
            raise ValueError("distance block contains NaN or inf")
        if query_indices.size and (query_indices.min() < 0 or query_indices.max() >= self._seen.size):
            raise ValueError("query index out of range")
        if self._seen[query_indices].any() or np.unique(query_indices).size != query_indices.size:
            raise ValueError("a query was given twice")
        self._seen[query_indices] = True
        labels = [self.gallery.matches_and_junk(self.q_pids[q], self.q_camids[q]) for q in query_indices]
        farthest = np.array([distances[r, m].max() if m.size else -np.inf for r, (m, _) in enumerate(labels)])
        # One pass over the block: every item that could precede some match of its query.
        flat = np.flatnonzero(distances <= farthest[:, None].astype(distances.dtype))
        row_bounds = np.searchsorted(flat, np.arange(query_indices.size + 1) * n_gallery)
        for r, q in enumerate(query_indices):
            matches, junk = labels[r]
            if matches.size == 0:
                continue
            candidates = flat[row_bounds[r] : row_bounds[r + 1]] - r * n_gallery
            ranks = match_ranks(distances[r], matches, junk, candidates, self._scratch)
            self._ap[q] = average_precision(ranks, self.ap_mode)
            self._inp[q] = ranks.size / ranks[-1]
            self._first_hit[q] = ranks[0]

    def result(self) -> RankMetrics:
        if not self._seen.all():
            missing = np.flatnonzero(~self._seen)
            raise ValueError(f"{missing.size} queries were never given distances (first: {int(missing[0])})")
        valid = self._first_hit > 0
        n_valid = int(valid.sum())
        hits = np.bincount(np.minimum(self._first_hit[valid], self.max_rank + 1), minlength=self.max_rank + 2)
        cmc = np.cumsum(hits[1 : self.max_rank + 1]) / n_valid if n_valid else np.full(self.max_rank, np.nan)
        return RankMetrics(
            mAP=float(np.mean(self._ap[valid])) if n_valid else float("nan"),
            mINP=float(np.mean(self._inp[valid])) if n_valid else float("nan"),
            cmc=cmc,
            num_queries=int(self._seen.size),
            num_valid=n_valid,
            num_skipped=int(self._seen.size - n_valid),
            ap_mode=self.ap_mode,
        )


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
