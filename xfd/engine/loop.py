"""The one training loop: `fit(run, stage)` runs either stage of a run, from its start or from a checkpoint.

A stage (xfd/engine/stage1.py, stage2.py) supplies its engine, its batches, its loss and its end-of-epoch hooks;
`fit` owns everything around them, identical for both: the resume position, stopping, the non-finite-loss policy,
backward and step, progress and scalar logging, and checkpoints. The run's shared state (`Run`: who this process
is, the config, the position) is written only here. Read `fit` top to bottom for what one step does.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

import torch

from xfd.config import ExperimentConfig, StageConfig
from xfd.engine.batching import BatchPlan
from xfd.engine.checkpoint import install_safe_loading, load_checkpoint, parse_tag, save_checkpoint, tag_for
from xfd.engine.context import RunContext
from xfd.engine.deepspeed_config import build_deepspeed_config, offloads_optimizer, read_engine_json, zero_stage
from xfd.engine.ops import announce_op_build
from xfd.engine.progress import StageProgress
from xfd.engine.schedule import warmup_cosine
from xfd.engine.steps import NonFiniteLoss, Position, nonfinite, nonfinite_message, reduced_scalars
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


class Stage:
    """What a stage gives `fit`. Subclasses set the attributes in their constructor (which builds the engine)."""

    number: int  # 1 or 2
    epochs: int
    engine: Any  # the DeepSpeed engine training this stage's module
    plan: BatchPlan
    steps_per_epoch: int  # optimizer steps; the batches of an epoch are steps_per_epoch x plan.accumulation
    tracklets: int = 0  # tracklets and frames this rank processes a micro-step (speed scalars)
    frames: int = 0

    def batches(self, epoch: int, start: int) -> Iterable:
        """This rank's micro-batches of `epoch`, from micro-step `start` on."""
        raise NotImplementedError

    def loss(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of the micro-step's global batch (the same on every rank) and its parts, for logging."""
        raise NotImplementedError

    def batch_names(self, batch) -> list[str]:
        """The batch's tracklets, for the non-finite-loss error."""
        raise NotImplementedError

    def data_wait_seconds(self) -> float:
        """Seconds spent so far waiting for batches."""
        return 0.0

    def validate(self, epochs_done: int) -> dict[str, float] | None:
        """End-of-epoch hook: validation scalars (with `val/mAP`) when due, else None."""
        return None

    def keep_best(self, scalars: dict[str, float]) -> None:
        """Called when validation found the best model so far."""


@dataclass
class FitResult:
    data_wait_share: float  # fraction of the logged steps' wall time spent waiting for data


def fit(run: Run, stage: Stage) -> FitResult:
    """Train `stage` to its last epoch (or `train.max_steps`), continuing from `run.resume_tag` if it is this
    stage's checkpoint; leaves `run.position` where the stage ended."""
    ctx, train, engine = run.ctx, run.cfg.train, stage.engine
    if run.resume_tag is not None and parse_tag(run.resume_tag)[0] == stage.number:
        run.position = Position.from_state(load_checkpoint(engine, ctx.run_dir, run.resume_tag,
                                                           ctx.rank)["xfd_position"])
    elif run.position.stage != stage.number:  # the stage starts here
        run.position.stage, run.position.epoch, run.position.step = stage.number, 0, 0
        run.position.stage_start = run.position.global_step
    pos = run.position
    progress = StageProgress(stage=stage.number, total_steps=stage.epochs * stage.steps_per_epoch,
                             done_steps=pos.global_step - pos.stage_start, is_main=ctx.is_main,
                             monitor=monitor_of(engine, ctx.is_main), log=run.log, log_every=train.log_every)
    start_epoch, start_step = pos.epoch, pos.step
    with progress:  # the bar is closed however the loop ends, an error included
        for epoch in range(start_epoch, stage.epochs):
            waited = stage.data_wait_seconds()
            start = start_step if epoch == start_epoch else 0
            with closing(iter(stage.batches(epoch, start))) as batches:
                for step, batch in enumerate(batches, start=start):  # step: the micro-step in the epoch
                    if run.stopped():
                        break
                    # the micro-step: the global batch's loss (the same on every rank), rank-averaged scalars
                    loss, parts = stage.loss(batch)
                    scalars = reduced_scalars(loss, parts, ctx.world_size)
                    pos.epoch, pos.step = epoch, step + 1
                    if nonfinite(scalars):  # every rank sees the same scalars, so every rank decides alike
                        if train.on_nonfinite == "raise":
                            raise NonFiniteLoss(nonfinite_message(stage.number, epoch, step,
                                                                  stage.batch_names(batch), scalars))
                        pos.skipped_nonfinite += 1
                        continue
                    engine.backward(loss)
                    engine.step()  # applies the update at the accumulation boundary
                    pos.micro_steps += 1
                    wait, waited = stage.data_wait_seconds() - waited, stage.data_wait_seconds()
                    progress.micro_step(scalars, tracklets=stage.tracklets, frames=stage.frames, wait_seconds=wait)
                    if pos.micro_steps % stage.plan.accumulation == 0:  # an optimizer step
                        pos.global_step += 1
                        progress.optimizer_step(epoch=epoch, step=step, global_step=pos.global_step,
                                                lr=current_lr(engine))
                        if train.checkpoint_every and pos.global_step % train.checkpoint_every == 0:
                            run.checkpoint(engine)
            if run.stopped():
                break
            pos.epoch, pos.step = epoch + 1, 0
            scalars = stage.validate(epoch + 1)
            if scalars is not None:
                progress.write(scalars, epoch=epoch + 1, step=0, global_step=pos.global_step)
                if ctx.is_main:
                    progress.bar.write("validation after epoch {}: mAP {:.2f} ({})".format(
                        epoch + 1, scalars["val/mAP"], ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in
                                                                scalars.items() if k.startswith("val/mAP/"))))
                if scalars["val/mAP"] > pos.best_map:
                    pos.best_map = scalars["val/mAP"]
                    stage.keep_best(scalars)
            run.checkpoint(engine)
    return FitResult(data_wait_share=progress.data_wait_share())


