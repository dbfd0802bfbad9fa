"""The split of re-ranking work between ranks, and kept query distances (xfd.eval.rerank_split)."""

import numpy as np
import pytest

from xfd.eval.rerank import k_reciprocal
from xfd.eval.rerank_memory import plan
from xfd.eval.rerank_split import keep_query_distances, kept_rows_of, split_work
from xfd.kernels.graph import graph_tiles


def test_distances_are_kept_when_they_cost_at_most_twice_the_features():
    assert keep_query_distances(2000, 18000, 1024)  # 36 M values against 2 x 20.5 M
    assert not keep_query_distances(2000, 18000, 256)  # the GEMM they save is cheap
    assert not keep_query_distances(10000, 190000, 1024)  # 1.9 G values: too many


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("n, q, block, rows", [(700, 150, 64, 7), (700, 64, 64, 100), (90, 89, 32, 5)])
def test_every_tile_and_query_block_has_exactly_one_rank(n, q, block, rows, world, keep):
    splits = [split_work(n, q, block, rows, rank, world, keep) for rank in range(world)]
    tiles = [tile for split in splits for tile in split.tiles]
    assert sorted(tiles) == sorted(graph_tiles(n, block))
    covered = sorted(r for split in splits for start, stop in split.blend_blocks for r in range(start, stop))
    assert covered == list(range(q))
    for split in splits:
        assert all(stop - start <= rows for start, stop in split.blend_blocks)
        if not keep:
            assert split.kept_rows == []
            continue
        for start, stop in split.kept_rows:  # the keeper computes every tile of its rows, and blends only those
            assert {tile for tile in graph_tiles(n, block) if tile[0] == start} <= set(split.tiles)
            assert stop - start <= kept_rows_of(q, block, world)
        kept = {r for start, stop in split.kept_rows for r in range(start, stop)}
        assert {r for start, stop in split.blend_blocks for r in range(start, stop)} == kept
    if keep:  # the graph pass stays balanced
        counts = [len(split.tiles) for split in splits]
        assert max(counts) - min(counts) <= max(1, -(-n // block))


def test_kept_distances_give_the_same_ranking_as_the_blend_gemm():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((260, 40)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kept = k_reciprocal(x[:60], x[60:], 12, 4, 0.3, device="cpu", graph_block=64, block_rows=9, keep_distances=True)
    computed = k_reciprocal(x[:60], x[60:], 12, 4, 0.3, device="cpu", graph_block=64, block_rows=9,
                            keep_distances=False)
    np.testing.assert_allclose(kept, computed, rtol=0, atol=1e-6)  # one GEMM or another: rounding at most
    top = [np.argsort(distances, axis=1, kind="stable")[:, :10] for distances in (kept, computed)]
    assert (top[0] == top[1]).all()


def test_the_planner_counts_kept_rows_instead_of_blend_blocks():
    common = dict(q=2000, g=18000, d=1024, k1=28, k2=6, dtype=np.float32, workers=2, graph_block=1024,
                  resident=0)
    kept, computed = plan(**common, keep=True), plan(**common, keep=False)
    assert kept.parts["kept distances"] == 2000 * 18000 * 4
    assert "kept distances" not in computed.parts
    assert kept.parts["features"] == 20000 * 1024 * 4  # no scaled copy of the query rows
    two_ranks = plan(**{**common, "ranks": 2}, keep=True)
    assert two_ranks.parts["kept distances"] == 1024 * 18000 * 4  # one query row block each
