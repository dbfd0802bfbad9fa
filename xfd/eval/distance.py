"""Plain (not re-ranked) distances streamed as (query indices, distance block) pairs, the form the metrics consume.

Blocks are sized so that a few (rows, gallery) arrays of that size fit a memory budget; on the GPU they can stay on
the device (`to_host=False`). Across the R ranks of a launch (`team`, `xfd.eval.rerank_team`) each rank computes
every R-th block of the same grid, so the union over ranks is the one-process stream, bit for bit.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from xfd.eval.rerank_team import Solo, input_digest
from xfd.eval.validate import check_feature_pair
from xfd.kernels.backend import module_for_device, resolve_device, to_numpy
from xfd.kernels.distance import PreparedRows, check_metric, distance_block, prepare_rows, squared_norms

DistanceBlocks = Iterator[tuple[np.ndarray, object]]  # (query indices (b,), distances (b, g))

# Bytes of (query rows × gallery) working arrays per streamed block.
DEFAULT_BLOCK_BYTES = {"cpu": 256 << 20, "cuda": 4 << 30}


def distance_stream(query, gallery, metric: str = "cosine", *, device: str = "auto", normalize: bool = False,
                    block_rows: int | None = None, to_host: bool = True, team=None) -> DistanceBlocks:
    """Distances (1 - cos by default, or "sqeuclidean") in blocks of query rows, in query order.

    `team`: this process is one of R ranks; every rank must call with the same inputs (checked) and gets every
    R-th block only."""
    team = team or Solo()
    with team.step("distances: input checks"):  # bad input on any rank stops every rank
        q_feats, g_feats = check_feature_pair(query, gallery, normalize)
        check_metric(metric)
        device = resolve_device(device)
        step = block_rows or rows_per_block(g_feats.shape[0], g_feats.dtype, device, arrays=1)
    if team.world > 1:
        settings = {"metric": metric, "device": device, "block_rows": step}
        team.verify_same(input_digest(q_feats, g_feats, settings=settings), "features, dtypes or parameters")
    return _plain_blocks(q_feats, g_feats, metric, device, step, to_host, team)


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


def _plain_blocks(q_feats, g_feats, metric: str, device: str, step: int, to_host: bool, team) -> DistanceBlocks:
    xp = module_for_device(device)
    query, gallery = xp.asarray(q_feats), xp.asarray(g_feats)
    prepared = prepare_rows(query, metric)
    gallery_sq = squared_norms(gallery)
    for start in list(range(0, query.shape[0], step))[team.rank :: team.world]:
        stop = min(start + step, query.shape[0])
        rows = PreparedRows(prepared.scaled[start:stop], prepared.sq_norms[start:stop])
        dist = distance_block(rows, gallery, gallery_sq, metric)  # (b, g)
        yield np.arange(start, stop), (to_numpy(dist) if to_host else dist)
