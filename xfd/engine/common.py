"""The pieces both stages use: the run's shared state, engine construction and checkpointing at a position."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xfd.config import ExperimentConfig, StageConfig
from xfd.engine.checkpoint import install_safe_loading, save_checkpoint, tag_for
from xfd.engine.context import RunContext
from xfd.engine.deepspeed_config import build_deepspeed_config, offloads_optimizer, read_engine_json, zero_stage
from xfd.engine.schedule import warmup_cosine
from xfd.engine.steps import Position
from xfd.plots import CsvScalarLog


@dataclass
class Run:
    """What a training run carries from stage to stage."""

    ctx: RunContext
    cfg: ExperimentConfig
    ds_config_path: str
    position: Position = field(default_factory=Position)
    resume_tag: str | None = None  # the checkpoint this launch continues from (None: fresh)
    log: CsvScalarLog | None = None  # rank 0 only
    data_root: Path = Path(".")
    stage1_steps: int = 0  # optimizer steps of stage 1 (stage 2's bar counts from there)
    data_wait_share: float = 0.0  # stage 2: fraction of logged step time spent waiting for data
    skips: object = None  # stage 2 loader's SkipLog (corrupt frames under data.on_error=skip)

    @property
    def engine_json(self) -> dict:
        return read_engine_json(self.ds_config_path)

    @property
    def zero3(self) -> bool:
        return zero_stage(self.engine_json) == 3

    def stopped(self) -> bool:
        """`train.max_steps` reached (smoke runs)."""
        return bool(self.cfg.train.max_steps) and self.position.global_step >= self.cfg.train.max_steps

    def checkpoint(self, engine) -> str:
        tag = tag_for(self.position.stage, self.position.epoch, self.position.global_step)
        save_checkpoint(engine, self.ctx.run_dir, tag, {"xfd_position": self.position.as_state()},
                        keep=self.cfg.train.keep_checkpoints, rank=self.ctx.rank, barrier=self.ctx.barrier)
        return tag


def optimizer_steps(epochs: int, micro_steps_per_epoch: int, accumulation: int) -> int:
    return max(1, math.ceil(epochs * micro_steps_per_epoch / accumulation))


def make_engine(run: Run, module: torch.nn.Module, param_groups: list[dict], stage: StageConfig,
                micro_steps_per_epoch: int, micro_batch: int, job_name: str):
    """A DeepSpeed engine over `module` training `param_groups` with Adam (L2 weight decay, as CLIP-ReID) and
    the warm-up + cosine schedule of `stage`. With optimizer offload on GPUs the optimizer is DeepSpeed's CPU
    Adam (what offload is fast with); everywhere else torch's Adam (nothing to compile)."""
    import deepspeed

    ctx, train = run.ctx, run.cfg.train
    config = build_deepspeed_config(run.ds_config_path, train, micro_batch=micro_batch, world_size=ctx.world_size,
                                    cuda=ctx.cuda, monitor_dir=ctx.run_dir / "monitor", job_name=job_name)
    if offloads_optimizer(config) and ctx.cuda:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        optimizer = DeepSpeedCPUAdam(param_groups, lr=stage.lr, weight_decay=stage.weight_decay, adamw_mode=False)
    else:
        optimizer = torch.optim.Adam(param_groups, lr=stage.lr, weight_decay=stage.weight_decay)
    steps_per_epoch = micro_steps_per_epoch / train.gradient_accumulation
    total = optimizer_steps(stage.epochs, micro_steps_per_epoch, train.gradient_accumulation)
    warmup = round(stage.warmup_epochs * steps_per_epoch)

    def schedule(wrapped):
        return warmup_cosine(wrapped, total, warmup, stage.warmup_factor, stage.min_lr_factor)

    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=schedule, config=config)
    install_safe_loading(engine)
    return engine, total


def current_lr(engine) -> float:
    """The LR of the base-rate group (the last group: new parameters; backbone groups run at a fraction)."""
    return float(engine.optimizer.param_groups[-1]["lr"])


def monitor_of(engine, is_main: bool):
    monitor = getattr(engine, "monitor", None)
    return monitor if is_main and monitor is not None and getattr(monitor, "enabled", True) else None


def release(engine) -> None:
    """Free an engine's hooks and buffers before the next stage builds its own."""
    destroy = getattr(engine, "destroy", None)
    if destroy is not None:
        destroy()


def text_state_path(run_dir: Path) -> Path:
    return run_dir / "text_features.safetensors"
