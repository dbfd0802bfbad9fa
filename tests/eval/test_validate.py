"""Bad input is a clear error, never a number."""

import numpy as np
import pytest

from xfd.eval.protocol import ProtocolData
from xfd.eval.distance import distance_stream
from xfd.eval.rerank import k_reciprocal, k_reciprocal_stream
from xfd.kernels.backend import gpu_available


def _unit(n, d=6, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


Q, G = _unit(5, seed=1), _unit(40, seed=2)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features(value):
    bad = Q.copy()
    bad[3, 1] = value
    with pytest.raises(ValueError, match="query features has NaN or inf in 1 row.*row 3"):
        k_reciprocal(bad, G, 10)
    with pytest.raises(ValueError, match="gallery features has NaN or inf"):
        distance_stream(Q, np.where(np.arange(6) == 0, value, G))


def test_dimension_mismatch():
    with pytest.raises(ValueError, match="dimensions differ: query has 6, gallery has 5"):
        k_reciprocal(Q, _unit(40, 5), 10)


def test_empty_query_or_gallery():
    with pytest.raises(ValueError, match="query features is empty"):
        k_reciprocal(Q[:0], G, 10)
    with pytest.raises(ValueError, match="gallery features is empty"):
        distance_stream(Q, G[:0])


def test_wrong_shapes_and_dtypes():
    with pytest.raises(ValueError, match="2-D"):
        k_reciprocal(Q[0], G, 10)
    with pytest.raises(ValueError, match="floating-point"):
        k_reciprocal(np.ones((2, 6), dtype=np.int64), G, 10)


def test_not_l2_normalised_unless_asked():
    with pytest.raises(ValueError, match=r"not L2-normalised: row \d+ has norm 2"):
        k_reciprocal(2 * Q, G, 10)
    np.testing.assert_allclose(k_reciprocal(2 * Q, G, 10, normalize=True), k_reciprocal(Q, G, 10), atol=1e-12)
    zero = Q.copy()
    zero[1] = 0
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        k_reciprocal(zero, G, 10, normalize=True)


@pytest.mark.parametrize("k1, k2, lam, message", [
    (45, 6, 0.3, "k1 = 45 must be smaller than N = queries \\+ gallery = 45"),
    (60, 6, 0.3, "k1 = 60 must be smaller"),
    (0, 6, 0.3, "k1 must be a positive integer"),
    (10, 46, 0.3, "k2 = 46 must not exceed N"),
    (10, 0, 0.3, "k2 must be a positive integer"),
    (10, 6, 1.5, "lambda must be in \\[0, 1\\]"),
    (10, 6, -0.1, "lambda must be in"),
])
def test_rerank_parameters(k1, k2, lam, message):
    with pytest.raises(ValueError, match=message):
        k_reciprocal_stream(Q, G, k1, k2, lam)  # raised at the call, before any block is asked for


def test_more_than_k1_exact_duplicates_is_an_error():
    dup = np.repeat(_unit(1, seed=3), 12, axis=0)  # 12 identical rows, k1 = 5: the later ones never see themselves
    with pytest.raises(ValueError, match="no k-reciprocal neighbour"):
        k_reciprocal(dup[:2], np.concatenate([dup[2:], G]), 5)


def test_protocol_labels_must_match_features():
    with pytest.raises(ValueError, match="q_pids has 4 entries, expected 5"):
        ProtocolData("A2G", Q, G, np.arange(4), np.arange(40), np.zeros(5), np.zeros(40))
    with pytest.raises(ValueError, match="g_camids has 39 entries, expected 40"):
        ProtocolData("A2G", Q, G, np.arange(5), np.arange(40), np.zeros(5), np.zeros(39))
    with pytest.raises(ValueError, match="g_names has 41 entries"):
        ProtocolData("A2G", Q, G, np.arange(5), np.arange(40), np.zeros(5), np.zeros(40), g_names=np.arange(41))


def test_unknown_device():
    with pytest.raises(ValueError, match="device must be one of"):
        k_reciprocal(Q, G, 10, device="tpu")


@pytest.mark.skipif(gpu_available(), reason="checks the error on machines without a CUDA device")
def test_cuda_without_a_device_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        k_reciprocal(Q, G, 10, device="cuda")


@pytest.mark.parametrize("seed", range(4))
def test_all_identical_features_are_an_error(seed):
    same = np.repeat(_unit(1, d=33, seed=seed), 6, axis=0)  # N = k1 + 1: every row sees every row
    with pytest.raises(ValueError, match="every distance is 0"):
        k_reciprocal_stream(same[:2], same[2:], 5)


def test_unknown_metric_fails_at_the_call():
    with pytest.raises(ValueError, match="metric must be one of"):
        distance_stream(Q, G, "manhattan")


def test_close_but_distinct_features_are_re_ranked():
    """Trained features can share most of their direction (squared distances ~1e-4, as a demo model's did): well
    above rounding, so re-ranking must accept them and keep each query's nearest gallery item informative."""
    rng = np.random.default_rng(0)
    common = _unit(1, d=192, seed=1)  # (1, d)
    spread = common + 5e-4 * rng.standard_normal((40, 192))
    feats = (spread / np.linalg.norm(spread, axis=1, keepdims=True)).astype(np.float32)  # (40, d)
    assert 1e-5 < float((2 - 2 * feats @ feats.T).max()) < 1e-3
    blocks = list(k_reciprocal_stream(feats[:10], feats[10:], 5))
    final = np.concatenate([block for _, block in blocks])  # (10, 30)
    assert final.shape == (10, 30) and np.isfinite(final).all()
