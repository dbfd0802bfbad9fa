"""Necks between the pooled tracklet feature and the ID classifier (BNNeck, Luo et al. 2019).

The triplet loss sees the feature before the neck; the ID classifier sees it after. Both necks have no trainable
shift (the BatchNorm bias is frozen at zero, as in BNNeck), so the classifier's hyperplanes pass through the
origin of the normalised space.

- BNNeck:            BatchNorm1d over the batch (batch statistics in training, running statistics at test).
- InstanceNormNeck:  each feature vector is normalised with its own statistics over its C dimensions — instance
                     normalisation with the vector as the instance (F.instance_norm on (B, 1, C)) — then scaled
                     by a learnable per-dimension gain. No batch statistics: training and test behave the same
                     and a feature does not depend on what else is in its batch (the paper's final config).

Necks and classifiers compute in float32 whatever the dtype of their parameters (bf16 under a bf16 engine), and
BatchNorm keeps its running statistics in float32. In training they run on the global batch, gathered from all
ranks (xfd/model/reid.py), so BNNeck's batch statistics are those of the whole batch on every rank — synchronised
BatchNorm, and identical running statistics on every rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Float32BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d computed in float32 with float32 running statistics, whatever dtype the module is cast to."""

    def _apply(self, fn, recurse=True):
        before = {name: getattr(self, name) for name in ("running_mean", "running_var")}
        super()._apply(fn, recurse)
        for name, stat in before.items():  # a module-wide .to(bf16) moves the statistics but keeps them float32
            after = getattr(self, name)
            if after is not None and after.dtype != torch.float32:
                setattr(self, name, stat.to(after.device))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(x.float(), self.running_mean, self.running_var, self.weight.float(), self.bias.float(),
                            use_batch, momentum, self.eps)  # (B, C) float32


class BNNeck(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.bn = Float32BatchNorm1d(dim)
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
        normed = F.instance_norm(x.float().unsqueeze(1), eps=self.eps).squeeze(1)  # (B, C), per-vector statistics
        return normed * self.weight.float()


def build_neck(kind: str, dim: int) -> nn.Module:
    necks = {"bnneck": BNNeck, "instancenorm": InstanceNormNeck}
    return necks[kind](dim) if kind in necks else nn.Identity()


def frozen_parameter_names(neck: nn.Module) -> set[str]:
    """Parameter names (relative to `neck`) that a neck keeps frozen in every stage."""
    return {"bn.bias"} if isinstance(neck, BNNeck) else set()


class IDClassifier(nn.Linear):
    """Bias-free linear ID classifier computed in the dtype of its input (float32 after the necks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype))  # (B, num_classes)


def classifier(dim: int, num_classes: int) -> nn.Linear:
    """ID classifier: bias-free linear layer, small normal init (std 0.001) as in CLIP-ReID / TransReID."""
    layer = IDClassifier(dim, num_classes, bias=False)
    nn.init.normal_(layer.weight, std=0.001)
    return layer
