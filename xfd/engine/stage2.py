"""Stage 2 of CLIP-ReID: the text features are fixed; the image side trains on global PK batches of augmented
tracklets with paper 001's Eq. 1 plus i2tce (xfd/engine/objectives.py), validated every `validate_every` epochs on
the held-out split. The text branch stays in the model (frozen, so the optimizer never holds it) and is exported
with it; its cached per-identity features are the fixed text side of the losses.
"""

from __future__ import annotations

import warnings

import torch

from xfd.config import dump_config
from xfd.data.index import ShardIndex
from xfd.data.loader import TrainLoader
from xfd.data.pipeline import FramePipeline
from xfd.data.pk import PKSampler
from xfd.engine.batching import stage_batch
from xfd.engine.checkpoint import full_state_dict, save_model_file
from xfd.engine.gather import RankGather
from xfd.engine.loop import Run, Stage, make_engine, release
from xfd.engine.objectives import stage2_loss
from xfd.eval.heldout import validate
from xfd.eval.rerank import RerankParams
from xfd.eval.score import ScoreOptions
from xfd.inference import extract_split, gather_feature_sets
from xfd.model import param_groups


def model_metadata(run: Run, **extra) -> dict:
    return {"format": "xfd-model-1", "config": dump_config(run.cfg), "stage": run.position.stage,
            "epoch": run.position.epoch, "global_step": run.position.global_step, **extra}


def export_model(run: Run, module, name: str, **extra) -> None:
    """Every rank joins (ZeRO-3 gathers); rank 0 writes RUN/<name> (the whole model, text branch included)."""
    state = full_state_dict(module, run.zero3)
    if run.ctx.is_main:
        save_model_file(run.ctx.run_dir / name, state, model_metadata(run, **extra))
    run.ctx.barrier()


def run_validation(run: Run, module) -> dict[str, float] | None:
    """Per-protocol mAP / rank-1 on the held-out split; None when the run has no validation split.

    Under ZeRO-3 every rank extracts the whole split (its forward passes gather weights collectively, so ranks
    must run the same number of them); otherwise ranks split the shards and gather the features."""
    cfg, ctx = run.cfg, run.ctx
    if not cfg.data.val_split:
        return None
    folder = run.data_root / cfg.data.val_split
    if not folder.is_dir():
        warnings.warn(f"no validation: {folder} does not exist (set data.val_split=null to silence this)")
        return None
    shared = run.zero3 or ctx.world_size == 1
    part = extract_split(module, folder, num_frames=cfg.data.num_frames, batch_size=cfg.eval.batch_size,
                         image_size=tuple(cfg.model.backbone.image_size), device=ctx.device, flip_tta=cfg.eval.flip_tta,
                         rank=0 if shared else ctx.rank, world_size=1 if shared else ctx.world_size,
                         num_threads=cfg.data.dali_threads, progress=False, clips=cfg.eval.frames == "clips")
    features = part if shared else gather_feature_sets(part, ctx.world_size)
    results = validate(features, ScoreOptions(rerank=RerankParams() if cfg.eval.rerank else None, device="cpu"))
    scalars = {f"val/mAP/{name}": 100.0 * p.metrics.mAP for name, p in results.scored.items()}
    scalars.update({f"val/rank1/{name}": 100.0 * p.metrics.rank(1) for name, p in results.scored.items()})
    scalars["val/mAP"] = 100.0 * results.mean.values["mAP"]
    return scalars


class ImageStage(Stage):
    """Stage 2 for `fit`: the engine trains the image side of `model` (whose text features are cached)."""

    number = 2

    def __init__(self, run: Run, model, index: ShardIndex):
        ctx, cfg = run.ctx, run.cfg
        s2, train = cfg.train.stage2, cfg.train
        self.run, self.loss_cfg = run, train.loss
        self.class_text = model.text.cached_features().to(ctx.device)  # (C, E), fixed
        model.set_stage(2)
        model.train()
        self.epochs, self.plan = s2.epochs, stage_batch(train, 2, ctx.world_size)
        sampler = PKSampler(index.labels_to_keys(), identities=train.identities, instances=train.instances,
                            world_size=ctx.world_size, seed=train.seed, accumulation=self.plan.accumulation)
        self.steps_per_epoch = sampler.optimizer_steps_per_epoch()
        groups = param_groups(model, s2.scaled_lr, s2.weight_decay, s2.weight_decay_bias)
        self.engine = make_engine(run, model, groups, s2, self.plan, self.steps_per_epoch, "stage2")
        self.dtype = torch.bfloat16 if self.engine.bfloat16_enabled() else torch.float32
        pipeline = FramePipeline(tracklets=self.plan.micro, frames=cfg.data.num_frames,
                                 image_size=tuple(cfg.model.backbone.image_size), augment=cfg.data.augment,
                                 device_id=ctx.device.index if ctx.cuda else None, num_threads=cfg.data.dali_threads,
                                 seed=train.seed * 1_000_003 + ctx.rank)
        self.loader = TrainLoader(index, sampler, pipeline, rank=ctx.rank, num_frames=cfg.data.num_frames,
                                  seed=train.seed, on_error=cfg.data.on_error, prefetch=cfg.data.prefetch,
                                  device=ctx.device)
        self.gather = RankGather(ctx.world_size, ctx.rank)
        self.tracklets, self.frames = self.plan.micro, self.plan.micro * cfg.data.num_frames

    def batches(self, epoch: int, start: int):
        return self.loader.batches(epoch, start)

    def loss(self, batch):
        out = self.engine(batch.frames.to(self.dtype), batch.platform, batch.meta, gather=self.gather)  # global
        return stage2_loss(out, self.gather(batch.labels), self.class_text, self.loss_cfg)

    def batch_names(self, batch) -> list[str]:
        return batch.keys

    def data_wait_seconds(self) -> float:
        return self.loader.wait_seconds

    def validate(self, epochs_done: int) -> dict[str, float] | None:
        every = self.run.cfg.train.validate_every
        if not every or (epochs_done % every and epochs_done != self.epochs):
            return None
        return run_validation(self.run, self.engine.module)

    def keep_best(self, scalars: dict[str, float]) -> None:
        export_model(self.run, self.engine.module, "best.safetensors", validation=scalars)

    def finish(self):
        """Writes model.safetensors; returns the loader's record of skipped tracklets."""
        export_model(self.run, self.engine.module, "model.safetensors")
        release(self.engine)
        return self.loader.skips
