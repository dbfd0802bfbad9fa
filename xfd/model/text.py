"""CLIP-ReID text side: ID-specific learnable words in a fixed template, read by CLIP's frozen text encoder.

"A photo of X X X X person." is tokenised once; the embeddings of the tokens around the X's are frozen buffers
(prefix / suffix), and the X's are replaced by `n_ctx` learnable vectors per identity of the text encoder's
token width (768 for ViT-L/14's text tower). Stage 1 learns these vectors against cached image features
(i2t + t2i); stage 2 freezes them, and `cache_features()` computes the text feature of every identity once
(the encoder is frozen, so they do not change) for the image-to-text cross-entropy.
"""

from __future__ import annotations

import open_clip
import torch
from torch import nn

from xfd.config import TextConfig


class TextEncoder(nn.Module):
    """CLIP's text transformer fed with token embeddings (B, T, W) instead of token ids -> (B, E)."""

    def __init__(self, clip: open_clip.model.CLIP):
        super().__init__()
        if clip.text_pool_type != "argmax":
            raise ValueError(f"text tower pools with {clip.text_pool_type!r}; CLIP-ReID prompts need 'argmax' "
                             "(the end-of-text token has the largest id)")
        self.transformer = clip.transformer
        self.positional_embedding = clip.positional_embedding
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)

    def forward(self, tokens: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        x = tokens + self.positional_embedding[:t].to(tokens.dtype)  # (B, T, W)
        mask = self.attn_mask[:t, :t].to(tokens.dtype) if self.attn_mask is not None else None
        x = self.ln_final(self.transformer(x, attn_mask=mask))  # (B, T, W)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]  # (B, W) end-of-text token
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection  # (B, E)


def placeholder_start(token_ids: torch.Tensor, placeholder_id: int, count: int) -> int:
    """Index of the first run of `count` placeholder tokens in a 1-D token sequence."""
    ids = token_ids.tolist()
    for start in range(len(ids) - count + 1):
        if all(t == placeholder_id for t in ids[start:start + count]):
            return start
    raise ValueError(f"model.text.template: no run of {count} 'X' tokens after tokenisation")


class PromptLearner(nn.Module):
    """Per-identity context vectors spliced into the tokenised template: labels (B,) -> embeddings (B, T, W)."""

    def __init__(self, cfg: TextConfig, num_classes: int, token_embedding: nn.Embedding, context_length: int):
        super().__init__()
        ids = open_clip.tokenize([cfg.template], context_length=context_length)[0]  # (T,)
        placeholder = int(open_clip.tokenize(["X"], context_length=context_length)[0, 1])
        start = placeholder_start(ids, placeholder, cfg.n_ctx)
        with torch.no_grad():
            embedded = token_embedding(ids[None]).float()  # (1, T, W)
        self.register_buffer("prefix", embedded[:, :start].clone())  # SOT + "a photo of"
        self.register_buffer("suffix", embedded[:, start + cfg.n_ctx:].clone())  # "person ." + EOT + padding
        self.register_buffer("eot_index", ids.argmax().reshape(1))  # EOT has the largest token id
        self.ctx = nn.Parameter(torch.empty(num_classes, cfg.n_ctx, token_embedding.embedding_dim))
        nn.init.normal_(self.ctx, std=0.02)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        b, dtype = labels.shape[0], self.ctx.dtype  # the frozen buffers follow the trained vectors (bf16 engines)
        return torch.cat([self.prefix.to(dtype).expand(b, -1, -1), self.ctx[labels],
                          self.suffix.to(dtype).expand(b, -1, -1)], dim=1)  # (B, T, W)


class TextBranch(nn.Module):
    """Prompt learner + frozen text encoder, with a cache of every identity's text feature for stage 2."""

    def __init__(self, clip: open_clip.model.CLIP, cfg: TextConfig, num_classes: int):
        super().__init__()
        self.prompt_learner = PromptLearner(cfg, num_classes, clip.token_embedding, clip.context_length)
        self.encoder = TextEncoder(clip)
        out_dim = self.encoder.text_projection.shape[1] if isinstance(self.encoder.text_projection, torch.Tensor) \
            else self.encoder.text_projection.out_features
        self.register_buffer("cached", torch.zeros(num_classes, out_dim))
        self.register_buffer("has_cache", torch.tensor(False))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """Text features (B, E) of the identities `labels` (B,), with gradients to the context vectors."""
        tokens = self.prompt_learner(labels)  # (B, T, W)
        return self.encoder(tokens, self.prompt_learner.eot_index.expand(labels.shape[0]))

    @torch.no_grad()
    def cache_features(self, batch_size: int = 256) -> torch.Tensor:
        """Compute and store the text feature of every identity (C, E); call once before stage 2."""
        num_classes = self.prompt_learner.ctx.shape[0]
        device = self.prompt_learner.ctx.device
        parts = [self(torch.arange(s, min(s + batch_size, num_classes), device=device))
                 for s in range(0, num_classes, batch_size)]
        self.cached.copy_(torch.cat(parts).to(self.cached.dtype))
        self.has_cache.fill_(True)
        return self.cached

    def cached_features(self) -> torch.Tensor:
        """The (C, E) features stored by `cache_features` (stage 2's fixed text side)."""
        if not bool(self.has_cache):
            raise RuntimeError("text features are not cached: call model.text.cache_features() after stage 1")
        return self.cached
