"""The C kernels (kernels/cpu_kernels.c) against their NumPy twins, bit for bit, and how they are built and switched
off. The merges are compared in test_topk.py; here: the tile epilogue with maxima, the Jaccard blend, the graph pass
and the whole re-ranking with and without them."""

from __future__ import annotations

import numpy as np
import pytest

from xfd.eval.rerank import k_reciprocal
from xfd.eval.synthetic import reid_features
from xfd.kernels import cpu_source
from xfd.kernels.cpu_source import cpu_library
from xfd.kernels.csr import from_lengths
from xfd.kernels.distance import finish_dots, finish_dots_with_maxima, squared_norms
from xfd.kernels.graph import knn_graph
from xfd.kernels.jaccard import blend_pairs, jaccard_blend, shared_pairs
from xfd.kernels.topk import PackedTopK, TopKState, working_state
from xfd.kernels.vmatrix import inverted_index, local_query_expansion


def test_the_library_builds_here():
    assert cpu_library() is not None, "the C kernels did not build: a C compiler (cc, gcc or $CC) is needed"


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(37, 53), (16, 64), (1, 5)])  # widths off and on the 16-lane grid
def test_tile_epilogue_and_maxima_equal_the_array_operations(metric, dtype, shape):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((shape[0], 24)).astype(dtype)
    cols = rng.standard_normal((shape[1], 24)).astype(dtype)
    dots = rows @ cols.T
    expected = finish_dots(dots.copy(), squared_norms(rows), squared_norms(cols), metric)
    block, row_max, col_max = finish_dots_with_maxima(dots.copy(), squared_norms(rows), squared_norms(cols), metric)
    assert block.tobytes() == expected.tobytes()
    assert row_max.tobytes() == expected.max(axis=1).tobytes()
    assert col_max.tobytes() == expected.max(axis=0).tobytes()
    _, no_rows, _ = finish_dots_with_maxima(dots.copy(), squared_norms(rows), squared_norms(cols), metric, False)
    assert no_rows is None


def _v_rows(n, m, per_row, seed, dtype):
    """Sparse rows normalised like V: `per_row` columns each, positive weights summing to 1."""
    rng = np.random.default_rng(seed)
    cols = np.sort(np.stack([rng.choice(m, per_row, replace=False) for _ in range(n)]), axis=1).reshape(-1)
    data = rng.random((n, per_row)) + 0.01
    data = (data / data.sum(axis=1, keepdims=True)).astype(dtype).reshape(-1)
    data[::7] = data[3]  # equal weights on both sides: min() of equal values
    return from_lengths(np.full(n, per_row), cols, data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_jaccard_blend_equals_shared_pairs_and_blend_pairs(dtype):
    q, n = 30, 230
    v = _v_rows(n, n, 12, 1, dtype)
    inverted = inverted_index(v, q, n)
    g = n - q
    rng = np.random.default_rng(2)
    dist = (rng.random((q, g)) * 3).astype(dtype)
    row_max = dist.max(axis=1) + dtype(0.5)
    for start, stop in ((0, q), (7, 19)):  # a slice of query rows: their own CSR rows, a strided distance view
        rows = v.rows(start, stop)
        keys, sums = shared_pairs(rows, inverted, g)
        assert keys.size > 0 and keys.size < (stop - start) * g  # some pairs share columns, most do not
        expected = blend_pairs(keys, sums, dist[start:stop].copy(), row_max[start:stop], 0.28)
        wide = np.zeros((stop - start, g + 5), dtype=dtype)  # rows further apart than g
        wide[:, :g] = dist[start:stop]
        got = jaccard_blend(rows, inverted, wide[:, :g], row_max[start:stop], 0.28)
        assert np.ascontiguousarray(got).tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_query_expansion_equals_the_sparse_product(dtype, monkeypatch):
    n = 300
    v = _v_rows(n, n, 17, 6, dtype)
    rank = np.stack([np.random.default_rng(i).permutation(n)[:9] for i in range(n)])  # distinct, unsorted
    with_c = local_query_expansion(v, rank, 6, chunk_rows=32, rows=(11, 250), workers=2)
    monkeypatch.setenv(cpu_source.CHOICE_VARIABLE, "numpy")
    cpu_library.cache_clear()
    try:
        without = local_query_expansion(v, rank, 6, chunk_rows=32, rows=(11, 250), workers=2)
    finally:
        monkeypatch.delenv(cpu_source.CHOICE_VARIABLE)
        cpu_library.cache_clear()
    assert with_c.indptr.tobytes() == without.indptr.tobytes()
    assert with_c.indices.tobytes() == without.indices.tobytes()
    assert with_c.data.dtype == without.data.dtype == dtype and with_c.data.tobytes() == without.data.tobytes()


def test_graph_pass_is_the_same_with_and_without_the_c_kernels(monkeypatch):
    x = np.random.default_rng(3).standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    with_c = knn_graph(x, 9, block_size=64, workers=2)
    monkeypatch.setenv(cpu_source.CHOICE_VARIABLE, "numpy")
    cpu_library.cache_clear()
    try:
        assert isinstance(working_state(300, 9, np.float32), PackedTopK)
        without = knn_graph(x, 9, block_size=64, workers=2)
    finally:
        monkeypatch.delenv(cpu_source.CHOICE_VARIABLE)
        cpu_library.cache_clear()
    assert isinstance(working_state(300, 9, np.float32), TopKState)
    assert with_c.indices.tobytes() == without.indices.tobytes()
    assert np.asarray(with_c.distances).tobytes() == np.asarray(without.distances).tobytes()
    assert with_c.column_max.tobytes() == without.column_max.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keep", [True, False])
def test_rerank_is_the_same_with_and_without_the_c_kernels(dtype, keep, monkeypatch):
    data = reid_features(40, 260, 32, 30, seed=5)
    q, g = data.q_feats.astype(dtype), data.g_feats.astype(dtype)
    kwargs = dict(device="cpu", graph_block=64, block_rows=16, workers=2, keep_distances=keep)
    with_c = k_reciprocal(q, g, 20, 6, 0.3, **kwargs)
    monkeypatch.setenv(cpu_source.CHOICE_VARIABLE, "numpy")
    cpu_library.cache_clear()
    try:
        without = k_reciprocal(q, g, 20, 6, 0.3, **kwargs)
    finally:
        monkeypatch.delenv(cpu_source.CHOICE_VARIABLE)
        cpu_library.cache_clear()
    assert with_c.dtype == without.dtype == dtype
    assert with_c.tobytes() == without.tobytes()


def test_build_is_cached_by_source_and_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cc = cpu_source.compiler()
    source = "void f(void) {}\n"
    path = cpu_source.library_path(cc, source)
    assert path.parent == tmp_path / "xfd" / "cpu_kernels"
    assert cpu_source.library_path(cc, source + "\n") != path  # an edit builds anew
    cpu_source.build(cc, source, path)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_a_compiler_that_fails_leaves_the_numpy_twins_with_a_warning(tmp_path, monkeypatch):
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'broken-cc: no such thing' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cpu_library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="(?s)could not be built or loaded.*broken-cc: no such thing"):
            assert cpu_library() is None
        assert isinstance(working_state(10, 3, np.float32), PackedTopK)
    finally:
        cpu_library.cache_clear()


def test_switched_off_by_the_environment(numpy_only):
    assert cpu_library() is None
