"""A whole training run, read top to bottom: distributed start → checks → run folder → model → stage 1 → stage 2.

    run_training(cfg, "ds_configs/zero2.json", "runs/x", resume=True)

Everything a config or the world size could get wrong (batch sizes the ranks cannot share, an engine JSON that
contradicts the experiment, labels outside the classifier) is refused before any work. Both stages then run the
one loop, `xfd.engine.loop.fit`.

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
from xfd.data.errors import DataError
from xfd.data.index import ShardIndex
from xfd.engine.batching import BatchPlan, BatchSizeError, divisors, stage_batch
from xfd.engine.checkpoint import latest_tag, parse_tag
from xfd.engine.context import start_distributed, write_run_identity
from xfd.engine.deepspeed_config import build_deepspeed_config
from xfd.engine.loop import Run, fit
from xfd.engine.stage1 import PromptStage, load_text_state
from xfd.engine.stage2 import ImageStage
from xfd.model import build_model
from xfd.plots import CsvScalarLog, plot_training_curves


def with_num_classes(cfg: ExperimentConfig, num_classes: int) -> ExperimentConfig:
    """The config with `model.num_classes` set from the training split (the YAML's value is a placeholder)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes))


def check_labels(index: ShardIndex, num_classes: int) -> None:
    """Every training label is an int in 0..num_classes-1 (the classifier's rows); the first that is not is an
    error naming its shard and sample."""
    for key in index.keys:
        label = index.meta(key).get("label")
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
            raise DataError(f"{index.shard_of(key)} [{key}]",
                            f"training label {label!r} is outside the classifier's range 0..{num_classes - 1} (the "
                            f"split has {num_classes} identities, which xfd-shard labels 0..{num_classes - 1})")


def plan_batches(cfg: ExperimentConfig, world_size: int) -> dict[int, BatchPlan]:
    """Both stages' batch plans; a world size that cannot share them is refused with the sizes that can."""
    try:
        return {stage: stage_batch(cfg.train, stage, world_size) for stage in (1, 2)}
    except BatchSizeError as err:
        both = [w for w in divisors(cfg.train.stage1.batch_size) if cfg.train.stage2.batch_size % w == 0]
        raise BatchSizeError(f"{err}. World sizes that share both stages' batches "
                             f"({cfg.train.stage1.batch_size} and {cfg.train.stage2.batch_size}): "
                             f"{', '.join(map(str, both))}") from None


def run_training(cfg: ExperimentConfig, ds_config_path: str, run_dir: str | Path, resume: bool = False) -> dict:
    """Train `cfg` under the DeepSpeed engine JSON `ds_config_path` into `run_dir`; returns a summary dict."""
    ctx = start_distributed(run_dir)
    if cfg.data.root is None:
        raise ValueError("no data: pass --data DIR (an xfd-shard output folder) or set data.root")
    data_root = Path(cfg.data.root)
    index = ShardIndex.open(data_root / cfg.data.train_split)
    cfg = with_num_classes(cfg, len(index.labels_to_keys()))
    if not cfg.model.text.enabled:
        raise ValueError("model.text.enabled is false: stage 2's i2tce needs the text side (CLIP-ReID); "
                         "single-stage training is not supported yet")
    check_labels(index, cfg.model.num_classes)
    plans = plan_batches(cfg, ctx.world_size)
    engine_json = {f"stage{n}": build_deepspeed_config(ds_config_path, cfg.train, plan, cuda=ctx.cuda,
                                                        stage=f"stage {n}") for n, plan in plans.items()}

    tag = latest_tag(ctx.run_dir) if resume else None
    if not resume and ctx.run_dir.joinpath("checkpoints").is_dir() and any(ctx.run_dir.joinpath("checkpoints").iterdir()):
        raise FileExistsError(f"{ctx.run_dir} already holds checkpoints: pass --resume to continue that run, or "
                              "choose another --output")
    batches = {f"stage{n}": {**plan.as_record(), "lr": stage.scaled_lr} for (n, plan), stage in
               zip(plans.items(), (cfg.train.stage1, cfg.train.stage2))}
    write_run_identity(ctx, cfg, engine_json, str(ds_config_path), tag, batches)
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
    if model.init_summary and ctx.is_main:
        print(model.init_summary, flush=True)
    torch.manual_seed(cfg.train.seed * 1_000_003 + ctx.rank)

    if run.position.stage == 1:
        prompts = PromptStage(run, model, index)
        fit(run, prompts)
        prompts.finish()  # every identity's text feature, cached in model.text
    else:  # resuming stage 2: stage 1's text branch comes from the run folder
        unexpected = model.load_state_dict(load_text_state(ctx.run_dir), strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"{ctx.run_dir}: stage 1's text state does not fit the model: {unexpected[:5]}")
    wait_share, skips = 0.0, None
    if not run.stopped():
        image = ImageStage(run, model, index)
        wait_share = fit(run, image).data_wait_share
        skips = image.finish()

    summary = {"run_dir": str(ctx.run_dir), "global_step": run.position.global_step,
               "best_val_mAP": run.position.best_map, "skipped_nonfinite": run.position.skipped_nonfinite,
               "data_wait_share": wait_share,
               "skipped_frames": skips.as_manifest() if skips is not None else None}
    if ctx.is_main:
        write_json_atomic(ctx.run_dir / "summary.json", summary)
        plot_training_curves(ctx.run_dir / "scalars.csv", ctx.run_dir / "plots")
        print("training finished: " + json.dumps(summary), flush=True)
    ctx.barrier()
    return summary
