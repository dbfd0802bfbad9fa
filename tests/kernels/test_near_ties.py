"""The near-tie rule the GPU kernel tests compare neighbour lists under (tests/neighbour_lists.py), checked on CPU
where it matters: the float32 and float64 NumPy twins disagree on this data, and only on near ties."""

import numpy as np
import pytest

from neighbour_lists import NEAR_TIE, assert_same_up_to_near_ties
from xfd.kernels.graph import knn_graph


@pytest.fixture(scope="module")
def unit_rows():
    rng = np.random.default_rng(2)  # tests/kernels/test_gpu.py's data
    x = rng.standard_normal((3000, 64))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_float32_and_float64_lists_differ_only_on_near_ties(unit_rows):
    f32 = knn_graph(unit_rows.astype(np.float32), 30, block_size=512).indices
    f64 = knn_graph(unit_rows, 30, block_size=512).indices
    assert (f32 != f64).any()  # exact equality would be the wrong demand: rounding flips near ties
    assert 0 < assert_same_up_to_near_ties(f32, f64, unit_rows, unit_rows) <= 10


def test_a_swap_of_distinct_neighbours_fails(unit_rows):
    f64 = knn_graph(unit_rows[:500], 30, block_size=512).indices
    wrong = f64.copy()
    wrong[7, [3, 20]] = wrong[7, [20, 3]]  # neighbours 3 and 20 of a row are far more than NEAR_TIE apart
    with pytest.raises(AssertionError, match=f"row 7 position 3.*near tie < {NEAR_TIE}"):
        assert_same_up_to_near_ties(wrong, f64, unit_rows[:500], unit_rows[:500])
    wrong = f64.copy()
    wrong[2, -1] = f64[2, -1] + 1 if f64[2, -1] + 1 not in f64[2] else f64[2, -1] + 2  # another member at the end
    with pytest.raises(AssertionError, match="beyond a near tie"):
        assert_same_up_to_near_ties(wrong, f64, unit_rows[:500], unit_rows[:500])
