"""Learning-rate schedule of both stages: linear warm-up from `warmup_factor`·LR, then cosine to `min_lr_factor`·LR.

The factor is a pure function of the optimizer step, held in a small picklable object so that DeepSpeed's
checkpoint of the LambdaLR restores it exactly (and so a resumed run continues on the same curve).
"""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    """step -> LR multiplier; `total` optimizer steps, the first `warmup` of them warming up linearly."""

    def __init__(self, total: int, warmup: int, warmup_factor: float = 0.1, min_factor: float = 0.01):
        if total < 1:
            raise ValueError(f"a schedule needs at least one step, got {total}")
        self.total, self.warmup = int(total), int(min(max(warmup, 0), total))
        self.warmup_factor, self.min_factor = float(warmup_factor), float(min_factor)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup
        span = max(self.total - self.warmup, 1)
        progress = min((step - self.warmup) / span, 1.0)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, warmup_factor: float,
                  min_factor: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying `WarmupCosine` to every group's own LR (so the backbone's 0.1x scale is kept)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, warmup_factor,
                                                                     min_factor))