# ------------------------------------------------------------------------------------------- engines

def make_engine(run: Run, module: torch.nn.Module, param_groups: list[dict], stage: StageConfig, plan: BatchPlan,
                steps_per_epoch: int, job_name: str):
    """A DeepSpeed engine over `module` training `param_groups` with Adam (L2 weight decay, as CLIP-ReID) at the
    stage's (batch-scaled) LR and the warm-up + cosine schedule of `stage`, over `stage.epochs x steps_per_epoch`
    optimizer steps. With optimizer offload on GPUs the optimizer is DeepSpeed's CPU Adam (what offload is fast
    with); everywhere else torch's Adam (nothing to compile)."""
    import deepspeed

    ctx = run.ctx
    config = build_deepspeed_config(run.ds_config_path, run.cfg.train, plan, cuda=ctx.cuda,
                                    monitor_dir=ctx.run_dir / "monitor", job_name=job_name, stage=job_name)
    if offloads_optimizer(config) and ctx.cuda:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        announce_op_build("CPUAdamBuilder", "the CPU Adam of optimizer offload")
        optimizer = DeepSpeedCPUAdam(param_groups, lr=stage.scaled_lr, weight_decay=stage.weight_decay,
                                     adamw_mode=False)
    else:
        optimizer = torch.optim.Adam(param_groups, lr=stage.scaled_lr, weight_decay=stage.weight_decay)
    total = max(1, stage.epochs * steps_per_epoch)
    warmup = round(stage.warmup_epochs * steps_per_epoch)

    def schedule(wrapped):
        return warmup_cosine(wrapped, total, warmup, stage.warmup_factor, stage.min_lr_factor)

    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=schedule, config=config)
    install_safe_loading(engine)
    return engine


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
