"""How exact re-ranking shares its work between the ranks, and whether the graph pass keeps the query distances.

Kept query distances. The top-k graph pass computes every query-gallery distance once (the tiles of the row blocks
that hold queries: queries are rows 0..q-1). When they are kept, the blend reads them instead of computing the
(q, g) GEMM again: the run then costs about one GEMM of half N×N, not that plus q×g. They take q·g values, so they
are kept when that is at most KEEP_PER_FEATURE times the N·d values of the features the run holds anyway: the GEMM
they save costs 2·d operations per kept value, worth its memory at large d (ViT-L/14's 1024: q = 2k, g = 18k keeps
144 MB and saves 15 % of the work), not at small d, where the GEMM is cheap. `keep_distances` forces either way.

The split is a function of (N, q, tile size, blend block rows, ranks, keep) alone, so every rank derives the same one:
- without kept distances, rank r takes every R-th tile of the fixed grid and every R-th blend block;
- with them, the row blocks holding queries go round the ranks, each with every tile of its row (so its owner holds
  the distances of its query rows) and the blend blocks of its rows; the other tiles then go, in grid order, each to
  the rank with the fewest tiles so far, which balances the graph pass.
Which rank computes a tile never changes its numbers (single-threaded BLAS, fixed tile shapes), so every split gives
the same distances bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

from xfd.kernels.graph import graph_tiles

KEEP_PER_FEATURE = 2  # kept query distances may take up to this many times the features' values


def keep_query_distances(q: int, g: int, d: int) -> bool:
    """Whether the graph pass keeps the (q, g) distances for the blend (see the module docstring)."""
    return q * g <= KEEP_PER_FEATURE * (q + g) * d


@dataclass(frozen=True)
class WorkSplit:
    """One rank's share of a re-ranking run."""

    tiles: list  # (row start, column start) of its graph tiles, in grid order
    kept_rows: list  # (start, stop) query row ranges whose distances it keeps; empty without kept distances
    blend_blocks: list  # (start, stop) query row ranges it blends, ascending


def split_work(n: int, q: int, graph_block: int, blend_rows: int, rank: int, world: int, keep: bool) -> WorkSplit:
    """This rank's tiles, kept query rows and blend blocks (see the module docstring)."""
    grid = graph_tiles(n, graph_block)
    if not keep:
        blocks = [(start, min(start + blend_rows, q)) for start in range(0, q, blend_rows)]
        return WorkSplit(grid[rank::world], [], blocks[rank::world])
    query_blocks = list(range(0, q, graph_block))  # row blocks that hold queries
    owner = {start: i % world for i, start in enumerate(query_blocks)}
    shares: list[list] = [[] for _ in range(world)]
    for tile in grid:
        if tile[0] in owner:
            shares[owner[tile[0]]].append(tile)
    for tile in grid:
        if tile[0] not in owner:
            min(shares, key=len).append(tile)  # the first of the least loaded ranks
    rows = [(start, min(start + graph_block, q)) for start in query_blocks if owner[start] == rank]
    blocks = [(start, min(start + blend_rows, stop))
              for first, stop in rows for start in range(first, stop, blend_rows)]
    return WorkSplit(sorted(shares[rank]), rows, blocks)


def kept_rows_of(n_queries: int, graph_block: int, world: int) -> int:
    """The most query rows one rank keeps distances for (the memory planner's figure)."""
    blocks = -(-n_queries // graph_block)
    return min(n_queries, -(-blocks // world) * graph_block)
