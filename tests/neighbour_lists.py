"""Comparing k-nearest-neighbour lists computed by two libraries (or precisions), under a stated near-tie rule.

Two correct top-k computations may order nearly equal neighbours differently: float32 GEMMs round a distance of
unit vectors in d = 64 by ~1e-6, while random data has neighbours only ~3e-8 apart. The rule: the lists are
equal, except at positions where the two neighbours they name are a near tie, i.e. their float64 distances to the
row differ by less than NEAR_TIE. A swap of neighbours farther apart than that, or any other difference, fails.
"""

from __future__ import annotations

import numpy as np

NEAR_TIE = 1e-5  # 10x the float32 rounding of these distances; far below the median gap between neighbours (~5e-3)


def distances64(rows: np.ndarray, columns: np.ndarray, indices: np.ndarray, metric: str) -> np.ndarray:
    """(n, k) float64 distance of each row to the listed columns ("sqeuclidean" or "cosine" = 1 - cos)."""
    r = np.asarray(rows, np.float64)[:, None, :]  # (n, 1, d)
    c = np.asarray(columns, np.float64)[np.asarray(indices)]  # (n, k, d)
    if metric == "sqeuclidean":
        return ((r - c) ** 2).sum(-1)
    if metric == "cosine":
        return 1.0 - (r * c).sum(-1) / (np.linalg.norm(r, axis=-1) * np.linalg.norm(c, axis=-1))
    raise ValueError(f"unknown metric {metric!r}")


def assert_same_up_to_near_ties(got, expected, rows, columns, metric: str = "sqeuclidean") -> int:
    """Assert the rule above for (n, k) index lists; returns how many positions differ (all near ties)."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"shapes differ: {got.shape} vs {expected.shape}"
    differ = got != expected
    gap = np.abs(distances64(rows, columns, got, metric) - distances64(rows, columns, expected, metric))
    bad = differ & (gap >= NEAR_TIE)
    if bad.any():
        row, position = np.argwhere(bad)[0]
        raise AssertionError(f"{int(bad.sum())} position(s) differ beyond a near tie, e.g. row {row} position "
                             f"{position}: {got[row, position]} vs {expected[row, position]}, float64 distances "
                             f"{gap[row, position]:.3g} apart (near tie < {NEAR_TIE})")
    return int(differ.sum())
