"""Sparse V, local query expansion and the inverted index vs dense computations of the same definitions."""

import numpy as np

from xfd.kernels.csr import SparseRows, from_lengths
from xfd.kernels.distance import pairwise_distances, squared_norms
from xfd.kernels.graph import knn_graph
from xfd.kernels.reciprocal import expanded_reciprocal_sets
from xfd.kernels.vmatrix import inverted_index, local_query_expansion, reciprocal_weights


def _features(n=120, d=6, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_weights_are_normalised_gaussians_of_column_max_scaled_distances():
    x = _features()
    graph = knn_graph(x, 8, block_size=32)
    # Sets that include pairs outside the top-8 lists, so both the lookup and the direct computation are used.
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 12, size=x.shape[0])
    cols = np.concatenate([np.sort(rng.choice(x.shape[0], n, replace=False)) for n in lengths])
    sets = from_lengths(lengths, cols)
    v = reciprocal_weights(sets, graph, x, squared_norms(x))
    dist = pairwise_distances(x, x, "sqeuclidean")
    scaled = dist / dist.max(axis=0)[:, None]  # d[i, j] / colmax[i]
    dense = np.zeros_like(dist)
    rows = sets.row_ids()
    dense[rows, cols] = np.exp(-scaled[rows, cols])
    dense /= dense.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(v.to_dense(x.shape[0]), dense, rtol=1e-12, atol=1e-15)


def test_local_query_expansion_is_mean_of_neighbour_rows(cpu_kernels):
    x = _features(90, 5, 2)
    graph = knn_graph(x, 11, block_size=40)
    sets = expanded_reciprocal_sets(graph.indices, 6)
    v = reciprocal_weights(sets, graph, x, squared_norms(x))
    v_qe = local_query_expansion(v, graph.indices, 4, chunk_rows=13, workers=2)
    dense_v = v.to_dense(90)
    expected = np.stack([dense_v[graph.indices[i, :4]].mean(axis=0) for i in range(90)])
    np.testing.assert_allclose(v_qe.to_dense(90), expected, rtol=1e-12, atol=1e-15)
    assert local_query_expansion(v, graph.indices, 1) is v


def test_inverted_index_lists_gallery_rows_per_column():
    dense = np.array([[0.5, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0], [0.2, 0.0, 0.0, 0.8], [0.0, 0.3, 0.7, 0.0]])
    rows, cols = np.nonzero(dense)
    v = from_lengths(np.bincount(rows, minlength=4), cols, dense[rows, cols])
    index = inverted_index(v, first_row=1, n_cols=4)  # gallery = rows 1..3, numbered 0..2
    assert isinstance(index, SparseRows)
    listed = [index.indices[index.indptr[t] : index.indptr[t + 1]].tolist() for t in range(4)]
    values = [index.data[index.indptr[t] : index.indptr[t + 1]].tolist() for t in range(4)]
    assert listed == [[1], [0, 2], [2], [1]]
    assert values == [[0.2], [1.0, 0.3], [0.7], [0.8]]
