"""The timing split of evaluate_protocol (distances or re-ranking vs metrics vs the caller's callback) leaves the
metrics unchanged, and the markdown table shows empty protocols and the mean of the evaluated ones."""

from __future__ import annotations

import numpy as np

from xfd.eval.evaluate import EvalOptions, EvalTimes, evaluate_protocol, mean_of_protocols
from xfd.eval.model_eval import ProtocolResults, empty_metrics, evaluate_protocols
from xfd.eval.model_report import timing_line
from xfd.eval.protocol import ProtocolData
from xfd.eval.report import markdown_table
from xfd.eval.rerank import RerankParams


def _protocol(make_features, name="A2G", q=12, g=30, seed=0) -> ProtocolData:
    feats = make_features(q + g, 16, 5, np.float32, seed)
    rng = np.random.default_rng(seed)
    pids = rng.integers(0, 5, q + g)
    return ProtocolData(name, feats[:q], feats[q:], pids[:q], pids[q:], np.zeros(q, np.int64), np.ones(g, np.int64))


class _Clock:
    """A perf_counter that ticks 1 s per reading, plus whatever `advance` adds: timings become exact counts."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_times_add_up_per_part_and_leave_the_metrics_alone(make_features, monkeypatch):
    import types

    import xfd.eval.evaluate as evaluate_module

    clock = _Clock()
    monkeypatch.setattr(evaluate_module, "time", types.SimpleNamespace(perf_counter=clock))
    data = _protocol(make_features)
    seen = []

    def slow_callback(indices, block):  # "takes" 1000 s by the clock, without sleeping
        seen.append(len(indices))
        clock.advance(1000.0)

    times = EvalTimes()
    timed = evaluate_protocol(data, EvalOptions(device="cpu", block_rows=5), slow_callback, times)
    assert timed.to_dict() == evaluate_protocol(data, EvalOptions(device="cpu")).to_dict()
    assert seen == [5, 5, 2]
    assert times.callback == 3 * 1001.0  # each callback's 1000 s (+ the reading that ends it), charged to it alone
    assert 0 < times.ranking < 1000 and 0 < times.metrics < 1000  # and none of it to ranking or metrics

    before = times.ranking
    reranked = evaluate_protocol(data, EvalOptions(rerank=RerankParams(5, 3, 0.3), device="cpu"), times=times)
    assert times.ranking > before and reranked.num_queries == 12  # times accumulate over calls


def test_empty_protocols_are_left_out_of_the_mean(make_features):
    data = {"A2G": _protocol(make_features, "A2G", seed=1), "G2A": _protocol(make_features, "G2A", seed=2)}
    full = data["A2G"]
    data["A2A"] = ProtocolData("A2A", full.q_feats, full.g_feats[:0], full.q_pids, full.g_pids[:0], full.q_camids,
                               full.g_camids[:0])
    blocks = []
    results = evaluate_protocols(data, EvalOptions(device="cpu"), lambda name, i, b: blocks.append(name))
    assert results.empty == {"A2A": {"query": 12, "gallery": 0}} and set(blocks) == {"A2G", "G2A"}
    assert results.metrics["A2A"].num_skipped == 12 and np.isnan(results.metrics["A2A"].mAP)
    expected = mean_of_protocols({k: results.metrics[k] for k in ("A2G", "G2A")})
    assert results.mean == expected and results.mean["num_protocols"] == 2
    assert results.warnings() == ["protocol A2A is empty (12 query, 0 gallery tracklets): not evaluated, left "
                                  "out of the mean"]

    table = markdown_table(results.metrics, results.mean, {"A2G": 30, "G2A": 30, "A2A": 0}, set(results.empty))
    lines = table.splitlines()
    assert lines[0] == "| protocol | queries | gallery | mAP | R1 | R5 | R10 | mINP |" and len(lines) == 6
    assert lines[4] == "| A2A | 12 | 0 | empty | – | – | – | – |"
    m = results.metrics["G2A"]
    assert lines[3] == (f"| G2A | 12 | 30 | {100 * m.mAP:.2f} | {100 * m.rank(1):.2f} | {100 * m.rank(5):.2f} | "
                        f"{100 * m.rank(10):.2f} | {100 * m.mINP:.2f} |")
    assert lines[5].startswith(f"| **mean of 2** | | | {100 * results.mean['mAP']:.2f} |")
    nothing = ProtocolResults({"A2A": empty_metrics(data["A2A"], EvalOptions())}, None, {"A2A": {}})
    assert len(markdown_table(nothing.metrics, nothing.mean, {"A2A": 0}, {"A2A"}).splitlines()) == 3  # no mean


def test_timing_line_names_every_part():
    seconds = {"startup": 1.0, "load_model": 2.0, "extraction": 10.0, "distances": 0.5, "reranking": 1.5,
               "metrics": 0.25, "report": 3.0, "total": 18.25}
    per_rank = [{"tracklets": 30, "tracklets_per_s": 3.5}, {"tracklets": 10, "tracklets_per_s": 1.25}]
    line = timing_line(seconds, per_rank)
    assert line == ("timing: start-up 1.00 s, model 2.00 s, extraction 10.00 s (4.0 tracklets/s; 2 rank(s): "
                    "3.5 / 1.2), distances 0.500 s, re-ranking 1.500 s, metrics 0.250 s, report 3.00 s, "
                    "total 18.25 s")
    assert "re-ranking" not in timing_line(dict(seconds, reranking=None), per_rank)
