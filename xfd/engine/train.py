"""A whole training run, read top to bottom: distributed start → run folder → data → model → stage 1 → stage 2.

    run_training(cfg, "ds_configs/zero2.json", "runs/x", resume=True)

`resume=True` continues from the checkpoint `RUN/checkpoints/latest` names (a fresh run if there is none): model,
optimiser, LR schedule, stage, epoch, position inside the epoch and RNG state come back, so the losses that
follow are those of an uninterrupted run. Without it, a run folder that already holds checkpoints is refused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from xfd.atomic import write_json_atomic
from xfd.config import ExperimentConfig
from xfd.data.index import ShardIndex
from xfd.engine.checkpoint import latest_tag, parse_tag
from xfd.engine.common import Run, optimizer_steps
from xfd.engine.context import start_distributed, write_run_identity
from xfd.engine.deepspeed_config import build_deepspeed_config, check_global_batch
from xfd.engine.stage1 import load_text_state, steps_per_epoch, train_prompts
from xfd.engine.stage2 import train_image_side
from xfd.model import build_model
from xfd.plots import CsvScalarLog, plot_training_curves


def with_num_classes(cfg: ExperimentConfig, num_classes: int) -> ExperimentConfig:
    """The config with `model.num_classes` set from the training split (the YAML's value is a placeholder)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes))


def run_training(cfg: ExperimentConfig, ds_config_path: str, run_dir: str | Path, resume: bool = False) -> dict:
    """Train `cfg` under the DeepSpeed engine JSON `ds_config_path` into `run_dir`; returns a summary dict."""
    ctx = start_distributed(run_dir)
    if cfg.data.root is None:
        raise ValueError("no data: pass --data DIR (an xfd-shard output folder) or set data.root")
    data_root = Path(cfg.data.root)
    index = ShardIndex.open(data_root / cfg.data.train_split)
    cfg = with_num_classes(cfg, len(index.labels_to_keys()))
    check_global_batch(cfg.train, ctx.world_size)

    tag = latest_tag(ctx.run_dir) if resume else None
    if not resume and ctx.run_dir.joinpath("checkpoints").is_dir() and any(ctx.run_dir.joinpath("checkpoints").iterdir()):
        raise FileExistsError(f"{ctx.run_dir} already holds checkpoints: pass --resume to continue that run, or "
                              "choose another --output")
    engine_json = build_deepspeed_config(ds_config_path, cfg.train, micro_batch=cfg.train.micro_batch,
                                         world_size=ctx.world_size, cuda=ctx.cuda)
    write_run_identity(ctx, cfg, engine_json, str(ds_config_path), tag)
    ctx.barrier()

    run = Run(ctx=ctx, cfg=cfg, ds_config_path=str(ds_config_path), resume_tag=tag, data_root=data_root)
    if ctx.is_main:
        run.log = CsvScalarLog(ctx.run_dir / "scalars.csv")
        run.log.truncate_after(parse_tag(tag)[2] if tag else 0)
    if tag is not None:
        run.position.stage = parse_tag(tag)[0]
        if ctx.is_main:
            print(f"resuming {ctx.run_dir} from checkpoint {tag}", flush=True)

    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    model = build_model(cfg)
    torch.manual_seed(cfg.train.seed * 1_000_003 + ctx.rank)
    s1 = cfg.train.stage1
    if cfg.model.text.enabled:
        run.stage1_steps = optimizer_steps(s1.epochs, steps_per_epoch(len(index.keys), s1.batch_size, ctx.world_size),
                                           cfg.train.gradient_accumulation) if s1.epochs else 0
    if run.position.stage == 1 and cfg.model.text.enabled:
        text_state = train_prompts(run, model, index)
    elif cfg.model.text.enabled:
        text_state = load_text_state(ctx.run_dir)
    else:
        raise ValueError("model.text.enabled is false: stage 2's i2tce needs the text side (CLIP-ReID); "
                         "single-stage training is not supported yet")
    if not run.stopped():
        train_image_side(run, model, index, text_state)

    summary = {"run_dir": str(ctx.run_dir), "global_step": run.position.global_step,
               "best_val_mAP": run.position.best_map, "skipped_nonfinite": run.position.skipped_nonfinite,
               "data_wait_share": run.data_wait_share,
               "skipped_frames": run.skips.as_manifest() if run.skips is not None else None}
    if ctx.is_main:
        write_json_atomic(ctx.run_dir / "summary.json", summary)
        plot_training_curves(ctx.run_dir / "scalars.csv", ctx.run_dir / "plots")
        print("training finished: " + json.dumps(summary), flush=True)
    ctx.barrier()
    return summary
