"""Re-ranking memory is O(N·k), not O(N²): at N = 50k the dense algorithm's N×N float32 matrices take 10 GB each
(about four of them); the streaming form must stay far below one.

Small feature dimension (16) keeps the GEMM cheap, so the test is about memory, and quick (~20 s on 2 cores).
Peak is measured with tracemalloc, which sees every NumPy allocation.
"""

import tracemalloc

import numpy as np
import pytest

from xfd.eval.rerank import k_reciprocal_stream
from xfd.eval.synthetic import reid_features

N_QUERY, N_GALLERY = 1_000, 49_000
DENSE_MATRIX_BYTES = (N_QUERY + N_GALLERY) ** 2 * 4  # one N×N float32: 10 GB


@pytest.mark.slow  # N = 50k
def test_peak_memory_at_50k_is_a_small_fraction_of_one_dense_matrix():
    data = reid_features(N_QUERY, N_GALLERY, dim=16, n_ids=2_500, seed=0)
    tracemalloc.start()
    try:
        rows, lowest, highest = 0, np.inf, -np.inf
        for indices, block in k_reciprocal_stream(data.q_feats, data.g_feats, 28, 6, 0.28):
            assert block.shape == (indices.size, N_GALLERY) and np.isfinite(block).all()
            rows += indices.size
            lowest, highest = min(lowest, block.min()), max(highest, block.max())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == N_QUERY
    # distances are (1-λ)·jaccard + λ·d/colmax with both terms in [0, 1] (up to rounding)
    assert -1e-6 <= lowest and highest <= 1 + 1e-6
    assert peak < DENSE_MATRIX_BYTES / 10, f"peak {peak / 2**20:.0f} MB"  # measured: about 0.5 GB
