"""The pieces both stages use: the run's shared state, engine construction and checkpointing at a position."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from xfd.config import ExperimentConfig, StageConfig
from xfd.engine.checkpoint import install_safe_loading, save_checkpoint, tag_for
from xfd.engine.context import RunContext
from xfd.engine.deepspeed_config import build_deepspeed_config, offloads_optimizer, read_engine_json, zero_stage
from xfd.engine.ops import announce_op_build
from xfd.engine.schedule import warmup_cosine
from xfd.engine.steps import (NonFiniteLoss, Position, average_batch_norm_statistics, nonfinite, nonfinite_message,
                              reduced_scalars)
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

    @cached_property
    def zero3(self) -> bool:
        """Parameters partitioned (ZeRO-3): exports gather them, validation runs the whole split on every rank."""
        return zero_stage(read_engine_json(self.ds_config_path)) == 3

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

        announce_op_build("CPUAdamBuilder", "the CPU Adam of optimizer offload")
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


def take_micro_step(run: Run, engine, progress, loss: torch.Tensor, parts: dict[str, torch.Tensor], *, epoch: int,
                    step: int, batch_names, tracklets: int, frames: int, wait_seconds: float) -> None:
    """One micro-step of either stage after its loss: rank-averaged scalars, the non-finite policy (every rank
    decides alike), backward + step, and at each accumulation boundary the optimizer step's log and checkpoint.
    `batch_names()` names the batch's tracklets for the non-finite error (called only then)."""
    pos, train = run.position, run.cfg.train
    scalars = reduced_scalars(loss, parts, run.ctx.world_size)
    pos.epoch, pos.step = epoch, step + 1
    if nonfinite(scalars):
        if train.on_nonfinite == "raise":
            raise NonFiniteLoss(nonfinite_message(pos.stage, epoch, step, batch_names(), scalars))
        pos.skipped_nonfinite += 1
        return
    engine.backward(loss)
    engine.step()
    pos.micro_steps += 1
    progress.micro_step(scalars, tracklets=tracklets, frames=frames, wait_seconds=wait_seconds)
    if pos.micro_steps % train.gradient_accumulation == 0:
        pos.global_step += 1
        average_batch_norm_statistics(engine.module, run.ctx.world_size)
        progress.optimizer_step(epoch=epoch, step=step, global_step=pos.global_step, lr=current_lr(engine))
        if train.checkpoint_every and pos.global_step % train.checkpoint_every == 0:
            run.checkpoint(engine)


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
