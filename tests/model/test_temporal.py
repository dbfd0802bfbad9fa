"""xfd.model.temporal: mean / attention (Eq. 2-4) / QATW / multi-granularity pooling against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from xfd.config import MetadataConfig, TemporalConfig
from xfd.model.temporal import (AttentionPool, MeanPool, MultiGranularityPool, QualityAwarePool,
                                build_temporal_pool, window_matrix)

META_CFG = MetadataConfig()


def _inputs(batch=3, frames=5, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(batch, frames, dim, generator=g)
    meta = torch.tensor([[0, 0, 0], [17, 5, 2], [18, 18, 3]])[:batch]
    return f, meta


@pytest.mark.parametrize("frames", [1, 2, 5, 16])
def test_mean_and_attention_any_length(frames):
    f, meta = _inputs(frames=frames)
    z, w = MeanPool()(f, meta)
    torch.testing.assert_close(z, f.mean(dim=1))
    pool = AttentionPool(8)
    z, w = pool(f, meta)
    s = f @ pool.score.weight[0] + pool.score.bias  # (B, L): s_t = w^T f_t + b
    alpha = torch.exp(s) / torch.exp(s).sum(dim=1, keepdim=True)
    torch.testing.assert_close(w, alpha)
    torch.testing.assert_close(z, (alpha[..., None] * f).sum(dim=1))


def test_qatw_starts_as_attention_pooling():
    f, meta = _inputs()
    qatw = QualityAwarePool(8, hidden=4, prior=True, meta_cfg=META_CFG)
    att = AttentionPool(8)
    att.load_state_dict({"score.weight": qatw.score.weight, "score.bias": qatw.score.bias})
    torch.testing.assert_close(qatw(f, meta)[0], att(f, meta)[0])
    torch.testing.assert_close(qatw.kappa(meta, 3, f.device), torch.ones(3, 1))


def test_qatw_definition_by_hand():
    f, meta = _inputs()
    qatw = QualityAwarePool(8, hidden=4, prior=True, meta_cfg=META_CFG)
    with torch.no_grad():
        for p in qatw.parameters():
            p.normal_(std=0.7)
    z, w = qatw(f, meta)
    s = f @ qatw.score.weight[0] + qatw.score.bias  # (B, L)
    q = torch.sigmoid(qatw.quality(f).squeeze(-1))  # (B, L) per-frame quality in (0, 1)
    kappa = F.softplus(qatw.kappa_base + qatw.kappa_altitude.weight[meta[:, 0], 0]
                       + qatw.kappa_distance.weight[meta[:, 1], 0])  # (B,)
    unnormalised = torch.exp(s) * q ** kappa[:, None]  # alpha_t ~ exp(s_t) q_t^kappa
    alpha = unnormalised / unnormalised.sum(dim=1, keepdim=True)
    torch.testing.assert_close(w, alpha, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z, (alpha[..., None] * f).sum(dim=1), rtol=1e-5, atol=1e-6)


def test_qatw_suppresses_a_low_quality_frame():
    """With equal scores, a frame whose quality gate is near zero gets almost no weight."""
    qatw = QualityAwarePool(2, hidden=2, prior=False, meta_cfg=META_CFG)
    with torch.no_grad():
        qatw.score.weight.zero_()
        qatw.score.bias.zero_()
        qatw.quality[0].weight.copy_(torch.eye(2))
        qatw.quality[0].bias.zero_()
        qatw.quality[2].weight.copy_(torch.tensor([[20.0, 0.0]]))
        qatw.quality[2].bias.fill_(-10.0)
    f = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]])  # third frame: GELU(-1) * 20 - 10 -> q ~ 0
    _, w = qatw(f, torch.zeros(1, 3, dtype=torch.long))
    assert w[0, 2].item() < 1e-3 and w[0, 0].item() == pytest.approx(w[0, 1].item())


def test_qatw_prior_sets_the_gate_strength_per_bin():
    qatw = QualityAwarePool(8, hidden=4, prior=True, meta_cfg=META_CFG)
    with torch.no_grad():
        qatw.kappa_distance.weight[5] = 2.0
    k = qatw.kappa(torch.tensor([[0, 5, 0], [0, 4, 0]]), 2, "cpu")
    assert k[0].item() == pytest.approx(math.log1p(math.exp(math.log(math.e - 1) + 2.0)), rel=1e-5)
    assert k[1].item() == pytest.approx(1.0, rel=1e-6)
    assert not hasattr(QualityAwarePool(8, 4, prior=False, meta_cfg=META_CFG), "kappa_distance")


def test_window_matrix_short_last_window():
    m = window_matrix(5, 2)
    expected = torch.tensor([[.5, .5, 0, 0, 0], [0, 0, .5, .5, 0], [0, 0, 0, 0, 1.]])
    torch.testing.assert_close(m, expected)
    torch.testing.assert_close(window_matrix(3, 8), torch.full((1, 3), 1 / 3))


@pytest.mark.parametrize("frames", [1, 5, 16])
def test_multi_granularity_mean_by_hand(frames):
    f, meta = _inputs(frames=frames)
    pool = MultiGranularityPool([2, 4], [MeanPool(), MeanPool()])
    z, w = pool(f, meta)
    with torch.no_grad():
        pool.fusion_logits.copy_(torch.tensor([0.0, math.log(3.0)]))  # fusion weights 1/4, 3/4
    z2, w2 = pool(f, meta)
    expected = 0
    for stride, weight in ((2, 0.25), (4, 0.75)):
        windows = [f[:, k:k + stride].mean(dim=1) for k in range(0, frames, stride)]
        expected = expected + weight * torch.stack(windows, dim=1).mean(dim=1)
    torch.testing.assert_close(z2, expected)
    torch.testing.assert_close(w2.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(z2, (w2[..., None] * f).sum(dim=1))


def test_build_temporal_pool_switches():
    meta = MetadataConfig()
    assert isinstance(build_temporal_pool(TemporalConfig(pooling="mean"), meta, 8), MeanPool)
    assert type(build_temporal_pool(TemporalConfig(pooling="attention"), meta, 8)) is AttentionPool
    assert isinstance(build_temporal_pool(TemporalConfig(pooling="qatw"), meta, 8), QualityAwarePool)
    mg = build_temporal_pool(TemporalConfig(pooling="qatw", multi_granularity=True, strides=[2, 4, 8]), meta, 8)
    assert isinstance(mg, MultiGranularityPool) and len(mg.poolers) == 3
    assert all(isinstance(p, QualityAwarePool) for p in mg.poolers)
    f, m = _inputs(frames=16)
    z, w = mg(f, m)
    torch.testing.assert_close(z, (w[..., None] * f).sum(dim=1), rtol=1e-5, atol=1e-6)
