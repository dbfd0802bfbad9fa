"""Stage 2 of CLIP-ReID: the text features are fixed; the image side trains on PK batches of augmented
tracklets with 0.25·ID + 1.0·triplet + 1.0·i2tce (docs/model.md), validated every `validate_every` epochs on the
held-out split. The text branch is detached from the module DeepSpeed wraps (it no longer trains, and under
ZeRO-3 its weights were already partitioned by stage 1's engine); its state rejoins the exported model file.
"""

from __future__ import annotations

import warnings

import torch

from xfd.config import dump_config
from xfd.data.index import ShardIndex
from xfd.data.loader import TrainLoader
from xfd.data.pipeline import FramePipeline
from xfd.data.pk import PKSampler
from xfd.engine.checkpoint import full_state_dict, load_checkpoint, save_model_file
from xfd.engine.common import Run, make_engine, monitor_of, release, take_micro_step
from xfd.engine.objectives import stage2_loss
from xfd.engine.progress import StageProgress
from xfd.engine.steps import Position
from xfd.eval.heldout import validate
from xfd.eval.rerank import RerankParams
from xfd.eval.score import ScoreOptions
from xfd.inference import extract_split, gather_feature_sets
from xfd.model import param_groups


def model_metadata(run: Run, **extra) -> dict:
    return {"format": "xfd-model-1", "config": dump_config(run.cfg), "stage": run.position.stage,
            "epoch": run.position.epoch, "global_step": run.position.global_step, **extra}


def export_model(run: Run, module, text_state: dict, name: str, **extra) -> None:
    """Every rank joins (ZeRO-3 gathers); rank 0 writes RUN/<name> with the text branch's state merged in."""
    state = full_state_dict(module, run.zero3)
    if run.ctx.is_main:
        save_model_file(run.ctx.run_dir / name, {**state, **text_state}, model_metadata(run, **extra))
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


def train_image_side(run: Run, model, index: ShardIndex, text_state: dict) -> None:
    """Stage 2 from its start or from `run.resume_tag`, exporting best.safetensors and model.safetensors."""
    ctx, cfg = run.ctx, run.cfg
    s2, train = cfg.train.stage2, cfg.train
    class_text = text_state["text.cached"].to(ctx.device)  # (C, E)
    model.text = None
    model.set_stage(2)
    model.train()
    sampler = PKSampler(index.labels_to_keys(), identities=train.identities, instances=train.instances,
                        world_size=ctx.world_size, seed=train.seed)
    steps = sampler.steps_per_epoch()
    engine, total = make_engine(run, model, param_groups(model, s2.lr, s2.weight_decay), s2, steps,
                                train.micro_batch, "stage2")
    pos = run.position
    if pos.stage != 2:  # stage 2 starts here
        pos.stage, pos.epoch, pos.step = 2, 0, 0
    elif run.resume_tag is not None:
        pos = run.position = Position.from_state(load_checkpoint(engine, ctx.run_dir, run.resume_tag,
                                                                 ctx.rank)["xfd_position"])
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float32
    pipeline = FramePipeline(tracklets=train.micro_batch, frames=cfg.data.num_frames,
                             image_size=tuple(cfg.model.backbone.image_size), augment=cfg.data.augment,
                             device_id=ctx.device.index if ctx.cuda else None,
                             num_threads=cfg.data.dali_threads, seed=train.seed * 1_000_003 + ctx.rank)
    loader = TrainLoader(index, sampler, pipeline, rank=ctx.rank, num_frames=cfg.data.num_frames, seed=train.seed,
                         on_error=cfg.data.on_error, prefetch=cfg.data.prefetch, device=ctx.device)
    progress = StageProgress(stage=2, total_steps=total, done_steps=max(pos.global_step - run.stage1_steps, 0),
                             is_main=ctx.is_main, monitor=monitor_of(engine, ctx.is_main), log=run.log,
                             log_every=train.log_every)
    frames_per_batch = train.micro_batch * cfg.data.num_frames
    start_epoch, start_step = pos.epoch, pos.step
    with progress:  # the bar is closed however the loop ends, an error included
        for epoch in range(start_epoch, s2.epochs):
            start = start_step if epoch == start_epoch else 0
            waited = loader.wait_seconds
            for step, batch in enumerate(loader.batches(epoch, start), start=start):
                if run.stopped():
                    break
                out = engine(batch.frames.to(dtype), batch.platform, batch.meta)
                loss, parts = stage2_loss(out, batch.labels, class_text, cfg.train.loss)
                wait, waited = loader.wait_seconds - waited, loader.wait_seconds
                take_micro_step(run, engine, progress, loss, parts, epoch=epoch, step=step,
                                batch_names=lambda: batch.keys, tracklets=train.micro_batch, frames=frames_per_batch,
                                wait_seconds=wait)
            if run.stopped():
                break
            pos.epoch, pos.step = epoch + 1, 0
            last = epoch + 1 == s2.epochs
            if train.validate_every and ((epoch + 1) % train.validate_every == 0 or last):
                scalars = run_validation(run, engine.module)
                if scalars is not None:
                    progress.write(scalars, epoch=epoch + 1, step=0, global_step=pos.global_step)
                    if ctx.is_main:
                        progress.bar.write("validation after epoch {}: mAP {:.2f} ({})".format(
                            epoch + 1, scalars["val/mAP"], ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in
                                                                    scalars.items() if k.startswith("val/mAP/"))))
                    if scalars["val/mAP"] > pos.best_map:
                        pos.best_map = scalars["val/mAP"]
                        export_model(run, engine.module, text_state, "best.safetensors", validation=scalars)
            run.checkpoint(engine)
    run.data_wait_share = progress.data_wait_share()
    run.skips = loader.skips
    export_model(run, engine.module, text_state, "model.safetensors")
    release(engine)
