"""Exact k-reciprocal re-ranking (Zhong et al., CVPR 2017; docs/reranking.md) in O(N·k) memory, and plain distances,
both streamed as (query indices, distance block) pairs that the metrics consume.

How the N×N matrices of the textbook algorithm are avoided:
1. One symmetric blocked pass over all N = q + g features gives each row's top-K neighbour list and every column's
   maximum distance (`xfd.kernels.graph`). The initial ranking only matters through rank[i, :k1+1] and
   rank[i, :k2], so K = max(k1 + 1, k2) (+1, see `normalised_rank`) neighbours per row are enough.
2. R(i), R*(i), V and the local query expansion are sparse: O(N·k1²·k2) entries at most
   (`xfd.kernels.reciprocal`, `xfd.kernels.vmatrix`).
3. Jaccard(i, j) = 1 unless V_i and V_j share a non-zero, so only inverted-index candidates are summed
   (`xfd.kernels.jaccard`); the blend (1 - λ)·jaccard + λ·d/colmax[i] is formed per block of query rows, with that
   block's distances recomputed by one GEMM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from xfd.kernels.backend import array_module, module_for_device, resolve_device, stable_argsort, to_numpy
from xfd.kernels.csr import SparseRows
from xfd.kernels.distance import PreparedRows, distance_block, prepare_rows, squared_norms
from xfd.kernels.graph import NeighbourLists, default_block_size, graph_block_pairs, knn_graph, rounding_margin
from xfd.kernels.jaccard import blend, min_intersection
from xfd.kernels.reciprocal import expanded_reciprocal_sets
from xfd.kernels.vmatrix import inverted_index, local_query_expansion, reciprocal_weights
from xfd.eval.distance import DistanceBlocks, assemble, rows_per_block
from xfd.eval.validate import check_feature_pair, check_rerank_params


@dataclass(frozen=True)
class RerankParams:
    """k1, k2, λ of k-reciprocal re-ranking; the paper's values by default (docs/reranking.md)."""

    k1: int = 28
    k2: int = 6
    lam: float = 0.28


@dataclass(frozen=True)
class RerankIndex:
    """Everything the per-block blend needs: O(N·k) state, built once from all N = q + g features."""

    query: PreparedRows  # (q, d) query rows, prepared for squared-Euclidean blocks
    gallery: object  # (g, d)
    gallery_sq: object  # (g,)
    column_max: object  # (N,) max distance of each column (docs/reranking.md step 1)
    v_query: SparseRows  # V rows of the queries (after local query expansion)
    inverted: SparseRows  # gallery rows of V by column


def k_reciprocal(query, gallery, k1: int = 28, k2: int = 6, lam: float = 0.28, *, device: str = "auto",
                 normalize: bool = False, block_rows: int | None = None, progress: bool = False,
                 graph_block: int | None = None) -> np.ndarray:
    """Dense (q, g) re-ranked distances (small problems; large ones should use `k_reciprocal_stream`)."""
    blocks = k_reciprocal_stream(query, gallery, k1, k2, lam, device=device, normalize=normalize,
                                 block_rows=block_rows, progress=progress, graph_block=graph_block)
    return assemble(blocks, len(query), len(gallery))


def k_reciprocal_stream(query, gallery, k1: int = 28, k2: int = 6, lam: float = 0.28, *, device: str = "auto",
                        normalize: bool = False, block_rows: int | None = None, to_host: bool = True,
                        progress: bool = False, graph_block: int | None = None) -> DistanceBlocks:
    """Re-ranked distances, yielded as (query indices, (b, g) block) in query order.

    The call checks the inputs and builds the O(N·k) index (the top-k graph pass, one N×N/2 GEMM, is most of the
    work), so bad or degenerate input fails here; iterating forms one block of query rows at a time. Blocks are
    NumPy arrays, or CuPy arrays on the GPU when `to_host=False`.
    """
    q_feats, g_feats = check_feature_pair(query, gallery, normalize)
    check_rerank_params(k1, k2, lam, q_feats.shape[0] + g_feats.shape[0])
    device = resolve_device(device)
    index = build_index(q_feats, g_feats, k1, k2, device, progress, graph_block)
    step = block_rows or rows_per_block(g_feats.shape[0], g_feats.dtype, device)
    return _blend_blocks(index, lam, step, to_host, progress)


