"""Exact k-reciprocal re-ranking (Zhong et al., CVPR 2017; REFERENCE §3) in O(N·k) memory, and plain distances,
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

from dataclasses import dataclass
from typing import Iterator

import numpy as np
from tqdm import tqdm

from xfd.kernels.backend import array_module, module_for_device, resolve_device, stable_argsort, to_numpy
from xfd.kernels.distance import PreparedRows, distance_block, prepare_rows, squared_norms
from xfd.kernels.graph import NeighbourLists, default_block_size, graph_block_pairs, knn_graph
from xfd.kernels.jaccard import blend, min_intersection
from xfd.kernels.reciprocal import expanded_reciprocal_sets
from xfd.kernels.vmatrix import inverted_index, local_query_expansion, reciprocal_weights
from xfd.eval.validate import check_feature_pair, check_rerank_params

DistanceBlocks = Iterator[tuple[np.ndarray, object]]  # (query indices (b,), distances (b, g))

# Bytes of (query rows × gallery) working arrays per streamed block: the output, its distances and the Jaccard sums.
DEFAULT_BLOCK_BYTES = {"cpu": 256 << 20, "cuda": 4 << 30}


@dataclass(frozen=True)
class RerankParams:
    """k1, k2, λ of k-reciprocal re-ranking; the paper's values by default (REFERENCE §3)."""

    k1: int = 28
    k2: int = 6
    lam: float = 0.28


def k_reciprocal(query, gallery, k1: int = 28, k2: int = 6, lam: float = 0.28, *, device: str = "auto",
                 normalize: bool = False, block_rows: int | None = None, progress: bool = False,
                 graph_block: int | None = None) -> np.ndarray:
    """Dense (q, g) re-ranked distances (small problems; large ones should use `k_reciprocal_stream`)."""
    blocks = k_reciprocal_stream(query, gallery, k1, k2, lam, device=device, normalize=normalize,
                                 block_rows=block_rows, progress=progress, graph_block=graph_block)
    return _assemble(blocks, len(query), len(gallery))


def k_reciprocal_stream(query, gallery, k1: int = 28, k2: int = 6, lam: float = 0.28, *, device: str = "auto",
                        normalize: bool = False, block_rows: int | None = None, to_host: bool = True,
                        progress: bool = False, graph_block: int | None = None) -> DistanceBlocks:
    """Re-ranked distances, yielded as (query indices, (b, g) block) in query order.

    Inputs are checked here (not at the first `next`). Blocks are NumPy arrays, or CuPy arrays on the GPU when
    `to_host=False`. Memory is O(N·k1²·k2) plus one block; the graph pass costs one N×N/2 GEMM.
    """
    q_feats, g_feats = check_feature_pair(query, gallery, normalize)
    n_total = q_feats.shape[0] + g_feats.shape[0]
    check_rerank_params(k1, k2, lam, n_total)
    device = resolve_device(device)
    return _rerank_blocks(q_feats, g_feats, RerankParams(k1, k2, lam), device, block_rows, to_host, progress,
                          graph_block)


def distance_stream(query, gallery, metric: str = "cosine", *, device: str = "auto", normalize: bool = False,
                    block_rows: int | None = None, to_host: bool = True) -> DistanceBlocks:
    """Plain distances (1 - cos by default) streamed like `k_reciprocal_stream`, without re-ranking."""
    q_feats, g_feats = check_feature_pair(query, gallery, normalize)
    device = resolve_device(device)
    return _plain_blocks(q_feats, g_feats, metric, device, block_rows, to_host)


def pairwise(query, gallery, metric: str = "cosine", *, device: str = "auto", normalize: bool = False) -> np.ndarray:
    """Dense (q, g) plain distances."""
    return _assemble(distance_stream(query, gallery, metric, device=device, normalize=normalize),
                     len(query), len(gallery))


