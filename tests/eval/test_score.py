"""The evaluation API `score`: one rule for protocols that cannot be scored, the mean of the protocols and the
pooled figures (each labelled), the timing split, and the seam for other block sources (a query split shared out
between "ranks" and merged gives exactly the one-process results)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xfd.eval.distance import distance_stream
from xfd.eval.metrics import QueryScores, RankingAccumulator
from xfd.eval.model_report import timing_line
from xfd.eval.protocol import ProtocolData
from xfd.eval.report import Evaluation, ReportFiles, markdown_report, protocol_table, write_summaries
from xfd.eval.rerank import RerankParams
from xfd.eval.score import EvalTimes, ScoreOptions, score


def _protocol(make_features, name="A2G", q=12, g=30, seed=0) -> ProtocolData:
    feats = make_features(q + g, 16, 5, np.float32, seed)
    rng = np.random.default_rng(seed)
    pids = rng.integers(0, 5, q + g)
    return ProtocolData(name, feats[:q], feats[q:], pids[:q], pids[q:], np.zeros(q, np.int64), np.ones(g, np.int64))


def test_times_add_up_per_part_and_leave_the_metrics_alone(make_features):
    data = _protocol(make_features)
    times = EvalTimes()
    timed = score([data], ScoreOptions(device="cpu", block_rows=5), times=times).protocols["A2G"]
    whole = score([data], ScoreOptions(device="cpu")).protocols["A2G"]
    assert timed.metrics.to_dict() == whole.metrics.to_dict()
    assert times.ranking > 0 and times.metrics > 0 and times.statistics > 0
    before = times.ranking
    assert times.steps.steps == {}  # plain distances: no re-ranking steps
    reranked = score([data], ScoreOptions(rerank=RerankParams(5, 3, 0.3), device="cpu"), times=times)
    assert times.ranking > before and reranked.protocols["A2G"].num_queries == 12  # times accumulate over calls
    assert set(times.steps.steps) == {"graph", "lists", "R* and V", "query expansion", "blend"}
    assert times.steps.total <= times.ranking - before
    assert reranked.ranking == "reranked" and timed.queries.top.shape == (12, 10)


def test_one_rule_for_protocols_that_cannot_be_scored(make_features, tmp_path):
    full = _protocol(make_features, "A2G", seed=1)
    data = {
        "A2G": full,
        "G2A": _protocol(make_features, "G2A", seed=2),
        "A2A": ProtocolData("A2A", full.q_feats, full.g_feats[:0], full.q_pids, full.g_pids[:0], full.q_camids,
                            full.g_camids[:0]),  # empty gallery
        "X": ProtocolData("X", full.q_feats, full.g_feats, full.q_pids + 100, full.g_pids, full.q_camids,
                          full.g_camids),  # no query has a match
        "U": ProtocolData("U", full.q_feats, full.g_feats, None, None),  # unlabelled
    }
    results = score(data, ScoreOptions(device="cpu"))
    assert set(results.scored) == {"A2G", "G2A"}
    reasons = {name: p.reason for name, p in results.protocols.items() if not p.scored}
    assert reasons["A2A"].startswith("empty gallery side (12 query, 0 gallery")
    assert "none of its 12 queries has a valid match" in reasons["X"]
    assert reasons["U"].startswith("unlabelled split (identities unknown): metrics unavailable")
    assert results.protocols["A2A"].queries is None and results.protocols["A2A"].metrics is None
    assert results.protocols["U"].queries.top.shape == (12, 10)  # ranked all the same: its submission exists
    assert results.protocols["X"].queries.seen.all()
    assert len(results.warnings) == 3 and results.warnings[-1] == f"protocol U not scored: {reasons['U']}"
    assert all("left out of the mean" in w for w in results.warnings[:2])

    metrics = {n: results.protocols[n].metrics for n in ("A2G", "G2A")}
    assert results.mean.label == "mean of 2 protocols" and results.mean.num_protocols == 2
    assert results.mean.values["mAP"] == pytest.approx(np.mean([m.mAP for m in metrics.values()]))
    assert results.pooled.label == f"pooled over {results.pooled.num_queries} queries"
    valid = np.concatenate([results.protocols[n].queries.ap[results.protocols[n].queries.valid] for n in metrics])
    assert results.pooled.values["mAP"] == pytest.approx(valid.mean()) and valid.size == results.pooled.num_queries
    for overall in (results.mean, results.pooled):
        ci = overall.intervals["mAP"]
        assert ci.low <= overall.values["mAP"] <= ci.high

    table = protocol_table(results).splitlines()
    assert table[0] == "| protocol | queries | gallery | mAP (95% CI) | R1 (95% CI) | R5 | R10 | mINP |"
    assert table[4] == ("| A2A | 12 | 0 | not scored: empty gallery side (12 query, 0 gallery tracklets) | – | – | "
                        "– | – |")
    assert table[6].startswith("| U | 12 | 30 | not scored: unlabelled split")
    m = metrics["G2A"]
    ci = results.protocols["G2A"].intervals
    assert table[3] == (f"| G2A | 12 | 30 | {100 * m.mAP:.2f} ({100 * ci['mAP'].low:.2f}–"
                        f"{100 * ci['mAP'].high:.2f}) | {100 * m.rank(1):.2f} ({100 * ci['rank1'].low:.2f}–"
                        f"{100 * ci['rank1'].high:.2f}) | "
                        f"{100 * m.rank(5):.2f} | {100 * m.rank(10):.2f} | {100 * m.mINP:.2f} |")
    assert table[7].startswith(f"| **mean of 2 protocols** | | | {100 * results.mean.values['mAP']:.2f} (")
    assert table[8].startswith(f"| **pooled over {results.pooled.num_queries} queries** |")

    payload = write_summaries(ReportFiles(json=tmp_path / "r.json"), Evaluation(data, {"plain": results}))
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and json.loads(text) == json.loads(json.dumps(payload))
    entry = payload["plain"]["protocols"]["U"]
    assert entry == {"scored": False, "reason": reasons["U"], "labelled": False, "num_queries": 12, "num_gallery": 30}


def test_nothing_scored_gives_no_mean_and_says_so(make_features):
    full = _protocol(make_features)
    unlabelled = ProtocolData("U", full.q_feats, full.g_feats, None, None)
    results = score([unlabelled], ScoreOptions(device="cpu"))
    assert results.mean is None and results.pooled is None and results.conditions == []
    text = markdown_report(Evaluation({"U": unlabelled}, {"plain": results}), "t", "", results.warnings)
    assert "no protocol could be scored" in text and "nan" not in text.lower()


def test_query_scores_of_disjoint_blocks_merge_to_the_one_process_result(make_features):
    """What score(team=...) gathers from its ranks (the real ranks: tests/eval/test_rerank_ranks.py)."""
    data = _protocol(make_features, q=23, g=41, seed=4)
    parts = []
    for rank in (0, 1):  # "rank" r gets every other block of 4 query rows
        accumulator = RankingAccumulator(data.q_pids, data.q_camids, data.g_pids, data.g_camids, top=10)
        for indices, block in distance_stream(data.q_feats, data.g_feats, device="cpu", block_rows=4):
            if indices[0] // 4 % 2 == rank:
                accumulator.update(indices, block)
        part = accumulator.queries()
        with pytest.raises(ValueError, match="never given distances"):
            part.check_complete()
        parts.append(part)
    merged = QueryScores.merge(parts)
    one = score([data], ScoreOptions(device="cpu")).protocols["A2G"]
    assert merged.metrics().to_dict() == one.metrics.to_dict()
    np.testing.assert_array_equal(merged.top, one.queries.top)
    np.testing.assert_array_equal(merged.ap, one.queries.ap)
    with pytest.raises(ValueError, match="scored in two parts"):
        QueryScores.merge(parts + parts[:1])


def test_timing_line_names_every_part():
    seconds = {"startup": 1.0, "load_model": 2.0, "extraction": 10.0, "distances": 0.5, "reranking": 1.5,
               "metrics": 0.25, "statistics": 0.125, "report": 3.0, "total": 18.375}
    per_rank = [{"tracklets": 30, "tracklets_per_s": 3.5}, {"tracklets": 10, "tracklets_per_s": 1.25}]
    line = timing_line(seconds, per_rank)
    assert line == ("timing: start-up 1.00 s, model 2.00 s, extraction 10.00 s (4.0 tracklets/s; 2 rank(s): "
                    "3.5 / 1.2), distances 0.500 s, re-ranking 1.500 s, metrics 0.250 s, statistics 0.125 s, "
                    "report 3.00 s, total 18.38 s")
    assert "re-ranking" not in timing_line(dict(seconds, reranking=None), per_rank)