def normalised_rank(graph: NeighbourLists, k: int):
    """(N, k) initial ranking of docs/reranking.md step 2: order each row by (d / colmax[i], index).

    Dividing by colmax[i] preserves the order of distinct distances except where it rounds two of them to one
    value, which the tie rule then settles by index; re-sorting the kept lists on the divided values reproduces
    that. The graph keeps one neighbour more than needed so a tie at the k-th place is settled correctly too.
    """
    xp = array_module(graph.indices)
    scaled = graph.distances / graph.column_max[:, None]  # (N, K+1)
    order = stable_argsort(scaled, axis=1)[:, :k]
    return xp.take_along_axis(graph.indices, order, axis=1)


def build_index(q_feats: np.ndarray, g_feats: np.ndarray, k1: int, k2: int, device: str, progress: bool = False,
                graph_block: int | None = None) -> RerankIndex:
    """docs/reranking.md steps 1-6 and the inverted index, sparse: top-k graph, R*(i), V, local query expansion."""
    xp = module_for_device(device)
    q, n = q_feats.shape[0], q_feats.shape[0] + g_feats.shape[0]
    features = xp.asarray(np.concatenate([q_feats, g_feats]))  # (N, d)
    k = max(k1 + 1, k2)
    graph_block = graph_block or default_block_size(xp)
    with tqdm(total=graph_block_pairs(n, graph_block), desc="re-rank: top-k graph", unit="block",
              disable=not progress, leave=False) as bar:
        graph = knn_graph(features, min(k + 1, n), "sqeuclidean", block_size=graph_block, on_block=bar.update)
    # A row whose largest distance is within rounding of 0 equals every other row: nothing to normalise by. The
    # typical rounding of a d-term dot product grows like sqrt(d)·eps, not the worst-case d·eps that the graph's
    # pruning bound must assume: trained features can sit that close together and still rank well.
    noise = rounding_margin(math.isqrt(features.shape[1]), features.dtype, 1.0, "sqeuclidean")
    flat = xp.flatnonzero(graph.column_max <= noise)
    if flat.size:
        raise ValueError(f"all features equal row {int(flat[0])}: every distance is 0 (up to rounding) and the "
                         "column-max normalisation of docs/reranking.md step 1 is undefined")
    rank = normalised_rank(graph, k)  # (N, K)
    sets = expanded_reciprocal_sets(rank, k1)  # R*(i)
    v = reciprocal_weights(sets, graph, features, squared_norms(features), "sqeuclidean")
    v = local_query_expansion(v, rank, k2)
    gallery = features[q:]
    return RerankIndex(query=prepare_rows(features[:q], "sqeuclidean"), gallery=gallery,
                       gallery_sq=squared_norms(gallery), column_max=graph.column_max, v_query=v.rows(0, q),
                       inverted=inverted_index(v, q, n))


def _blend_blocks(index: RerankIndex, lam: float, step: int, to_host: bool, progress: bool) -> DistanceBlocks:
    q, g = index.query.scaled.shape[0], index.gallery.shape[0]
    for start in tqdm(range(0, q, step), desc="re-rank: query blocks", unit="block", disable=not progress,
                      leave=False):
        stop = min(start + step, q)
        rows = PreparedRows(index.query.scaled[start:stop], index.query.sq_norms[start:stop])
        shared = min_intersection(index.v_query.rows(start, stop), index.inverted, g)  # (b, g) Σ min(V_i, V_j)
        dist = distance_block(rows, index.gallery, index.gallery_sq, "sqeuclidean")  # (b, g)
        final = blend(shared, dist, index.column_max[start:stop], lam)
        yield np.arange(start, stop), (to_numpy(final) if to_host else final)
