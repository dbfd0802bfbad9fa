"""Necks between the pooled tracklet feature and the ID classifier (BNNeck, Luo et al. 2019).

The triplet loss sees the feature before the neck; the ID classifier sees it after. Both necks have no trainable
shift (the BatchNorm bias is frozen at zero, as in BNNeck), so the classifier's hyperplanes pass through the
origin of the normalised space.

- BNNeck:            BatchNorm1d over the batch (batch statistics in training, running statistics at test).
- InstanceNormNeck:  each feature vector is normalised with its own statistics over its C dimensions — instance
                     normalisation with the vector as the instance (F.instance_norm on (B, 1, C)) — then scaled
                     by a learnable per-dimension gain. No batch statistics: training and test behave the same
                     and a feature does not depend on what else is in its batch (the paper's final config).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BNNeck(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)  # frozen shift (BNNeck); kept frozen by set_stage

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)  # (B, C)


class InstanceNormNeck(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.instance_norm(x.unsqueeze(1), eps=self.eps).squeeze(1)  # (B, C), per-vector statistics
        return normed * self.weight


def build_neck(kind: str, dim: int) -> nn.Module:
    necks = {"bnneck": BNNeck, "instancenorm": InstanceNormNeck}
    return necks[kind](dim) if kind in necks else nn.Identity()


def frozen_parameter_names(neck: nn.Module) -> set[str]:
    """Parameter names (relative to `neck`) that a neck keeps frozen in every stage."""
    return {"bn.bias"} if isinstance(neck, BNNeck) else set()


def classifier(dim: int, num_classes: int) -> nn.Linear:
    """ID classifier: bias-free linear layer, small normal init (std 0.001) as in CLIP-ReID / TransReID."""
    layer = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(layer.weight, std=0.001)
    return layer