def normalised_rank(graph: NeighbourLists, k: int):
    """(N, k) initial ranking of REFERENCE §3.2: order each row by (d / colmax[i], index).

    Dividing by colmax[i] preserves the order of distinct distances except where it rounds two of them to one
    value, which the tie rule then settles by index; re-sorting the kept lists on the divided values reproduces
    that. The graph keeps one neighbour more than needed so a tie at the k-th place is settled correctly too.
    """
    xp = array_module(graph.indices)
    scaled = graph.distances / graph.column_max[:, None]  # (N, K+1)
    order = stable_argsort(scaled, axis=1)[:, :k]
    return xp.take_along_axis(graph.indices, order, axis=1)


def _rerank_blocks(q_feats, g_feats, params: RerankParams, device: str, block_rows, to_host: bool, progress: bool,
                   graph_block) -> DistanceBlocks:
    xp = module_for_device(device)
    q, g = q_feats.shape[0], g_feats.shape[0]
    n = q + g
    features = xp.asarray(np.concatenate([q_feats, g_feats]))  # (N, d)
    k = max(params.k1 + 1, params.k2)
    graph_block = graph_block or default_block_size(xp)
    with tqdm(total=graph_block_pairs(n, graph_block), desc="re-rank: top-k graph", unit="block",
              disable=not progress, leave=False) as bar:
        graph = knn_graph(features, min(k + 1, n), "sqeuclidean", block_size=graph_block, on_block=bar.update)
    rank = normalised_rank(graph, k)  # (N, K)
    sets = expanded_reciprocal_sets(rank, params.k1)  # R*(i)
    v = reciprocal_weights(sets, graph, features, squared_norms(features), "sqeuclidean")
    v = local_query_expansion(v, rank, params.k2)
    del sets, rank
    inverted = inverted_index(v, q, n)  # gallery rows by column
    gallery = features[q:]
    gallery_sq = squared_norms(gallery)
    query_rows = prepare_rows(features[:q], "sqeuclidean")
    step = block_rows or _rows_per_block(g, features.dtype, device)
    for start in tqdm(range(0, q, step), desc="re-rank: query blocks", unit="block", disable=not progress,
                      leave=False):
        stop = min(start + step, q)
        rows = PreparedRows(query_rows.scaled[start:stop], query_rows.sq_norms[start:stop])
        shared = min_intersection(v.rows(start, stop), inverted, g)  # (b, g) Σ min(V_i, V_j)
        dist = distance_block(rows, gallery, gallery_sq, "sqeuclidean")  # (b, g)
        final = blend(shared, dist, graph.column_max[start:stop], params.lam)
        yield np.arange(start, stop), (to_numpy(final) if to_host else final)


def _plain_blocks(q_feats, g_feats, metric: str, device: str, block_rows, to_host: bool) -> DistanceBlocks:
    xp = module_for_device(device)
    query, gallery = xp.asarray(q_feats), xp.asarray(g_feats)
    prepared = prepare_rows(query, metric)
    gallery_sq = squared_norms(gallery)
    step = block_rows or _rows_per_block(gallery.shape[0], gallery.dtype, device)
    for start in range(0, query.shape[0], step):
        stop = min(start + step, query.shape[0])
        rows = PreparedRows(prepared.scaled[start:stop], prepared.sq_norms[start:stop])
        dist = distance_block(rows, gallery, gallery_sq, metric)  # (b, g)
        yield np.arange(start, stop), (to_numpy(dist) if to_host else dist)


def _rows_per_block(n_gallery: int, dtype, device: str) -> int:
    per_row = n_gallery * (3 * np.dtype(dtype).itemsize + 8)  # output, distances, Jaccard sums (+ float64 bincount)
    return max(1, DEFAULT_BLOCK_BYTES[device] // per_row)


def _assemble(blocks: DistanceBlocks, q: int, g: int) -> np.ndarray:
    out = None
    for indices, block in blocks:
        block = to_numpy(block)
        if out is None:
            out = np.empty((q, g), dtype=block.dtype)
        out[indices] = block
    return out
