"""Re-ranked metrics of one protocol from R ranks: each rank re-ranks and scores its own query blocks, and the
per-query results are gathered, so every rank gets the metrics one process would compute, exactly.

This is what an evaluation entry point calls on every rank of a `deepspeed` / `torchrun` launch (and, with the
default `Solo` team, in a plain run):

    team = RankTeam()                                   # after torch.distributed is initialised
    metrics, seconds = score_reranked(data, RerankParams(), team)
    # metrics: RankMetrics, identical on every rank; seconds: [{step: s}, ...] per rank, in rank order
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from xfd.eval.metrics import DEFAULT_MAX_RANK, RankingAccumulator, RankMetrics
from xfd.eval.protocol import ProtocolData
from xfd.eval.rerank import RerankParams, RerankTimes, k_reciprocal_stream
from xfd.eval.rerank_team import Solo

BlockCallback = Callable[[np.ndarray, np.ndarray], None]  # (query indices, (b, G) distances) of this rank


def reduce_metrics(accumulator: RankingAccumulator, team) -> RankMetrics:
    """The metrics of all queries, each scored by exactly one rank's `accumulator` (collective)."""
    for rank, scored in enumerate(team.gather_objects(accumulator.scored())):
        if rank != team.rank:
            accumulator.absorb(scored)
    return accumulator.result()


def score_reranked(data: ProtocolData, params: RerankParams = RerankParams(), team=None, *, device: str = "auto",
                   normalize: bool = False, ap_mode: str = "noninterpolated", max_rank: int = DEFAULT_MAX_RANK,
                   block_rows: int | None = None, workers: int | None = None, progress: bool = False,
                   on_block: BlockCallback | None = None, memory_limit: int | None = None,
                   ) -> tuple[RankMetrics, list[dict]]:
    """(metrics, seconds per step of every rank): this rank's share of the re-ranking streamed through its own
    accumulator, then the exact reduction over ranks. `on_block` sees this rank's blocks (e.g. to write its rows
    of a submission file)."""
    team = team or Solo()
    accumulator = RankingAccumulator(data.q_pids, data.q_camids, data.g_pids, data.g_camids, max_rank, ap_mode)
    times = RerankTimes()
    blocks = k_reciprocal_stream(data.q_feats, data.g_feats, params.k1, params.k2, params.lam, device=device,
                                 normalize=normalize, block_rows=block_rows, progress=progress, team=team,
                                 workers=workers, times=times, memory_limit=memory_limit)
    with team.step("blend and metrics"):
        for indices, block in blocks:
            accumulator.update(indices, block)
            if on_block is not None:
                on_block(indices, block)
    metrics = reduce_metrics(accumulator, team)
    return metrics, team.gather_objects(times.steps)
