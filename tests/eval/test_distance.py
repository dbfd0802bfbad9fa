"""Plain distance stream: cosine / squared Euclidean distances in query blocks."""

import numpy as np

from xfd.eval.distance import distance_stream, pairwise, rows_per_block


def test_plain_distance_stream_is_cosine_distance(make_features):
    x = make_features(90, 8, 5, np.float32, seed=7)
    q, g = x[:20], x[20:]
    blocks = list(distance_stream(q, g, block_rows=6))
    assert len(blocks) == 4
    np.testing.assert_allclose(np.concatenate([b for _, b in blocks]), 1 - q @ g.T, atol=1e-6)
    np.testing.assert_allclose(pairwise(q, g, "sqeuclidean"), 2 - 2 * q @ g.T, atol=1e-5)


def test_block_rows_follow_the_memory_budget():
    # 256 MiB budget, one float32 (rows, g) array + one float64 one per row: 12 bytes per gallery item
    assert rows_per_block(1_000_000, np.float32, "cpu", arrays=1) == (256 << 20) // 12_000_000
    assert rows_per_block(10**12, np.float64, "cpu") == 1
