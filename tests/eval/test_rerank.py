"""Streaming k-reciprocal re-ranking equals the dense reference of docs/reranking.md: same initial top-k lists and
expanded sets, same final distances (float64 within 1e-10, float32 within 1e-4)."""

import numpy as np
import pytest

from xfd.eval.reference import dense_expanded_set, dense_initial_rank, dense_k_reciprocal, dense_normalised_distances
from xfd.eval.rerank import k_reciprocal, k_reciprocal_stream, normalised_rank
from xfd.kernels.graph import knn_graph
from xfd.kernels.reciprocal import expanded_reciprocal_sets, half_length, reciprocal_mask

# (k1, k2, lambda): the paper's, the original paper's, odd k1 where banker's rounding of k1/2 matters
# (5 -> 2.5 -> 2, 7 -> 3.5 -> 4, 9 -> 4.5 -> 4), k2 = 1 (no query expansion), lambda 0 and 1.
CASES = [(28, 6, 0.28), (20, 6, 0.3), (5, 3, 0.5), (7, 1, 0.1), (9, 2, 0.0), (13, 6, 1.0)]


@pytest.mark.parametrize("k1, k2, lam", CASES)
def test_float64_equals_dense_reference(make_features, k1, k2, lam):
    x = make_features(260, 16, 12, np.float64, seed=k1)
    q, g = x[:37], x[37:]
    got = k_reciprocal(q, g, k1, k2, lam, device="cpu", block_rows=10, graph_block=64)
    ref = dense_k_reciprocal(q, g, k1, k2, lam)
    assert got.shape == (37, 223) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n, seed, k1, k2, lam", [(120, 7, 28, 6, 0.28), (160, 12, 20, 6, 0.3),
                                                  (160, 12, 7, 3, 0.5), (160, 12, 5, 1, 0.2)])
def test_float32_equals_dense_reference(make_features, rank_gap, n, seed, k1, k2, lam):
    x = make_features(n, 16, 10, np.float32, seed)
    assert rank_gap(x, k1 + 1) > 2e-6, "fixture has near-ties in the initial ranking; pick another seed"
    q, g = x[:25], x[25:]
    got = k_reciprocal(q, g, k1, k2, lam, device="cpu", block_rows=8, graph_block=48)
    ref = dense_k_reciprocal(q, g, k1, k2, lam)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("k1", [5, 7, 20, 28])
def test_top_k_lists_and_expanded_sets_equal_reference(make_features, k1):
    x = make_features(230, 12, 9, np.float64, seed=100 + k1)
    k = k1 + 1
    rank = normalised_rank(knn_graph(x, k + 1, block_size=50), k)
    rank_ref = dense_initial_rank(dense_normalised_distances(x))
    np.testing.assert_array_equal(rank, rank_ref[:, :k])
    sets = expanded_reciprocal_sets(rank, k1)
    for i in range(x.shape[0]):
        members = sets.indices[sets.indptr[i] : sets.indptr[i + 1]]
        np.testing.assert_array_equal(members, dense_expanded_set(rank_ref, i, k1))
    reciprocal_sizes = reciprocal_mask(rank, k).sum(axis=1)
    if half_length(k1) <= 3:
        # k1 = 5: half lists of int(around(2.5)) + 1 = 3; "> 2/3 of |R½(c)|" then means all of R½(c) lies in R(i),
        # so the expansion can add nothing (with round-half-up it would be 4 and could).
        np.testing.assert_array_equal(sets.row_lengths(), reciprocal_sizes)
    else:
        assert (sets.row_lengths() > reciprocal_sizes).any()  # the expansion step really added members


def test_gallery_smaller_than_k1(make_features):
    x = make_features(40, 8, 4, np.float64, seed=3)
    q, g = x[:30], x[30:]  # g = 10 < k1 = 20 < N = 40
    np.testing.assert_allclose(k_reciprocal(q, g, 20, 6, 0.3, graph_block=16),
                               dense_k_reciprocal(q, g, 20, 6, 0.3), atol=1e-10)


def test_single_query(make_features):
    x = make_features(150, 10, 8, np.float64, seed=4)
    np.testing.assert_allclose(k_reciprocal(x[:1], x[1:], 28, 6, 0.28),
                               dense_k_reciprocal(x[:1], x[1:], 28, 6, 0.28), atol=1e-10)


def test_near_duplicate_features(make_features):
    rng = np.random.default_rng(5)
    base = make_features(120, 10, 6, np.float64, seed=5)
    copies = base[rng.integers(0, 120, 60)] + 1e-4 * rng.standard_normal((60, 10))
    x = np.concatenate([base, copies / np.linalg.norm(copies, axis=1, keepdims=True)])
    x = x[rng.permutation(x.shape[0])]
    q, g = x[:30], x[30:]
    np.testing.assert_allclose(k_reciprocal(q, g, 20, 6, 0.3, graph_block=40),
                               dense_k_reciprocal(q, g, 20, 6, 0.3), atol=1e-10)


def test_stream_yields_query_blocks_in_order(make_features):
    x = make_features(200, 8, 6, np.float64, seed=6)
    q, g = x[:23], x[23:]
    blocks = list(k_reciprocal_stream(q, g, 10, 3, 0.3, block_rows=5))
    assert [b[0].tolist() for b in blocks] == [list(range(s, min(s + 5, 23))) for s in range(0, 23, 5)]
    assert all(block.shape == (len(idx), 177) for idx, block in blocks)
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), k_reciprocal(q, g, 10, 3, 0.3), atol=1e-12)


def test_normalize_option_equals_prenormalised_input(make_features):
    x = make_features(100, 8, 5, np.float64, seed=8)
    scaled = x * np.random.default_rng(8).uniform(0.5, 3.0, (100, 1))
    np.testing.assert_allclose(k_reciprocal(scaled[:10], scaled[10:], 12, normalize=True),
                               k_reciprocal(x[:10], x[10:], 12), atol=1e-12)
