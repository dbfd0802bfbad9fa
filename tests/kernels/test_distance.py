"""Distance blocks: the documented expressions, exactly, and paired distances equal to block entries."""

import numpy as np
import pytest

from xfd.kernels.distance import (distance_block, distance_tile, pair_distances, pairwise_distances, prepare_rows,
                                  self_distance_tile, squared_norms)


def _rows(n, d, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def test_sqeuclidean_is_the_squared_euclidean_distance():
    a, b = _rows(7, 5, 0), _rows(9, 5, 1)
    expected = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(pairwise_distances(a, b, "sqeuclidean"), expected, rtol=1e-12, atol=1e-12)


def test_cosine_is_one_minus_dot_product():
    a, b = _rows(4, 3, 2), _rows(6, 3, 3)
    np.testing.assert_allclose(pairwise_distances(a, b, "cosine"), 1 - a @ b.T, rtol=1e-14, atol=1e-14)


def test_hand_computed_block():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8]])
    np.testing.assert_allclose(pairwise_distances(a, b, "sqeuclidean"), [[0, 4, 0.8], [2, 2, 0.4]], atol=1e-15)
    np.testing.assert_allclose(pairwise_distances(a, b, "cosine"), [[0, 2, 0.4], [1, 1, 0.2]], atol=1e-15)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_preallocated_output_and_pairs_agree_with_the_block(metric, dtype):
    a, b = _rows(6, 33, 4, dtype), _rows(8, 33, 5, dtype)
    out = np.empty((6, 8), dtype=dtype)
    block = distance_block(prepare_rows(a, metric), b, squared_norms(b), metric, out=out)
    assert block is out and block.dtype == dtype
    ii, jj = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    pairs = pair_distances(a[ii.ravel()], b[jj.ravel()], metric)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(pairs, block.ravel(), rtol=tol, atol=tol)


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="metric"):
        pairwise_distances(_rows(2, 2, 0), _rows(2, 2, 1), "manhattan")



@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_self_tile_mirrors_a_quarter_and_equals_the_full_tile(metric, n):
    x = np.random.default_rng(n).standard_normal((n, 33)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sq = squared_norms(x)
    out = np.full((n, n), np.nan, dtype=np.float32)  # every entry must be written
    tile = self_distance_tile(x, sq, metric, out=out)
    assert tile is out and not np.isnan(tile).any()
    np.testing.assert_allclose(tile, distance_tile(x, x, sq, sq, metric), rtol=0, atol=1e-6)
    half = n // 2  # the lower-left quarter is the upper-right one's dot products, mirrored
    dots = tile if metric == "cosine" else (tile - sq[:, None]) - sq[None, :]
    np.testing.assert_allclose(dots[half:, :half], dots[:half, half:].T, rtol=0, atol=1e-6)
    if metric == "cosine":
        np.testing.assert_array_equal(tile[half:, :half], tile[:half, half:].T)
