"""Large-gallery ReID evaluation: exact streaming metrics, exact k-reciprocal re-ranking in O(N·k) memory.

- protocol:  ProtocolData (features + labels of one protocol) and the npz features-file format.
- distance:  plain distances streamed as (query indices, block) pairs.
- rerank:    k-reciprocal re-ranking (docs/reranking.md), dense result or stream of blocks.
- metrics:   mAP / CMC / mINP per block of queries, junk rule, AP definitions.
- evaluate:  one protocol end to end, and the mean over protocols (used by xfd-eval and launcher/evaluate.py).
- report:    table, JSON report, submission CSV, CMC plot (atomic writes).
- validate:  input checks; reference: dense implementations for tests and benchmarks; synthetic: test features.
"""
