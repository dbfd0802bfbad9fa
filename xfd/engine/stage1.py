"""Stage 1 of CLIP-ReID: cache every training tracklet's image feature once (no augmentation, no gradients), then
learn each identity's text context vectors against them with SupCon i2t + t2i. Only the prompt learner trains;
the image side is untouched, so the cached features stay valid for the whole stage.

Batches: each epoch a permutation of the N cached features (seeded by seed and epoch) is cut into global batches
of `stage1.batch_size x world` (the last one wraps around to the start), each rank taking its slice.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from xfd.atomic import write_bytes_atomic
from xfd.data.index import ShardIndex
from xfd.engine.checkpoint import full_state_dict, load_checkpoint
from xfd.engine.common import Run, make_engine, monitor_of, release, take_micro_step, text_state_path
from xfd.engine.objectives import stage1_loss
from xfd.engine.progress import StageProgress
from xfd.engine.steps import Position
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


def steps_per_epoch(samples: int, batch: int, world: int) -> int:
    return max(1, math.ceil(samples / (batch * world)))


def epoch_order(samples: int, batch: int, world: int, seed: int, epoch: int) -> np.ndarray:
    """Sample indices of one epoch, wrapped to whole global batches: (steps x batch x world,)."""
    perm = np.random.default_rng([seed, 1, epoch]).permutation(samples)
    need = steps_per_epoch(samples, batch, world) * batch * world
    return np.resize(perm, need)


def train_prompts(run: Run, model, index: ShardIndex) -> dict[str, torch.Tensor]:
    """Stage 1 from its start or from `run.resume_tag`; returns the text branch's state (prefixed `text.`)
    with every identity's text feature cached in `text.cached`, also written to text_features.safetensors."""
    ctx, cfg = run.ctx, run.cfg
    s1 = cfg.train.stage1
    features, labels = cache_image_features(run, model, index)
    text = model.text
    model.set_stage(1)
    text.train()
    batch, world = s1.batch_size, ctx.world_size
    steps = steps_per_epoch(len(labels), batch, world)
    engine, total = make_engine(run, text, [{"params": [text.prompt_learner.ctx], "name": "prompts"}], s1, steps,
                                batch, "stage1")
    pos = run.position
    if run.resume_tag is not None and pos.stage == 1:
        pos = run.position = Position.from_state(load_checkpoint(engine, ctx.run_dir, run.resume_tag,
                                                                 ctx.rank)["xfd_position"])
    progress = StageProgress(stage=1, total_steps=total, done_steps=pos.global_step, is_main=ctx.is_main,
                             monitor=monitor_of(engine, ctx.is_main), log=run.log, log_every=cfg.train.log_every)
    start_epoch, start_step = pos.epoch, pos.step
    with progress:  # the bar is closed however the loop ends, an error included
        for epoch in range(start_epoch, s1.epochs):
            order = epoch_order(len(labels), batch, world, cfg.train.seed, epoch)
            for step in range(start_step if epoch == start_epoch else 0, steps):
                if run.stopped():
                    break
                rows = order[(step * world + ctx.rank) * batch:(step * world + ctx.rank + 1) * batch]
                batch_labels = labels[rows].to(ctx.device)  # (B,)
                text_features = engine(batch_labels)  # (B, E)
                loss, parts = stage1_loss(features[rows].to(ctx.device), text_features, batch_labels, cfg.train.loss)
                take_micro_step(run, engine, progress, loss, parts, epoch=epoch, step=step,
                                batch_names=lambda: [f"label {int(v)}" for v in batch_labels], tracklets=len(rows),
                                frames=0, wait_seconds=0.0)
            if run.stopped():
                break
            pos.epoch, pos.step = epoch + 1, 0
            run.checkpoint(engine)
    text.eval()
    text.cache_features()  # (C, E), computed by every rank (ZeRO-3 gathers the weights)
    state = {f"text.{k}": v for k, v in full_state_dict(text, run.zero3).items()}
    if ctx.is_main:
        write_bytes_atomic(text_state_path(ctx.run_dir), save(state))
    ctx.barrier()
    release(engine)
    return state


def load_text_state(run_dir: Path) -> dict[str, torch.Tensor]:
    path = text_state_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: stage 1's text features are missing; the run folder is incomplete "
                                "(resume from a stage-1 checkpoint, or start a new run)")
    return load_file(str(path))
