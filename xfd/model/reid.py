"""The video ReID model: frame encoder -> temporal pooling -> necks -> ID classifiers, plus the CLIP-ReID text side.

Inputs (every call):
    frames    float (B, L, 3, H, W), CLIP-normalised, (H, W) = model.backbone.image_size; any L >= 1
    platform  long  (B,)   0 = ground, 1 = aerial
    meta      long  (B, 3) (altitude_bin, distance_bin, angle_bin); ground = the last bin of each table
              (tables of altitude_bins+1 / distance_bins+1 / angle_bins+1 rows: 19 / 19 / 4 for DetReIDX)

Two feature streams run side by side, as in CLIP-ReID: the CLS feature ln_post(x_cls) (width D: 1024 for L/14)
and its CLIP projection (E: 768). Each stream has its own temporal pooler, neck and ID classifier.

    out = model(frames, platform, meta)      -> ReIDOutput (training: everything the losses need)
    out = model(frames, platform, meta, gather=g)   -> the same for the global batch: pooled features of all ranks
                                                       (g = xfd.engine.gather.RankGather), necks and heads on all
    feat = model.extract(frames, platform, meta, flip_tta=True)   -> (B, D + E), L2-normalised, no grad
    model.text(labels) / model.text.cache_features()              -> CLIP-ReID text features (B, E) / (C, E)
    model.set_stage(1 | 2)                    -> which parameters train (see `trainable_parameter_names`)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from xfd.config import ExperimentConfig, ModelConfig
from xfd.model.backbone import build_clip
from xfd.model.encoder import FrameEncoder, resolve_block_indices
from xfd.model.init import initialise_from
from xfd.model.necks import build_neck, classifier, frozen_parameter_names
from xfd.model.temporal import build_temporal_pool
from xfd.model.text import TextBranch

BACKBONE_PREFIX = "encoder.visual."


@dataclass
class ReIDOutput:
    """What one forward pass gives the losses; with a `gather`, B is the global batch (every rank's rows). From the
    pooled features on, everything is float32 (necks, logits), whatever the dtype the encoder runs in."""

    logits: Tuple[torch.Tensor, torch.Tensor]  # ID logits (B, C): CLS stream, projected stream (after the necks)
    features: Tuple[torch.Tensor, torch.Tensor]  # pooled features before the necks (B, D), (B, E): triplet
    image_features: torch.Tensor  # (B, E) pooled projected feature: i2t / t2i / i2tce against text features
    frame_weights: torch.Tensor  # (B_rank, L) temporal weights of the CLS stream on this rank (sum to 1 over L)

    @property
    def embedding(self) -> torch.Tensor:
        """concat(CLS, projected) before the necks, (B, D + E), not normalised — the retrieval feature."""
        return torch.cat(self.features, dim=1)


class XfdReID(nn.Module):
    def __init__(self, cfg: ModelConfig, clip):
        super().__init__()
        self.cfg = cfg
        self.encoder = FrameEncoder(clip.visual, cfg)
        d, e, c = self.encoder.width, self.encoder.output_dim, cfg.num_classes
        self.pool_cls = build_temporal_pool(cfg.temporal, cfg.metadata, d)
        self.pool_proj = build_temporal_pool(cfg.temporal, cfg.metadata, e)
        self.neck_cls = build_neck(cfg.head.neck, d)
        self.neck_proj = build_neck(cfg.head.neck, e)
        self.classifier_cls = classifier(d, c)
        self.classifier_proj = classifier(e, c)
        self.text: Optional[TextBranch] = TextBranch(clip, cfg.text, c) if cfg.text.enabled else None
        self.trainable_blocks = resolve_block_indices(cfg.finetune.trainable_blocks, self.encoder.depth,
                                                      "model.finetune.trainable_blocks")
        self.table_sizes = (cfg.metadata.altitude_bins + 1, cfg.metadata.distance_bins + 1,
                            cfg.metadata.angle_bins + 1)
        self.stage = 2
        self.set_stage(2)

    @property
    def feature_dim(self) -> int:
        return self.encoder.width + self.encoder.output_dim

    # ----- input checks ------------------------------------------------------------------------------------------

    def check_inputs(self, frames: torch.Tensor, platform: torch.Tensor, meta: torch.Tensor) -> None:
        """Shape, dtype and (off the meta device) value checks with messages naming expected vs got."""
        h, w = self.cfg.backbone.image_size
        if frames.ndim != 5 or frames.shape[2] != 3 or tuple(frames.shape[3:]) != (h, w):
            raise ValueError(f"frames: expected (B, L, 3, {h}, {w}), got {tuple(frames.shape)}")
        if not frames.is_floating_point():
            raise TypeError(f"frames: expected a float tensor, got {frames.dtype}")
        b = frames.shape[0]
        if platform.shape != (b,) or platform.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"platform: expected long ({b},), got {platform.dtype} {tuple(platform.shape)}")
        if meta.shape != (b, 3) or meta.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"meta: expected long ({b}, 3) = (altitude, distance, angle) bins, "
                             f"got {meta.dtype} {tuple(meta.shape)}")
        if frames.is_meta:
            return
        if bool(((platform < 0) | (platform > 1)).any()):
            raise ValueError(f"platform: expected 0 (ground) or 1 (aerial), got values {platform.unique().tolist()}")
        limits = torch.tensor(self.table_sizes, device=meta.device)
        if bool(((meta < 0) | (meta >= limits)).any()):
            raise ValueError(f"meta: bins must lie in [0, {list(self.table_sizes)}) per column "
                             f"(ground = last bin), got min {meta.min(0).values.tolist()} "
                             f"max {meta.max(0).values.tolist()}")

    # ----- forward / extraction -------------------------------------------------------------------------------

    def forward(self, frames: torch.Tensor, platform: torch.Tensor, meta: torch.Tensor,
                gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> ReIDOutput:
        """Training forward. `gather` joins the pooled features of all ranks before the necks, so that necks, heads
        and the losses see the global batch (BatchNorm statistics included); None = this batch alone."""
        self.check_inputs(frames, platform, meta)
        cls_frames, proj_frames = self.encoder(frames, platform, meta)  # (B, L, D), (B, L, E)
        f_cls, w_cls = self.pool_cls(cls_frames, meta)  # (B, D), (B, L)
        f_proj, _ = self.pool_proj(proj_frames, meta)  # (B, E)
        f_cls, f_proj = f_cls.float(), f_proj.float()  # the necks, heads and losses run in float32
        if gather is not None:
            f_cls, f_proj = gather(f_cls), gather(f_proj)  # (G, D), (G, E): every rank's rows, in rank order
        logits = (self.classifier_cls(self.neck_cls(f_cls)), self.classifier_proj(self.neck_proj(f_proj)))
        return ReIDOutput(logits=logits, features=(f_cls, f_proj), image_features=f_proj, frame_weights=w_cls)

    def embed(self, frames: torch.Tensor, platform: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        """Retrieval feature concat(CLS, projected) before the necks, (B, D + E), not normalised."""
        self.check_inputs(frames, platform, meta)
        cls_frames, proj_frames = self.encoder(frames, platform, meta)
        return torch.cat([self.pool_cls(cls_frames, meta)[0], self.pool_proj(proj_frames, meta)[0]], dim=1)

    @torch.no_grad()
    def extract(self, frames: torch.Tensor, platform: torch.Tensor, meta: torch.Tensor,
                flip_tta: bool = False) -> torch.Tensor:
        """L2-normalised inference features (B, D + E); with `flip_tta` the mean of the features of the
        tracklet and of its horizontally flipped copy, normalised after averaging. Call in eval mode."""
        feat = self.embed(frames, platform, meta)
        if flip_tta:
            feat = 0.5 * (feat + self.embed(frames.flip(-1), platform, meta))
        return F.normalize(feat.float(), dim=1)

    # ----- which parameters train ------------------------------------------------------------------------------

    def is_backbone_parameter(self, name: str) -> bool:
        """True for pretrained visual-backbone parameters (trained at the backbone LR scale when trainable)."""
        return name.startswith(BACKBONE_PREFIX)

    def trainable_parameter_names(self, stage: int) -> set[str]:
        """Stage 1 (CLIP-ReID): only the identity context vectors of the text prompt learner.
        Stage 2: prompts, metadata, adapters, temporal poolers, necks (except BNNeck's frozen bias) and
        classifiers, plus the backbone's `finetune.trainable_blocks` (and ln_post/proj with `train_post`), or the
        whole backbone with `freeze_backbone: false`. The text side is frozen in stage 2."""
        names = [n for n, _ in self.named_parameters()]
        if stage == 1:
            if self.text is None:
                raise ValueError("stage 1 trains the text prompt learner, but model.text.enabled is false")
            return {"text.prompt_learner.ctx"}
        if stage != 2:
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        ft = self.cfg.finetune
        block_prefixes = tuple(f"{BACKBONE_PREFIX}transformer.resblocks.{i}." for i in self.trainable_blocks)
        post = (f"{BACKBONE_PREFIX}ln_post.", f"{BACKBONE_PREFIX}proj") if ft.train_post else ()
        frozen_neck = {f"neck_cls.{n}" for n in frozen_parameter_names(self.neck_cls)} | \
                      {f"neck_proj.{n}" for n in frozen_parameter_names(self.neck_proj)}
        trainable = set()
        for n in names:
            if n.startswith("text.") or n in frozen_neck:
                continue
            if self.is_backbone_parameter(n):
                if not ft.freeze_backbone or n.startswith(block_prefixes) or (post and n.startswith(post)):
                    trainable.add(n)
            else:
                trainable.add(n)
        return trainable

    def set_stage(self, stage: int) -> None:
        """Set requires_grad of every parameter for training stage 1 or 2."""
        trainable = self.trainable_parameter_names(stage)
        for name, param in self.named_parameters():
            param.requires_grad_(name in trainable)
        self.stage = stage


def build_model(cfg: ModelConfig | ExperimentConfig) -> XfdReID:
    """The model a config describes (CLIP weights from `model.backbone.pretrained`, if set, then the fitting
    tensors of `model.init_from`, if set), in stage-2 layout. `init_summary` says what `init_from` loaded."""
    if isinstance(cfg, ExperimentConfig):
        cfg = cfg.model
    model = XfdReID(cfg, build_clip(cfg.backbone))
    model.init_summary = initialise_from(model, cfg.init_from) if cfg.init_from else None
    return model
