"""The global batch on every rank: rows of all ranks gathered, with gradients back to each rank's own rows.

Batch-level losses (batch-hard triplet mining, SupCon i2t / t2i) and BatchNorm statistics are properties of the
global batch, not of a rank's slice of it. So each rank gathers the pooled features of every rank (in rank order:
the ranks hold consecutive slices of the batch), and every rank computes the same necks, heads and losses on the
same rows — the objective of the whole batch, as one process would compute it.

Gradients: the true backward of an all-gather is a reduce-scatter, the sum over ranks of each rank's gradient for
these rows. Every rank computes the same loss from the same gathered rows, so those gradients are all equal, and
the sum is `world x` this rank's own gradient for its rows: computed here without communicating. DeepSpeed then
averages gradients over ranks, which yields the one-process gradient both for the parameters before the gather
(sum over ranks of each rank's part) and for those after it (every rank already holds the full gradient).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_rows(rows: torch.Tensor, world_size: int) -> torch.Tensor:
    """Every rank's `rows`, concatenated in rank order: (world x B, ...)."""
    parts = [torch.empty_like(rows) for _ in range(world_size)]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: torch.Tensor, world_size: int, rank: int) -> torch.Tensor:
        ctx.world_size, ctx.rank, ctx.count = world_size, rank, rows.shape[0]
        return _all_rows(rows, world_size)  # (world x B, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        own = grad[ctx.rank * ctx.count:(ctx.rank + 1) * ctx.count]  # (B, ...)
        return own * ctx.world_size, None, None


class RankGather:
    """`gather(rows)` -> the rows of every rank, concatenated in rank order (identity for a world of one).
    Ranks must pass tensors of equal shape; integer tensors (labels) travel without gradients."""

    def __init__(self, world_size: int = 1, rank: int = 0):
        self.world_size, self.rank = world_size, rank

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return rows
        if not rows.is_floating_point():
            return _all_rows(rows, self.world_size)
        return _GatherRows.apply(rows, self.world_size, self.rank)
