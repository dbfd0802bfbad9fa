"""Evaluate saved or freshly extracted features per protocol (A2G, G2A, A2A, ...) and their mean.

This is the library entry point shared by `xfd-eval` and `launcher/evaluate.py`: give it `ProtocolData`
(xfd.eval.protocol: features and labels, read from or written to the npz format) and `EvalOptions`, get
`RankMetrics`; distances stream through the metrics block by block, so no Q×G matrix is
kept, and an optional `on_block` callback sees every block (the CLIs write the submission CSV from it).
Because producing a block and scoring it interleave, an optional `EvalTimes` adds up the seconds of each part
separately (launcher/evaluate.py reports distances, re-ranking and metrics apart).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

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


@dataclass
class EvalTimes:
    """Seconds spent, summed over calls: making distance blocks (plain distances, or k-reciprocal re-ranking
    including its index build), scoring them (metrics) and in the caller's `on_block` callback."""

    ranking: float = 0.0
    metrics: float = 0.0
    callback: float = 0.0


def evaluate_protocol(data: ProtocolData, options: EvalOptions = EvalOptions(),
                      on_block: BlockCallback | None = None, times: EvalTimes | None = None) -> RankMetrics:
    """Metrics of one protocol, streaming distances (re-ranked or plain) through the metrics accumulator.

    With `times`, the seconds of each part are added to it. Blocks reach the metrics as host arrays, so on a GPU
    the ranking time includes the device's work (the copy waits for it)."""
    times = times if times is not None else EvalTimes()
    start = time.perf_counter()
    q_feats, g_feats = check_feature_pair(data.q_feats, data.g_feats, options.normalize)
    if options.rerank is None:
        blocks = distance_stream(q_feats, g_feats, "cosine", device=options.device, block_rows=options.block_rows)
    else:
        r = options.rerank
        blocks = k_reciprocal_stream(q_feats, g_feats, r.k1, r.k2, r.lam, device=options.device,
                                     block_rows=options.block_rows, progress=options.progress)
    times.ranking += time.perf_counter() - start
    start = time.perf_counter()
    accumulator = RankingAccumulator(data.q_pids, data.q_camids, data.g_pids, data.g_camids, options.max_rank,
                                     options.ap_mode)
    times.metrics += time.perf_counter() - start
    with tqdm(total=q_feats.shape[0], desc=f"{data.name}: queries", unit="query", disable=not options.progress,
              leave=False) as bar:
        for indices, block in _timed(blocks, times):
            start = time.perf_counter()
            accumulator.update(indices, block)
            scored = time.perf_counter()
            times.metrics += scored - start
            if on_block is not None:
                on_block(indices, block)
                times.callback += time.perf_counter() - scored
            bar.update(len(indices))
    start = time.perf_counter()
    result = accumulator.result()
    times.metrics += time.perf_counter() - start
    return result


def _timed(blocks, times: EvalTimes) -> Iterator:
    """The blocks of `blocks`, adding the time spent producing each one to `times.ranking`."""
    iterator = iter(blocks)
    while True:
        start = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            times.ranking += time.perf_counter() - start
            return
        times.ranking += time.perf_counter() - start
        yield item


def mean_of_protocols(results: dict[str, RankMetrics]) -> dict:
    """Unweighted mean of each summary metric over the protocols ("mean of the three" for A2G, G2A, A2A)."""
    if not results:
        raise ValueError("no protocol results to average")
    summaries = [metrics.to_dict() for metrics in results.values()]
    shared = [key for key in SUMMARY_KEYS if all(key in s for s in summaries)]  # rank10 needs max_rank >= 10
    mean = {key: float(np.mean([s[key] for s in summaries])) for key in shared}
    mean["num_protocols"] = len(results)
    return mean
