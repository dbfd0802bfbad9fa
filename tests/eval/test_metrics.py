"""Streaming metrics: hand-computed cases, the junk rule, skipped queries, ties, and a dense reference."""

import numpy as np
import pytest

from xfd.eval import metrics
from xfd.eval.metrics import RankingAccumulator, average_precision, evaluate_blocks, evaluate_distances
from xfd.eval.reference import dense_rank_metrics

# Gallery: index -> (pid, camid)
G_PIDS = np.array([1, 2, 1, 3, 1, 2])
G_CAMS = np.array([1, 1, 0, 2, 2, 0])
# Queries: (pid 1, cam 0), (pid 2, cam 1), (pid 3, cam 2: its only same-pid item is junk), (pid 9: absent)
Q_PIDS = np.array([1, 2, 3, 9])
Q_CAMS = np.array([0, 1, 2, 0])
DIST = np.array([
    # q0: junk 2 (0.05) first, then negatives 1, 3, match 0 (0.50), negative 5, match 4 (0.90)
    [0.50, 0.10, 0.05, 0.30, 0.90, 0.70],
    # q1: match 5 first; item 1 (pid 2, cam 1) is junk
    [0.20, 0.60, 0.40, 0.10, 0.30, 0.05],
    [0.10, 0.20, 0.30, 0.40, 0.50, 0.60],
    [0.10, 0.20, 0.30, 0.40, 0.50, 0.60],
])


def test_hand_computed_noninterpolated():
    m = evaluate_distances(DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS, max_rank=5)
    # q0: after removing junk the ranking is neg, neg, MATCH, neg, MATCH -> matches at ranks 3 and 5
    ap0, inp0 = (1 / 3 + 2 / 5) / 2, 2 / 5
    # q1: match at rank 1
    ap1, inp1 = 1.0, 1.0
    assert m.num_queries == 4 and m.num_valid == 2 and m.num_skipped == 2
    assert m.mAP == pytest.approx((ap0 + ap1) / 2, abs=1e-15)
    assert m.mINP == pytest.approx((inp0 + inp1) / 2, abs=1e-15)
    np.testing.assert_array_equal(m.cmc, [0.5, 0.5, 1.0, 1.0, 1.0])
    assert m.rank(1) == 0.5 and m.rank(3) == 1.0


def test_hand_computed_trapezoid():
    m = evaluate_distances(DIST, Q_PIDS, Q_CAMS, G_PIDS, G_CAMS, ap_mode="trapezoid")
    # q0, Market-1501 style: hit 1 at rank 3: (0/2 + 1/3)/2; hit 2 at rank 5: (1/4 + 2/5)/2; mean over 2 hits
    ap0 = ((0 + 1 / 3) / 2 + (1 / 4 + 2 / 5) / 2) / 2
    assert ap0 == pytest.approx(0.2458333333333333)
    assert m.mAP == pytest.approx((ap0 + 1.0) / 2, abs=1e-15)


def test_junk_rule_removes_only_same_pid_same_camid():
    # The same row with item 2 not junk (query cam 3): it is then a match at rank 1.
    m = evaluate_distances(DIST[:1], [1], [3], G_PIDS, G_CAMS)
    # ranking: 2 (match), 1, 3, 0 (match), 5, 4 (match) -> ranks 1, 4, 6
    assert m.mAP == pytest.approx((1 / 1 + 2 / 4 + 3 / 6) / 3)
    assert m.mINP == pytest.approx(3 / 6)


def test_ties_rank_by_lower_gallery_index():
    # all distances equal: order 0 (neg), 1 (match), 2 (junk, removed), 3 (match) -> ranks 2, 3
    m = evaluate_distances(np.full((1, 4), 0.5), [1], [0], [2, 1, 1, 1], [0, 1, 0, 2])
    assert m.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m.mINP == pytest.approx(2 / 3)
    assert m.rank(1) == 0.0 and m.rank(2) == 1.0


