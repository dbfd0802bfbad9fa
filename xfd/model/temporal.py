"""Temporal pooling: frame features f_1..f_L (B, L, C) -> one tracklet feature z (B, C).

Every pooler computes per-frame weights w (B, L) that sum to 1 over the frames and returns z = sum_t w_t f_t
together with w (useful to inspect which frames a model trusts).

- mean:       w_t = 1 / L (the VSLA-CLIP baseline).
- attention:  s_t = w^T f_t + b,  alpha = softmax_t(s),  z = sum_t alpha_t f_t   (paper 001, Eq. 2-4).
- qatw:       quality-aware temporal weighting — defined here, since the paper names it but nothing public
              defines it:

                  s_t   = w^T f_t + b                              attention score (Eq. 2)
                  q_t   = sigmoid(g(f_t)) in (0, 1)                per-frame quality from the frame's own feature,
                                                                   g = Linear(C, h) -> GELU -> Linear(h, 1)
                  kappa = softplus(k0 + k_alt[altitude] + k_dist[distance])   (>= 0; with qatw_prior) or 1
                  alpha = softmax_t(s_t + kappa * log q_t)  i.e.  alpha_t  ~  exp(s_t) * q_t^kappa
                  z     = sum_t alpha_t f_t

              The quality q_t is a multiplicative gate on the attention weight: a frame judged degraded (blur,
              a few pixels tall, occluded) is suppressed however salient its score. The capture-geometry prior
              kappa cannot act per frame (bins are per tracklet, and a per-tracklet additive term cancels in the
              softmax); it sets how strongly quality gates the weights, learned per altitude and distance bin —
              far/high captures can learn to trust quality more. At init g's last layer and the prior tables are
              zero (q_t = 1/2 for every frame, kappa = 1), so QATW starts out exactly equal to attention pooling.

- multi-granularity (SAS-VPReID MGTM, optional around any of the above): for each stride s the sequence is cut
  into consecutive windows of s frames (the last one may be shorter; s >= L gives one window), each window is
  averaged, a stride-specific pooler of the chosen kind weights the windows, and the strides are fused with
  learnable softmax weights (zero-init: equal). The result is still sum_t w_t f_t with w the effective
  per-frame weights.

All poolers accept any L >= 1.
"""

from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from xfd.config import MetadataConfig, TemporalConfig


class TemporalPool(nn.Module):
    """Base: subclasses define `frame_weights`; forward returns (z (B, C), w (B, L))."""

    def frame_weights(self, f: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, f: torch.Tensor, meta: torch.Tensor):
        w = self.frame_weights(f, meta)  # (B, L)
        z = torch.einsum("bl,blc->bc", w.to(f.dtype), f)  # (B, C)
        return z, w


class MeanPool(TemporalPool):
    def frame_weights(self, f, meta):
        return torch.full(f.shape[:2], 1.0 / f.shape[1], dtype=f.dtype, device=f.device)  # (B, L)


class AttentionPool(TemporalPool):
    """Paper Eq. 2-4: a linear score per frame, softmax over time."""

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def scores(self, f):
        return self.score(f).squeeze(-1)  # (B, L)

    def frame_weights(self, f, meta):
        return torch.softmax(self.scores(f).float(), dim=1)


class QualityAwarePool(AttentionPool):
    """QATW: attention weights gated by a learned per-frame quality q_t^kappa (see the module docstring)."""

    def __init__(self, dim: int, hidden: int, prior: bool, meta_cfg: MetadataConfig):
        super().__init__(dim)
        self.quality = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.quality[2].weight)
        nn.init.zeros_(self.quality[2].bias)
        self.prior = prior
        if prior:
            # kappa = softplus(k0 + k_alt + k_dist) = 1 at init
            # shape (1,), not a 0-dim scalar: DeepSpeed broadcasts parameters as byte views, which 0-dim ones lack
            self.kappa_base = nn.Parameter(torch.full((1,), math.log(math.e - 1.0)))
            self.kappa_altitude = nn.Embedding(meta_cfg.altitude_bins + 1, 1)
            self.kappa_distance = nn.Embedding(meta_cfg.distance_bins + 1, 1)
            nn.init.zeros_(self.kappa_altitude.weight)
            nn.init.zeros_(self.kappa_distance.weight)

    def kappa(self, meta, batch: int, device) -> torch.Tensor:
        if not self.prior:
            return torch.ones(batch, 1, device=device)
        k = self.kappa_base + self.kappa_altitude(meta[:, 0]) + self.kappa_distance(meta[:, 1])  # (B, 1)
        return F.softplus(k.float())

    def frame_weights(self, f, meta):
        log_q = F.logsigmoid(self.quality(f).squeeze(-1).float())  # (B, L) = log q_t, numerically stable
        kappa = self.kappa(meta, f.shape[0], f.device)  # (B, 1)
        return torch.softmax(self.scores(f).float() + kappa * log_q, dim=1)


def window_matrix(num_frames: int, stride: int, device=None) -> torch.Tensor:
    """(num_windows, L) averaging matrix of consecutive windows of `stride` frames (last window may be short)."""
    num_windows = max(1, math.ceil(num_frames / stride))
    m = torch.zeros(num_windows, num_frames, device=device)
    for k in range(num_windows):
        frames = range(k * stride, min((k + 1) * stride, num_frames))
        m[k, list(frames)] = 1.0 / len(frames)
    return m


class MultiGranularityPool(TemporalPool):
    """Windows of each stride, a pooler per stride over the window means, learnable softmax fusion of strides."""

    def __init__(self, strides: List[int], poolers: List[TemporalPool]):
        super().__init__()
        self.strides = list(strides)
        self.poolers = nn.ModuleList(poolers)
        self.fusion_logits = nn.Parameter(torch.zeros(len(strides)))

    def frame_weights(self, f, meta):
        fusion = torch.softmax(self.fusion_logits.float(), dim=0)  # (S,)
        w = 0.0
        for k, (stride, pooler) in enumerate(zip(self.strides, self.poolers)):
            m = window_matrix(f.shape[1], stride, f.device)  # (K, L)
            windows = torch.einsum("kl,blc->bkc", m.to(f.dtype), f)  # (B, K, C) window means
            alpha = pooler.frame_weights(windows, meta)  # (B, K)
            w = w + fusion[k] * (alpha.float() @ m)  # (B, L) effective per-frame weights of this stride
        return w


def _single_pool(kind: str, dim: int, cfg: TemporalConfig, meta_cfg: MetadataConfig) -> TemporalPool:
    builders = {
        "mean": lambda: MeanPool(),
        "attention": lambda: AttentionPool(dim),
        "qatw": lambda: QualityAwarePool(dim, cfg.qatw_hidden, cfg.qatw_prior, meta_cfg),
    }
    return builders[kind]()


def build_temporal_pool(cfg: TemporalConfig, meta_cfg: MetadataConfig, dim: int) -> TemporalPool:
    """The pooler `cfg` describes, for features of width `dim`."""
    if cfg.multi_granularity:
        return MultiGranularityPool(cfg.strides, [_single_pool(cfg.pooling, dim, cfg, meta_cfg) for _ in cfg.strides])
    return _single_pool(cfg.pooling, dim, cfg, meta_cfg)
