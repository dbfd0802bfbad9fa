"""The CUDA kernels' logic, run on the CPU: kernels/topk.cu and kernels/jaccard.cu are compiled with g++ against
cuda_emulation/emulation.h (threads of a block as std::threads, barriers, emulated warp shuffles and atomics) and
compared with their NumPy twins on the same inputs.

This checks what the kernels compute — indexing, the two-phase merge, synchronisation order — on machines
without a GPU. It does not replace the @pytest.mark.gpu tests on real hardware.
"""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from xfd.kernels.csr import from_lengths
from xfd.kernels.jaccard import min_intersection_numpy
from xfd.kernels.topk import empty_state, merge_block_numpy
from xfd.kernels.vmatrix import inverted_index

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).resolve().parent / "cuda_emulation"

pytestmark = [pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (C++20) to build the emulation"),
              pytest.mark.slow]  # builds the C++ emulation


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    exe = tmp_path_factory.mktemp("cuda_emulation") / "driver"
    subprocess.run(["g++", "-std=c++20", "-O2", "-pthread", "-Wall", "-Werror", f"-I{ROOT / 'kernels'}",
                    f"-I{HARNESS}", str(HARNESS / "driver.cpp"), "-o", str(exe)], check=True)
    return exe


def _tag(dtype):
    return "f32" if np.dtype(dtype) == np.float32 else "f64"


def _merge_emulated(driver, folder: Path, state, block, row_start, col_start, bound):
    paths = {name: folder / f"{name}.bin" for name in ("block", "values", "indices", "bound")}
    np.ascontiguousarray(block).tofile(paths["block"])
    state.values.tofile(paths["values"])
    state.indices.tofile(paths["indices"])
    bound.astype(state.values.dtype).tofile(paths["bound"])
    n_state, k = state.values.shape
    subprocess.run([str(driver), "topk", _tag(block.dtype), *map(str, (*block.shape, k, row_start, col_start, n_state)),
                    *map(str, paths.values())], check=True)
    state.values[:] = np.fromfile(paths["values"], dtype=state.values.dtype).reshape(n_state, k)
    state.indices[:] = np.fromfile(paths["indices"], dtype=np.int64).reshape(n_state, k)


@pytest.mark.parametrize("dtype, k", [(np.float32, 29), (np.float64, 5), (np.float32, 128)])
def test_topk_kernel_emulated_equals_numpy_twin(driver, tmp_path, dtype, k):
    rng = np.random.default_rng(k)
    n_state = 12
    matrix = rng.integers(0, 40, size=(9 if k < 100 else 3, 700)).astype(dtype)  # ties everywhere
    bound = np.full(n_state, np.inf)
    bound[5] = 3.0  # one row with a bound that leaves it short of k entries
    emulated = empty_state(n_state, k, dtype)
    twin = empty_state(n_state, k, dtype)
    start = 0
    for width in (300, 1, 399):  # state rows from 2 on, columns in increasing blocks
        block = matrix[:, start : start + width]
        merge_block_numpy(twin, block, 2, start, bound)
        _merge_emulated(driver, tmp_path, emulated, block, 2, start, bound)
        start += width
    np.testing.assert_array_equal(emulated.indices, twin.indices)
    np.testing.assert_array_equal(emulated.values, twin.values)
    touched = slice(2, 2 + matrix.shape[0])
    assert (twin.indices[touched, 0] >= 0).all() and (twin.indices[[0, 1, 11]] == -1).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jaccard_kernel_emulated_equals_numpy_twin(driver, tmp_path, dtype):
    rng = np.random.default_rng(0)
    n, q = 90, 20
    dense = (rng.random((n, n)) * (rng.random((n, n)) < 0.15)).astype(dtype)
    rows, cols = np.nonzero(dense)
    v = from_lengths(np.bincount(rows, minlength=n), cols, dense[rows, cols])
    query, index = v.rows(0, q), inverted_index(v, q, n)
    arrays = {"q_indptr": query.indptr, "q_cols": query.indices, "q_vals": query.data, "g_colptr": index.indptr,
              "g_rows": index.indices, "g_vals": index.data}
    for name, array in arrays.items():
        np.ascontiguousarray(array).tofile(tmp_path / f"{name}.bin")
    out = tmp_path / "out.bin"
    subprocess.run([str(driver), "jaccard", _tag(dtype), str(q), str(n - q), str(query.nnz), str(n), str(index.nnz),
                    *(str(tmp_path / f"{name}.bin") for name in arrays), str(out)], check=True)
    got = np.fromfile(out, dtype=dtype).reshape(q, n - q)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, min_intersection_numpy(query, index, n - q), rtol=tol, atol=tol)
