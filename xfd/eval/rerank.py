"""Exact k-reciprocal re-ranking (Zhong et al., CVPR 2017; docs/reranking.md) in O(N·k) memory, on one process or
split across the ranks of a torch.distributed launch, streamed as (query indices, distance block) pairs that the
metrics consume.

How the N×N matrices of the textbook algorithm are avoided:
1. One symmetric tiled pass over all N = q + g features gives each row's top-K neighbour list and every column's
   maximum distance (`xfd.kernels.graph`). The initial ranking only matters through rank[i, :k1+1] and
   rank[i, :k2], so K = max(k1 + 1, k2) (+1, see `normalised_rank`) neighbours per row are enough.
2. R(i), R*(i), V and the local query expansion are sparse: O(N·k1²·k2) entries at most
   (`xfd.kernels.reciprocal`, `xfd.kernels.vmatrix`).
3. Jaccard(i, j) = 1 unless V_i and V_j share a non-zero, so only inverted-index candidates are summed
   (`xfd.kernels.jaccard`); the blend (1 - λ)·jaccard + λ·d/colmax[i] is formed per block of query rows, with that
   block's distances recomputed by one GEMM.

Across R ranks (`team`, see `xfd.eval.rerank_team`) every rank holds all features and takes its share of: the
graph's tiles (every R-th of a fixed grid), the rows of R*, V and V_qe (a contiguous range), and the blend's query
blocks (every R-th of a fixed list). Only O(N·k) state crosses ranks: partial neighbour lists to the owner of their
rows, column maxima, rank lists and V rows. Every floating-point result is computed by the same operations on the
same operands whatever the split (fixed tile and block grids, single-threaded BLAS per worker, exact merges), so
1, 2 or 3 ranks give the same distances bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from xfd.eval.distance import DistanceBlocks, assemble
from xfd.eval.rerank_memory import (available_device_bytes, available_host_bytes, blend_rows, local_ranks, plan,
                                    refuse_unless_it_fits)
from xfd.eval.rerank_split import WorkSplit, keep_query_distances, split_work
from xfd.eval.rerank_team import Solo, input_digest
from xfd.eval.validate import check_feature_pair, check_rerank_params
from xfd.kernels.backend import (array_module, fresh_array, module_for_device, resolve_device, stable_argsort,
                                 to_numpy)
from xfd.kernels.csr import SparseRows, concatenate_rows, from_lengths
from xfd.kernels.distance import PreparedRows, distance_block, prepare_rows, squared_norms
from xfd.kernels.graph import NeighbourLists, default_block_size, knn_graph, rounding_margin
from xfd.kernels.jaccard import blend, jaccard_blend, min_intersection
from xfd.kernels.reciprocal import expanded_reciprocal_sets
from xfd.kernels.topk import TopKState, merge_states
from xfd.kernels.vmatrix import inverted_index, local_query_expansion, reciprocal_weights
from xfd.kernels.workers import available_cpus, even_chunks, run_all, run_ordered, single_threaded_blas

ROWS_PER_TASK = 4096  # at most this many rows of V and V_qe per worker task


@dataclass(frozen=True)
class RerankParams:
    """k1, k2, λ of k-reciprocal re-ranking; the paper's values by default (docs/reranking.md)."""

    k1: int = 28
    k2: int = 6
    lam: float = 0.28


@dataclass
class RerankTimes:
    """Seconds this rank spent in each step (wall clock): the index steps, and the blend as the consumer of the
    stream waited for it."""

    steps: dict = field(default_factory=dict)

    def add(self, step: str, seconds: float) -> None:
        self.steps[step] = self.steps.get(step, 0.0) + seconds

    @property
    def total(self) -> float:
        return float(sum(self.steps.values()))


@dataclass(frozen=True)
class RerankIndex:
    """Everything the per-block blend needs: O(N·k) state, built once from all N = q + g features."""

    query: PreparedRows | None  # (q, d) query rows, prepared for squared-Euclidean blocks (None: distances kept)
    gallery: object  # (g, d)
    gallery_sq: object  # (g,)
    column_max: object  # (N,) max distance of each column (docs/reranking.md, step 1)
    v_query: SparseRows  # V rows of the queries (after local query expansion)
    inverted: SparseRows  # gallery rows of V by column
    split: WorkSplit  # this rank's share (xfd.eval.rerank_split)
    kept: dict = field(default_factory=dict)  # kept row range start -> (rows, g) distances of those query rows


