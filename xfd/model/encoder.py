"""Frame encoder: open_clip's VisionTransformer run block by block with PBP prompts, metadata and VSLA adapters.

open_clip's modules and parameters are used as they are (names stay `visual.transformer.resblocks.<i>.*`, so
pretrained weights and selective fine-tuning address them directly); only the order of operations inside a
block is ours:

    h   = ln_1(x)                                         # (N, S, D), N = B*L frames, S = 1 + patches
    kv  = [h ; prompts_i]  if i < depth else h            # PBP: prompts are extra keys/values only
    x'  = x + ls_1(MSA(h, kv, kv)) + CFAA(x)              # CFAA parallel to attention (VSLA Eq. 16)
    out = x' + ls_2(MLP(ln_2(x'))) + IFA(x')              # IFA parallel to the MLP (VSLA Eq. 14)

With prompts, metadata and adapters all switched off this is exactly open_clip's forward. Each frame yields its
CLS feature ln_post(x[:, 0]) (width D) and the projected feature (CLIP embed dim E).
"""

from __future__ import annotations

from typing import Optional

import torch
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from xfd.config import ConfigError, ModelConfig
from xfd.model.adapters import CrossFrameAttentionAdapter, IntraFrameAdapter
from xfd.model.metadata import MetadataEmbedding
from xfd.model.prompts import PlatformPrompts


def resolve_block_indices(indices, depth: int, key: str) -> list[int]:
    """Block indices with negatives counted from the end; out-of-range indices are a ConfigError on `key`."""
    resolved = []
    for index in indices:
        if not -depth <= index < depth:
            raise ConfigError(key, f"block index {index} out of range for a backbone of {depth} blocks")
        resolved.append(index % depth)
    return sorted(set(resolved))


class FrameEncoder(nn.Module):
    """(B, L, 3, H, W) frames -> per-frame CLS features (B, L, D) and projected features (B, L, E)."""

    def __init__(self, visual: VisionTransformer, cfg: ModelConfig):
        super().__init__()
        blocks = visual.transformer.resblocks
        if not all(type(b) is ResidualAttentionBlock for b in blocks) or visual.attn_pool is not None \
                or visual.pool_type != "tok" or visual.final_ln_after_pool or visual.proj is None:
            raise ValueError("model.backbone.name: xfd adapts CLIP-style ViTs (default residual blocks, CLS-token "
                             "pooling, LayerNorm before a projection); this architecture differs")
        self.visual = visual
        depth = len(blocks)
        width = visual.transformer.width
        self.width = width
        self.output_dim = visual.proj.shape[1]
        self.grad_checkpointing = cfg.backbone.grad_checkpointing

        self.prompts: Optional[PlatformPrompts] = None
        if cfg.prompts.enabled:
            if cfg.prompts.depth > depth:
                raise ConfigError("model.prompts.depth", f"{cfg.prompts.depth} exceeds the backbone's {depth} blocks")
            self.prompts = PlatformPrompts(cfg.prompts, width)

        meta_on = cfg.metadata.enabled
        self.meta_prompts = MetadataEmbedding(cfg.metadata, width) \
            if meta_on and "prompts" in cfg.metadata.targets else None
        self.meta_cls = MetadataEmbedding(cfg.metadata, width) if meta_on and "cls" in cfg.metadata.targets else None

        ad = cfg.adapters
        layers = resolve_block_indices(ad.layers if ad.layers is not None else range(depth), depth,
                                       "model.adapters.layers")
        # Only adapted blocks have an entry: a switched-off adapter is absent, not a no-op module.
        self.ifa = nn.ModuleDict({str(i): IntraFrameAdapter(width, ad.bottleneck) for i in layers} if ad.ifa else {})
        self.cfaa = nn.ModuleDict(
            {str(i): CrossFrameAttentionAdapter(width, ad.bottleneck, ad.cfaa_heads) for i in layers}
            if ad.cfaa else {})

    @property
    def depth(self) -> int:
        return len(self.visual.transformer.resblocks)

    def _block(self, index: int, x: torch.Tensor, prompts: Optional[torch.Tensor], num_frames: int) -> torch.Tensor:
        block = self.visual.transformer.resblocks[index]
        h = block.ln_1(x)  # (N, S, D)
        kv = h if prompts is None else torch.cat([h, prompts.to(h.dtype)], dim=1)  # (N, S + P, D)
        out = x + block.ls_1(block.attn(h, kv, kv, need_weights=False)[0])  # (N, S, D)
        key = str(index)
        if key in self.cfaa:
            out = out + self.cfaa[key](x, num_frames)
        y = out + block.ls_2(block.mlp(block.ln_2(out)))
        if key in self.ifa:
            y = y + self.ifa[key](out, num_frames)
        return y  # (N, S, D)

    def forward(self, frames: torch.Tensor, platform: torch.Tensor, meta: torch.Tensor):
        b, l = frames.shape[:2]
        v = self.visual
        x = v.conv1(frames.flatten(0, 1))  # (N, D, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (N, G, D)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (N, 1, D)
        if self.meta_cls is not None:
            cls = cls + self.meta_cls(meta).to(x.dtype).repeat_interleave(l, dim=0)[:, None, :]
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # (N, S, D)
        x = v.ln_pre(v.patch_dropout(x))

        prompts = None
        if self.prompts is not None:
            meta_emb = self.meta_prompts(meta) if self.meta_prompts is not None else None
            prompts = self.prompts(platform, meta_emb).repeat_interleave(l, dim=0)  # (N, depth, P, D)

        use_checkpoint = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for i in range(self.depth):
            p = prompts[:, i] if prompts is not None and i < prompts.shape[1] else None  # (N, P, D)
            if use_checkpoint:
                x = checkpoint(self._block, i, x, p, l, use_reentrant=False)
            else:
                x = self._block(i, x, p, l)

        cls_feat = v.ln_post(x[:, 0])  # (N, D)
        proj_feat = cls_feat @ v.proj  # (N, E)
        return cls_feat.view(b, l, -1), proj_feat.view(b, l, -1)
