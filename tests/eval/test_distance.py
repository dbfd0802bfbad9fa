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


def test_streamed_blocks_stay_within_the_memory_budget_and_use_it(make_features, monkeypatch):
    """Measured, not re-derived: the memory the stream allocates while blocks are consumed (tracemalloc sees NumPy's
    buffers) stays under the budget, and a block's own distances fill at least a quarter of it."""
    import tracemalloc

    import xfd.eval.distance as distance

    budget = 4 << 20
    monkeypatch.setitem(distance.DEFAULT_BLOCK_BYTES, "cpu", budget)
    x = make_features(20_300, 64, 50, np.float32, seed=3)
    q, g = x[:300], x[300:]
    tracemalloc.start()
    try:
        stream = distance_stream(q, g, device="cpu")
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        sizes = []
        for indices, block in stream:
            sizes.append(block.nbytes)
            del block
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert sum(size // (g.shape[0] * 4) for size in sizes) == 300  # every query row, once
    assert peak <= budget, f"{peak / 2**20:.2f} MiB allocated at once for a {budget / 2**20:.0f} MiB budget"
    assert max(sizes) >= budget // 4, f"blocks of {max(sizes)} bytes leave most of the budget unused"
    assert rows_per_block(10**12, np.float64, "cpu") == 1  # never zero rows, however large the gallery