def k_reciprocal(query, gallery, k1: int = 28, k2: int = 6, lam: float = 0.28, *, device: str = "auto",
                 normalize: bool = False, block_rows: int | None = None, progress: bool = False,
                 graph_block: int | None = None, workers: int | None = None,
                 keep_distances: bool | None = None) -> np.ndarray:
    """Dense (q, g) re-ranked distances (small problems; large ones should use `k_reciprocal_stream`)."""
    blocks = k_reciprocal_stream(query, gallery, k1, k2, lam, device=device, normalize=normalize,
                                 block_rows=block_rows, progress=progress, graph_block=graph_block, workers=workers,
                                 keep_distances=keep_distances)
    return assemble(blocks, len(query), len(gallery))


def k_reciprocal_stream(query, gallery, k1: int = 28, k2: int = 6, lam: float = 0.28, *, device: str = "auto",
                        normalize: bool = False, block_rows: int | None = None, to_host: bool = True,
                        progress: bool = False, graph_block: int | None = None, team=None,
                        workers: int | None = None, times: RerankTimes | None = None,
                        memory_limit: int | None = None, keep_distances: bool | None = None) -> DistanceBlocks:
    """Re-ranked distances, yielded as (query indices, (b, g) block) in query order.

    The call checks the inputs, plans the memory (refusing a run that will not fit in `memory_limit` bytes, by
    default what the machine has available per local rank) and builds the O(N·k) index (the top-k graph pass, one
    N×N/2 GEMM, is most of the work), so bad or degenerate input fails here; iterating forms one block of query
    rows at a time. Blocks are NumPy arrays, or CuPy arrays on the GPU when `to_host=False`.

    `team` (`xfd.eval.rerank_team.RankTeam`): this process is one of R ranks that share the work; every rank must
    call with the same inputs (checked) and gets its own share of the query blocks only (`xfd.eval.rerank_split`);
    the union over ranks is exactly the single-process stream. `workers`: CPU threads of this rank (default: the
    CPUs it may use, divided by the ranks on this node). `times`: filled with this rank's seconds per step.
    `keep_distances`: whether the graph pass keeps the query-gallery distances for the blend (default: by
    `xfd.eval.rerank_split.keep_query_distances`; the numbers are the same bit for bit on any number of ranks
    either way).
    """
    team = team or Solo()
    times = times if times is not None else RerankTimes()
    with team.step("input checks and memory plan"):  # a refusal on any rank stops every rank
        q_feats, g_feats = check_feature_pair(query, gallery, normalize)
        check_rerank_params(k1, k2, lam, q_feats.shape[0] + g_feats.shape[0])
        device = resolve_device(device)
        xp = module_for_device(device)
        workers = 1 if device == "cuda" else (workers or max(1, available_cpus() // local_ranks()))
        graph_block = graph_block or default_block_size(xp, q_feats.shape[0] + g_feats.shape[0])
        step = block_rows or blend_rows(g_feats.shape[0], q_feats.dtype.itemsize)
        q, g = q_feats.shape[0], g_feats.shape[0]
        keep = keep_query_distances(q, g, q_feats.shape[1]) if keep_distances is None else bool(keep_distances)
        split = split_work(q + g, q, graph_block, step, team.rank, team.world, keep)
        memory = plan(q, g, q_feats.shape[1], k1, k2, q_feats.dtype, team.world, workers, graph_block, step, device,
                      keep=keep)
        refuse_unless_it_fits(memory, memory_limit or available_host_bytes(local_ranks()),
                              available_device_bytes() if device == "cuda" else None)
    if team.world > 1:
        settings = {"k1": k1, "k2": k2, "lam": lam, "device": device, "graph_block": graph_block, "blend": step,
                    "keep": keep}
        team.verify_same(input_digest(q_feats, g_feats, settings=settings), "features, dtypes or parameters")
    with _blas_for(device, workers):
        index = build_index(q_feats, g_feats, k1, k2, device, progress, graph_block, team, workers, times, split)
    return _blend_blocks(index, lam, to_host, progress, workers, device, times)


def normalised_rank(graph: NeighbourLists, k: int, column_max=None):
    """(n, k) initial ranking of docs/reranking.md step 2: order each row by (d / colmax[i], index).

    `column_max`: the maxima of these rows' own columns (default `graph.column_max`, when the lists hold all rows).
    Dividing by colmax[i] preserves the order of distinct distances except where it rounds two of them to one
    value, which the tie rule then settles by index; re-sorting the kept lists on the divided values reproduces
    that. The graph keeps one neighbour more than needed so a tie at the k-th place is settled correctly too.
    """
    xp = array_module(graph.indices)
    column_max = graph.column_max if column_max is None else column_max
    scaled = graph.distances / column_max[:, None]  # (n, K+1)
    order = stable_argsort(scaled, axis=1)[:, :k]
    return xp.take_along_axis(graph.indices, order, axis=1)


def row_bounds(n: int, ranks: int) -> list[int]:
    """Rank r owns rows bounds[r]:bounds[r+1] of R*, V and V_qe (contiguous, balanced)."""
    return [(n * r) // ranks for r in range(ranks + 1)]


def build_index(q_feats: np.ndarray, g_feats: np.ndarray, k1: int, k2: int, device: str, progress: bool = False,
                graph_block: int | None = None, team=None, workers: int = 1,
                times: RerankTimes | None = None, split: WorkSplit | None = None) -> RerankIndex:
    """docs/reranking.md steps 1-6 and the inverted index, sparse: top-k graph, R*(i), V, local query expansion;
    this rank's share of each (`split`, default: no kept distances), and what it needs of the other ranks'
    shares."""
    team = team or Solo()
    times = times if times is not None else RerankTimes()
    xp = module_for_device(device)
    q, n = q_feats.shape[0], q_feats.shape[0] + g_feats.shape[0]
    features = xp.asarray(np.concatenate([q_feats, g_feats]))  # (N, d)
    sq_norms = squared_norms(features)
    k = max(k1 + 1, k2)
    graph_block = graph_block or default_block_size(xp, n)
    split = split or split_work(n, q, graph_block, q, team.rank, team.world, keep=False)
    bounds = row_bounds(n, team.world)
    lo, hi = bounds[team.rank], bounds[team.rank + 1]
    kept = {start: fresh_array(xp, (stop - start, n - q), features.dtype) for start, stop in split.kept_rows}

    def keep_query_rows(row_start: int, col_start: int, tile) -> None:
        """Copy a tile's query-gallery distances into the kept rows (tiles of kept row blocks only)."""
        if row_start in kept:
            rows = kept[row_start]
            first = max(col_start, q)
            if first < col_start + tile.shape[1]:
                rows[:, first - q : col_start + tile.shape[1] - q] = tile[: rows.shape[0], first - col_start :]

    clock = time.perf_counter()
    with team.step("top-k graph"):
        with tqdm(total=len(split.tiles), desc="re-rank: top-k graph", unit="tile", disable=not progress,
                  leave=False) as bar:
            partial = knn_graph(features, min(k + 1, n), "sqeuclidean", block_size=graph_block,
                                on_block=bar.update, tiles=split.tiles, workers=workers, sq_norms=sq_norms,
                                on_tile=keep_query_rows if kept else None)
    clock = _tick(times, "graph", clock)

    lists, column_max = _own_lists(partial, team, bounds, xp)
    del partial
    # A row whose largest distance is within rounding of 0 equals every other row: nothing to normalise by. The
    # typical rounding of a d-term dot product grows like sqrt(d)·eps, not the worst-case d·eps that the graph's
    # pruning bound must assume: trained features can sit that close together and still rank well.
    noise = rounding_margin(math.isqrt(features.shape[1]), features.dtype, 1.0, "sqeuclidean")
    flat = xp.flatnonzero(column_max <= noise)
    if flat.size:
        raise ValueError(f"all features equal row {int(flat[0])}: every distance is 0 (up to rounding) and the "
                         "column-max normalisation of docs/reranking.md step 1 is undefined")
    rank = _all_rows(team, normalised_rank(lists, k, column_max[lo:hi]), xp)  # (N, K)
    clock = _tick(times, "lists", clock)

    with team.step("R* and V"):
        sets = expanded_reciprocal_sets(rank, k1, rows=(lo, hi), workers=workers)  # R*(i) of this rank's rows
        chunks = even_chunks(0, hi - lo, workers, ROWS_PER_TASK)

        def v_rows(rows: tuple[int, int]) -> SparseRows:
            part = NeighbourLists(lists.indices[rows[0] : rows[1]], lists.distances[rows[0] : rows[1]], column_max)
            return reciprocal_weights(sets.rows(*rows), part, features, sq_norms, "sqeuclidean", lo + rows[0])

        v_own = _concatenate(run_all(v_rows, chunks, workers), xp)
    v = _all_sparse_rows(team, v_own, xp)
    clock = _tick(times, "R* and V", clock)

    with team.step("query expansion"):
        v_own = local_query_expansion(v, rank, k2, ROWS_PER_TASK, rows=(lo, hi), workers=workers)
    v = _all_sparse_rows(team, v_own, xp)
    inverted = inverted_index(v, q, n)
    clock = _tick(times, "query expansion", clock)
    gallery = features[q:]
    query = None if kept else prepare_rows(features[:q], "sqeuclidean")
    return RerankIndex(query=query, gallery=gallery, gallery_sq=sq_norms[q:], column_max=column_max,
                       v_query=v.rows(0, q), inverted=inverted, split=split, kept=kept)


def _own_lists(partial: NeighbourLists, team, bounds: list[int], xp) -> tuple[NeighbourLists, object]:
    """This rank's rows of the merged neighbour lists (every rank's partial lists of them, merged exactly) and
    the column maxima of all rows (the maximum over ranks)."""
    if team.world == 1:
        return partial, partial.column_max
    lo, hi = bounds[team.rank], bounds[team.rank + 1]
    indices, distances = team.gather_rows([to_numpy(partial.indices), to_numpy(partial.distances)], bounds)
    merged = merge_states([TopKState(xp.asarray(d), xp.asarray(i)) for i, d in zip(indices, distances)])
    column_max = xp.asarray(team.maximum(to_numpy(partial.column_max)))
    return NeighbourLists(merged.indices, merged.values, column_max[lo:hi]), column_max


def _all_rows(team, own, xp):
    """Every rank's rows of a dense array, stacked in row order."""
    if team.world == 1:
        return own
    (parts,) = team.all_gather([to_numpy(own)])
    return xp.asarray(np.concatenate(parts))


def _all_sparse_rows(team, own: SparseRows, xp) -> SparseRows:
    """Every rank's sparse rows, stacked in row order."""
    if team.world == 1:
        return own
    lengths, indices, data = team.all_gather([to_numpy(own.row_lengths()), to_numpy(own.indices),
                                              to_numpy(own.data)])
    return from_lengths(xp.asarray(np.concatenate(lengths)), xp.asarray(np.concatenate(indices)),
                        xp.asarray(np.concatenate(data)))


def _concatenate(parts: list[SparseRows], xp) -> SparseRows:
    return parts[0] if len(parts) == 1 else concatenate_rows(parts, xp)


def _blend_blocks(index: RerankIndex, lam: float, to_host: bool, progress: bool, workers: int, device: str,
                  times: RerankTimes) -> DistanceBlocks:
    g = index.gallery.shape[0]
    blocks = index.split.blend_blocks
    kept_starts = sorted(index.kept)
    times.add("blend", 0.0)  # a rank may have no query block (fewer blocks than ranks)

    def distances(start: int, stop: int):
        """(b, g) distances of query rows start..stop-1: a view of the kept ones, or one GEMM."""
        if index.kept:
            first = max(s for s in kept_starts if s <= start)
            return index.kept[first][start - first : stop - first]
        rows = PreparedRows(index.query.scaled[start:stop], index.query.sq_norms[start:stop])
        return distance_block(rows, index.gallery, index.gallery_sq, "sqeuclidean")

    def block(bounds: tuple[int, int]):
        start, stop = bounds
        dist = distances(start, stop)  # (b, g)
        v_rows = index.v_query.rows(start, stop)
        if device == "cpu":  # s = Σ min(V_i, V_j) only where it is not 0: no dense (b, g) array of it
            final = jaccard_blend(v_rows, index.inverted, dist, index.column_max[start:stop], lam)
        else:
            shared = min_intersection(v_rows, index.inverted, g)  # (b, g)
            final = blend(shared, dist, index.column_max[start:stop], lam)
        return np.arange(start, stop), (to_numpy(final) if to_host else final)

    with _blas_for(device, workers):
        # `workers` blocks in flight keep every worker busy while the consumer reads the one before them; more
        # would only hold memory (a block is up to 256 rows of the gallery)
        results = run_ordered(block, blocks, workers, ahead=max(1, workers - 1))
        for _ in tqdm(blocks, desc="re-rank: query blocks", unit="block", disable=not progress, leave=False):
            clock = time.perf_counter()
            item = next(results)
            times.add("blend", time.perf_counter() - clock)
            yield item


def _blas_for(device: str, workers: int):
    """Single-threaded BLAS for the CPU workers (see xfd.kernels.workers); nothing to change on the GPU."""
    if device == "cuda":
        from contextlib import nullcontext

        return nullcontext()
    return single_threaded_blas()


def _tick(times: RerankTimes, step: str, clock: float) -> float:
    now = time.perf_counter()
    times.add(step, now - clock)
    return now
