"""Running top-k merge (NumPy twin of topk.cu): exact k smallest by (value, index) over all merged blocks."""

import numpy as np
import pytest

from xfd.kernels.cpu_source import cpu_library
from xfd.kernels.topk import (PackedTopK, empty_state, is_full, merge_block_c, merge_block_numpy, merge_states,
                              packed_state, settled, working_state)


def _packed_or_plain(n, k, dtype):
    return packed_state(n, k) if np.dtype(dtype) == np.float32 else empty_state(n, k, dtype)


def _merge_in_c(state, block, row_start, col_start, bound=None):
    assert cpu_library() is not None, "the C kernels did not build (a C compiler is needed; see kernels/cpu_source.py)"
    assert merge_block_c(state, block, row_start, col_start, bound), "the C merge declined the block"


# Every way a state is merged on the CPU: the NumPy twin on a plain state (float32 through its table) and on packed
# keys (float32; float64 stays plain), and the C kernels (a transposed view goes to merge_columns_*).
STATES = pytest.mark.parametrize("make_state, merge", [(empty_state, merge_block_numpy),
                                                        (_packed_or_plain, merge_block_numpy),
                                                        (empty_state, _merge_in_c)],
                                 ids=["numpy-plain", "numpy-packed", "c"])


def _brute_topk(matrix, k, bound=None):
    """k smallest (value, index) per row by a stable full sort; entries above `bound` excluded, (+inf, -1) pad."""
    n, m = matrix.shape
    values = np.full((n, k), np.inf)
    indices = np.full((n, k), -1)
    for r in range(n):
        keep = np.arange(m) if bound is None else np.flatnonzero(matrix[r] <= bound[r])
        order = keep[np.argsort(matrix[r, keep], kind="stable")][:k]
        values[r, : order.size] = matrix[r, order]
        indices[r, : order.size] = order
    return values, indices


def _merge_in_column_blocks(matrix, k, widths, bound=None, transposed=False, make_state=empty_state,
                            merge=merge_block_numpy):
    state = make_state(matrix.shape[0], k, matrix.dtype)
    start = 0
    for width in widths:
        block = matrix[:, start : start + width]
        if transposed:  # hand in an F-ordered transposed view, as the symmetric graph pass does
            block = np.ascontiguousarray(block.T).T
        merge(state, block, 0, start, bound)
        start += width
    assert start == matrix.shape[1]
    return settled(state)


@STATES
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_merge_equals_full_stable_sort_with_many_ties(dtype, transposed, make_state, merge):
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 6, size=(40, 97)).astype(dtype)  # values 0..5: ties everywhere
    state = _merge_in_column_blocks(matrix, 9, [10, 1, 30, 7, 49], transposed=transposed, make_state=make_state,
                                    merge=merge)
    values, indices = _brute_topk(matrix, 9)
    np.testing.assert_array_equal(state.indices, indices)
    np.testing.assert_array_equal(state.values, values.astype(dtype))


@STATES
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [False, True])
def test_bound_excludes_larger_entries_and_short_rows_are_padded(dtype, transposed, make_state, merge):
    rng = np.random.default_rng(1)
    matrix = rng.random((25, 60)).astype(dtype)
    bound = np.quantile(matrix, 0.05, axis=1)  # about 3 entries per row, fewer than k
    state = _merge_in_column_blocks(matrix, 8, [13, 47], bound=bound, transposed=transposed, make_state=make_state,
                                    merge=merge)
    values, indices = _brute_topk(matrix, 8, bound)
    np.testing.assert_array_equal(state.indices, indices)
    np.testing.assert_array_equal(state.values, values.astype(dtype))
    assert not is_full(state).any()


def test_rows_offset_and_untouched_rows():
    state = empty_state(5, 2, np.float64)
    merge_block_numpy(state, np.array([[3.0, 1.0, 2.0], [0.5, 0.5, 0.1]]), row_start=2, col_start=10)
    np.testing.assert_array_equal(state.indices[2:4], [[11, 12], [12, 10]])
    np.testing.assert_array_equal(state.values[2:4], [[1.0, 2.0], [0.1, 0.5]])
    assert (state.indices[[0, 1, 4]] == -1).all() and np.isinf(state.values[[0, 1, 4]]).all()


@STATES
def test_blocks_in_any_order_give_the_same_state(make_state, merge):
    rng = np.random.default_rng(2)
    matrix = rng.integers(0, 4, size=(30, 80)).astype(np.float32)  # ties everywhere
    expected = _merge_in_column_blocks(matrix, 7, [20, 20, 20, 20])
    state = make_state(30, 7, np.float32)
    for start in (60, 0, 40, 20):  # columns arriving backwards and out of order
        merge(state, matrix[:, start : start + 20], 0, start)
    np.testing.assert_array_equal(state.indices, expected.indices)
    np.testing.assert_array_equal(state.values, expected.values)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_partial_states_merge_exactly(dtype):
    rng = np.random.default_rng(3)
    matrix = rng.integers(0, 9, size=(25, 120)).astype(dtype)
    whole = _merge_in_column_blocks(matrix, 11, [120])
    parts = []
    for columns in (slice(0, 50), slice(50, 51), slice(51, 120)):  # one part holds a single column: short rows
        part = empty_state(25, 11, dtype)
        merge_block_numpy(part, matrix[:, columns], 0, columns.start)
        parts.append(part)
    merged = merge_states(parts[::-1])
    np.testing.assert_array_equal(merged.indices, whole.indices)
    np.testing.assert_array_equal(merged.values, whole.values)


def test_packed_state_merges_blocks_taller_than_its_row_bits_and_negative_zero():
    rng = np.random.default_rng(4)
    matrix = rng.integers(-3, 4, size=(2100, 40)).astype(np.float32)  # more rows than one packed merge takes
    matrix[5, :4] = -0.0  # -0.0 == +0.0: ties settled by index like any others
    state = packed_state(2100, 6)
    for start in (20, 0):
        merge_block_numpy(state, matrix[:, start : start + 20], 0, start)
    values, indices = _brute_topk(matrix, 6)
    np.testing.assert_array_equal(state.indices, indices)
    np.testing.assert_array_equal(state.values, values.astype(np.float32))
