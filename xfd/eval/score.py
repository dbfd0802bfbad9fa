"""The evaluation API: `score(protocols, options) -> Results`, used by xfd-eval, launcher/evaluate.py and held-out
validation alike.

For every protocol, distance blocks (plain cosine distances, or exact k-reciprocal re-ranking) stream through a
`RankingAccumulator`: no Q×G matrix is kept. The result holds, per protocol, the metrics (mAP, CMC, mINP), the
per-query values (AP, INP, first-match rank, match ranks, the best `top` gallery rows) and bootstrap intervals of
mAP and rank-1; over the protocols, the "mean of the N protocols" and the figures "pooled over all queries", each
with intervals; the per-condition breakdown (`xfd.eval.conditions`); and warnings.

One rule for a protocol that cannot be scored — an empty query or gallery side, an unlabelled split (identities
unknown), or no query with a valid match: it stays in the results with `metrics = None` and the reason, is
named in a warning and is left out of the mean and the pooled figures. Nothing is NaN and nothing is dropped
silently. An unlabelled protocol is still ranked, so its submission rows exist.

One path for one process and for the R ranks of a `deepspeed` / `torchrun` launch: `score(..., team=RankTeam())`
(`xfd.eval.rerank_team`) on every rank, with the same protocols and options. Each rank then makes its share of every
protocol's distance blocks (plain: every R-th block; re-ranked: its share of the graph, the sparse steps and the
blend, `xfd.eval.rerank`) and scores them; the per-query values are gathered and merged exactly
(`QueryScores.merge`), so every rank returns what one process would, to the last bit. A rank that fails, dies or
stalls ends the call on every rank with a message naming it and the step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from xfd.eval.bootstrap import (POOLED_STRATUM, BootstrapOptions, Interval, percentile_interval, resampled_means,
                                stratum_rng)
from xfd.eval.conditions import ConditionRow, condition_rows
from xfd.eval.distance import distance_stream
from xfd.eval.metrics import DEFAULT_MAX_RANK, QueryScores, RankingAccumulator, RankMetrics
from xfd.eval.protocol import ProtocolData
from xfd.eval.rerank import RerankParams, RerankTimes, k_reciprocal_stream
from xfd.eval.rerank_team import Solo

PLAIN, RERANKED = "plain", "reranked"
SUMMARY_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")
INTERVAL_KEYS = ("mAP", "rank1")
DEFAULT_TOP = 10  # best gallery rows kept per query: the challenge CSV's 10 names

DistanceBlocks = Iterator[tuple[np.ndarray, np.ndarray]]  # (query indices (b,), (b, G) host distances)


@dataclass(frozen=True)
class ScoreOptions:
    """How to score: re-ranking (None = plain cosine distance), device, normalisation, metric conventions, the
    gallery rows kept per query, the bootstrap and the smallest condition worth its own interval."""

    rerank: RerankParams | None = None
    device: str = "auto"
    normalize: bool = False
    ap_mode: str = "noninterpolated"
    max_rank: int = DEFAULT_MAX_RANK
    block_rows: int | None = None
    top: int = DEFAULT_TOP
    bootstrap: BootstrapOptions = BootstrapOptions()
    conditions: bool = True  # the per-condition rows (a report computes them for its final ranking only)
    min_condition_queries: int = 10
    progress: bool = False

    @property
    def ranking(self) -> str:
        """PLAIN or RERANKED: the key of these results in a report."""
        return PLAIN if self.rerank is None else RERANKED


@dataclass
class EvalTimes:
    """This process's seconds, summed over calls: making distance blocks (plain distances, or k-reciprocal
    re-ranking including its index build, `steps` splitting the latter by step), scoring them (metrics, with the
    exchange between ranks), and the statistics (bootstrap, per-condition)."""

    ranking: float = 0.0
    metrics: float = 0.0
    statistics: float = 0.0
    steps: RerankTimes = field(default_factory=RerankTimes)


@dataclass(frozen=True)
class ProtocolScore:
    """One protocol's outcome; `metrics` is None when it could not be scored (`reason` says why)."""

    name: str
    num_queries: int
    num_gallery: int
    queries: QueryScores | None  # None when nothing was ranked (an empty side)
    metrics: RankMetrics | None
    intervals: dict[str, Interval] = field(default_factory=dict)  # INTERVAL_KEYS, when scored
    reason: str | None = None

    @property
    def scored(self) -> bool:
        return self.metrics is not None

    def summary(self) -> dict[str, float]:
        """mAP, rank1, rank5, rank10 (when the CMC is that long), mINP."""
        values = self.metrics.to_dict()
        return {key: values[key] for key in SUMMARY_KEYS if key in values}


