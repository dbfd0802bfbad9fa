"""Metadata conditioning: embeddings of the capture geometry (altitude, distance, view angle bins).

Each tracklet carries `meta = (altitude_bin, distance_bin, angle_bin)` (B, 3) long. Aerial tracklets use bins
0..n-1; ground tracklets use the extra last bin of each table (18 / 18 / 3 for DetReIDX, so tables of 19 / 19 / 4
rows). The three embeddings are summed into one (B, D) vector that the encoder adds to the PBP prompts and/or the
CLS token. All tables start at zero, so a pretrained backbone starts out unchanged and the conditioning is
learned from there.
"""

from __future__ import annotations

import torch
from torch import nn

from xfd.config import MetadataConfig


class MetadataEmbedding(nn.Module):
    """Sum of altitude, distance and angle bin embeddings, (B, 3) long -> (B, dim); zero at init."""

    def __init__(self, cfg: MetadataConfig, dim: int):
        super().__init__()
        # one extra row per table: the ground bin (last index)
        self.altitude = nn.Embedding(cfg.altitude_bins + 1, dim)
        self.distance = nn.Embedding(cfg.distance_bins + 1, dim)
        self.angle = nn.Embedding(cfg.angle_bins + 1, dim)
        for table in (self.altitude, self.distance, self.angle):
            nn.init.zeros_(table.weight)

    @property
    def table_sizes(self) -> tuple[int, int, int]:
        return self.altitude.num_embeddings, self.distance.num_embeddings, self.angle.num_embeddings

    def forward(self, meta: torch.Tensor) -> torch.Tensor:
        # meta: (B, 3) = (altitude_bin, distance_bin, angle_bin)
        return self.altitude(meta[:, 0]) + self.distance(meta[:, 1]) + self.angle(meta[:, 2])  # (B, D)
