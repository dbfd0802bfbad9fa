"""Held-out protocols from one labelled split: membership of A2G / G2A / A2A, left-out protocols, and metrics
on hand-made features that can be checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from xfd.eval.evaluate import EvalOptions
from xfd.eval.extract import FeatureSet
from xfd.eval.heldout import heldout_protocols, queries_with_a_match, validate

GROUND, AERIAL = 0, 1


def _feature_set(rows, features):
    """rows: (key, pid, camid, platform)."""
    keys, pids, camids, platform = zip(*rows)
    return FeatureSet(list(keys), np.asarray(features, np.float32), np.array(pids, np.int64),
                      np.array(camids, np.int64), np.array(platform, np.int8))


def _one_hot_split():
    """3 identities, each: one ground tracklet (camid 0) and aerial tracklets from capture points 10 and 11;
    features = one-hot of the pid, so every protocol ranks all true matches first (mAP 1)."""
    rows = []
    for pid in (1, 2, 3):
        rows += [(f"{pid}g", pid, 0, GROUND), (f"{pid}a", pid, 10, AERIAL), (f"{pid}b", pid, 11, AERIAL)]
    return _feature_set(rows, np.eye(4)[[pid for _, pid, _, _ in rows]])


def test_protocol_membership():
    protocols, problems = heldout_protocols(_one_hot_split())
    assert problems == [] and list(protocols) == ["A2G", "G2A", "A2A"]
    aerial, ground = ["1a", "1b", "2a", "2b", "3a", "3b"], ["1g", "2g", "3g"]
    expected = {"A2G": (aerial, ground), "G2A": (ground, aerial), "A2A": (aerial, aerial)}
    for name, (queries, gallery) in expected.items():
        data = protocols[name]
        assert data.name == name
        assert data.q_names.tolist() == queries and data.g_names.tolist() == gallery
        assert data.q_feats.shape == (len(queries), 4) and data.g_feats.shape == (len(gallery), 4)
    a2a = protocols["A2A"]
    assert a2a.q_pids.tolist() == [1, 1, 2, 2, 3, 3] and a2a.g_camids.tolist() == [10, 11] * 3


def test_one_hot_features_give_perfect_scores():
    results, mean = validate(_one_hot_split())
    for name, metrics in results.items():
        assert metrics.mAP == 1.0 and metrics.rank(1) == 1.0 and metrics.num_skipped == 0, name
    # A2A: each aerial query keeps one match (the other capture point); itself is junk (same pid and camid)
    assert results["A2A"].num_valid == 6
    assert mean["mAP"] == 1.0 and mean["num_protocols"] == 3


def _angles(degrees):
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], 1)


def test_hand_computed_map_skipped_queries_and_left_out_protocol():
    # one aerial query (pid 1) at 0°; ground: pid 2 at 10°, pid 1 at 20° (cam 0) and 30° (cam 1)
    features = _feature_set([("q", 1, 10, AERIAL), ("x", 2, 0, GROUND), ("m1", 1, 0, GROUND), ("m2", 1, 1, GROUND)],
                            _angles([0, 10, 20, 30]))
    protocols, problems = heldout_protocols(features)
    assert sorted(protocols) == ["A2G", "G2A"]
    assert len(problems) == 1 and problems[0].startswith("A2A: left out") and "match" in problems[0]
    with pytest.warns(UserWarning, match="A2A: left out"):
        results, mean = validate(features, EvalOptions(device="cpu"))
    # A2G: ranking x (wrong), m1, m2 -> matches at ranks 2 and 3: AP = (1/2 + 2/3) / 2
    assert results["A2G"].mAP == pytest.approx(7 / 12) and results["A2G"].rank(1) == 0.0
    # G2A: queries x, m1, m2 against the single aerial tracklet; x (pid 2) has no match and is skipped
    assert results["G2A"].mAP == pytest.approx(1.0)
    assert (results["G2A"].num_queries, results["G2A"].num_skipped) == (3, 1)
    assert mean["mAP"] == pytest.approx((7 / 12 + 1) / 2) and mean["num_protocols"] == 2


def test_single_platform_split_has_no_protocol():
    features = _feature_set([("a", 1, 0, GROUND), ("b", 1, 1, GROUND)], _angles([0, 5]))
    protocols, problems = heldout_protocols(features)
    assert protocols == {} and len(problems) == 3
    assert all("left out" in p and "tracklets" in p for p in problems)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no protocol can be evaluated"):
        validate(features)


def test_queries_with_a_match_follows_the_junk_rule():
    has = queries_with_a_match(q_pids=[1, 1, 2, 3], q_camids=[0, 5, 0, 0], g_pids=[1, 2, 2], g_camids=[0, 0, 1])
    assert has.tolist() == [False, True, True, False]  # same pid + same camid is junk; pid 3 is absent