@dataclass(frozen=True)
class Overall:
    """A figure over all scored protocols: their unweighted mean, or every valid query pooled."""

    kind: str  # "mean" | "pooled"
    label: str  # e.g. "mean of 3 protocols", "pooled over 96 queries"
    values: dict[str, float]  # SUMMARY_KEYS
    intervals: dict[str, Interval]  # INTERVAL_KEYS
    num_protocols: int
    num_queries: int  # valid queries behind it


@dataclass(frozen=True)
class Results:
    """Everything `score` found, for one ranking (plain or re-ranked)."""

    ranking: str
    options: ScoreOptions
    protocols: dict[str, ProtocolScore]
    mean: Overall | None  # None when no protocol could be scored
    pooled: Overall | None
    conditions: list[ConditionRow] | None  # None: not asked for (ScoreOptions.conditions)
    warnings: list[str]

    @property
    def scored(self) -> dict[str, ProtocolScore]:
        return {name: p for name, p in self.protocols.items() if p.scored}


def local_blocks(data: ProtocolData, options: ScoreOptions, team=None,
                 steps: RerankTimes | None = None) -> DistanceBlocks:
    """This process's distance blocks of a protocol: 1 − cos, or exact k-reciprocal re-ranking (`options.rerank`);
    every query's, or with a `team` of R ranks this rank's share (`steps`: its re-ranking seconds per step)."""
    if options.rerank is None:
        return distance_stream(data.q_feats, data.g_feats, "cosine", device=options.device,
                               normalize=options.normalize, block_rows=options.block_rows, team=team)
    r = options.rerank
    return k_reciprocal_stream(data.q_feats, data.g_feats, r.k1, r.k2, r.lam, device=options.device,
                               normalize=options.normalize, block_rows=options.block_rows,
                               progress=options.progress, team=team, times=steps)


def score(protocols: Mapping[str, ProtocolData] | Iterable[ProtocolData], options: ScoreOptions = ScoreOptions(), *,
          team=None, times: EvalTimes | None = None) -> Results:
    """Score every protocol (module docstring); `team`: the ranks that share the work (collective: every rank calls
    with the same arguments), default this process alone; `times` adds up this process's seconds of each part."""
    protocols = dict(protocols) if isinstance(protocols, Mapping) else {p.name: p for p in protocols}
    team = team or Solo()
    times = times if times is not None else EvalTimes()
    outcomes = {name: _score_protocol(data, options, team, times) for name, data in protocols.items()}

    start = time.perf_counter()
    # each scored protocol's resampled (mAP, rank-1) means, drawn once: its own intervals and the mean's
    draws = {name: resampled_means(_values(p.queries), options.bootstrap.resamples,
                                   stratum_rng(options.bootstrap, stratum))
             for stratum, (name, p) in enumerate(outcomes.items()) if p.scored}  # (B, 2) each
    for name, protocol_draws in draws.items():
        outcomes[name] = replace(outcomes[name], intervals=_interval_dict(protocol_draws, options.bootstrap))
    scored = {name: p for name, p in outcomes.items() if p.scored}
    mean = _mean(scored, draws, options) if scored else None
    pooled = _pooled(scored, options) if scored else None
    conditions = condition_rows({n: protocols[n] for n in scored}, {n: p.queries for n, p in scored.items()},
                                options.ap_mode, options.bootstrap, options.min_condition_queries) \
        if options.conditions else None
    warnings = [f"protocol {name} not scored: {p.reason}" + ("; left out of the mean and the pooled figures"
                                                             if protocols[name].labelled else "")
                for name, p in outcomes.items() if not p.scored]
    times.statistics += time.perf_counter() - start
    return Results(options.ranking, options, outcomes, mean, pooled, conditions, warnings)


