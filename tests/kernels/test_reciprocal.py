"""k-reciprocal sets and their expansion: vectorised kernel vs a plain set-based implementation."""

import numpy as np
import pytest

from xfd.kernels.reciprocal import expanded_reciprocal_sets, half_length, reciprocal_mask


@pytest.mark.parametrize("k1, expected", [(5, 3), (7, 5), (9, 5), (20, 11), (27, 15), (28, 15), (1, 1)])
def test_half_length_uses_bankers_rounding(k1, expected):
    # numpy.around rounds halves to even: 2.5 -> 2, 3.5 -> 4, 4.5 -> 4, 13.5 -> 14, 0.5 -> 0.
    assert half_length(k1) == expected


def _rank_lists(n, k, seed):
    """Rank lists of a random point cloud (each row starts with itself), like an initial ranking."""
    x = np.random.default_rng(seed).standard_normal((n, 4))
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


def _reciprocal_set(rank, i, length):
    return {int(j) for j in rank[i, :length] if i in rank[j, :length]}


def _expanded_set(rank, i, k1):
    r = _reciprocal_set(rank, i, k1 + 1)
    out = set(r)
    for c in r:
        rc = _reciprocal_set(rank, c, half_length(k1))
        if len(rc & r) > 2 / 3 * len(rc):
            out |= rc
    return sorted(out)


def test_reciprocal_mask_matches_definition():
    rank = _rank_lists(80, 12, 0)
    mask = reciprocal_mask(rank, 12, chunk_rows=7)
    np.testing.assert_array_equal(reciprocal_mask(rank, 12, rows=(30, 47)), mask[30:47])
    for i in range(80):
        expected = [i in rank[j, :12] for j in rank[i, :12]]
        assert mask[i].tolist() == expected


@pytest.mark.parametrize("k1", [4, 5, 7, 10])
def test_expanded_sets_match_set_implementation(k1, cpu_kernels):
    rank = _rank_lists(150, k1 + 3, 1)
    sets = expanded_reciprocal_sets(rank, k1, chunk_rows=16, workers=2)
    for i in range(150):
        got = sets.indices[sets.indptr[i] : sets.indptr[i + 1]].tolist()
        assert got == _expanded_set(rank, i, k1)
    assert (sets.row_lengths() > sets.row_lengths().min()).any()  # expansion really happened somewhere
    part = expanded_reciprocal_sets(rank, k1, rows=(37, 101))  # a rank's share: the same rows
    whole = sets.rows(37, 101)
    np.testing.assert_array_equal(part.indptr, whole.indptr)
    np.testing.assert_array_equal(part.indices, whole.indices)


def test_row_without_reciprocal_neighbour_is_an_error(cpu_kernels):
    rank = np.array([[0, 1, 2], [1, 0, 2], [0, 1, 2]])  # no first-2 list contains row 2
    with pytest.raises(ValueError, match=r"row 2 \(and 0 more\) has no k-reciprocal neighbour"):
        expanded_reciprocal_sets(rank, 1)


def test_rank_shorter_than_k1_plus_one_is_rejected():
    with pytest.raises(ValueError, match="needs"):
        expanded_reciprocal_sets(np.zeros((4, 3), dtype=np.int64), 3)
