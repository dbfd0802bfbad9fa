"""Inverted-index min-intersection (NumPy twin of jaccard.cu) and the final blend."""

import numpy as np

from xfd.kernels.csr import from_lengths
from xfd.kernels.jaccard import blend, blend_pairs, min_intersection, min_intersection_numpy, shared_pairs
from xfd.kernels.vmatrix import inverted_index


def _sparse_rows(n, m, density, seed):
    rng = np.random.default_rng(seed)
    dense = rng.random((n, m)) * (rng.random((n, m)) < density)
    rows, cols = np.nonzero(dense)
    return dense, from_lengths(np.bincount(rows, minlength=n), cols, dense[rows, cols])


def test_min_intersection_equals_dense_sum_of_minima():
    dense, v = _sparse_rows(70, 70, 0.1, 0)
    q = 20
    index = inverted_index(v, q, 70)
    expected = np.minimum(dense[:q, None, :], dense[None, q:, :]).sum(-1)  # (q, g)
    np.testing.assert_allclose(min_intersection(v.rows(0, q), index, 50), expected, rtol=1e-12, atol=1e-15)
    # tiny chunks: every row on its own, the same numbers
    chunked = min_intersection_numpy(v.rows(0, q), index, 50, pairs_per_chunk=1)
    np.testing.assert_allclose(chunked, expected, rtol=1e-12, atol=1e-15)


def test_rows_sharing_nothing_have_zero_intersection():
    dense = np.array([[0.6, 0.4, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5], [0.1, 0.0, 0.0, 0.9]])
    rows, cols = np.nonzero(dense)
    v = from_lengths(np.bincount(rows, minlength=3), cols, dense[rows, cols])
    s = min_intersection(v.rows(0, 1), inverted_index(v, 1, 4), 2)
    np.testing.assert_allclose(s, [[0.0, 0.1]])  # row 0 vs row 1: no shared column; vs row 2: min(.6, .1)


def test_blend_by_hand():
    s = np.array([[0.0, 0.5, 1.0]])
    d = np.array([[2.0, 1.0, 0.0]])
    out = blend(s, d.copy(), np.array([4.0]), lam=0.25)
    # jaccard = 1 - s/(2-s) = [1, 2/3, 0]; d/colmax = [.5, .25, 0]
    np.testing.assert_allclose(out, [[0.75 * 1 + 0.25 * 0.5, 0.75 * (2 / 3) + 0.25 * 0.25, 0.0]])


def test_sparse_pairs_and_their_blend_equal_the_dense_forms_bit_for_bit():
    dense, v = _sparse_rows(90, 90, 0.08, 4)
    q = 30
    v = type(v)(v.indptr, v.indices, v.data.astype(np.float32))
    index = inverted_index(v, q, 90)
    keys, sums = shared_pairs(v.rows(0, q), index, 60, pairs_per_chunk=50)  # many chunks
    s = min_intersection_numpy(v.rows(0, q), index, 60)
    assert np.all(np.diff(keys) > 0) and np.all(sums > 0)
    np.testing.assert_array_equal(s.reshape(-1)[keys], sums)
    assert np.count_nonzero(s) == keys.size
    d = np.random.default_rng(5).random((q, 60)).astype(np.float32) * 3
    row_max = (np.random.default_rng(6).random(q) + 3).astype(np.float32)
    np.testing.assert_array_equal(blend_pairs(keys, sums, d.copy(), row_max, 0.28), blend(s, d.copy(), row_max, 0.28))