def test_average_precision_definitions():
    assert average_precision(np.array([1, 2, 3])) == 1.0
    assert average_precision(np.array([2])) == 0.5
    assert average_precision(np.array([2]), "trapezoid") == pytest.approx((0 / 1 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="ap_mode"):
        average_precision(np.array([1]), "11-point")


def _random_problem(seed, q, g, n_pids, dtype, quantised):
    rng = np.random.default_rng(seed)
    q_pids, g_pids = rng.integers(0, n_pids, q), rng.integers(0, n_pids, g)
    q_cams, g_cams = rng.integers(0, 3, q), rng.integers(0, 3, g)
    dist = rng.random((q, g)) + 0.5 * (q_pids[:, None] != g_pids[None, :])
    if quantised:  # many exact ties
        dist = np.round(dist * 8) / 8
    return dist.astype(dtype), q_pids, q_cams, g_pids, g_cams


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("quantised", [False, True])
@pytest.mark.parametrize("ap_mode", ["noninterpolated", "trapezoid"])
def test_equals_dense_reference_on_random_problems(dtype, quantised, ap_mode):
    dist, q_pids, q_cams, g_pids, g_cams = _random_problem(7, 150, 900, 60, dtype, quantised)
    got = evaluate_distances(dist, q_pids, q_cams, g_pids, g_cams, max_rank=20, ap_mode=ap_mode, block_rows=17)
    ref = dense_rank_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank=20, ap_mode=ap_mode)
    assert got.num_valid == ref["num_valid"] and got.num_skipped == ref["num_skipped"]
    assert got.mAP == pytest.approx(ref["mAP"], abs=1e-12)
    assert got.mINP == pytest.approx(ref["mINP"], abs=1e-12)
    np.testing.assert_allclose(got.cmc, ref["cmc"], atol=1e-12)


@pytest.mark.parametrize("group", [1, 40, 1 << 16])  # every row alone (each larger than a group), some, all
def test_rows_ranked_in_groups_give_the_same_per_query_values(group, monkeypatch):
    dist, q_pids, q_cams, g_pids, g_cams = _random_problem(9, 50, 400, 20, np.float32, True)
    ref = dense_rank_metrics(dist, q_pids, g_pids, q_cams, g_cams)
    monkeypatch.setattr(metrics, "SORT_ENTRIES", group)
    acc = RankingAccumulator(q_pids, q_cams, g_pids, g_cams)
    acc.update(np.arange(50), dist)
    scores = acc.queries()
    assert scores.metrics().mAP == pytest.approx(ref["mAP"], abs=1e-12)
    for q in range(50):  # every match's rank, by a full stable sort of the query's non-junk items
        keep = ~((g_pids == q_pids[q]) & (g_cams == q_cams[q]))
        ranking = np.flatnonzero(keep)[np.argsort(dist[q, keep], kind="stable")]
        match = (g_pids[ranking] == q_pids[q])
        np.testing.assert_array_equal(scores.match_rows[q], ranking[match])
        np.testing.assert_array_equal(scores.match_ranks[q], np.flatnonzero(match) + 1)


def test_blocks_in_any_order_give_the_same_result():
    dist, q_pids, q_cams, g_pids, g_cams = _random_problem(8, 60, 300, 30, np.float64, False)
    rng = np.random.default_rng(0)
    order = rng.permutation(60)
    blocks = [(order[s : s + 7], dist[order[s : s + 7]]) for s in range(0, 60, 7)]
    shuffled = evaluate_blocks(blocks, q_pids, q_cams, g_pids, g_cams)
    plain = evaluate_distances(dist, q_pids, q_cams, g_pids, g_cams)
    assert shuffled.mAP == plain.mAP and shuffled.mINP == plain.mINP
    np.testing.assert_array_equal(shuffled.cmc, plain.cmc)


def test_accumulator_rejects_bad_blocks():
    acc = RankingAccumulator(Q_PIDS, Q_CAMS, G_PIDS, G_CAMS)
    with pytest.raises(ValueError, match="shape"):
        acc.update([0], DIST[:1, :5])
    with pytest.raises(ValueError, match="NaN or inf"):
        acc.update([0], np.where(np.arange(6) == 2, np.nan, DIST[:1]))
    acc.update([0, 1], DIST[:2])
    with pytest.raises(ValueError, match="twice"):
        acc.update([1], DIST[1:2])
    with pytest.raises(ValueError, match="never given"):
        acc.result()
    with pytest.raises(ValueError, match="out of range"):
        acc.update([4], DIST[:1])


def test_labels_of_wrong_length_are_rejected():
    with pytest.raises(ValueError, match="query camids"):
        RankingAccumulator(Q_PIDS, Q_CAMS[:3], G_PIDS, G_CAMS)
    with pytest.raises(ValueError, match="gallery camids"):
        RankingAccumulator(Q_PIDS, Q_CAMS, G_PIDS, G_CAMS[:-1])
    with pytest.raises(ValueError, match="at least one"):
        RankingAccumulator([], [], G_PIDS, G_CAMS)


def test_all_queries_without_match_give_nan_and_are_counted():
    m = evaluate_distances(DIST[2:], Q_PIDS[2:], Q_CAMS[2:], G_PIDS, G_CAMS)
    assert m.num_valid == 0 and m.num_skipped == 2
    assert np.isnan(m.mAP) and np.isnan(m.mINP) and np.isnan(m.cmc).all()
