"""Input checks for evaluation: every bad input becomes a clear ValueError naming the problem, never a number.

Features must be finite 2-D float arrays of one dimension, non-empty, and L2-normalised (|‖x‖ - 1| <= 1e-3)
unless normalisation is asked for. Labels (pids, camids, names) must be 1-D and as long as their features.
"""

from __future__ import annotations

import numpy as np

NORM_TOLERANCE = 1e-3


def check_features(name: str, features, normalize: bool = False) -> np.ndarray:
    """A C-contiguous float32/float64 copy or view of `features` (n, d), checked and optionally L2-normalised."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has 0 feature dimensions")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must hold floating-point features, got dtype {x.dtype}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)  # float16 and friends: compute in float32
    # One pass without a temporary array: a row's sum of squares is finite unless the row holds a NaN or an inf
    # (or a value so large its square overflows); only such rows are looked at element by element.
    squares = np.einsum("ij,ij->i", x, x)  # (n,)
    suspects = np.flatnonzero(~np.isfinite(squares))
    bad_rows = suspects[~np.isfinite(x[suspects]).all(axis=1)]
    if bad_rows.size:
        raise ValueError(f"{name} has NaN or inf in {bad_rows.size} row(s), first at row {int(bad_rows[0])}")
    if normalize:
        norms = np.linalg.norm(x, axis=1)
        zero = np.flatnonzero(norms == 0)
        if zero.size:
            raise ValueError(f"{name} row {int(zero[0])} is all zeros and cannot be L2-normalised")
        return np.ascontiguousarray(x / norms[:, None].astype(x.dtype))
    norms = np.sqrt(squares.astype(np.float64))
    if suspects.size:  # finite rows whose squares overflowed: their norms, without overflow
        norms[suspects] = np.linalg.norm(x[suspects].astype(np.float64), axis=1)
    off = np.abs(norms - 1.0)
    worst = int(np.argmax(off))
    if off[worst] > NORM_TOLERANCE:
        raise ValueError(
            f"{name} is not L2-normalised: row {worst} has norm {norms[worst]:.6g} (tolerance {NORM_TOLERANCE}); "
            "normalise the features or ask for it (normalize=True / --normalize)")
    return np.ascontiguousarray(x)


def check_feature_pair(query, gallery, normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Checked query (q, d) and gallery (g, d) features of one common dtype."""
    q = check_features("query features", query, normalize)
    g = check_features("gallery features", gallery, normalize)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dimensions differ: query has {q.shape[1]}, gallery has {g.shape[1]}")
    dtype = np.result_type(q.dtype, g.dtype)
    return q.astype(dtype, copy=False), g.astype(dtype, copy=False)


def check_labels(name: str, labels, n: int | None = None) -> np.ndarray:
    """1-D labels (pids, camids or names), of length n when n is given."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n}")
    return arr


def check_rerank_params(k1: int, k2: int, lam: float, n_total: int) -> None:
    """k1, k2 in [1, N) and [1, N]; λ in [0, 1] (N = queries + gallery)."""
    if int(k1) != k1 or k1 < 1:
        raise ValueError(f"k1 must be a positive integer, got {k1}")
    if k1 >= n_total:
        raise ValueError(f"k1 = {k1} must be smaller than N = queries + gallery = {n_total}")
    if int(k2) != k2 or k2 < 1:
        raise ValueError(f"k2 must be a positive integer, got {k2}")
    if k2 > n_total:
        raise ValueError(f"k2 = {k2} must not exceed N = queries + gallery = {n_total}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
