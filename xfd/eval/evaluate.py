"""Evaluate saved or freshly extracted features per protocol (A2G, G2A, A2A, ...) and their mean.

This is the library entry point shared by `xfd-eval` and (later) `launcher/evaluate.py`: give it `ProtocolData`
(xfd.eval.protocol: features and labels, read from or written to the npz format) and `EvalOptions`, get
`RankMetrics`; distances stream through the metrics block by block, so no Q×G matrix is
kept, and an optional `on_block` callback sees every block (the CLI writes the submission CSV from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from tqdm import tqdm

from xfd.eval.metrics import DEFAULT_MAX_RANK, RankingAccumulator, RankMetrics
from xfd.eval.distance import distance_stream
from xfd.eval.rerank import RerankParams, k_reciprocal_stream
from xfd.eval.protocol import ProtocolData
from xfd.eval.validate import check_feature_pair

SUMMARY_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")

BlockCallback = Callable[[np.ndarray, np.ndarray], None]  # (query indices, (b, G) distances)


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate: re-ranking (None = plain cosine distance), device, normalisation, metric conventions."""

    rerank: RerankParams | None = None
    device: str = "auto"
    normalize: bool = False
    ap_mode: str = "noninterpolated"
    max_rank: int = DEFAULT_MAX_RANK
    block_rows: int | None = None
    progress: bool = False


def evaluate_protocol(data: ProtocolData, options: EvalOptions = EvalOptions(),
                      on_block: BlockCallback | None = None) -> RankMetrics:
    """Metrics of one protocol, streaming distances (re-ranked or plain) through the metrics accumulator."""
    q_feats, g_feats = check_feature_pair(data.q_feats, data.g_feats, options.normalize)
    accumulator = RankingAccumulator(data.q_pids, data.q_camids, data.g_pids, data.g_camids, options.max_rank,
                                     options.ap_mode)
    if options.rerank is None:
        blocks = distance_stream(q_feats, g_feats, "cosine", device=options.device, block_rows=options.block_rows)
    else:
        r = options.rerank
        blocks = k_reciprocal_stream(q_feats, g_feats, r.k1, r.k2, r.lam, device=options.device,
                                     block_rows=options.block_rows, progress=options.progress)
    with tqdm(total=q_feats.shape[0], desc=f"{data.name}: queries", unit="query", disable=not options.progress,
              leave=False) as bar:
        for indices, block in blocks:
            accumulator.update(indices, block)
            if on_block is not None:
                on_block(indices, block)
            bar.update(len(indices))
    return accumulator.result()


def mean_of_protocols(results: dict[str, RankMetrics]) -> dict:
    """Unweighted mean of each summary metric over the protocols ("mean of the three" for A2G, G2A, A2A)."""
    if not results:
        raise ValueError("no protocol results to average")
    summaries = [metrics.to_dict() for metrics in results.values()]
    shared = [key for key in SUMMARY_KEYS if all(key in s for s in summaries)]  # rank10 needs max_rank >= 10
    mean = {key: float(np.mean([s[key] for s in summaries])) for key in shared}
    mean["num_protocols"] = len(results)
    return mean
