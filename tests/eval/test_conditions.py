"""Per-condition analysis: groups follow the query's metadata (ground queries in a "none" group, raw values in the
labels), small groups are marked and kept, and the same-/cross-session rows equal a re-scoring in which the other
session's matches are junk."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from xfd.eval.protocol import ProtocolData
from xfd.eval.report import condition_table
from xfd.eval.score import ScoreOptions, score
from xfd.eval.synthetic import reid_features

Q, G = 40, 120


def _with_metadata(seed: int = 0) -> ProtocolData:
    """Synthetic features; queries alternate ground / aerial at two capture points; two sessions on each side."""
    data = reid_features(Q, G, dim=16, n_ids=10, n_cams=4, seed=seed, noise=2.0)
    rng = np.random.default_rng(seed)
    aerial = np.arange(Q) % 2 == 1
    far = np.arange(Q) % 4 == 3
    q_meta = {
        "platform": aerial.astype(np.int8),
        "height": np.where(aerial, np.where(far, 120.0, 10.0), np.nan),
        "distance": np.where(aerial, np.where(far, 0.0, 10.0), np.nan),
        "angle": np.where(aerial, np.where(far, 90.0, 30.0), np.nan),
        "altitude_bin": np.where(aerial, np.where(far, 17, 4), 18),
        "distance_bin": np.where(aerial, np.where(far, 0, 1), 18),
        "angle_bin": np.where(aerial, np.where(far, 2, 0), 3),
        "session": rng.integers(1, 3, Q),
    }
    g_meta = {"session": rng.integers(1, 3, G), "platform": np.zeros(G, np.int8)}
    return dataclasses.replace(data, q_meta=q_meta, g_meta=g_meta)


def test_groups_labels_and_few_queries():
    data = _with_metadata()
    results = score([data], ScoreOptions(device="cpu", min_condition_queries=12))
    rows = {(r.condition, r.value): r for r in results.conditions}
    valid = results.protocols[data.name].queries.valid
    aerial = data.q_meta["platform"] == 1
    assert rows[("platform", "aerial")].cells["all"].queries == int((valid & aerial).sum())
    assert rows[("platform", "ground")].cells["all"].queries == int((valid & ~aerial).sum())
    assert {value for condition, value in rows if condition == "altitude"} == {
        "bin 4: 10 m", "bin 17: 120 m", "none (ground or no capture metadata)"}
    assert ("pitch angle", "bin 2: 90°") in rows and ("distance", "bin 0: 0 m") in rows
    far = rows[("altitude", "bin 17: 120 m")]
    assert far.x == 120.0 and far.cells["all"].few == (far.cells["all"].queries < 12)
    ap = results.protocols[data.name].queries.ap
    group = valid & (data.q_meta["altitude_bin"] == 17)
    assert far.cells["all"].mAP == pytest.approx(ap[group].mean())
    ci = far.cells["all"].intervals["mAP"]
    assert ci.low <= far.cells["all"].mAP <= ci.high
    table = condition_table(results)
    assert "| altitude | bin 17: 120 m |" in table and "†" in table and "fewer than 12 queries" in table


def test_session_rows_equal_a_rescoring_with_the_other_sessions_matches_as_junk():
    data = _with_metadata(seed=3)
    results = score([data], ScoreOptions(device="cpu"))
    rows = {r.value: r.cells[data.name] for r in results.conditions if r.condition == "match session"}
    q_session, g_session = data.q_meta["session"], data.g_meta["session"]
    for label, keep_same in (("same session", True), ("cross session", False)):
        aps, hits = [], []
        for q in range(Q):  # the query alone, the excluded session's matches given the query's camid: junk
            same_pid = data.g_pids == data.q_pids[q]
            excluded = same_pid & ((g_session == q_session[q]) != keep_same)
            camids = np.where(excluded, data.q_camids[q], data.g_camids)
            one = ProtocolData("one", data.q_feats[q:q + 1], data.g_feats, data.q_pids[q:q + 1], data.g_pids,
                               data.q_camids[q:q + 1], camids)
            outcome = score([one], ScoreOptions(device="cpu")).protocols["one"]
            if outcome.scored:
                aps.append(outcome.metrics.mAP)
                hits.append(outcome.metrics.rank(1))
        cell = rows[label]
        assert cell.queries == len(aps) > 0
        assert cell.mAP == pytest.approx(np.mean(aps), abs=1e-12) and cell.rank1 == pytest.approx(np.mean(hits))


def test_no_metadata_no_rows():
    data = reid_features(10, 30, 8, 5, seed=1)
    assert score([data], ScoreOptions(device="cpu")).conditions == []
