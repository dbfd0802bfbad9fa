"""VSLA adapters (VSLA-CLIP, seed 003): IFA beside each MLP, CFAA beside each attention.

Both are bottlenecks (D -> `bottleneck` -> D) whose up-projection starts at zero, so inserting them leaves a
pretrained backbone's output unchanged until training moves them.

- IFA (intra-frame adapter):   IFA(x) = W_up QuickGELU(W_down x), added in parallel to the block's MLP branch.
- CFAA (cross-frame attention adapter): CFAA(x) = W_up MHA_t(W_down x), where the multi-head attention runs over
  the time axis: token s of frame t attends to token s of every frame of the same tracklet. It has no temporal
  position embedding, so it is a set operation (permutation-equivariant over frames) and works for any number of
  frames L — training with 16 and testing with 8 or 32 frames needs nothing special.
"""

from __future__ import annotations

import torch
from torch import nn
from open_clip.transformer import QuickGELU


class IntraFrameAdapter(nn.Module):
    """IFA: (N, S, D) -> (N, S, D), frame by frame."""

    def __init__(self, dim: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = QuickGELU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.up(self.act(self.down(x)))  # (N, S, D)


class CrossFrameAttentionAdapter(nn.Module):
    """CFAA: (N = B*L, S, D) -> (N, S, D); attention over the L frames of each tracklet, per token position."""

    def __init__(self, dim: int, bottleneck: int, heads: int):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.attn = nn.MultiheadAttention(bottleneck, heads, batch_first=True)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        n, s, _ = x.shape
        if n % num_frames:
            raise ValueError(f"CFAA: {n} frames is not a whole number of tracklets of {num_frames} frames")
        b = n // num_frames
        h = self.down(x)  # (B*L, S, a)
        a = h.shape[-1]
        h = h.view(b, num_frames, s, a).transpose(1, 2).reshape(b * s, num_frames, a)  # (B*S, L, a)
        h = self.attn(h, h, h, need_weights=False)[0]  # (B*S, L, a)
        h = h.view(b, s, num_frames, a).transpose(1, 2).reshape(n, s, a)  # (B*L, S, a)
        return self.up(h)  # (B*L, S, D)
