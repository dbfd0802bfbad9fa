"""Plain (not re-ranked) distances streamed as (query indices, distance block) pairs, the form the metrics consume.

Blocks are sized so that a few (rows, gallery) arrays of that size fit a memory budget; on the GPU they can stay on
the device (`to_host=False`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from xfd.kernels.backend import module_for_device, resolve_device, to_numpy
from xfd.kernels.distance import PreparedRows, check_metric, distance_block, prepare_rows, squared_norms
from xfd.eval.validate import check_feature_pair

DistanceBlocks = Iterator[tuple[np.ndarray, object]]  # (query indices (b,), distances (b, g))

# Bytes of (query rows × gallery) working arrays per streamed block.
DEFAULT_BLOCK_BYTES = {"cpu": 256 << 20, "cuda": 4 << 30}


def distance_stream(query, gallery, metric: str = "cosine", *, device: str = "auto", normalize: bool = False,
                    block_rows: int | None = None, to_host: bool = True) -> DistanceBlocks:
    """Distances (1 - cos by default, or "sqeuclidean") in blocks of query rows, in query order."""
    q_feats, g_feats = check_feature_pair(query, gallery, normalize)
    check_metric(metric)
    device = resolve_device(device)
    return _plain_blocks(q_feats, g_feats, metric, device, block_rows, to_host)


def pairwise(query, gallery, metric: str = "cosine", *, device: str = "auto", normalize: bool = False) -> np.ndarray:
    """Dense (q, g) distances."""
    return assemble(distance_stream(query, gallery, metric, device=device, normalize=normalize),
                    len(query), len(gallery))


def rows_per_block(n_gallery: int, dtype, device: str, arrays: int = 3) -> int:
    """Query rows per block so that `arrays` (rows, gallery) arrays (+ one float64 one) fit the device budget."""
    per_row = n_gallery * (arrays * np.dtype(dtype).itemsize + 8)
    return max(1, DEFAULT_BLOCK_BYTES[device] // per_row)


def assemble(blocks: DistanceBlocks, q: int, g: int) -> np.ndarray:
    """Collect streamed blocks into one dense (q, g) host array."""
    out = None
    for indices, block in blocks:
        block = to_numpy(block)
        if out is None:
            out = np.empty((q, g), dtype=block.dtype)
        out[indices] = block
    return out


def _plain_blocks(q_feats, g_feats, metric: str, device: str, block_rows, to_host: bool) -> DistanceBlocks:
    xp = module_for_device(device)
    query, gallery = xp.asarray(q_feats), xp.asarray(g_feats)
    prepared = prepare_rows(query, metric)
    gallery_sq = squared_norms(gallery)
    step = block_rows or rows_per_block(gallery.shape[0], gallery.dtype, device, arrays=1)
    for start in range(0, query.shape[0], step):
        stop = min(start + step, query.shape[0])
        rows = PreparedRows(prepared.scaled[start:stop], prepared.sq_norms[start:stop])
        dist = distance_block(rows, gallery, gallery_sq, metric)  # (b, g)
        yield np.arange(start, stop), (to_numpy(dist) if to_host else dist)
