"""PBP (platform-bridge prompts, VSLA-CLIP): learnable prompts per platform and per layer.

For the first `depth` transformer blocks, `length` prompt tokens of the tracklet's platform (0 ground, 1 aerial)
are appended to the block's LayerNorm-ed tokens (after `ln_1`) as extra keys/values: every image token attends
over them together with the other tokens, and the prompts' own outputs are dropped (they are never queries), so
the sequence length seen by the rest of the block is unchanged.

Optionally a metadata embedding (B, D) is added to every prompt token (see `metadata.py`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from xfd.config import PromptConfig

NUM_PLATFORMS = 2  # 0 = ground, 1 = aerial


class PlatformPrompts(nn.Module):
    """Prompt tokens (platform, layer, token, D); `forward` picks each tracklet's platform set."""

    def __init__(self, cfg: PromptConfig, dim: int):
        super().__init__()
        self.depth = cfg.depth
        self.length = cfg.length
        self.tokens = nn.Parameter(torch.empty(NUM_PLATFORMS, cfg.depth, cfg.length, dim))
        nn.init.trunc_normal_(self.tokens, std=0.02)

    def forward(self, platform: torch.Tensor, meta_embedding: Optional[torch.Tensor] = None) -> torch.Tensor:
        prompts = self.tokens[platform]  # (B, depth, length, D)
        if meta_embedding is not None:
            prompts = prompts + meta_embedding[:, None, None, :]  # (B, 1, 1, D) broadcast to every prompt token
        return prompts
