"""CuPy/CUDA kernels against their NumPy twins on the same inputs (run only where a CUDA device exists)."""

import numpy as np
import pytest

from neighbour_lists import assert_same_up_to_near_ties
from xfd.kernels.csr import from_lengths
from xfd.kernels.graph import knn_graph, knn_rows
from xfd.kernels.jaccard import blend, min_intersection, min_intersection_numpy
from xfd.kernels.topk import CUDA_MAX_K, empty_state, merge_block, merge_block_numpy
from xfd.kernels.vmatrix import inverted_index

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cupy():
    return pytest.importorskip("cupy")


def _merge_both(cupy, matrix, k, widths, bound=None, transposed=False):
    state_np = empty_state(matrix.shape[0], k, matrix.dtype)
    state_cp = empty_state(matrix.shape[0], k, matrix.dtype, cupy)
    bound_cp = None if bound is None else cupy.asarray(bound)
    start = 0
    for width in widths:
        block = np.ascontiguousarray(matrix[:, start : start + width])
        merge_block_numpy(state_np, block, 0, start, bound)
        block_cp = cupy.asarray(block.T).T if transposed else cupy.asarray(block)  # strided view: wrapper copies
        merge_block(state_cp, block_cp, 0, start, bound_cp)
        start += width
    return state_np, state_cp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 29, CUDA_MAX_K])
def test_topk_kernel_equals_numpy_twin_with_ties(cupy, dtype, k):
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 50, size=(300, 2000)).astype(dtype)  # many exact ties
    state_np, state_cp = _merge_both(cupy, matrix, k, [700, 1, 299, 1000], transposed=(k == 29))
    np.testing.assert_array_equal(cupy.asnumpy(state_cp.indices), state_np.indices)
    np.testing.assert_array_equal(cupy.asnumpy(state_cp.values), state_np.values)


def test_topk_kernel_respects_bound_and_pads(cupy):
    rng = np.random.default_rng(1)
    matrix = rng.random((64, 5000))
    bound = np.quantile(matrix, 0.001, axis=1)  # ~5 entries per row, fewer than k
    state_np, state_cp = _merge_both(cupy, matrix, 16, [2500, 2500], bound)
    np.testing.assert_array_equal(cupy.asnumpy(state_cp.indices), state_np.indices)
    np.testing.assert_array_equal(cupy.asnumpy(state_cp.values), state_np.values)


def test_topk_kernel_rejects_k_above_its_limit(cupy):
    state = empty_state(2, CUDA_MAX_K + 1, np.float32, cupy)
    with pytest.raises(ValueError, match="at most"):
        merge_block(state, cupy.zeros((2, 3), dtype=np.float32), 0, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_knn_graph_gpu_equals_cpu(cupy, dtype):
    """cuBLAS and the CPU BLAS round float32 distances differently (~1e-6) while these random unit vectors have
    neighbours ~3e-8 apart, so float32 lists are compared under the near-tie rule (tests/neighbour_lists.py:
    equal except where the two neighbours' float64 distances differ by < 1e-5); float64 lists must be identical."""
    rng = np.random.default_rng(2)
    x64 = rng.standard_normal((3000, 64))
    x64 = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    x = x64.astype(dtype)
    cpu = knn_graph(x, 30, block_size=512)
    gpu = knn_graph(cupy.asarray(x), 30, block_size=1024)
    rows_cpu = knn_rows(x[:100], x[100:], 12, "cosine")
    rows_gpu = knn_rows(cupy.asarray(x[:100]), cupy.asarray(x[100:]), 12, "cosine")
    if dtype == np.float64:
        np.testing.assert_array_equal(cupy.asnumpy(gpu.indices), cpu.indices)
        np.testing.assert_array_equal(cupy.asnumpy(rows_gpu.indices), rows_cpu.indices)
    else:
        assert_same_up_to_near_ties(cupy.asnumpy(gpu.indices), cpu.indices, x64, x64)
        assert_same_up_to_near_ties(cupy.asnumpy(rows_gpu.indices), rows_cpu.indices, x64[:100], x64[100:],
                                    "cosine")
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(cupy.asnumpy(gpu.distances), cpu.distances, atol=tol)  # by position: ties swap
    np.testing.assert_allclose(cupy.asnumpy(gpu.column_max), cpu.column_max, atol=tol)  # equal values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_min_intersection_kernel_equals_numpy_twin(cupy, dtype):
    rng = np.random.default_rng(3)
    n, q = 500, 120
    dense = (rng.random((n, n)) * (rng.random((n, n)) < 0.05)).astype(dtype)
    rows, cols = np.nonzero(dense)
    v = from_lengths(np.bincount(rows, minlength=n), cols, dense[rows, cols])
    index = inverted_index(v, q, n)
    expected = min_intersection_numpy(v.rows(0, q), index, n - q)

    def to_gpu(sparse):
        return type(sparse)(cupy.asarray(sparse.indptr), cupy.asarray(sparse.indices), cupy.asarray(sparse.data))

    got = min_intersection(to_gpu(v.rows(0, q)), to_gpu(index), n - q)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(cupy.asnumpy(got), expected, rtol=tol, atol=tol)
    # the blend is written once over xp: same numbers on both sides
    d = rng.random((q, n - q)).astype(dtype)
    row_max = (rng.random(q) + 1).astype(dtype)
    cpu = blend(expected, d.copy(), row_max, 0.3)
    gpu = blend(got, cupy.asarray(d), cupy.asarray(row_max), 0.3)
    np.testing.assert_allclose(cupy.asnumpy(gpu), cpu, rtol=tol, atol=tol)
