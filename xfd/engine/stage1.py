"""Stage 1 of CLIP-ReID: cache every training tracklet's image feature once (no augmentation, no gradients), then
learn each identity's text context vectors against them with SupCon i2t + t2i. Only the prompt learner trains;
the image side is untouched, so the cached features stay valid for the whole stage.

Batches: each epoch a permutation of the N cached features (seeded by seed and epoch) is cut into global batches
of `stage1.batch_size` (the last one wraps around to the start): ceil(N / batch) optimizer steps an epoch. Every
rank holds the whole cache, so each takes the image features of the micro-step's whole batch directly, runs the
text encoder on its own consecutive slice of the labels, and gathers the text features of all ranks.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from xfd.atomic import write_bytes_atomic
from xfd.data.index import ShardIndex
from xfd.engine.batching import stage_batch
from xfd.engine.checkpoint import full_state_dict
from xfd.engine.gather import RankGather
from xfd.engine.loop import Run, Stage, make_engine, release, text_state_path
from xfd.engine.objectives import stage1_loss
from xfd.inference import extract_split, gather_feature_sets

IMAGE_CACHE = "stage1_image_features.safetensors"


def cache_image_features(run: Run, model, index: ShardIndex) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, E) projected image features and (N,) labels of the training split, identical on every rank.

    Ranks extract their shards' share and gather; rank 0 stores the result in the run folder, and a resumed
    stage 1 reads it back instead of extracting again (the same numbers, so the losses repeat exactly)."""
    ctx, cfg = run.ctx, run.cfg
    path = ctx.run_dir / IMAGE_CACHE
    if not path.is_file():
        model.to(ctx.device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=ctx.cuda):
            part = extract_split(model, index.folder, num_frames=cfg.data.num_frames, batch_size=cfg.eval.batch_size,
                                 image_size=tuple(cfg.model.backbone.image_size), device=ctx.device, flip_tta=False,
                                 rank=ctx.rank, world_size=ctx.world_size, num_threads=cfg.data.dali_threads)
        features = gather_feature_sets(part, ctx.world_size)
        d = model.encoder.width
        # the projected stream's direction; `extract` normalised the concatenation, the loss re-normalises
        image = torch.from_numpy(features.features[:, d:]).float()  # (N, E)
        labels = torch.tensor([int(index.meta(key)["label"]) for key in features.keys])  # (N,)
        if ctx.is_main:
            write_bytes_atomic(path, save({"features": image.contiguous(), "labels": labels}))
        ctx.barrier()
    cached = load_file(str(path))
    return cached["features"], cached["labels"]


def steps_per_epoch(samples: int, batch: int) -> int:
    """Optimizer steps of one pass over `samples` cached features in global batches of `batch`."""
    return max(1, math.ceil(samples / batch))


def epoch_order(samples: int, batch: int, seed: int, epoch: int) -> np.ndarray:
    """Sample indices of one epoch, wrapped to whole global batches: (steps x batch,)."""
    perm = np.random.default_rng([seed, 1, epoch]).permutation(samples)
    return np.resize(perm, steps_per_epoch(samples, batch) * batch)


class PromptStage(Stage):
    """Stage 1 for `fit`: the engine trains `model.text`'s context vectors on the cached image features."""

    number = 1

    def __init__(self, run: Run, model, index: ShardIndex):
        ctx, cfg = run.ctx, run.cfg
        s1 = cfg.train.stage1
        self.run, self.device, self.loss_cfg, self.seed = run, ctx.device, cfg.train.loss, cfg.train.seed
        self.features, self.labels = cache_image_features(run, model, index)  # (N, E), (N,)
        self.text = model.text
        model.set_stage(1)
        self.text.train()
        self.epochs, self.plan = s1.epochs, stage_batch(cfg.train, 1, ctx.world_size)
        self.steps_per_epoch = steps_per_epoch(len(self.labels), self.plan.global_batch)
        # stage 1 trains no bias: the context vectors decay at weight_decay, as CLIP-ReID's stage 1
        groups = [{"params": [self.text.prompt_learner.ctx], "name": "prompts", "weight_decay": s1.weight_decay}]
        self.engine = make_engine(run, self.text, groups, s1, self.plan, self.steps_per_epoch, "stage1")
        self.gather = RankGather(ctx.world_size, ctx.rank)
        self.tracklets = self.plan.micro

    def batches(self, epoch: int, start: int):
        """Per micro-step: the rows of the micro-step's batch over all ranks (G / accumulation,)."""
        order = epoch_order(len(self.labels), self.plan.global_batch, self.seed, epoch)
        width = self.plan.per_micro_step
        for step in range(start, self.steps_per_epoch * self.plan.accumulation):
            yield order[step * width:(step + 1) * width]

    def loss(self, rows):
        rank = self.gather.rank
        labels = self.labels[rows].to(self.device)  # (W x m,)
        own = labels[rank * self.plan.micro:(rank + 1) * self.plan.micro]  # (m,) this rank's slice
        text = self.gather(self.engine(own).float())  # (W x m, E)
        return stage1_loss(self.features[rows].to(self.device), text, labels, self.loss_cfg)

    def batch_names(self, rows) -> list[str]:
        return [f"label {int(v)}" for v in self.labels[rows]]

    def finish(self) -> None:
        """Cache every identity's text feature in the model (`text.cached`) and write the text branch's state
        (prefixed `text.`) to text_features.safetensors, which a stage-2 resume loads."""
        ctx = self.run.ctx
        self.text.eval()
        self.text.cache_features()  # (C, E), computed by every rank (ZeRO-3 gathers the weights)
        state = {f"text.{k}": v for k, v in full_state_dict(self.text, self.run.zero3).items()}
        if ctx.is_main:
            write_bytes_atomic(text_state_path(ctx.run_dir), save(state))
        ctx.barrier()
        release(self.engine)


def load_text_state(run_dir: Path) -> dict[str, torch.Tensor]:
    path = text_state_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: stage 1's text features are missing; the run folder is incomplete "
                                "(resume from a stage-1 checkpoint, or start a new run)")
    return load_file(str(path))
