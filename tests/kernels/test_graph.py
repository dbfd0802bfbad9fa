"""Blocked distance + top-k graph: identical to a full stable argsort of the dense distance matrix."""

import numpy as np
import pytest

from xfd.kernels.distance import pairwise_distances
from xfd.kernels.graph import graph_block_pairs, graph_tiles, knn_graph, knn_rows, merge_lists


def _unit(n, d, seed, dtype):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def _dense_topk(a, b, k, metric):
    dist = pairwise_distances(a, b, metric)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1), dist.max(axis=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("block_size", [64, 100, 1000])
def test_symmetric_graph_equals_dense_sort(dtype, block_size):
    x = _unit(333, 12, 0, dtype)
    calls = []
    graph = knn_graph(x, 17, block_size=block_size, on_block=calls.append)
    order, values, column_max = _dense_topk(x, x, 17, "sqeuclidean")
    np.testing.assert_array_equal(graph.indices, order)
    tol = 2e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(graph.distances, values, atol=tol)
    np.testing.assert_allclose(graph.column_max, column_max, atol=tol)
    assert len(calls) == graph_block_pairs(333, block_size)


def test_blocks_smaller_than_k_and_exact_duplicates_tie_to_lower_index():
    x = _unit(60, 5, 1, np.float64)
    x[[7, 30, 45]] = x[3]  # exact duplicates: distance ties broken by index
    graph = knn_graph(x, 9, block_size=4)
    order, _, _ = _dense_topk(x, x, 9, "sqeuclidean")
    np.testing.assert_array_equal(graph.indices, order)
    np.testing.assert_array_equal(graph.indices[45, :4], [3, 7, 30, 45])


def test_too_tight_bound_is_detected_and_redone_exactly():
    q, g = _unit(40, 8, 2, np.float64), _unit(200, 8, 5, np.float64)
    lists = knn_rows(q, g, 11, block_size=50, margin_scale=-1e9)  # bound far below every k-th distance
    order, _, _ = _dense_topk(q, g, 11, "sqeuclidean")
    np.testing.assert_array_equal(lists.indices, order)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_any_split_of_the_tiles_merges_to_the_same_lists_bit_for_bit(dtype):
    x = _unit(410, 16, 6, dtype)
    whole = knn_graph(x, 13, block_size=64)
    tiles = graph_tiles(410, 64)
    for parts in (2, 3):
        pieces = [knn_graph(x, 13, block_size=64, tiles=tiles[r::parts]) for r in range(parts)]
        merged = merge_lists(pieces)
        np.testing.assert_array_equal(merged.indices, whole.indices)
        np.testing.assert_array_equal(merged.distances, whole.distances)
        np.testing.assert_array_equal(merged.column_max, whole.column_max)
    threaded = knn_graph(x, 13, block_size=64, workers=3)
    np.testing.assert_array_equal(threaded.indices, whole.indices)
    np.testing.assert_array_equal(threaded.distances, whole.distances)
    np.testing.assert_array_equal(threaded.column_max, whole.column_max)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_query_rows_against_columns(metric):
    q, g = _unit(45, 10, 3, np.float32), _unit(301, 10, 4, np.float32)
    lists = knn_rows(q, g, 7, metric, block_size=64, sample_size=16)
    order, values, column_max = _dense_topk(q, g, 7, metric)
    np.testing.assert_array_equal(lists.indices, order)
    np.testing.assert_allclose(lists.distances, values, atol=2e-6)
    np.testing.assert_allclose(lists.column_max, column_max, atol=2e-6)


def test_k_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="k must be"):
        knn_graph(_unit(5, 3, 0, np.float64), 6)
