"""Large-gallery ReID evaluation: one API, exact streaming metrics, exact k-reciprocal re-ranking in O(N·k) memory.

- protocol:        ProtocolData (features, labels, names, metadata of one protocol), built in one place: from
                   extracted feature sets, by platform for held-out validation, or from a features file (npz).
- shard_protocols: a shard root's query/gallery protocols, their extraction, what their submission must contain.
- score:           the API — score(protocols, options) -> Results: metrics, per-query values, bootstrap intervals,
                   the mean of the protocols and the pooled figures, per-condition rows, warnings, under one rule
                   for protocols that cannot be scored. Used by xfd-eval, launcher/evaluate.py and heldout.
- distance, rerank: plain and re-ranked distances streamed as (query indices, block) pairs (docs/reranking.md),
                   re-ranking on 1 or R ranks; rerank_team: the ranks' exchanges and failure checks (score takes
                   a team: one path for 1 and R ranks); rerank_memory: the memory planner.
- metrics:         mAP / CMC / mINP and per-query values per block of queries, junk rule (docs/protocol.md).
- bootstrap, compare, conditions: intervals over queries, paired comparisons, per-condition analysis.
- report, figures, submission, ranklist(_rows), model_report: the one report writer and its files.
- validate: input checks; reference: dense implementations for tests and benchmarks; synthetic: test features.
"""
