"""Held-out protocols from one labelled split: membership of A2G / G2A / A2A, protocols the split cannot support
(reported as not scored under the evaluation API's one rule), and metrics on hand-made features that can be
checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from xfd.eval.heldout import validate
from xfd.eval.protocol import platform_protocols
from xfd.eval.score import ScoreOptions
from xfd.inference import FeatureSet

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
    protocols = platform_protocols(_one_hot_split())
    assert list(protocols) == ["A2G", "G2A", "A2A"]
    aerial, ground = ["1a", "1b", "2a", "2b", "3a", "3b"], ["1g", "2g", "3g"]
    expected = {"A2G": (aerial, ground), "G2A": (ground, aerial), "A2A": (aerial, aerial)}
    for name, (queries, gallery) in expected.items():
        data = protocols[name]
        assert data.name == name
        assert data.q_names.tolist() == queries and data.g_names.tolist() == gallery
        assert data.q_feats.shape == (len(queries), 4) and data.g_feats.shape == (len(gallery), 4)
    a2a = protocols["A2A"]
    assert a2a.q_pids.tolist() == [1, 1, 2, 2, 3, 3] and a2a.g_camids.tolist() == [10, 11] * 3
    assert a2a.q_meta["platform"].tolist() == [AERIAL] * 6


def test_one_hot_features_give_perfect_scores():
    results = validate(_one_hot_split())
    for name, outcome in results.protocols.items():
        metrics = outcome.metrics
        assert metrics.mAP == 1.0 and metrics.rank(1) == 1.0 and metrics.num_skipped == 0, name
    # A2A: each aerial query keeps one match (the other capture point); itself is junk (same pid and camid)
    assert results.protocols["A2A"].metrics.num_valid == 6
    assert results.mean.values["mAP"] == 1.0 and results.mean.num_protocols == 3 and results.warnings == []


def _angles(degrees):
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], 1)


def test_hand_computed_map_skipped_queries_and_unscorable_protocol():
    # one aerial query (pid 1) at 0°; ground: pid 2 at 10°, pid 1 at 20° (cam 0) and 30° (cam 1)
    features = _feature_set([("q", 1, 10, AERIAL), ("x", 2, 0, GROUND), ("m1", 1, 0, GROUND), ("m2", 1, 1, GROUND)],
                            _angles([0, 10, 20, 30]))
    results = validate(features, ScoreOptions(device="cpu"))
    assert sorted(results.scored) == ["A2G", "G2A"]
    assert not results.protocols["A2A"].scored and "valid match" in results.protocols["A2A"].reason
    assert len(results.warnings) == 1 and results.warnings[0].startswith("protocol A2A not scored")
    a2g, g2a = results.protocols["A2G"].metrics, results.protocols["G2A"].metrics
    # A2G: ranking x (wrong), m1, m2 -> matches at ranks 2 and 3: AP = (1/2 + 2/3) / 2
    assert a2g.mAP == pytest.approx(7 / 12) and a2g.rank(1) == 0.0
    # G2A: queries x, m1, m2 against the single aerial tracklet; x (pid 2) has no match and is skipped
    assert g2a.mAP == pytest.approx(1.0)
    assert (g2a.num_queries, g2a.num_skipped) == (3, 1)
    assert results.mean.values["mAP"] == pytest.approx((7 / 12 + 1) / 2) and results.mean.num_protocols == 2


def test_single_platform_split_has_no_protocol():
    features = _feature_set([("a", 1, 0, GROUND), ("b", 1, 1, GROUND)], _angles([0, 5]))
    with pytest.raises(ValueError, match="no protocol can be evaluated.*A2G: empty query side"):
        validate(features)


def test_an_unlabelled_split_cannot_validate():
    split = _one_hot_split()
    unlabelled = FeatureSet(split.keys, split.features, None, split.camids, split.platform)
    with pytest.raises(ValueError, match="needs a labelled split"):
        validate(unlabelled)