def _score_protocol(data: ProtocolData, options: ScoreOptions, team, times: EvalTimes) -> ProtocolScore:
    q, g = data.num_queries, data.num_gallery
    if q == 0 or g == 0:
        return ProtocolScore(data.name, q, g, None, None,
                             reason=f"empty {'query' if q == 0 else 'gallery'} side ({q} query, {g} gallery tracklets)")
    start = time.perf_counter()
    if data.labelled:
        accumulator = RankingAccumulator(data.q_pids, data.q_camids, data.g_pids, data.g_camids, options.max_rank,
                                         options.ap_mode, options.top)
    else:
        accumulator = RankingAccumulator.unlabelled(q, g, options.top)
    stream = local_blocks(data, options, team, times.steps)
    times.ranking += time.perf_counter() - start
    share = q if team.world == 1 else None  # a rank's share of the queries is not known up front
    with tqdm(total=share, desc=f"{data.name}: queries", unit="query", disable=not options.progress,
              leave=False) as bar, team.step(f"{data.name}: {options.ranking} blocks and metrics"):
        for indices, block in _timed(stream, times):
            start = time.perf_counter()
            accumulator.update(indices, block)
            times.metrics += time.perf_counter() - start
            bar.update(len(indices))
    start = time.perf_counter()
    scores = accumulator.queries()
    if team.world > 1:  # every rank's queries, merged exactly
        scores = QueryScores.merge(team.gather_objects(scores))
    scores.check_complete(data.name)
    metrics, reason = None, None
    if not data.labelled:
        reason = "unlabelled split (identities unknown): metrics unavailable; rankings and submission written"
    else:
        metrics = scores.metrics(options.max_rank, options.ap_mode)
        if metrics.num_valid == 0:
            metrics, reason = None, (f"none of its {q} queries has a valid match (same pid, another camid) in the "
                                     f"gallery of {g}")
    times.metrics += time.perf_counter() - start
    return ProtocolScore(data.name, q, g, scores, metrics, reason=reason)


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


def _values(scores: QueryScores) -> np.ndarray:
    """(valid queries, 2): AP and the rank-1 hit of each valid query (the means are mAP and rank-1)."""
    valid = scores.valid
    return np.stack([scores.ap[valid], (scores.first_match[valid] == 1).astype(float)], axis=1)


def _interval_dict(draws: np.ndarray, bootstrap: BootstrapOptions) -> dict[str, Interval]:
    return dict(zip(INTERVAL_KEYS, percentile_interval(draws, bootstrap.level)))


def _mean(scored: dict[str, ProtocolScore], draws: dict[str, np.ndarray], options: ScoreOptions) -> Overall:
    """The mean of the scored protocols; its intervals from the protocols' own resamples (a stratified bootstrap,
    each protocol's queries resampled on their own)."""
    summaries = [p.summary() for p in scored.values()]
    shared = [key for key in SUMMARY_KEYS if all(key in s for s in summaries)]  # rank10 needs max_rank >= 10
    values = {key: float(np.mean([s[key] for s in summaries])) for key in shared}
    ci = _interval_dict(np.mean([draws[name] for name in scored], axis=0), options.bootstrap)
    return Overall("mean", f"mean of {len(scored)} protocols", values, ci, len(scored),
                   sum(p.metrics.num_valid for p in scored.values()))


def _pooled(scored: dict[str, ProtocolScore], options: ScoreOptions) -> Overall:
    valid = [p.queries.valid for p in scored.values()]
    ap = np.concatenate([p.queries.ap[v] for p, v in zip(scored.values(), valid)])
    inp = np.concatenate([p.queries.inp[v] for p, v in zip(scored.values(), valid)])
    first = np.concatenate([p.queries.first_match[v] for p, v in zip(scored.values(), valid)])
    values = {"mAP": float(ap.mean())}
    values.update({f"rank{k}": float(np.mean(first <= k)) for k in (1, 5, 10) if k <= options.max_rank})
    values["mINP"] = float(inp.mean())
    draws = resampled_means(np.stack([ap, (first == 1).astype(float)], axis=1), options.bootstrap.resamples,
                            stratum_rng(options.bootstrap, POOLED_STRATUM))  # (B, 2)
    ci = _interval_dict(draws, options.bootstrap)
    return Overall("pooled", f"pooled over {ap.size} queries", values, ci, len(scored), int(ap.size))
