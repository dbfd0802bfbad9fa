"""The DeepSpeed config a run uses: the engine JSON (ZeRO stage, offload, buckets) + what the experiment owns.

docs/design.md, decision 6: `ds_configs/*.json` hold engine settings only. Batch sizes, gradient clipping, precision
and monitor paths come from the experiment config and the run folder, and are written into the dict here; a JSON
that sets them differently is an error (two sources of truth for the batch size would silently disagree).
The global batch identity `train_batch_size = micro x accumulation x world` is asserted, as DeepSpeed would.
"""

from __future__ import annotations

import json
from pathlib import Path

from xfd.config import TrainConfig

# Keys the experiment config owns; an engine JSON may repeat them only with the same value.
OWNED_BY_EXPERIMENT = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                       "gradient_clipping")
# Keys that must not appear at all: the optimiser and LR schedule are built by xfd from the experiment config.
FORBIDDEN = ("optimizer", "scheduler")


class DeepSpeedConfigError(ValueError):
    """The engine JSON is unreadable or contradicts the experiment config; the message names file and key."""


def read_engine_json(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DeepSpeedConfigError(f"{path}: DeepSpeed config not found (the packaged ones are ds_configs/zero1.json, "
                                   "zero2.json, zero3.json, zero2_offload.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DeepSpeedConfigError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DeepSpeedConfigError(f"{path}: top level must be an object")
    return data


def use_bf16(precision: str, cuda: bool) -> bool:
    """`auto`: bf16 on GPUs that support it, fp32 on CPU (CPU bf16 matmuls are slow and gain nothing here)."""
    if precision == "auto":
        if not cuda:
            return False
        import torch

        return torch.cuda.is_bf16_supported()
    return precision == "bf16"


def zero_stage(engine_json: dict) -> int:
    return int(engine_json.get("zero_optimization", {}).get("stage", 0))


def offloads_optimizer(engine_json: dict) -> bool:
    offload = engine_json.get("zero_optimization", {}).get("offload_optimizer") or {}
    return offload.get("device", "none") not in ("none", None)


def build_deepspeed_config(path: str | Path, train: TrainConfig, *, micro_batch: int, world_size: int,
                           cuda: bool, monitor_dir: str | Path | None = None, job_name: str = "train") -> dict:
    """The config dict for `deepspeed.initialize` of one stage (stage 1 and 2 differ in `micro_batch`)."""
    engine = read_engine_json(path)
    for key in FORBIDDEN:
        if key in engine:
            raise DeepSpeedConfigError(f"{path}: '{key}' is set by xfd from the experiment config "
                                       f"(train.stage1/stage2); remove it from the engine JSON")
    accumulation = train.gradient_accumulation
    global_batch = micro_batch * accumulation * world_size
    wanted = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": global_batch,
        "gradient_clipping": float(train.grad_clip),
    }
    for key in OWNED_BY_EXPERIMENT:
        if key in engine and engine[key] != wanted[key]:
            raise DeepSpeedConfigError(
                f"{path}: {key}={engine[key]} contradicts the experiment config ({wanted[key]}); batch sizes and "
                "clipping are set in the experiment config (train.identities/instances/gradient_accumulation, "
                "train.grad_clip)")
    assert wanted["train_batch_size"] == micro_batch * accumulation * world_size  # the identity DeepSpeed checks
    engine.update(wanted)
    bf16 = use_bf16(train.precision, cuda)
    if "fp16" in engine and engine["fp16"].get("enabled"):
        raise DeepSpeedConfigError(f"{path}: fp16 is not supported (CLIP fine-tuning is unstable under loss "
                                   "scaling); precision is train.precision (auto = bf16 on GPUs)")
    engine["bf16"] = {**engine.get("bf16", {}), "enabled": bf16}
    if monitor_dir is not None:
        for section in ("tensorboard", "csv_monitor"):
            engine[section] = {"enabled": True, "output_path": str(monitor_dir), "job_name": job_name}
    return engine


def check_global_batch(train: TrainConfig, world_size: int) -> int:
    """Stage 2's global batch (micro x accumulation x world); must equal `train.global_batch` when that is set."""
    global_batch = train.micro_batch * train.gradient_accumulation * world_size
    if train.global_batch and train.global_batch != global_batch:
        raise DeepSpeedConfigError(
            f"train.global_batch={train.global_batch} but micro-batch {train.micro_batch} (P={train.identities} x "
            f"K={train.instances}) x accumulation {train.gradient_accumulation} x world {world_size} = {global_batch}")
    if train.micro_batch % train.instances:
        raise DeepSpeedConfigError(f"K={train.instances} must divide the micro-batch {train.micro_batch}")
    return global_batch
